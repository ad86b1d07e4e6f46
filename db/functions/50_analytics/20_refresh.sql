-- The refresh of the analytics roll-ups (db/functions/50_analytics/10_access.sql
-- for who reads them). Error codes: 10_access.sql.

create or replace function ledger._refresh_analytics_days(p_client_id text, p_from date,
                                                          p_until date)
returns bigint[]
language plpgsql volatile set search_path = pg_catalog, pg_temp
-- Planned with the client and days: a router query per statement on a Citus cluster, index
-- ranges on a single node.
set plan_cache_mode = force_custom_plan
as $$
-- Rewrites one client's daily outcome and timing cells for the UTC days [p_from, p_until) from
-- its step runs (read by index on the client and the day), and carries the difference into its
-- all-time outcomes (ledger._add_to_outcomes_total). Returns the rows removed and written:
-- {daily outcomes removed, written, all-time outcomes removed, added, timings removed, written}.
declare
  v_from timestamptz := p_from::timestamp at time zone 'UTC';
  v_until timestamptz := p_until::timestamp at time zone 'UTC';
  v_removed jsonb;
  v_added jsonb;
  v_counts bigint[] := '{}';
  v_n bigint;
begin
  -- The cells as they were and as they are, summed per all-time key (with the sign they carry).
  with removed as (
    delete from ledger.step_outcomes_daily d
     where d.client_id = p_client_id and d.day >= p_from and d.day < p_until
    returning d.pipeline, d.step, d.source, d.error_code, d.completed, d.failed, d.skipped,
              d.retryable
  )
  select jsonb_agg(to_jsonb(k))
    into v_removed
    from (select r.pipeline, r.step, r.source, r.error_code, -sum(r.completed) as completed,
                 -sum(r.failed) as failed, -sum(r.skipped) as skipped,
                 -sum(r.retryable) as retryable, count(*) as cells
            from removed r group by 1, 2, 3, 4) k;
  v_counts := v_counts || coalesce((select sum((x->>'cells')::bigint)
                                      from jsonb_array_elements(v_removed) x), 0);
  with added as (
    insert into ledger.step_outcomes_daily (client_id, day, pipeline, step, source, error_code,
                                            completed, failed, skipped, retryable, first_at,
                                            last_at, sample_message)
    select r.client_id,
           (r.finished_at at time zone 'UTC')::date,
           r.pipeline,
           r.step,
           coalesce(r.source, ''),
           case when r.status = 'failed' then coalesce(r.error_code, '') else '' end,
           count(*) filter (where r.status = 'completed'),
           count(*) filter (where r.status = 'failed'),
           count(*) filter (where r.status = 'skipped'),
           count(*) filter (where r.status = 'failed' and r.error_retryable),
           min(r.finished_at),
           max(r.finished_at),
           (array_agg(r.error_message order by r.finished_at desc, r.job_id desc)
              filter (where r.status = 'failed'))[1]
      from ledger.step_runs r
     where r.client_id = p_client_id
       and r.finished_at >= v_from and r.finished_at < v_until
       and r.status <> 'started'
     group by 1, 2, 3, 4, 5, 6
    returning step_outcomes_daily.pipeline, step_outcomes_daily.step, step_outcomes_daily.source,
              step_outcomes_daily.error_code, step_outcomes_daily.completed,
              step_outcomes_daily.failed, step_outcomes_daily.skipped,
              step_outcomes_daily.retryable
  )
  select jsonb_agg(to_jsonb(k))
    into v_added
    from (select a.pipeline, a.step, a.source, a.error_code, sum(a.completed) as completed,
                 sum(a.failed) as failed, sum(a.skipped) as skipped,
                 sum(a.retryable) as retryable, count(*) as cells
            from added a group by 1, 2, 3, 4) k;
  v_counts := v_counts || coalesce((select sum((x->>'cells')::bigint)
                                      from jsonb_array_elements(v_added) x), 0);
  v_counts := v_counts || ledger._add_to_outcomes_total(
                            p_client_id, coalesce(v_removed, '[]') || coalesce(v_added, '[]'));

  delete from ledger.step_timings_daily t
   where t.client_id = p_client_id and t.day >= p_from and t.day < p_until;
  get diagnostics v_n = row_count;
  v_counts := v_counts || v_n;
  -- Queue time: from the latest end, among the job's attempts that started earlier (in the order
  -- started_at, step_index, attempt), to this attempt's start (never negative); none for a job's
  -- first attempt. The earlier attempts may lie before p_from: looked up by the job's key.
  insert into ledger.step_timings_daily (client_id, day, pipeline, step, attempts, completed,
                                         durations_s, queues_s)
  select o.client_id,
         (o.started_at at time zone 'UTC')::date,
         o.pipeline,
         o.step,
         count(*),
         count(*) filter (where o.status = 'completed' and o.finished_at is not null),
         coalesce(array_agg(extract(epoch from o.finished_at - o.started_at)::float8
                            order by o.finished_at - o.started_at)
                    filter (where o.status = 'completed' and o.finished_at is not null),
                  '{}'),
         coalesce(array_agg(greatest(0, extract(epoch from o.started_at - o.ready_at))::float8
                            order by greatest(0, extract(epoch from o.started_at - o.ready_at)))
                    filter (where o.ready_at is not null),
                  '{}')
    from (select r.client_id, r.pipeline, r.step, r.status, r.started_at, r.finished_at,
                 (select max(e.finished_at) from ledger.step_runs e
                   where e.client_id = p_client_id and e.job_id = r.job_id
                     and e.started_at is not null
                     and (e.started_at, e.step_index, e.attempt)
                         < (r.started_at, r.step_index, r.attempt)) as ready_at
            from ledger.step_runs r
           where r.client_id = p_client_id
             and r.started_at >= v_from and r.started_at < v_until) o
   group by 1, 2, 3, 4;
  get diagnostics v_n = row_count;
  return v_counts || v_n;
end
$$;
comment on function ledger._refresh_analytics_days(text, date, date) is
  'Rewrites one client''s daily outcome and timing cells for a range of UTC days from its step runs, and carries the difference into its all-time outcomes.';

create or replace function ledger._add_to_outcomes_total(p_client_id text, p_deltas jsonb)
returns bigint[]
language plpgsql volatile set search_path = pg_catalog, pg_temp
set plan_cache_mode = force_custom_plan
as $$
-- Carries rewritten daily cells into one client's all-time outcomes, key by key: the counts by
-- difference (p_deltas: removed cells negative, written ones positive), the first and last end and
-- the sample message from the key's earliest and latest daily cells (one index probe each), so
-- the work follows the keys rewritten, not the days of history. A key left without daily cells
-- goes. Returns {keys removed, keys added}.
declare
  v_removed bigint;
  v_added bigint;
begin
  with keys as (
    select d.pipeline, d.step, d.source, d.error_code, sum(d.completed)::bigint as completed,
           sum(d.failed)::bigint as failed, sum(d.skipped)::bigint as skipped,
           sum(d.retryable)::bigint as retryable
      from jsonb_to_recordset(p_deltas) as d(pipeline text, step text, source text,
                                             error_code text, completed bigint, failed bigint,
                                             skipped bigint, retryable bigint)
     group by 1, 2, 3, 4
  ),
  ends as (
    select k.*, f.first_at, l.last_at, m.sample_message
      from keys k
     cross join lateral (
       select d.first_at from ledger.step_outcomes_daily d
        where d.client_id = p_client_id and d.pipeline = k.pipeline and d.step = k.step
          and d.source = k.source and d.error_code = k.error_code
        order by d.day limit 1) f
     cross join lateral (
       select d.last_at from ledger.step_outcomes_daily d
        where d.client_id = p_client_id and d.pipeline = k.pipeline and d.step = k.step
          and d.source = k.source and d.error_code = k.error_code
        order by d.day desc limit 1) l
      left join lateral (
       select d.sample_message from ledger.step_outcomes_daily d
        where d.client_id = p_client_id and d.pipeline = k.pipeline and d.step = k.step
          and d.source = k.source and d.error_code = k.error_code
          and d.sample_message is not null
        order by d.day desc, d.last_at desc limit 1) m on true
  ),
  upserted as (
    insert into ledger.step_outcomes_total as t (client_id, pipeline, step, source, error_code,
                                                 completed, failed, skipped, retryable, first_at,
                                                 last_at, sample_message)
    select p_client_id, e.pipeline, e.step, e.source, e.error_code, e.completed, e.failed,
           e.skipped, e.retryable, e.first_at, e.last_at, e.sample_message
      from ends e
     order by e.pipeline, e.step, e.source, e.error_code
    on conflict (client_id, pipeline, step, source, error_code) do update
       set completed = t.completed + excluded.completed, failed = t.failed + excluded.failed,
           skipped = t.skipped + excluded.skipped, retryable = t.retryable + excluded.retryable,
           first_at = excluded.first_at, last_at = excluded.last_at,
           sample_message = excluded.sample_message
    returning t.xmax = 0 as added  -- a new key, not an update
  )
  select count(*) filter (where u.added) into v_added from upserted u;
  -- keys whose every daily cell went
  delete from ledger.step_outcomes_total t
   where t.client_id = p_client_id
     and (t.pipeline, t.step, t.source, t.error_code) in (
           select d.pipeline, d.step, d.source, d.error_code
             from jsonb_to_recordset(p_deltas) as d(pipeline text, step text, source text,
                                                    error_code text))
     and not exists (select 1 from ledger.step_outcomes_daily d
                      where d.client_id = p_client_id and d.pipeline = t.pipeline
                        and d.step = t.step and d.source = t.source
                        and d.error_code = t.error_code);
  get diagnostics v_removed = row_count;
  return array[v_removed, v_added];
end
$$;
comment on function ledger._add_to_outcomes_total(text, jsonb) is
  'Carries rewritten daily outcome cells into one client''s all-time outcomes (counts by difference, first and last from the daily cells).';

create or replace function ledger.refresh_analytics(p_max_age interval default interval '0')
returns jsonb
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
set plan_cache_mode = force_custom_plan
as $$
-- Rewrites the error statistics and step timings of the client-days named in
-- ledger.analytics_changes, and only those (ADR 0016), carrying the difference into the all-time
-- outcomes; change-log rows its starting snapshot saw are absorbed. Readers keep the old cells
-- until the new ones commit; ingest only appends to the change log. Skipped when the last refresh
-- is younger than p_max_age.
-- Called by the scheduler every few seconds, `stepledger analytics refresh`, and admins through
-- POST /rpc/refresh_analytics.
declare
  v_started timestamptz := clock_timestamp();
  v_snapshot pg_snapshot;
  v_days record;
  v_client text;
  v_clients text[] := '{}';
  v_counts bigint[];
  v_rows bigint[] := array[0, 0, 0, 0, 0, 0];
  v_ms numeric;
  v_done jsonb;
begin
  -- One refresh at a time; a caller that finds one running waits for it (a short wait: each
  -- refresh rewrites only what changed) and then refreshes what changed since, so a refresh asked
  -- for after an ingest always sees that ingest.
  perform pg_advisory_xact_lock(hashtext('stepledger.refresh_analytics'));
  if p_max_age > interval '0' and (select min(r.refreshed_at) from ledger.analytics_refreshes r)
                                  > clock_timestamp() - p_max_age then
    return jsonb_build_object('refreshed', '[]'::jsonb, 'skipped', null);
  end if;
  -- Taken before the statements below, whose snapshots are at least as recent.
  v_snapshot := pg_current_snapshot();
  for v_days in
    select * from ledger._changed_ranges('ledger.analytics_changes', 'day_from', 'day_to', v_snapshot)
  loop
    for v_client in
      select v_days.client_id where v_days.client_id <> ''
      union
      select c.client_id::text from ledger.clients c where v_days.client_id = ''
    loop
      v_counts := ledger._refresh_analytics_days(v_client, v_days.range_from, v_days.range_until);
      v_rows := array[v_rows[1] + v_counts[1], v_rows[2] + v_counts[2], v_rows[3] + v_counts[3],
                      v_rows[4] + v_counts[4], v_rows[5] + v_counts[5], v_rows[6] + v_counts[6]];
      if not v_client = any(v_clients) then
        v_clients := v_clients || v_client;
      end if;
    end loop;
  end loop;
  delete from ledger.analytics_changes ch where pg_visible_in_snapshot(ch.xid, v_snapshot);

  -- Each view's freshness: as of the snapshot this refresh started from; the rows it holds kept
  -- by difference rather than counted.
  v_ms := round(extract(epoch from clock_timestamp() - v_started)::numeric * 1000, 1);
  with written (view_name, removed, added) as (
    values ('step_outcomes_daily', v_rows[1], v_rows[2]),
           ('step_outcomes_total', v_rows[3], v_rows[4]),
           ('step_timings_daily', v_rows[5], v_rows[6])
  ),
  recorded as (
    insert into ledger.analytics_refreshes as r (view_name, refreshed_at, duration_ms, row_count)
    select w.view_name, v_started, v_ms, w.added - w.removed from written w
    on conflict (view_name) do update
       set refreshed_at = excluded.refreshed_at, duration_ms = excluded.duration_ms,
           row_count = r.row_count + excluded.row_count
    returning r.view_name, r.row_count
  )
  select jsonb_agg(jsonb_build_object('view', c.view_name, 'rows', c.row_count,
                                      'rows_written', w.added, 'rows_removed', w.removed,
                                      'duration_ms', v_ms)
                   order by c.view_name)
    into v_done
    from recorded c join written w on w.view_name = c.view_name;
  return jsonb_build_object('refreshed', v_done, 'skipped', null, 'clients', cardinality(v_clients));
end
$$;
comment on function ledger.refresh_analytics(interval) is
  'Rewrites the error statistics and step timings of the client-days that changed (skipped when refreshed less than the given age ago).';

create or replace function ledger._analytics_refresh_costs()
returns table (view_name text, duration_ms numeric, row_count bigint)
language sql stable security definer set search_path = pg_catalog, pg_temp as $$
  -- How long each refresh took and how many rows the view holds: figures of every client's
  -- activity together, so admins only (clients read null in api.analytics_freshness).
  select r.view_name, r.duration_ms, r.row_count
    from ledger.analytics_refreshes r
   where auth.role() = 'admin'
$$;
comment on function ledger._analytics_refresh_costs() is
  'Private: duration and row count of each analytics refresh, for admins only (they count every client''s activity).';

create or replace function api.refresh_analytics(max_age_s integer default 0) returns jsonb
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
-- Admins: refresh error statistics and step timings now (or when older than max_age_s seconds).
begin
  if max_age_s is null or max_age_s < 0 then
    raise exception 'max_age_s must be 0 or more, not %', max_age_s using errcode = 'SL501';
  end if;
  return ledger.refresh_analytics(make_interval(secs => max_age_s));
end
$$;
comment on function api.refresh_analytics(integer) is
  'Admins: refresh the error statistics and step timings now, or only those older than max_age_s seconds. Returns what was refreshed and how long it took.';
