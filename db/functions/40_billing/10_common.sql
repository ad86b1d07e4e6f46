-- Billing by step (contract §5; docs/billing.md), in this folder: what every part uses (this
-- file), the price book (20), usage and its refreshed lines (30), invoices (40), CSV helpers
-- (45) and the HTTP views (50, 60).
--
-- A charge is the billed completion of one (client, job, step): ledger.job_steps.billed_units at
-- ledger.job_steps.completed_at (the latest completed attempt, maintained by ingest).
-- Its price is the most specific row of ledger.prices in force at completed_at; lines group
-- charges by (pipeline, step, unit price) and are rounded half away from zero to the cent.
--
-- Error codes raised here (SQLSTATE, asserted by tests):
--   SL401  unknown pipeline or step              SL402  invalid price, tiers or amount
--   SL403  currency differs from the client's    SL404  unknown client
--   SL405  invalid period (not YYYY-MM)          SL406  caller may not see or do this
--   SL407  period not over yet                   SL408  invoice already finalized
--   SL409  billing records are immutable         SL410  currency change refused (billed in it)
--   SL411  invalid monthly minimum               SL412  no PDF of that invoice (HTTP 404)

-- ---------------------------------------------------------------------------------------------
-- Small helpers
-- ---------------------------------------------------------------------------------------------

create or replace function ledger._month(p_at timestamptz) returns date
language sql immutable parallel safe as $$
  -- The billing period of an instant: its calendar month in UTC (contract §5).
  select date_trunc('month', p_at at time zone 'UTC')::date
$$;
comment on function ledger._month(timestamptz) is 'The billing period (first day of the UTC calendar month) of an instant.';

create or replace function ledger._month_start(p_period date) returns timestamptz
language sql immutable parallel safe as $$
  -- The first instant of a period, in UTC.
  select p_period::timestamp at time zone 'UTC'
$$;
comment on function ledger._month_start(date) is 'The first instant (UTC) of the month that starts on the given date.';

create or replace function ledger._parse_period(p_period text) returns date
language plpgsql immutable set search_path = pg_catalog, pg_temp as $$
-- 'YYYY-MM' to the first day of that month; anything else is SL405.
begin
  if p_period is null or p_period !~ '^[0-9]{4}-(0[1-9]|1[0-2])$' or left(p_period, 4) = '0000' then
    raise exception 'invalid period "%"', p_period
      using errcode = 'SL405', hint = 'a calendar month as YYYY-MM, e.g. 2026-03';
  end if;
  return to_date(p_period || '-01', 'YYYY-MM-DD');
end
$$;
comment on function ledger._parse_period(text) is 'Parses a billing period written YYYY-MM (SL405 otherwise).';

create or replace function ledger._sees_all_clients() returns boolean
language sql stable as $$
  -- Admins (and the schema owner, and superusers) see every client's billing; everyone else sees
  -- at most the client of their token. The same rule as the all_admin row-level policies.
  select pg_has_role('admin', 'usage') or pg_has_role('stepledger_owner', 'usage')
$$;
comment on function ledger._sees_all_clients() is 'Whether the caller sees every client (admin, owner), as the all_admin policies allow.';

create or replace function ledger._actor(out actor text, out role text, out token uuid, out via text)
language sql stable as $$
  -- Who is acting, for the recorded_* and finalized_* columns: the e-mail or subject of the
  -- token when there is one, else the database login.
  select coalesce(nullif(auth.claims()->>'email', ''), nullif(auth.claims()->>'sub', ''),
                  session_user::text),
         auth.role(), auth.token_id(), nullif(current_setting('application_name', true), '')
$$;
comment on function ledger._actor() is 'The caller as recorded on price book rows and finalized invoices.';
