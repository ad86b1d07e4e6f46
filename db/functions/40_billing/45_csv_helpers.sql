-- Helpers of the CSV exports (db/functions/40_billing/60_web_exports_views.sql).

create or replace function ledger._csv_instant(p_at timestamptz) returns text
language sql stable parallel safe set search_path = pg_catalog, pg_temp as $$
  select to_char(p_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
$$;
comment on function ledger._csv_instant(timestamptz) is
  'An instant as ISO 8601 in UTC with a Z (2026-12-07T09:05:06.123Z), for CSV exports.';
grant execute on function ledger._csv_instant(timestamptz) to client, admin;
