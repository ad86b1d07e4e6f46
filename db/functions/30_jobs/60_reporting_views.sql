-- Read-only views for BI logins (docs/bi.md). security_invoker: a BI login reads them under the
-- same row-level security as the API, so one bound to a client sees only that client's rows.

create or replace view reporting.jobs with (security_invoker = true) as
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
       j.events
  from ledger.jobs j
  join ledger.pipelines p on p.pipeline = j.pipeline;

comment on view reporting.jobs is 'One row per job with status, progress and last error, as GET /jobs shows it. A BI login bound to a client sees only that client''s jobs.';
comment on column reporting.jobs.status is 'running, completed, failed, or stalled (running with no event for longer than the pipeline''s stall timeout).';
comment on column reporting.jobs.progress is 'steps_done / steps_total, from 0 to 1.';
