-- Billing by step (contract §5, docs/billing.md): the price book, monthly minimums, finalized
-- invoices, the change log that tells whether the usage materialized view is current, and the
-- materialized view itself. Functions, triggers and the real body of ledger._usage_lines() are in
-- db/functions/60_billing.sql; row-level security and grants in db/policies/40_billing.sql.

-- The price book. Rows are never updated or deleted (a trigger refuses it): a change is a new row,
-- so every past invoice can be recomputed and explained. client_id null = the default price of
-- (pipeline, step) in that currency.
create table ledger.prices (
  price_id bigint generated always as identity primary key,
  pipeline ledger.slug not null,
  step ledger.slug not null,
  client_id ledger.slug references ledger.clients,
  currency text not null check (currency ~ '^[A-Z]{3}$'),
  unit_price numeric not null check (unit_price >= 0),
  -- Graduated volume tiers, counted per client and calendar month of (pipeline, step):
  -- [{"from_units": 1000, "unit_price": 0.03}, ...]; unit_price above applies below the first tier.
  tiers jsonb not null default '[]' check (jsonb_typeof(tiers) = 'array'),
  effective_from timestamptz not null default now(),
  note text check (length(note) <= 500),
  recorded_at timestamptz not null default now(),
  recorded_by text not null,          -- e-mail or subject of the token, else the database login
  recorded_role text not null,        -- API role (or database role) that recorded the row
  recorded_token uuid,                -- jti of the token, when there was one
  recorded_via text                   -- application_name of the session (PostgREST, stepledger CLI)
);
create index prices_lookup on ledger.prices (pipeline, step, currency, client_id, effective_from);
create index prices_client on ledger.prices (client_id, effective_from) where client_id is not null;

comment on table ledger.prices is 'The price book: effective-dated unit prices per (pipeline, step), default (client_id null) or per client. Append-only.';

-- Optional monthly minimum per client: when a period's usage is below it, the invoice gets a
-- top-up line. Effective from a calendar month; append-only like the prices.
create table ledger.client_minimums (
  minimum_id bigint generated always as identity primary key,
  client_id ledger.slug not null references ledger.clients,
  effective_from date not null check (extract(day from effective_from) = 1),
  monthly_minimum numeric not null check (monthly_minimum >= 0),
  currency text not null check (currency ~ '^[A-Z]{3}$'),
  note text check (length(note) <= 500),
  recorded_at timestamptz not null default now(),
  recorded_by text not null,
  recorded_role text not null,
  recorded_token uuid,
  recorded_via text
);
create index client_minimums_lookup on ledger.client_minimums (client_id, effective_from);

comment on table ledger.client_minimums is 'Monthly minimum per client, effective from a calendar month; 0 ends a minimum. Append-only.';

-- Finalized invoices: frozen lines, never changed (triggers refuse it). Drafts are not stored;
-- they are computed on request. Late changes to a finalized period become adjustment lines of
-- the next open invoice.
create table ledger.invoices (
  client_id ledger.slug not null references ledger.clients,
  period date not null check (extract(day from period) = 1),
  invoice_no text not null unique,
  currency text not null check (currency ~ '^[A-Z]{3}$'),
  usage_amount numeric not null,
  minimum_amount numeric not null,
  adjustments_amount numeric not null,
  total numeric not null,
  lines_count integer not null,
  finalized_at timestamptz not null default now(),
  finalized_by text not null,
  finalized_role text not null,
  finalized_token uuid,
  primary key (client_id, period),
  check (total = usage_amount + minimum_amount + adjustments_amount)
);

comment on table ledger.invoices is 'Finalized invoices, one per client and period; immutable.';

create table ledger.invoice_lines (
  client_id ledger.slug not null,
  period date not null,               -- the invoice the line is on
  line_no integer not null check (line_no >= 1),
  kind text not null check (kind in ('usage', 'minimum', 'adjustment')),
  basis text not null check (basis in ('usage', 'minimum')),
  for_period date not null,           -- the period the amount belongs to (earlier for adjustments)
  pipeline text,
  step text,
  unit_price numeric,
  priced boolean,
  units numeric,
  completed_steps bigint,
  amount numeric not null,
  description text,
  primary key (client_id, period, line_no),
  foreign key (client_id, period) references ledger.invoices,
  check ((kind = 'adjustment') = (for_period <> period)),
  check (kind = 'adjustment' or kind = basis),
  check (basis = 'minimum' or (pipeline is not null and step is not null and unit_price is not null
                               and priced is not null and units is not null))
);
create index invoice_lines_for_period on ledger.invoice_lines (client_id, for_period);

comment on table ledger.invoice_lines is 'Frozen lines of finalized invoices: usage, monthly-minimum top-up and adjustments of earlier periods.';

-- Index for the charges of one client and month (the billed completion of each step).
create index job_steps_billed on ledger.job_steps (client_id, completed_at)
  where completed_at is not null;

-- What changed since the usage materialized view was refreshed: one row per (client, periods)
-- touched by a transaction (new completions, prices, minimums, currencies). client_id null means
-- every client. A row whose transaction is not visible in the last refresh's snapshot means the
-- view may be stale for those periods; the refresh deletes the rows it has absorbed.
create table ledger.billing_changes (
  change_id bigint generated always as identity primary key,
  client_id text,
  period_from date not null,
  period_to date not null,            -- inclusive; 'infinity' for every later period
  xid xid8 not null default pg_current_xact_id(),
  reason text not null check (reason in ('completion', 'price', 'minimum', 'currency', 'rebuild')),
  changed_at timestamptz not null default now(),
  check (period_to >= period_from)
);
create index billing_changes_client on ledger.billing_changes (client_id, period_from);

comment on table ledger.billing_changes is 'Changes to billed usage since the last refresh of the usage materialized view.';

create table ledger.billing_refreshes (
  refresh_id bigint generated always as identity primary key,
  started_at timestamptz not null,
  finished_at timestamptz not null,
  snapshot pg_snapshot not null,      -- taken before the refresh: what it has certainly seen
  duration_ms numeric not null,
  line_rows bigint not null,
  changes_absorbed bigint not null,
  concurrent boolean not null,
  requested_by text not null
);

comment on table ledger.billing_refreshes is 'Refreshes of the usage materialized view: when, how long, and the snapshot they saw.';

-- The usage lines of every client and month. The real body of this function is in
-- db/functions/60_billing.sql (create or replace keeps the materialized view pointing at it);
-- here it only fixes the columns, and the view is populated by that file on first migrate.
create function ledger._usage_lines(p_client_id text, p_from date, p_to date)
returns table (client_id text, period date, pipeline text, step text, unit_price numeric,
               priced boolean, currency text, completed_steps bigint, units numeric,
               amount numeric, first_completed_at timestamptz, last_completed_at timestamptz)
language sql stable
as $$
  select null::text, null::date, null::text, null::text, null::numeric, null::boolean, null::text,
         null::bigint, null::numeric, null::numeric, null::timestamptz, null::timestamptz
   where false
$$;

create materialized view ledger.usage_lines_monthly as
select u.client_id, u.period, u.pipeline, u.step, u.unit_price, u.priced, u.currency,
       u.completed_steps, u.units, u.amount, u.first_completed_at, u.last_completed_at
  from ledger._usage_lines(null, null, null) u
with no data;

-- refresh ... concurrently needs a unique index over plain columns covering every row.
create unique index usage_lines_monthly_key
  on ledger.usage_lines_monthly (client_id, period, pipeline, step, unit_price, priced);
create index usage_lines_monthly_period on ledger.usage_lines_monthly (period, client_id);

comment on materialized view ledger.usage_lines_monthly is 'Invoice lines of usage per client, month, pipeline, step and unit price; refreshed concurrently (ledger.refresh_usage()). Read through ledger.usage_lines_visible.';
