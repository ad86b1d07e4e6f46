-- A job's retries and whether its failure said "retryable", kept on the job by ingest
-- (ledger._fold_client_progress) instead of summed from its steps on every read of GET /jobs: a
-- read of one page then costs the same however many jobs and steps a client has, and on a Citus
-- cluster it is a plain read of the jobs table, routed to the client's worker (ADR 0012).
-- One subcommand per statement and constraints by name: a Citus coordinator refuses the other
-- forms on a distributed table (ADR 0012); the name is the one PostgreSQL gives an inline CHECK.
alter table ledger.jobs add column retries integer not null default 0;
alter table ledger.jobs add constraint jobs_retries_check check (retries >= 0);
alter table ledger.jobs add column last_error_retryable boolean;
comment on column ledger.jobs.retries is
  'Attempts beyond the first, over all steps of the job.';
comment on column ledger.jobs.last_error_retryable is
  'The error of the latest attempt of last_error_step said retryable (null when no step failed).';

update ledger.jobs j
   set retries = s.retries, last_error_retryable = s.last_error_retryable
  from (select js.client_id, js.job_id, sum(js.latest_attempt - 1)::integer as retries,
               (array_agg(r.error_retryable order by js.latest_at desc)
                  filter (where js.latest_status = 'failed'))[1] as last_error_retryable
          from ledger.job_steps js
          left join ledger.step_runs r
            on r.client_id = js.client_id and r.job_id = js.job_id and r.step = js.step
           and r.attempt = js.latest_attempt
         group by js.client_id, js.job_id) s
 where s.client_id = j.client_id and s.job_id = j.job_id;
