-- The HTTP read surface for jobs and step runs (contract §4, §6). security_invoker: the caller's
-- row-level security applies, so a client sees only its own rows through these views.

-- A job as every reader shows it (status, progress, stall, retries): the rules once, for GET /jobs
-- here and for BI logins (reporting.jobs).
create or replace view ledger.job_rows with (security_invoker = true) as
select j.client_id,
       j.job_id,
       j.pipeline,
       ledger.job_status(j.status, j.updated_at, p.stall_timeout) as status,
       j.steps_total,
       j.steps_done,
       ledger.job_progress(j.steps_done, j.steps_total) as progress,
       j.started_at,
       j.updated_at,
       j.finished_at,
       j.last_error,
       j.last_error_step,
       j.events,
       j.last_received_at,
       j.pipeline_version,
       case when j.status = 'running' then j.updated_at + p.stall_timeout end as stalls_at,
       -- failed, but the pipeline said the failing attempt may be retried (error.retryable)
       (j.status = 'failed' and coalesce(j.last_error_retryable, false)) as retry_expected,
       -- until it ends, a job's duration grows with the clock: sorting by it puts the longest
       -- running ones first
       round(extract(epoch from coalesce(j.finished_at, now()) - j.started_at), 3) as duration_s,
       -- kept on the job by ingest: a page costs the same however many steps a client has, and
       -- on a Citus cluster a client's read is a read of its jobs shard alone (ADR 0012)
       j.retries
  from ledger.jobs j
  join ledger.pipelines p on p.pipeline = j.pipeline;
comment on view ledger.job_rows is
  'Jobs with the state every reader shows: api.jobs (GET /jobs) and reporting.jobs read them.';

create or replace view api.jobs with (security_invoker = true) as
select * from ledger.job_rows;

comment on view api.jobs is 'One row per job: status (running, completed, failed, stalled), progress from 0 to 1 and the last error. A client sees only its own jobs.';
comment on column api.jobs.status is 'completed when every step is done; failed when a step''s latest attempt failed; stalled when running with no event for longer than the pipeline''s stall timeout; else running.';
comment on column api.jobs.steps_total is 'Steps registered for the pipeline when the job started.';
comment on column api.jobs.steps_done is 'Distinct steps whose latest attempt is completed or skipped.';
comment on column api.jobs.progress is 'steps_done / steps_total, from 0 to 1.';
comment on column api.jobs.updated_at is 'occurred_at of the job''s latest event.';
comment on column api.jobs.last_error is 'error code and message of the latest failed step, if any.';
comment on column api.jobs.last_received_at is 'When the latest batch with events of this job arrived.';
comment on column api.jobs.pipeline_version is 'The pipeline version whose steps the job counts: the version current at its first event, or a later one when the job reports a step that version added.';
comment on column api.jobs.stalls_at is 'For a running (or stalled) job: when it counts as stalled without a further event.';
comment on column api.jobs.retry_expected is 'True when the job failed and the failing attempt''s error said retryable: true, so a new attempt is expected (status stays failed until it arrives).';
comment on column api.jobs.duration_s is 'Seconds from the first event to the end (finished_at), or to now while the job is running or stalled.';
comment on column api.jobs.retries is 'Attempts beyond the first, over all steps of the job.';

create or replace view api.step_runs with (security_invoker = true) as
-- The state is computed in the derived table x, not in a LATERAL subquery without FROM: Citus
-- refuses those when they call now() (ADR 0012).
select x.client_id,
       x.job_id,
       x.step,
       x.step_index,
       x.attempt,
       x.status,
       x.started_at,
       x.finished_at,
       round(extract(epoch from x.finished_at - x.started_at), 3) as duration_s,
       x.units,
       x.error_code,
       x.error_message,
       x.pipeline,
       x.error_retryable,
       x.source,
       (x.latest_attempt = x.attempt) as is_latest,
       x.state,
       case x.state
         when 'running' then null
         when 'stalled' then greatest(x.started_at, x.job_updated_at)
         when 'abandoned' then greatest(x.started_at, coalesce(
           (select min(coalesce(n.started_at, n.decided_at)) from ledger.step_runs n
             where n.client_id = x.client_id and n.job_id = x.job_id and n.step = x.step
               and n.attempt > x.attempt),
           x.job_finished_at, x.job_updated_at))
         else x.finished_at
       end as ended_at
  from (select r.client_id, r.job_id, r.step, r.step_index, r.attempt, r.status, r.started_at,
               r.finished_at, r.units, r.error_code, r.error_message, r.pipeline,
               r.error_retryable, r.source, js.latest_attempt,
               j.updated_at as job_updated_at, j.finished_at as job_finished_at,
               case
                 when r.status <> 'started' then r.status::text
                 when r.attempt < js.latest_attempt or j.status <> 'running' then 'abandoned'
                 when now() - j.updated_at > p.stall_timeout then 'stalled'
                 else 'running'
               end as state
          from ledger.step_runs r
          join ledger.job_steps js
            on js.client_id = r.client_id and js.job_id = r.job_id and js.step = r.step
          join ledger.jobs j on j.client_id = r.client_id and j.job_id = r.job_id
          join ledger.pipelines p on p.pipeline = j.pipeline) x;

comment on view api.step_runs is 'One row per attempt of a step in a job, with its timing, units and error. Filter with ?client_id=eq.C&job_id=eq.J.';
comment on column api.step_runs.duration_s is 'Seconds from the started event to the completed, failed or skipped event.';
comment on column api.step_runs.is_latest is 'Whether this is the latest attempt of the step, the one that decides its state.';
comment on column api.step_runs.state is 'completed, failed or skipped as reported; for an attempt still `started`: running, stalled (its job is stalled), or abandoned (a later attempt of the step exists, or the job failed or completed without it).';
comment on column api.step_runs.ended_at is 'When the bar ends on a timeline: finished_at, the last sign of life of a stalled job, or when an abandoned attempt was given up (the next attempt, else the end of the job); null while running.';
