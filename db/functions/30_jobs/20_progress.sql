-- Live progress: ingest (ledger._ingest_batch, 30_ingest.sql) hands each batch of accepted
-- events to ledger._fold_progress, which folds them into step runs, the latest attempt of each
-- step, the jobs, the billing change log and the job.* notifications, in a few set-based
-- statements per batch. No trigger is involved (ADR 0014): every statement here reads the batch
-- it is given and probes the tables by key, so no statement needs a transition table and each
-- one touches only the rows of the batch's jobs (what a distributed table needs, ADR 0012).
--
-- Concurrency: the first statement takes a transaction-level advisory lock per job of the batch,
-- in one global order (no deadlock), held until commit; it works for jobs that do not exist yet.
-- Every later statement takes a fresh snapshot (READ COMMITTED), so a batch that waited for a
-- lock sees the other batch's committed step runs and job: no lost update. Only ingest writes
-- ledger.jobs, and it writes each job once per batch (one row version, one round of index
-- entries), which keeps the upkeep cheap.
--
-- Edge cases (tests/test_progress*.py, tests/test_write_path.py):
-- - retries: every attempt is a step run; the highest attempt number decides the step;
-- - out-of-order and late events: within an attempt a terminal status beats `started` whatever
--   the arrival order, and between terminal events the later occurred_at wins; an attempt that
--   arrives late never displaces a higher attempt;
-- - skipped steps count as done;
-- - a pipeline that gained steps: a job counts the steps of the pipeline version it runs
--   (ledger.jobs.pipeline_version), raised when it reports a step added by a later version;
-- - attempts left `started` when the job failed, moved on or stalled, and stalled jobs, are
--   derived at read time (db/functions/30_jobs/50_api_jobs_views.sql), so no background job is needed.

-- The statement trigger that did this until ADR 0014 (it read the batch from a transition table)
-- is dropped by migration 0080; its function here.
drop function if exists ledger.tg_events__apply_progress();

create or replace function ledger._fold_client_progress(p_client_id text, p_events ledger.events[])
returns void
language plpgsql volatile set search_path = pg_catalog, pg_temp
-- The statements below have two parameters, the client and the batch: planned once per
-- connection and kept (generic plans), with the table sizes of the call that planned them.
-- Only one shape is right for every later call: probe step_runs, job_steps and jobs by key,
-- one index lookup per key of the batch. So they are read in LATERAL subqueries (always a
-- nested loop, one probe per key), which probe by index even in a plan made on empty or freshly
-- analyzed tables (tests/test_ingest_plans.py; docs/benchmarks.md, "Ingest plans").
set plan_cache_mode = force_generic_plan
as $$
-- Folds a batch of accepted events (rows just stored in ledger.events) into ledger.step_runs,
-- ledger.job_steps and ledger.jobs; logs the (client, month) pairs whose billed usage changed in
-- ledger.billing_changes and the (client, days) of its jobs in ledger.analytics_changes; writes
-- the job.* messages of the jobs whose status changed; and tells listeners which clients have
-- news. Called by ingest with the events it stored, and by nothing
-- else: the events of the batch are all it reads besides the rows of their jobs. p_client_id:
-- the one client of the events, or null when they may be of several (a single node's batch);
-- given, every table read names it, which makes each statement a router query on a Citus
-- coordinator (whose custom plans drop the "or p_client_id is null").
declare
  v_xid bigint := pg_current_xact_id()::text::bigint;
  v_transitions jsonb;
  v_before jsonb;
  v_news jsonb;
begin
  if coalesce(cardinality(p_events), 0) = 0 then
    return;
  end if;

  -- 1. Lock the batch's jobs: one advisory lock per job (64-bit hash of client and job id).
  perform pg_advisory_xact_lock(k.key)
     from (select distinct hashtextextended(n.client_id || '/' || n.job_id, 0) as key
             from unnest(p_events) n
            order by 1) k;

  -- 2. Step runs and job steps, in one statement.
  --    Step runs: merge the batch into each attempt. A terminal status (completed, failed,
  --    skipped) beats started whatever the arrival order; between terminal events the later
  --    occurred_at decides. started_at is the earliest started event.
  --    Job steps: the latest attempt decides the step's state; the latest completed attempt is
  --    the one billed (contract §5). Both come from the attempts this batch touched (as merged,
  --    from the step runs upsert) and the job step as it was: no step run is read again, except
  --    when an attempt that was billed is no longer completed (a later failure of the same
  --    attempt), where the highest other completed attempt is looked up.
  --    The same statement logs the billing change: the month a billed completion joined and,
  --    when it moved or changed, the month it left. `before` is read in the statement's
  --    snapshot, so it holds the job steps as they were before the upsert.
  with per_attempt as (
    select distinct on (n.client_id, n.job_id, n.step, n.attempt)
           n.client_id, n.job_id, n.step, n.attempt, n.pipeline, n.status, n.occurred_at,
           n.units, n.error_code, n.error_message, n.error_retryable, n.source,
           min(n.occurred_at) filter (where n.status = 'started') over w as started_at,
           count(*) over w as events
      from unnest(p_events) n
    window w as (partition by n.client_id, n.job_id, n.step, n.attempt
                 order by n.status <> 'started' desc, n.occurred_at desc, n.received_at desc,
                          n.vault_id desc
                 rows between unbounded preceding and unbounded following)
     -- the window's order is the one DISTINCT ON needs: one sort for both
     order by n.client_id, n.job_id, n.step, n.attempt,
              n.status <> 'started' desc, n.occurred_at desc, n.received_at desc, n.vault_id desc
  ),
  runs as (
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
           updated_at = excluded.updated_at
    returning r.client_id, r.job_id, r.step, r.attempt, r.pipeline, r.step_index, r.status,
              r.decided_at, r.finished_at, r.units
  ),
  touched as (
    -- per step of the batch: its highest touched attempt, and its highest touched completed one
    select t.client_id, t.job_id, t.step, min(t.pipeline) as pipeline, min(t.step_index) as step_index,
           max(t.attempt) as latest_attempt,
           (array_agg(t.status order by t.attempt desc))[1] as latest_status,
           (array_agg(t.decided_at order by t.attempt desc))[1] as latest_at,
           max(t.attempt) filter (where t.status = 'completed') as billed_attempt,
           (array_agg(t.units order by t.attempt desc) filter (where t.status = 'completed'))[1]
             as billed_units,
           (array_agg(t.finished_at order by t.attempt desc) filter (where t.status = 'completed'))[1]
             as completed_at,
           array_agg(t.attempt) as attempts
      from runs t
     group by t.client_id, t.job_id, t.step
  ),
  before as (
    select t.client_id, t.job_id, t.step, o.pipeline, o.step_index, o.latest_attempt,
           o.latest_status, o.latest_at, o.billed_attempt, o.billed_units, o.completed_at
      from touched t
     cross join lateral (
       select o.* from ledger.job_steps o
        where (o.client_id = p_client_id or p_client_id is null)
          and o.client_id = t.client_id and o.job_id = t.job_id and o.step = t.step
        limit 1) o
  ),
  merged as (
    select t.client_id, t.job_id, t.step, coalesce(o.pipeline, t.pipeline) as pipeline,
           least(o.step_index, t.step_index) as step_index,
           -- latest: the touched one unless the step already had a higher attempt
           case when o.latest_attempt > t.latest_attempt then o.latest_attempt else t.latest_attempt end
             as latest_attempt,
           case when o.latest_attempt > t.latest_attempt then o.latest_status else t.latest_status end
             as latest_status,
           case when o.latest_attempt > t.latest_attempt then o.latest_at else t.latest_at end
             as latest_at,
           case when k.demoted then f.attempt
                when t.billed_attempt >= o.billed_attempt or o.billed_attempt is null
                  then t.billed_attempt else o.billed_attempt end as billed_attempt,
           case when k.demoted then f.units
                when t.billed_attempt >= o.billed_attempt or o.billed_attempt is null
                  then t.billed_units else o.billed_units end as billed_units,
           case when k.demoted then f.finished_at
                when t.billed_attempt >= o.billed_attempt or o.billed_attempt is null
                  then t.completed_at else o.completed_at end as completed_at
      from touched t
      left join before o on o.client_id = t.client_id and o.job_id = t.job_id and o.step = t.step
     cross join lateral (
       -- The attempt billed before is no longer completed (a later failure of that attempt)
       -- and no higher attempt completed: the bill falls back to a lower completed attempt.
       select coalesce(o.billed_attempt = any(t.attempts)
                       and (t.billed_attempt is null or t.billed_attempt < o.billed_attempt),
                       false) as demoted
     ) k
     left join lateral (
       -- the highest completed attempt other than the demoted one: untouched by this batch (those
       -- are unchanged in this statement's snapshot) or touched and completed (t.billed_attempt)
       select x.attempt, x.units, x.finished_at
         from (select r.attempt, r.units, r.finished_at from ledger.step_runs r
                where k.demoted and (r.client_id = p_client_id or p_client_id is null)
                  and r.client_id = t.client_id and r.job_id = t.job_id
                  and r.step = t.step and r.status = 'completed'
                  and not (r.attempt = any(t.attempts))
               union all
               select t.billed_attempt, t.billed_units, t.completed_at
                where k.demoted and t.billed_attempt is not null) x
        order by x.attempt desc
        limit 1
     ) f on true
  ),
  upserted as (
    insert into ledger.job_steps as js (client_id, job_id, step, pipeline, step_index, latest_attempt,
                                        latest_status, latest_at, billed_attempt, billed_units,
                                        completed_at)
    select m.client_id, m.job_id, m.step, m.pipeline, m.step_index, m.latest_attempt,
           m.latest_status, m.latest_at, m.billed_attempt, m.billed_units, m.completed_at
      from merged m
     order by m.client_id, m.job_id, m.step
    on conflict (client_id, job_id, step) do update
       set latest_attempt = excluded.latest_attempt, latest_status = excluded.latest_status,
           latest_at = excluded.latest_at, billed_attempt = excluded.billed_attempt,
           billed_units = excluded.billed_units, completed_at = excluded.completed_at,
           step_index = excluded.step_index
    returning js.client_id, js.job_id, js.step, js.completed_at, js.billed_units, js.pipeline
  )
  -- The transaction id is this one's, given as a value: on a Citus cluster a default would be
  -- the worker's own transaction id, which the usage refresh's snapshot (the coordinator's) does
  -- not describe (ledger._changed_ranges).
  insert into ledger.billing_changes (client_id, period_from, period_to, reason, xid)
  select distinct x.client_id, x.period, x.period, 'completion', v_xid::text::xid8
    from upserted u
    left join before b on b.client_id = u.client_id and b.job_id = u.job_id and b.step = u.step
   cross join lateral (values (u.client_id, ledger._month(b.completed_at)),
                              (u.client_id, ledger._month(u.completed_at))) as x(client_id, period)
   where (b.completed_at, b.billed_units, b.pipeline) is distinct from
         (u.completed_at, u.billed_units, u.pipeline)
     and x.period is not null;

  -- 4. Jobs: create or update each job once: time span, the pipeline version it runs, progress
  --    and status from its steps (contract §6), and the transaction that changed it. The status
  --    each job had before (`v_before`) gives the transitions that notifications are written
  --    for (70_notifications/20_outbox.sql). It is read in a statement of its own: on a Citus
  --    cluster a CTE of the upsert's statement read the jobs after the upsert (ADR 0012). The
  --    upsert logs the days of each job for the analytics refresh (50_analytics/20_refresh.sql).
  select jsonb_object_agg(o.client_id || '/' || o.job_id, o.status) into v_before
    from ledger.jobs o
   where (o.client_id = p_client_id or p_client_id is null)
     and (o.client_id, o.job_id) in (select n.client_id, n.job_id from unnest(p_events) n);
  with batch as (
    select n.client_id, n.job_id, min(n.pipeline) as pipeline, min(n.occurred_at) as first_at,
           max(n.occurred_at) as last_at, count(*) as events
      from unnest(p_events) n
     group by n.client_id, n.job_id
  ),
  upserted as (
    insert into ledger.jobs as j (client_id, job_id, pipeline, pipeline_version, steps_total,
                                  steps_done, status, started_at, updated_at, finished_at,
                                  last_error, last_error_step, last_error_retryable, retries,
                                  last_received_at, events, changed_xid)
    select b.client_id, b.job_id, b.pipeline, v.version, t.steps_total, a.done,
           case when a.done >= t.steps_total then 'completed'
                when a.failed > 0 then 'failed'
                else 'running' end,
           least(o.started_at, b.first_at), greatest(o.updated_at, b.last_at),
           case when a.done >= t.steps_total then a.last_finished
                when a.failed > 0 then a.last_failed end,
           a.last_error, a.last_error_step, a.last_error_retryable, a.retries, now(),
           coalesce(o.events, 0) + b.events, v_xid
      from batch b
      join ledger.pipelines p on p.pipeline = b.pipeline
      left join lateral (
        select o.* from ledger.jobs o
         where (o.client_id = p_client_id or p_client_id is null)
           and o.client_id = b.client_id and o.job_id = b.job_id
         limit 1
      ) o on true
     cross join lateral (
       select max(ps.added_in_version) as newest_step_version,
              count(*) filter (where js.latest_status in ('completed', 'skipped')) as done,
              count(*) filter (where js.latest_status = 'failed') as failed,
              max(js.latest_at) filter (where js.latest_status in ('completed', 'skipped')) as last_finished,
              max(js.latest_at) filter (where js.latest_status = 'failed') as last_failed,
              (array_agg(js.step order by js.latest_at desc) filter (where js.latest_status = 'failed'))[1]
                as last_error_step,
              (array_agg(concat_ws(': ', r.error_code, r.error_message) order by js.latest_at desc)
                 filter (where js.latest_status = 'failed'))[1] as last_error,
              (array_agg(r.error_retryable order by js.latest_at desc)
                 filter (where js.latest_status = 'failed'))[1] as last_error_retryable,
              coalesce(sum(js.latest_attempt - 1), 0)::integer as retries
         from ledger.job_steps js
         left join ledger.pipeline_steps ps on ps.pipeline = js.pipeline and ps.step = js.step
         left join lateral (
           -- the error of a failed step, the only one the aggregates read: no probe for the others
           select r.error_code, r.error_message, r.error_retryable from ledger.step_runs r
            where js.latest_status = 'failed'
              and (r.client_id = p_client_id or p_client_id is null)
              and r.client_id = js.client_id and r.job_id = js.job_id
              and r.step = js.step and r.attempt = js.latest_attempt
            limit 1
         ) r on true
        where (js.client_id = p_client_id or p_client_id is null)
          and js.client_id = b.client_id and js.job_id = b.job_id
     ) a
     cross join lateral (
       -- A new job runs the current version; one that reports a step of a newer version moves to it.
       select coalesce(o.pipeline_version, p.version) as base_version,
              greatest(coalesce(o.pipeline_version, p.version), coalesce(a.newest_step_version, 0))
                as version
     ) v
     cross join lateral (
       select case when o.job_id is null and v.version = v.base_version then p.steps_total
                   when v.version = v.base_version then o.steps_total
                   else (select count(*)::integer from ledger.pipeline_steps ps
                          where ps.pipeline = b.pipeline and ps.added_in_version <= v.version)
              end as steps_total
     ) t
     order by b.client_id, b.job_id
    on conflict (client_id, job_id) do update
       set pipeline_version = excluded.pipeline_version, steps_total = excluded.steps_total,
           steps_done = excluded.steps_done, status = excluded.status,
           started_at = excluded.started_at, updated_at = excluded.updated_at,
           finished_at = excluded.finished_at, last_error = excluded.last_error,
           last_error_step = excluded.last_error_step,
           last_error_retryable = excluded.last_error_retryable, retries = excluded.retries,
           last_received_at = excluded.last_received_at,
           events = excluded.events, changed_xid = excluded.changed_xid
    returning j.client_id, j.job_id, j.status, j.started_at, j.updated_at
  ),
  -- Error statistics and step timings: the UTC days from each job's first to its last event hold
  -- every attempt whose outcome, duration or queue time this batch can change (an attempt's
  -- queue time depends on the job's earlier attempts). Same transaction id as the billing log.
  analytics_logged as (
    insert into ledger.analytics_changes (client_id, day_from, day_to, xid)
    select distinct u.client_id, (u.started_at at time zone 'UTC')::date,
           (u.updated_at at time zone 'UTC')::date, v_xid::text::xid8
      from upserted u
  )
  select jsonb_agg(jsonb_build_object('client_id', u.client_id, 'job_id', u.job_id,
                                      'before', v_before->>(u.client_id || '/' || u.job_id),
                                      'after', u.status)
                   order by u.client_id, u.job_id)
            -- a new job is news when it starts in a final state; a known one when its status changed
            filter (where u.status is distinct from
                           coalesce(v_before->>(u.client_id || '/' || u.job_id), 'running')),
         (select jsonb_agg(json_build_object('client_id', c.client_id, 'jobs', c.jobs,
                                             'changed_xid', v_xid)::text order by c.client_id)
            from (select u.client_id, count(*) as jobs from upserted u group by u.client_id) c)
    into v_transitions, v_news
    from upserted u;
  if v_transitions is not null then
    perform ledger._enqueue_job_transitions(p_client_id, v_transitions);
  end if;

  -- 5. Tell listeners which clients have news (docs/api.md, live updates): one notification per
  --    client and batch on channel stepledger_jobs, delivered at commit, with the number of its
  --    jobs the batch changed (one upserted row each).
  perform pg_notify('stepledger_jobs', n.news) from jsonb_array_elements_text(v_news) n(news);
end
$$;
comment on function ledger._fold_client_progress(text, ledger.events[]) is
  'Folds accepted events of a batch (one client''s, or every client''s when p_client_id is null) into step runs, job steps, jobs, the billing change log and job notifications.';

create or replace function ledger._fold_progress(p_events ledger.events[]) returns void
language plpgsql volatile set search_path = pg_catalog, pg_temp as $$
-- On a single node the whole batch is folded at once. On a Citus cluster, one client at a time
-- (a bound ingest token's batch is one client): each statement of ledger._fold_client_progress
-- then names the client of every table it reads, a router query on the worker that holds that
-- client (ADR 0012). Either way each call locks its jobs in one order, and clients are taken in
-- one order, so two batches cannot deadlock.
declare
  v_batch record;
begin
  if cardinality(p_events) = 1 then
    perform ledger._fold_client_progress(p_events[1].client_id, p_events);
  elsif not exists (select from pg_extension where extname = 'citus') then
    perform ledger._fold_client_progress(null, p_events);
  else
    -- (the batch split in one pass over it)
    for v_batch in select n.client_id, array_agg(n) as events
                     from unnest(p_events) n group by n.client_id order by n.client_id loop
      perform ledger._fold_client_progress(v_batch.client_id, v_batch.events);
    end loop;
  end if;
end
$$;
comment on function ledger._fold_progress(ledger.events[]) is
  'Folds a batch of accepted events into step runs, job steps, jobs, the billing change log and job notifications: at once on a single node, client by client on a Citus cluster (called by ingest).';
