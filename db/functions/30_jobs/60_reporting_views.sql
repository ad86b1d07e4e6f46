-- Read-only views for BI logins (docs/bi.md). security_invoker: a BI login reads them under the
-- same row-level security as the API, so one bound to a client sees only that client's rows.

create or replace view reporting.jobs with (security_invoker = true) as
select client_id, job_id, pipeline, status, steps_total, steps_done, progress,
       started_at, updated_at, finished_at, last_error, last_error_step, events
  from ledger.job_rows;

comment on view reporting.jobs is 'One row per job with status, progress and last error, as GET /jobs shows it. A BI login bound to a client sees only that client''s jobs.';
comment on column reporting.jobs.status is 'running, completed, failed, or stalled (running with no event for longer than the pipeline''s stall timeout).';
comment on column reporting.jobs.progress is 'steps_done / steps_total, from 0 to 1.';
