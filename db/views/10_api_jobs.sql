-- The HTTP read surface for jobs and step runs (contract §4, §6). security_invoker: the caller's
-- row-level security applies, so a client sees only its own rows through these views.

create or replace view api.jobs with (security_invoker = true) as
select j.client_id,
       j.job_id,
       j.pipeline,
       case when j.status = 'running' and now() - j.updated_at > p.stall_timeout then 'stalled'
            else j.status end as status,
       j.steps_total,
       j.steps_done,
       round(least(1, j.steps_done::numeric / nullif(j.steps_total, 0)), 4) as progress,
       j.started_at,
       j.updated_at,
       j.finished_at,
       j.last_error,
       j.last_error_step,
       j.events,
       j.last_received_at
  from ledger.jobs j
  join ledger.pipelines p on p.pipeline = j.pipeline;

comment on view api.jobs is 'One row per job: status (running, completed, failed, stalled), progress from 0 to 1 and the last error. A client sees only its own jobs.';
comment on column api.jobs.status is 'completed when every step is done; failed when a step''s latest attempt failed; stalled when running with no event for longer than the pipeline''s stall timeout; else running.';
comment on column api.jobs.steps_total is 'Steps registered for the pipeline when the job started.';
comment on column api.jobs.steps_done is 'Distinct steps whose latest attempt is completed or skipped.';
comment on column api.jobs.progress is 'steps_done / steps_total, from 0 to 1.';
comment on column api.jobs.updated_at is 'occurred_at of the job''s latest event.';
comment on column api.jobs.last_error is 'error code and message of the latest failed step, if any.';

create or replace view api.step_runs with (security_invoker = true) as
select r.client_id,
       r.job_id,
       r.step,
       r.step_index,
       r.attempt,
       r.status,
       r.started_at,
       r.finished_at,
       round(extract(epoch from r.finished_at - r.started_at), 3) as duration_s,
       r.units,
       r.error_code,
       r.error_message,
       r.pipeline,
       r.error_retryable,
       r.source,
       (js.latest_attempt = r.attempt) as is_latest
  from ledger.step_runs r
  join ledger.job_steps js
    on js.client_id = r.client_id and js.job_id = r.job_id and js.step = r.step;

comment on view api.step_runs is 'One row per attempt of a step in a job, with its timing, units and error. Filter with ?client_id=eq.C&job_id=eq.J.';
comment on column api.step_runs.duration_s is 'Seconds from the started event to the completed, failed or skipped event.';
comment on column api.step_runs.is_latest is 'Whether this is the latest attempt of the step, the one that decides its state.';
