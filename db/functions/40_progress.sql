-- Live progress: a statement-level trigger folds each batch of new events into step runs, the
-- latest attempt of each step, and the jobs, in a few set-based statements per batch.
--
-- Concurrency: the first statement upserts the batch's jobs in key order, which locks those job
-- rows until commit. Every later statement takes a fresh snapshot (READ COMMITTED), so a batch
-- that waited for that lock sees the other batch's committed step runs: no lost update.
--
-- Edge cases (tests/test_progress*.py):
-- - retries: every attempt is a step run; the highest attempt number decides the step;
-- - out-of-order and late events: within an attempt a terminal status beats `started` whatever
--   the arrival order, and between terminal events the later occurred_at wins; an attempt that
--   arrives late never displaces a higher attempt;
-- - skipped steps count as done;
-- - a pipeline that gained steps: a job counts the steps of the pipeline version it runs
--   (ledger.jobs.pipeline_version), raised when it reports a step added by a later version;
-- - attempts left `started` when the job failed, moved on or stalled, and stalled jobs, are
--   derived at read time (db/views/10_api_jobs.sql), so no background job is needed.

create or replace function ledger.tg_events__apply_progress() returns trigger
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  v_xid bigint := pg_current_xact_id()::text::bigint;
begin
  -- 1. Jobs: create, widen the time span, stamp the changing transaction, and lock.
  insert into ledger.jobs as j (client_id, job_id, pipeline, steps_total, pipeline_version,
                                started_at, updated_at, last_received_at, events, changed_xid)
  select n.client_id, n.job_id, min(n.pipeline), min(p.steps_total), min(p.version),
         min(n.occurred_at), max(n.occurred_at), now(), count(*), v_xid
    from new_events n
    join ledger.pipelines p on p.pipeline = n.pipeline
   group by n.client_id, n.job_id
   order by n.client_id, n.job_id
  on conflict (client_id, job_id) do update
     set started_at = least(j.started_at, excluded.started_at),
         updated_at = greatest(j.updated_at, excluded.updated_at),
         last_received_at = excluded.last_received_at,
         events = j.events + excluded.events,
         changed_xid = excluded.changed_xid;

  -- 2. Step runs: merge the batch into each attempt. A terminal status (completed, failed,
  --    skipped) beats started whatever the arrival order; between terminal events the later
  --    occurred_at decides. started_at is the earliest started event.
  with per_attempt as (
    select distinct on (n.client_id, n.job_id, n.step, n.attempt)
           n.client_id, n.job_id, n.step, n.attempt, n.pipeline, n.status, n.occurred_at,
           n.units, n.error_code, n.error_message, n.error_retryable, n.source,
           min(n.occurred_at) filter (where n.status = 'started')
             over (partition by n.client_id, n.job_id, n.step, n.attempt) as started_at,
           count(*) over (partition by n.client_id, n.job_id, n.step, n.attempt) as events
      from new_events n
     order by n.client_id, n.job_id, n.step, n.attempt,
              n.status <> 'started' desc, n.occurred_at desc, n.received_at desc, n.vault_id desc
  )
  insert into ledger.step_runs as r (client_id, job_id, step, attempt, pipeline, step_index, status,
                                     started_at, finished_at, units, error_code, error_message,
                                     error_retryable, source, decided_at, events, updated_at)
  select a.client_id, a.job_id, a.step, a.attempt, a.pipeline, s.step_index, a.status,
         a.started_at, case when a.status <> 'started' then a.occurred_at end,
         case when a.status = 'completed' then a.units end,
         a.error_code, a.error_message, a.error_retryable, a.source, a.occurred_at, a.events, now()
    from per_attempt a
    join ledger.pipeline_steps s on s.pipeline = a.pipeline and s.step = a.step
   order by a.client_id, a.job_id, a.step, a.attempt
  on conflict (client_id, job_id, step, attempt) do update
     set started_at = least(r.started_at, excluded.started_at),
         (status, finished_at, units, error_code, error_message, error_retryable, source, decided_at) =
           (select case when wins then excluded.status else r.status end,
                   case when wins then excluded.finished_at else r.finished_at end,
                   case when wins then excluded.units else r.units end,
                   case when wins then excluded.error_code else r.error_code end,
                   case when wins then excluded.error_message else r.error_message end,
                   case when wins then excluded.error_retryable else r.error_retryable end,
                   coalesce(case when wins then excluded.source else r.source end, r.source, excluded.source),
                   case when wins then excluded.decided_at else r.decided_at end
              from (select (excluded.status <> 'started' and r.status = 'started')
                        or ((excluded.status <> 'started') = (r.status <> 'started')
                            and excluded.decided_at >= r.decided_at) as wins) w),
         events = r.events + excluded.events,
         updated_at = now();

  -- 3. Job steps: the latest attempt decides the step's state; the latest completed attempt is
  --    the one billed (contract §5).
  insert into ledger.job_steps as js (client_id, job_id, step, pipeline, step_index, latest_attempt,
                                      latest_status, latest_at, billed_attempt, billed_units,
                                      completed_at)
  select r.client_id, r.job_id, r.step, min(r.pipeline), min(r.step_index),
         max(r.attempt),
         (array_agg(r.status order by r.attempt desc))[1],
         (array_agg(r.decided_at order by r.attempt desc))[1],
         max(r.attempt) filter (where r.status = 'completed'),
         (array_agg(r.units order by r.attempt desc) filter (where r.status = 'completed'))[1],
         (array_agg(r.finished_at order by r.attempt desc) filter (where r.status = 'completed'))[1]
    from ledger.step_runs r
   where (r.client_id, r.job_id, r.step) in (select distinct n.client_id, n.job_id, n.step from new_events n)
   group by r.client_id, r.job_id, r.step
   order by r.client_id, r.job_id, r.step
  on conflict (client_id, job_id, step) do update
     set latest_attempt = excluded.latest_attempt, latest_status = excluded.latest_status,
         latest_at = excluded.latest_at, billed_attempt = excluded.billed_attempt,
         billed_units = excluded.billed_units, completed_at = excluded.completed_at,
         step_index = excluded.step_index;

  -- 4. Jobs: the pipeline version they run, progress and status from their steps (contract §6).
  update ledger.jobs j
     set pipeline_version = v.version,
         steps_total = t.steps_total,
         steps_done = agg.done,
         status = case when agg.done >= t.steps_total then 'completed'
                       when agg.failed > 0 then 'failed'
                       else 'running' end,
         finished_at = case when agg.done >= t.steps_total then agg.last_finished
                            when agg.failed > 0 then agg.last_failed end,
         last_error = agg.last_error,
         last_error_step = agg.last_error_step
    from (
      select js.client_id, js.job_id, jj.pipeline, jj.pipeline_version, jj.steps_total,
             max(ps.added_in_version) as newest_step_version,
             count(*) filter (where js.latest_status in ('completed', 'skipped')) as done,
             count(*) filter (where js.latest_status = 'failed') as failed,
             max(js.latest_at) filter (where js.latest_status in ('completed', 'skipped')) as last_finished,
             max(js.latest_at) filter (where js.latest_status = 'failed') as last_failed,
             (array_agg(js.step order by js.latest_at desc) filter (where js.latest_status = 'failed'))[1]
               as last_error_step,
             (array_agg(concat_ws(': ', r.error_code, r.error_message) order by js.latest_at desc)
                filter (where js.latest_status = 'failed'))[1] as last_error
        from ledger.job_steps js
        join ledger.jobs jj on jj.client_id = js.client_id and jj.job_id = js.job_id
        left join ledger.pipeline_steps ps on ps.pipeline = js.pipeline and ps.step = js.step
        left join ledger.step_runs r
               on r.client_id = js.client_id and r.job_id = js.job_id and r.step = js.step
              and r.attempt = js.latest_attempt
       where (js.client_id, js.job_id) in (select distinct n.client_id, n.job_id from new_events n)
       group by js.client_id, js.job_id, jj.pipeline, jj.pipeline_version, jj.steps_total
    ) agg
    cross join lateral (
      select greatest(agg.pipeline_version, coalesce(agg.newest_step_version, 0)) as version
    ) v
    cross join lateral (
      -- A job that reports a step of a newer version counts that version's steps.
      select case when v.version > agg.pipeline_version
                  then (select count(*)::integer from ledger.pipeline_steps ps
                         where ps.pipeline = agg.pipeline and ps.added_in_version <= v.version)
                  else agg.steps_total end as steps_total
    ) t
   where j.client_id = agg.client_id and j.job_id = agg.job_id;

  -- 5. Tell listeners which clients have news (docs/api.md, live updates): one notification per
  --    client and batch on channel stepledger_jobs, delivered at commit.
  perform pg_notify('stepledger_jobs',
                    json_build_object('client_id', c.client_id, 'jobs', c.jobs,
                                      'changed_xid', v_xid)::text)
     from (select n.client_id, count(distinct n.job_id) as jobs
             from new_events n group by n.client_id) c;
  return null;
end
$$;
comment on function ledger.tg_events__apply_progress() is 'Folds a batch of new events into step runs, job steps and jobs.';

create or replace trigger apply_progress
  after insert on ledger.events
  referencing new table as new_events
  for each statement execute function ledger.tg_events__apply_progress();
