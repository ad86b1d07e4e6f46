-- Jobs at a glance: counts per state among the caller's visible jobs, and one job's timeline.
-- Error codes: 10_access.sql.

create or replace function api.job_counts(
  pipeline text default null,
  since timestamptz default null,
  until timestamptz default null,
  job_prefix text default null,
  client text default null
) returns jsonb
language plpgsql stable set search_path = pg_catalog, pg_temp as $$
#variable_conflict use_column
-- Jobs per state (running, completed, failed, stalled) among the caller's visible jobs, with the
-- same filters as the job list: pipeline, started in [since, until), job id prefix, client.
declare
  v_result jsonb;
begin
  if job_counts.since is not null and job_counts.until is not null
     and job_counts.since > job_counts.until then
    raise exception 'since (%) is after until (%)', job_counts.since, job_counts.until
      using errcode = 'SL501';
  end if;
  if job_counts.pipeline is null and job_counts.since is null and job_counts.until is null
     and job_counts.job_prefix is null then
    -- No filter but the client: count states from the index on (client_id, status, updated_at)
    -- alone, then look up the pipelines of the running jobs only, to tell the stalled ones.
    select jsonb_build_object(
             'running', c.running - st.stalled, 'completed', c.completed, 'failed', c.failed,
             'stalled', st.stalled, 'total', c.total, 'as_of', now())
      into v_result
      from (select count(*) filter (where j.status = 'running') as running,
                   count(*) filter (where j.status = 'completed') as completed,
                   count(*) filter (where j.status = 'failed') as failed,
                   count(*) as total
              from ledger.jobs j
             where job_counts.client is null or j.client_id = job_counts.client) c,
           (select count(*) as stalled
              from ledger.jobs j
              join ledger.pipelines p on p.pipeline = j.pipeline
             where j.status = 'running'
               and ledger.job_status(j.status, j.updated_at, p.stall_timeout) = 'stalled'
               and (job_counts.client is null or j.client_id = job_counts.client)) st;
    return v_result;
  end if;
  select jsonb_build_object(
           'running', count(*) filter (where s.status = 'running'),
           'completed', count(*) filter (where s.status = 'completed'),
           'failed', count(*) filter (where s.status = 'failed'),
           'stalled', count(*) filter (where s.status = 'stalled'),
           'total', count(*),
           'as_of', now())
    into v_result
    from ledger.jobs j
    join ledger.pipelines p on p.pipeline = j.pipeline
   cross join lateral (select ledger.job_status(j.status, j.updated_at, p.stall_timeout) as status) s
   where (job_counts.client is null or j.client_id = job_counts.client)
     and (job_counts.pipeline is null or j.pipeline = job_counts.pipeline)
     and (job_counts.since is null or j.started_at >= job_counts.since)
     and (job_counts.until is null or j.started_at < job_counts.until)
     and (job_counts.job_prefix is null or starts_with(j.job_id, job_counts.job_prefix));
  return v_result;
end
$$;
comment on function api.job_counts(text, timestamptz, timestamptz, text, text) is
  'Jobs per state (running, completed, failed, stalled, total) among your jobs, filtered like GET /jobs: pipeline, started in [since, until), job id prefix, client (admins).';

-- api.job_changes (live updates) is in 38_job_state.sql, with its opaque cursor.

create or replace function api.job_timeline(job_id text, client_id text default null)
returns jsonb
language plpgsql stable set search_path = pg_catalog, pg_temp as $$
#variable_conflict use_column
-- A Gantt-ready timeline of one job in one request: the job, then every step of its pipeline
-- version in order (steps not reached yet are `pending`, or `not_run` once the job has failed or
-- completed) with each attempt as a bar: start, end,
-- state, duration and the queue time before it. Bars of running attempts have no end yet: draw
-- them to `as_of`.
declare
  v_job record;
  v_matches integer;
  v_steps jsonb;
  v_span_start timestamptz;
  v_span_end timestamptz;
begin
  select count(*) into v_matches
    from api.jobs j
   where j.job_id = job_timeline.job_id
     and (job_timeline.client_id is null or j.client_id = job_timeline.client_id);
  if v_matches = 0 then
    perform ledger._raise_not_found('SL504', format('job "%s" not found', job_timeline.job_id),
      'check the job id (and client_id); you only see the jobs of your own client');
  elsif v_matches > 1 then
    raise exception 'job id "%" exists for % clients', job_timeline.job_id, v_matches
      using errcode = 'SL503', hint = 'pass client_id';
  end if;
  select j.* into v_job
    from api.jobs j
   where j.job_id = job_timeline.job_id
     and (job_timeline.client_id is null or j.client_id = job_timeline.client_id);

  with runs as (
    select r.*,
           max(r.finished_at) over (order by r.started_at nulls last, r.step_index, r.attempt
                                    rows between unbounded preceding and 1 preceding) as ready_at
      from api.step_runs r
     where r.client_id = v_job.client_id and r.job_id = v_job.job_id
  ),
  bars as (
    select r.step, r.attempt, r.started_at, r.ended_at, r.state,
           jsonb_build_object(
             'attempt', r.attempt, 'status', r.status, 'state', r.state,
             'started_at', r.started_at, 'ended_at', r.ended_at, 'finished_at', r.finished_at,
             'duration_s', r.duration_s,
             'queue_s', case when r.started_at is not null and r.ready_at is not null
                             then round(greatest(0, extract(epoch from r.started_at - r.ready_at)), 3) end,
             'units', r.units, 'error_code', r.error_code, 'error_message', r.error_message,
             'error_retryable', r.error_retryable, 'source', r.source) as bar
      from runs r
  ),
  steps as (
    select ps.step, ps.step_index, ps.title,
           coalesce(jsonb_agg(b.bar order by b.attempt) filter (where b.attempt is not null), '[]') as bars,
           count(b.attempt) as attempts,
           (array_agg(b.state order by b.attempt desc) filter (where b.attempt is not null))[1] as state,
           min(b.started_at) as started_at,
           (array_agg(b.ended_at order by b.attempt desc) filter (where b.attempt is not null))[1] as ended_at
      from ledger.pipeline_steps ps
      left join bars b on b.step = ps.step
     where ps.pipeline = v_job.pipeline
       and (ps.added_in_version <= v_job.pipeline_version or b.step is not null)
     group by ps.step, ps.step_index, ps.title
  )
  select jsonb_agg(jsonb_build_object(
           'step', s.step, 'step_index', s.step_index, 'title', s.title,
           -- a step without attempts: pending while the job may still reach it, not_run once
           -- the job failed or completed without it
           'state', coalesce(s.state, case when v_job.status in ('failed', 'completed')
                                           then 'not_run' else 'pending' end),
           'attempts', s.attempts,
           'started_at', s.started_at, 'ended_at', s.ended_at, 'runs', s.bars)
         order by s.step_index),
         min(s.started_at),
         max(s.ended_at)
    into v_steps, v_span_start, v_span_end
    from steps s;

  return to_jsonb(v_job) || jsonb_build_object(
    'as_of', now(),
    'span', jsonb_build_object(
      'start', coalesce(v_span_start, v_job.started_at),
      'end', case when v_job.status in ('completed', 'failed') then greatest(v_job.finished_at, v_span_end)
                  when v_job.status = 'stalled' then greatest(v_job.updated_at, v_span_end)
                  else greatest(now(), v_span_end) end),
    'steps', coalesce(v_steps, '[]'::jsonb));
end
$$;
comment on function api.job_timeline(text, text) is
  'Gantt-ready timeline of one job: the job as in GET /jobs, its span, and every step of its pipeline with each attempt (start, end, state, duration, queue time, error). 404 when you cannot see the job.';
