-- Progress and error analytics (issue 5): what jobs need for versioned step counts and live
-- polling, and the materialized views behind error statistics and step timings.
-- Functions are in db/functions/40_progress.sql and 70_analytics.sql, the HTTP surface in
-- db/views/10_api_jobs.sql and 40_analytics.sql, grants in db/policies/50_analytics.sql.

-- Which version of its pipeline a job runs: the version current when its first event arrived,
-- raised when the job reports a step that a later version added. steps_total counts the steps of
-- that version, so a pipeline that gains steps does not hold old jobs at 20/21 forever.
alter table ledger.jobs add column pipeline_version integer not null default 1;

-- The transaction that last changed the job (pg_current_xact_id()). Pollers keep a cursor taken
-- from their snapshot's xmin and ask for jobs with changed_xid >= cursor: a transaction that was
-- still running when they looked always has an id >= that xmin, so no change is ever missed
-- (docs/api.md, live updates).
alter table ledger.jobs add column changed_xid bigint not null default 0;

create index jobs_client_id_changed_xid_idx on ledger.jobs (client_id, changed_xid);
create index jobs_changed_xid_idx on ledger.jobs (changed_xid);

-- When each analytics view was last refreshed, how long it took and how many rows it holds.
create table ledger.analytics_refreshes (
  view_name text primary key,
  refreshed_at timestamptz not null,
  duration_ms numeric not null,
  row_count bigint not null
);
comment on table ledger.analytics_refreshes is 'Freshness of the analytics materialized views.';

-- Outcomes of finished attempts per client, UTC day of their end, pipeline, step, site and error
-- code ('' for attempts that did not fail, and for attempts without a source). The grain that
-- error statistics by day, by site and over a window are summed from.
create materialized view ledger.step_outcomes_daily as
select r.client_id,
       (r.finished_at at time zone 'UTC')::date as day,
       r.pipeline,
       r.step,
       coalesce(r.source, '') as source,
       case when r.status = 'failed' then coalesce(r.error_code, '') else '' end as error_code,
       count(*) filter (where r.status = 'completed') as completed,
       count(*) filter (where r.status = 'failed') as failed,
       count(*) filter (where r.status = 'skipped') as skipped,
       count(*) filter (where r.status = 'failed' and r.error_retryable) as retryable,
       min(r.finished_at) as first_at,
       max(r.finished_at) as last_at,
       (array_agg(r.error_message order by r.finished_at desc, r.job_id desc)
          filter (where r.status = 'failed'))[1] as sample_message
  from ledger.step_runs r
 where r.status <> 'started'
   and r.finished_at is not null
 group by 1, 2, 3, 4, 5, 6
with data;

create unique index step_outcomes_daily_key
  on ledger.step_outcomes_daily (client_id, day, pipeline, step, source, error_code);
create index step_outcomes_daily_day on ledger.step_outcomes_daily (day);

-- The same, all time: what GET /error_stats reads.
create materialized view ledger.step_outcomes_total as
select d.client_id, d.pipeline, d.step, d.source, d.error_code,
       sum(d.completed)::bigint as completed,
       sum(d.failed)::bigint as failed,
       sum(d.skipped)::bigint as skipped,
       sum(d.retryable)::bigint as retryable,
       min(d.first_at) as first_at,
       max(d.last_at) as last_at,
       (array_agg(d.sample_message order by d.last_at desc) filter (where d.sample_message is not null))[1]
         as sample_message
  from ledger.step_outcomes_daily d
 group by d.client_id, d.pipeline, d.step, d.source, d.error_code
with data;

create unique index step_outcomes_total_key
  on ledger.step_outcomes_total (client_id, pipeline, step, source, error_code);

-- Step timings per client, UTC day the attempt started, pipeline and step: the duration of every
-- completed attempt and the queue time before every attempt, as sorted arrays, so that exact
-- percentiles over any window of days are one unnest away.
-- Queue time: from the latest end, among the job's attempts that started earlier, to this
-- attempt's start (never negative); none for a job's first attempt.
create materialized view ledger.step_timings_daily as
with ordered as (
  select r.client_id, r.job_id, r.pipeline, r.step, r.status, r.started_at, r.finished_at,
         max(r.finished_at) over (partition by r.client_id, r.job_id
                                  order by r.started_at, r.step_index, r.attempt
                                  rows between unbounded preceding and 1 preceding) as ready_at
    from ledger.step_runs r
   where r.started_at is not null
)
select o.client_id,
       (o.started_at at time zone 'UTC')::date as day,
       o.pipeline,
       o.step,
       count(*) as attempts,
       count(*) filter (where o.status = 'completed' and o.finished_at is not null) as completed,
       coalesce(array_agg(extract(epoch from o.finished_at - o.started_at)::float8
                          order by o.finished_at - o.started_at)
                  filter (where o.status = 'completed' and o.finished_at is not null),
                '{}') as durations_s,
       coalesce(array_agg(greatest(0, extract(epoch from o.started_at - o.ready_at))::float8
                          order by greatest(0, extract(epoch from o.started_at - o.ready_at)))
                  filter (where o.ready_at is not null),
                '{}') as queues_s
  from ordered o
 group by 1, 2, 3, 4
with data;

create unique index step_timings_daily_key on ledger.step_timings_daily (client_id, day, pipeline, step);
create index step_timings_daily_day on ledger.step_timings_daily (day);
