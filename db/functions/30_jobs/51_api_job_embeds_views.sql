-- Embedding a job's step runs: GET /jobs?select=*,step_runs(*). The views have no foreign keys
-- for PostgREST to follow, so this computed relationship names the join. It runs with the
-- caller's rights (not security definer): row-level security filters the embedded rows exactly as
-- it filters GET /step_runs.

create or replace function api.step_runs(api.jobs) returns setof api.step_runs
language sql stable as $$
  select r.* from api.step_runs r
   where r.client_id = $1.client_id and r.job_id = $1.job_id
   order by r.step_index, r.attempt
$$;
comment on function api.step_runs(api.jobs) is 'Embeds the step runs of a job: GET /jobs?select=*,step_runs(*).';
