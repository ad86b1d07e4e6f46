-- Step timings per pipeline and step, from the materialized roll-up (10_access.sql).

create or replace function api.step_durations(
  since date default null,
  until date default null,
  client text default null
) returns table (
  pipeline text, step text, step_index integer, attempts bigint, completed bigint,
  p50_s numeric, p95_s numeric, max_s numeric, mean_s numeric,
  queue_p50_s numeric, queue_p95_s numeric, queue_max_s numeric,
  window_start date, window_end date, refreshed_at timestamptz
)
language plpgsql stable set search_path = pg_catalog, pg_temp as $$
#variable_conflict use_column
-- Duration of completed attempts and queue time before attempts, per (pipeline, step), over the
-- attempts that started in a window of UTC days (default: the last 7 days, today included).
-- Exact percentiles (linear interpolation) over the caller's visible clients.
declare
  w record := ledger._window(step_durations.since, step_durations.until, 7);
begin
  return query
  with cells as (
    select t.pipeline, t.step, t.attempts, t.completed, t.durations_s, t.queues_s
      from ledger.visible_step_timings_daily t
     where t.day between w.since and w.until
       and (step_durations.client is null or t.client_id = step_durations.client)
  ),
  counts as (
    select c.pipeline, c.step, sum(c.attempts)::bigint as attempts, sum(c.completed)::bigint as completed
      from cells c group by c.pipeline, c.step
  ),
  durations as (
    select c.pipeline, c.step,
           percentile_cont(0.5) within group (order by d) as p50,
           percentile_cont(0.95) within group (order by d) as p95,
           max(d) as mx, avg(d) as mean
      from cells c cross join unnest(c.durations_s) d
     group by c.pipeline, c.step
  ),
  queues as (
    select c.pipeline, c.step,
           percentile_cont(0.5) within group (order by q) as p50,
           percentile_cont(0.95) within group (order by q) as p95,
           max(q) as mx
      from cells c cross join unnest(c.queues_s) q
     group by c.pipeline, c.step
  )
  select n.pipeline, n.step, ps.step_index, n.attempts, n.completed,
         round(d.p50::numeric, 3), round(d.p95::numeric, 3), round(d.mx::numeric, 3),
         round(d.mean::numeric, 3),
         round(q.p50::numeric, 3), round(q.p95::numeric, 3), round(q.mx::numeric, 3),
         w.since, w.until,
         (select r.refreshed_at from ledger.analytics_refreshes r where r.view_name = 'step_timings_daily')
    from counts n
    left join durations d on d.pipeline = n.pipeline and d.step = n.step
    left join queues q on q.pipeline = n.pipeline and q.step = n.step
    left join ledger.pipeline_steps ps on ps.pipeline = n.pipeline and ps.step = n.step
   order by n.pipeline, ps.step_index, n.step;
end
$$;
comment on function api.step_durations(date, date, text) is
  'Step timings per pipeline and step over a window of UTC days (default: last 7): p50, p95, max and mean duration of completed attempts, p50, p95 and max queue time before attempts. As of refreshed_at.';
