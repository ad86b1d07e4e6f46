-- Grants for progress and error analytics (db/functions/50_analytics/).
-- Callers read the roll-up tables through the ledger.visible_* barrier views, which keep only
-- the clients the caller sees in ledger.clients (row-level security of that table,
-- 20_row_security.sql). The tables grant select under their own row-level security
-- (02_row_security.sql: own client, admins all): that is what a Citus worker checks for the
-- caller when a view reads their shards. Their change log is the owner's alone.

revoke all on ledger.step_outcomes_daily, ledger.step_outcomes_total, ledger.step_timings_daily,
              ledger.analytics_changes
  from public, anon, client, admin, ingest, bi_reader;
grant select on ledger.step_outcomes_daily, ledger.step_outcomes_total, ledger.step_timings_daily
  to client, admin, bi_reader;

-- Freshness is not client data: which view was refreshed when. How long it took and how many
-- rows it holds count every client's activity: admins only (ledger._analytics_refresh_costs).
revoke select on ledger.analytics_refreshes from client, bi_reader;
grant select (view_name, refreshed_at) on ledger.analytics_refreshes to client, bi_reader;
grant select on ledger.analytics_refreshes to admin;
grant execute on function ledger._analytics_refresh_costs() to client, admin;

grant select on ledger.visible_step_outcomes_daily, ledger.visible_step_outcomes_total,
                ledger.visible_step_timings_daily
  to client, admin, bi_reader;
grant execute on function ledger._raise_not_found(text, text, text),
                          ledger._check_window(date, date), ledger._window(date, date, integer),
                          ledger._outcomes(date, date, text, text)
  to client, admin, bi_reader;

grant select on api.error_stats, api.analytics_freshness to client, admin;
grant execute on function
  api.job_counts(text, timestamptz, timestamptz, text, text),
  api.job_changes(text, integer),
  api.job_timeline(text, text),
  api.step_durations(date, date, text),
  api.error_stats_window(date, date, text),
  api.error_stats_by_day(date, date, text),
  api.error_stats_by_source(date, date, text, text),
  api.error_codes(date, date, text)
  to client, admin;
grant execute on function api.refresh_analytics(integer) to admin;

grant usage on schema reporting to bi_reader;
grant select on reporting.step_outcomes_daily to bi_reader, admin;

-- Drill-downs and trends of the jobs list (db/functions/30_jobs/52_api_job_search.sql): caller's rights, so
-- row-level security keeps a client to its own jobs.
grant execute on function
  api.search_jobs(text, text, text, text, timestamptz, timestamptz, text, text),
  api.jobs_by_day(date, date, text)
  to client, admin;
