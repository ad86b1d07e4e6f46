-- Derived data kept fresh by the work that changed, not by history (docs/adr/0016-rollups.md).
-- The usage lines and the analytics roll-ups were materialized views recomputed from all history
-- on every refresh. They become tables of the same names and columns that the refreshes rewrite
-- only where something changed: the client-months of ledger.billing_changes for usage, the
-- client-days of ledger.analytics_changes (new here, written by ingest) for error statistics and
-- step timings. As tables they carry row-level security and, on a Citus cluster, are
-- distributed by client_id next to the facts they are computed from (ADR 0012).
--
-- The views over them (usage_lines_visible, the visible_* barrier views, the HTTP and reporting
-- views) are re-created by the idempotent phase of the same migrate.

drop materialized view ledger.usage_lines_monthly cascade;
drop materialized view ledger.step_outcomes_total cascade;
drop materialized view ledger.step_outcomes_daily cascade;
drop materialized view ledger.step_timings_daily cascade;
-- The clients the analytics views kept; the tables' row-level security does that now.
drop function if exists ledger._visible_client_ids();

-- Usage lines per client, month, pipeline, step and unit price (contract §5): what GET /usage,
-- invoices and the billing reports read. Rewritten per changed client-month by ledger.refresh_usage().
create table ledger.usage_lines_monthly (
  client_id text not null,
  period date not null,
  pipeline text not null,
  step text not null,
  unit_price numeric not null,
  priced boolean not null,
  currency text not null,
  completed_steps bigint not null,
  units numeric not null,
  amount numeric not null,
  first_completed_at timestamptz not null,
  last_completed_at timestamptz not null,
  primary key (client_id, period, pipeline, step, unit_price, priced)
);
create index usage_lines_monthly_period on ledger.usage_lines_monthly (period, client_id);
comment on table ledger.usage_lines_monthly is
  'Invoice lines of usage per client, month, pipeline, step and unit price; rewritten for the client-months of ledger.billing_changes by ledger.refresh_usage(). Read through ledger.usage_lines_visible.';

-- Which client-days of step runs changed since the analytics refresh last saw them: written by
-- ingest in the statement that folds a batch into the jobs (one row per job of the batch: the
-- UTC days from the job's first to its last event, which hold every attempt whose outcome or
-- timing the batch can change). client_id '' concerns every client (a rebuild).
create table ledger.analytics_changes (
  client_id text not null,
  change_id bigint generated always as identity,
  day_from date not null,
  day_to date not null,               -- inclusive
  xid xid8 not null default pg_current_xact_id(),
  changed_at timestamptz not null default now(),
  primary key (client_id, change_id),
  check (day_to >= day_from)
);
comment on table ledger.analytics_changes is
  'Client-days of step runs changed since the last analytics refresh (written by ingest; absorbed by ledger.refresh_analytics()).';

-- Outcomes of finished attempts per client, UTC day of their end, pipeline, step, site and error
-- code ('' for attempts that did not fail, and for attempts without a source).
create table ledger.step_outcomes_daily (
  client_id text not null,
  day date not null,
  pipeline text not null,
  step text not null,
  source text not null,
  error_code text not null,
  completed bigint not null,
  failed bigint not null,
  skipped bigint not null,
  retryable bigint not null,
  first_at timestamptz not null,
  last_at timestamptz not null,
  sample_message text,
  primary key (client_id, day, pipeline, step, source, error_code)
);
create index step_outcomes_daily_day on ledger.step_outcomes_daily (day);
comment on table ledger.step_outcomes_daily is
  'Outcomes of finished attempts per client, UTC day, pipeline, step, site and error code; rewritten for changed client-days by ledger.refresh_analytics().';

-- A key's earliest and latest cells, and its latest sample message: what the all-time row takes
-- from them (ledger._add_to_outcomes_total), one probe each.
create index step_outcomes_daily_key_day
  on ledger.step_outcomes_daily (client_id, pipeline, step, source, error_code, day);
create index step_outcomes_daily_key_sample_day
  on ledger.step_outcomes_daily (client_id, pipeline, step, source, error_code, day)
  where sample_message is not null;

-- The same, all time: what GET /error_stats reads.
create table ledger.step_outcomes_total (
  client_id text not null,
  pipeline text not null,
  step text not null,
  source text not null,
  error_code text not null,
  completed bigint not null,
  failed bigint not null,
  skipped bigint not null,
  retryable bigint not null,
  first_at timestamptz not null,
  last_at timestamptz not null,
  sample_message text,
  primary key (client_id, pipeline, step, source, error_code)
);
comment on table ledger.step_outcomes_total is
  'All-time outcomes per client, pipeline, step, site and error code: the sum of the client''s daily cells, kept by difference when days are rewritten.';

-- Step timings per client, UTC day the attempt started, pipeline and step: durations of completed
-- attempts and queue times before attempts, as sorted arrays (exact percentiles over any window).
create table ledger.step_timings_daily (
  client_id text not null,
  day date not null,
  pipeline text not null,
  step text not null,
  attempts bigint not null,
  completed bigint not null,
  durations_s float8[] not null,
  queues_s float8[] not null,
  primary key (client_id, day, pipeline, step)
);
create index step_timings_daily_day on ledger.step_timings_daily (day);
comment on table ledger.step_timings_daily is
  'Durations and queue times per client, UTC day of start, pipeline and step; rewritten for changed client-days by ledger.refresh_analytics().';

-- What the refreshes read for one client-day or client-month, by index.
create index step_runs_client_finished on ledger.step_runs (client_id, finished_at)
  where finished_at is not null;
create index step_runs_client_started on ledger.step_runs (client_id, started_at)
  where started_at is not null;

-- Everything is to be computed once: the first refreshes rebuild all history.
insert into ledger.billing_changes (client_id, period_from, period_to, reason)
values ('', '-infinity', 'infinity', 'rebuild');
insert into ledger.analytics_changes (client_id, day_from, day_to)
values ('', '-infinity', 'infinity');
delete from ledger.analytics_refreshes;
