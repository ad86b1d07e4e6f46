-- The refresh of the analytics materialized views (db/functions/50_analytics/10_access.sql
-- for who reads them). Error codes: 10_access.sql.

create or replace function ledger.refresh_analytics(p_max_age interval default interval '0')
returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
-- Refreshes the analytics materialized views concurrently (readers are never blocked), daily
-- outcomes before their all-time roll-up, and records each one's freshness. Views refreshed less
-- than p_max_age ago are left alone; when another refresh is running this one returns at once.
-- Called by `stepledger analytics refresh` (cron), by admins through POST /rpc/refresh_analytics.
declare
  v_view text;
  v_started timestamptz;
  v_rows bigint;
  v_done jsonb := '[]';
begin
  if not pg_try_advisory_xact_lock(hashtext('stepledger.refresh_analytics')) then
    return jsonb_build_object('refreshed', v_done, 'skipped', 'another refresh is running');
  end if;
  foreach v_view in array array['step_outcomes_daily', 'step_outcomes_total', 'step_timings_daily'] loop
    if exists (select from ledger.analytics_refreshes r
                where r.view_name = v_view and r.refreshed_at > clock_timestamp() - p_max_age) then
      continue;
    end if;
    v_started := clock_timestamp();
    execute format('refresh materialized view concurrently ledger.%I', v_view);
    execute format('select count(*) from ledger.%I', v_view) into v_rows;
    insert into ledger.analytics_refreshes as r (view_name, refreshed_at, duration_ms, row_count)
    values (v_view, v_started,
            round(extract(epoch from clock_timestamp() - v_started)::numeric * 1000, 1), v_rows)
    on conflict (view_name) do update
       set refreshed_at = excluded.refreshed_at, duration_ms = excluded.duration_ms,
           row_count = excluded.row_count;
    v_done := v_done || jsonb_build_object('view', v_view, 'rows', v_rows,
      'duration_ms', round(extract(epoch from clock_timestamp() - v_started)::numeric * 1000, 1));
  end loop;
  return jsonb_build_object('refreshed', v_done, 'skipped', null);
end
$$;
comment on function ledger.refresh_analytics(interval) is
  'Refreshes the analytics materialized views concurrently, skipping those younger than the given age.';

create or replace function ledger._analytics_refresh_costs()
returns table (view_name text, duration_ms numeric, row_count bigint)
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$
  -- How long each refresh took and how many rows the view holds: figures of every client's
  -- activity together, so admins only (clients read null in api.analytics_freshness).
  select r.view_name, r.duration_ms, r.row_count
    from ledger.analytics_refreshes r
   where auth.role() = 'admin'
$$;
comment on function ledger._analytics_refresh_costs() is
  'Private: duration and row count of each analytics refresh, for admins only (they count every client''s activity).';

create or replace function api.refresh_analytics(max_age_s integer default 0) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
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
