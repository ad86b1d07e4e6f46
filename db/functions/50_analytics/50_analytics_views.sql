-- The HTTP read surface of error statistics and analytics freshness (contract §4: GET /error_stats),
-- and the daily cells for BI in `reporting`. The functions behind them (db/functions/50_analytics/)
-- read the roll-up tables only through the caller's-rights views over them.

create or replace view api.error_stats with (security_invoker = true) as
select s.pipeline, s.step, s.failures, s.attempts, s.failure_rate, s.top_error_code,
       s.step_index, s.top_error_message, s.top_error_failures, s.retryable_failures, s.skipped,
       s.last_failure_at, s.refreshed_at
  from api.error_stats_window() s;

comment on view api.error_stats is 'Where errors occur: per pipeline and step, all time, over the jobs you can see (admins: every client). As of refreshed_at; GET /rpc/error_stats_window for a window of days.';
comment on column api.error_stats.failures is 'Attempts of the step that failed.';
comment on column api.error_stats.attempts is 'Finished attempts of the step: completed or failed (skipped and still running ones are not attempts).';
comment on column api.error_stats.failure_rate is 'failures / attempts, from 0 to 1, 4 decimals.';
comment on column api.error_stats.top_error_code is 'The error code of most failures of the step (ties: the most recent).';
comment on column api.error_stats.top_error_message is 'The latest message seen with the top error code.';
comment on column api.error_stats.top_error_failures is 'Failures with the top error code.';
comment on column api.error_stats.retryable_failures is 'Failures whose error said retryable: true.';
comment on column api.error_stats.refreshed_at is 'When the statistics were last computed (POST /rpc/refresh_analytics, stepledger analytics refresh).';

create or replace view api.analytics_freshness with (security_invoker = true) as
select r.view_name,
       r.refreshed_at,
       round(extract(epoch from now() - r.refreshed_at)::numeric, 1) as age_s,
       c.duration_ms,
       c.row_count
  from ledger.analytics_refreshes r
  left join ledger._analytics_refresh_costs() c on c.view_name = r.view_name;

comment on view api.analytics_freshness is 'When each analytics view (error statistics, step timings) was last refreshed and how long ago; for admins also how long it took and how many rows it holds (null for clients: those count every client''s activity).';

-- BI: the daily outcome cells, under the same tenancy as the API.
create or replace view reporting.step_outcomes_daily with (security_invoker = true) as
select d.client_id, d.day, d.pipeline, d.step, d.source, d.error_code, d.completed, d.failed,
       d.skipped, d.retryable, d.first_at, d.last_at, d.sample_message
  from ledger.visible_step_outcomes_daily d;

comment on view reporting.step_outcomes_daily is 'Finished step attempts per client, UTC day, pipeline, step, site (source) and error code; as of api.analytics_freshness.';
