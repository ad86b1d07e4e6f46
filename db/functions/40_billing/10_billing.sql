-- Billing by step (contract §5; docs/billing.md): charges, prices, invoices, the usage
-- materialized view and its freshness.
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
language sql immutable parallel safe
as $$
  -- The billing period of an instant: its calendar month in UTC (contract §5).
  select date_trunc('month', p_at at time zone 'UTC')::date
$$;
comment on function ledger._month(timestamptz) is 'The billing period (first day of the UTC calendar month) of an instant.';

create or replace function ledger._month_start(p_period date) returns timestamptz
language sql immutable parallel safe
as $$
  -- The first instant of a period, in UTC.
  select p_period::timestamp at time zone 'UTC'
$$;
comment on function ledger._month_start(date) is 'The first instant (UTC) of the month that starts on the given date.';

create or replace function ledger._parse_period(p_period text) returns date
language plpgsql immutable
set search_path = pg_catalog, pg_temp
as $$
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
language sql stable
as $$
  -- Admins (and the schema owner, and superusers) see every client's billing; everyone else sees
  -- at most the client of their token. The same rule as the all_admin row-level policies.
  select pg_has_role('admin', 'usage') or pg_has_role('stepledger_owner', 'usage')
$$;
comment on function ledger._sees_all_clients() is 'Whether the caller sees every client (admin, owner), as the all_admin policies allow.';

create or replace function ledger._actor(out actor text, out role text, out token uuid, out via text)
language sql stable
as $$
  -- Who is acting, for the recorded_* and finalized_* columns: the e-mail or subject of the
  -- token when there is one, else the database login.
  select coalesce(nullif(auth.claims()->>'email', ''), nullif(auth.claims()->>'sub', ''),
                  session_user::text),
         auth.role(), auth.token_id(), nullif(current_setting('application_name', true), '')
$$;
comment on function ledger._actor() is 'The caller as recorded on price book rows and finalized invoices.';

-- ---------------------------------------------------------------------------------------------
-- Charges and usage lines (contract §5)
-- ---------------------------------------------------------------------------------------------

create or replace function ledger._charges_from_events(p_client_id text, p_from date, p_to date)
returns table (client_id text, job_id text, pipeline text, step text, units numeric,
               completed_at timestamptz)
language plpgsql stable
set search_path = pg_catalog, pg_temp
set plan_cache_mode = force_custom_plan
as $$
-- The billed completions recomputed from the accepted raw events alone, as a log parser would:
-- per attempt the terminal event with the latest occurred_at decides (ties broken as the ingest
-- trigger breaks them: later batch, then vault id);
-- the billed attempt is the latest one that completed. The reference that job_steps must match,
-- and the baseline of the benchmark. A function of its own (not inlined) so that the planner
-- drops it entirely from the job_steps path, which clients use without access to raw events.
begin
  return query
  select b.client_id::text, b.job_id, b.pipeline::text, b.step::text, b.units, b.occurred_at
    from (
      select distinct on (t.client_id, t.job_id, t.step) t.*
        from (
          select distinct on (e.client_id, e.job_id, e.step, e.attempt)
                 e.client_id, e.job_id, e.pipeline, e.step, e.attempt, e.status, e.units,
                 e.occurred_at
            from ledger.events e
           where e.status <> 'started'
             and (p_client_id is null or e.client_id = p_client_id)
             and (p_from is null or exists (
                   select from ledger.events c
                    where c.client_id = e.client_id and c.job_id = e.job_id and c.step = e.step
                      and c.status = 'completed'
                      and c.occurred_at >= ledger._month_start(p_from)
                      and (p_to is null or c.occurred_at < ledger._month_start(p_to))))
           order by e.client_id, e.job_id, e.step, e.attempt,
                    e.occurred_at desc, e.received_at desc, e.vault_id desc
        ) t
       where t.status = 'completed'
       order by t.client_id, t.job_id, t.step, t.attempt desc
    ) b
   where (p_from is null or b.occurred_at >= ledger._month_start(p_from))
     and (p_to is null or b.occurred_at < ledger._month_start(p_to));
end
$$;
comment on function ledger._charges_from_events(text, date, date) is
  'Billed completions recomputed from the raw accepted events (reference and benchmark baseline).';

create or replace function ledger._usage_lines_of(p_client_id text, p_from date, p_to date,
                                                  p_source text)
returns table (client_id text, period date, pipeline text, step text, unit_price numeric,
               priced boolean, currency text, completed_steps bigint, units numeric,
               amount numeric, first_completed_at timestamptz, last_completed_at timestamptz)
language plpgsql stable
-- Planned on every call with its arguments, so the filters reach the indexes.
set plan_cache_mode = force_custom_plan
as $$
-- Usage lines of one client (or all, when null) for periods in [p_from, p_to) (all when null).
-- p_source 'job_steps': charges from ledger.job_steps, as maintained at ingest (the product);
-- p_source 'events': recomputed from the accepted raw events (the reference, and the baseline
-- the benchmark compares with). Runs with the caller's rights: row-level security applies.
-- PL/pgSQL, not an inlined SQL function: Citus refuses a statement whose Citus tables appear
-- only once the planner has inlined a SQL function (ADR 0012).
begin
  return query
  with charges as (
    select js.client_id, js.job_id, js.pipeline, js.step,
           coalesce(js.billed_units, 0) as units, js.completed_at
      from ledger.job_steps js
     where p_source = 'job_steps'
       and js.completed_at is not null
       and (p_client_id is null or js.client_id = p_client_id)
       and (p_from is null or js.completed_at >= ledger._month_start(p_from))
       and (p_to is null or js.completed_at < ledger._month_start(p_to))
    union all
    select f.client_id, f.job_id, f.pipeline, f.step, f.units, f.completed_at
      from ledger._charges_from_events(p_client_id, p_from, p_to) f
     where p_source = 'events'
  ),
  -- Each price row is in force from its effective_from until the next row of the same
  -- (client or default, pipeline, step, currency); of two rows with the same effective_from the
  -- later recorded one wins.
  price_rows as (
    select p.price_id, p.client_id, p.pipeline, p.step, p.currency, p.unit_price, p.tiers,
           p.effective_from,
           lead(p.effective_from) over (partition by p.client_id, p.pipeline, p.step, p.currency
                                        order by p.effective_from, p.price_id) as until
      from ledger.prices p
  ),
  priced as (
    -- A client's own price beats the default; a charge with neither is unpriced (billed at 0).
    select ch.client_id, ch.job_id, ch.pipeline, ch.step, ch.units, ch.completed_at,
           ledger._month(ch.completed_at) as period, cl.currency,
           coalesce(cp.price_id, dp.price_id) as price_id,
           coalesce(cp.unit_price, dp.unit_price) as base_price,
           coalesce(cp.tiers, dp.tiers) <> '[]'::jsonb as tiered
      from charges ch
      join ledger.clients cl on cl.client_id = ch.client_id
      left join price_rows cp
             on cp.client_id = ch.client_id and cp.pipeline = ch.pipeline and cp.step = ch.step
            and cp.currency = cl.currency
            and cp.effective_from <= ch.completed_at
            and (cp.until is null or ch.completed_at < cp.until)
      left join price_rows dp
             on dp.client_id is null and dp.pipeline = ch.pipeline and dp.step = ch.step
            and dp.currency = cl.currency
            and dp.effective_from <= ch.completed_at
            and (dp.until is null or ch.completed_at < dp.until)
  ),
  -- Graduated tiers count units per client, month, pipeline and step, in order of completion
  -- (then job id). Only months where some charge has a tiered price need that running total.
  tiered_months as (
    select distinct p.client_id, p.period, p.pipeline, p.step from priced p where p.tiered
  ),
  flat as (
    select p.client_id, p.period, p.pipeline, p.step, p.currency, p.completed_at,
           p.price_id is not null as priced, coalesce(p.base_price, 0) as unit_price,
           p.units as band_units, true as home
      from priced p
     where not exists (select from tiered_months t
                        where t.client_id = p.client_id and t.period = p.period
                          and t.pipeline = p.pipeline and t.step = p.step)
  ),
  running as (
    select p.*,
           sum(p.units) over (partition by p.client_id, p.period, p.pipeline, p.step
                              order by p.completed_at, p.job_id collate "C"
                              rows between unbounded preceding and current row) as cum_after
      from priced p
     where exists (select from tiered_months t
                    where t.client_id = p.client_id and t.period = p.period
                      and t.pipeline = p.pipeline and t.step = p.step)
  ),
  bands as (
    -- [lower, upper) bands of each tiered price: the base price below the first tier.
    select pr.price_id, 0::numeric as lower, (pr.tiers->0->>'from_units')::numeric as upper,
           pr.unit_price
      from price_rows pr
     where pr.tiers <> '[]'::jsonb
    union all
    select pr.price_id, (t.tier->>'from_units')::numeric,
           (pr.tiers->(t.i::integer)->>'from_units')::numeric, (t.tier->>'unit_price')::numeric
      from price_rows pr
      cross join lateral jsonb_array_elements(pr.tiers) with ordinality as t(tier, i)
  ),
  split as (
    -- A charge's units [cum_after - units, cum_after) fall into one or more bands; it counts as
    -- a completed step in the band where its first unit falls.
    select r.client_id, r.period, r.pipeline, r.step, r.currency, r.completed_at,
           r.price_id is not null as priced,
           coalesce(b.unit_price, r.base_price, 0) as unit_price,
           case when b.price_id is null then r.units
                else least(r.cum_after, coalesce(b.upper, r.cum_after))
                     - greatest(r.cum_after - r.units, b.lower) end as band_units,
           b.price_id is null
             or (b.lower <= r.cum_after - r.units
                 and (b.upper is null or r.cum_after - r.units < b.upper)) as home
      from running r
      left join bands b
             on b.price_id = r.price_id
            and (b.lower < r.cum_after or b.lower <= r.cum_after - r.units)
            and (b.upper is null or b.upper > r.cum_after - r.units)
  )
  select s.client_id, s.period, s.pipeline, s.step, s.unit_price, s.priced, s.currency,
         count(*) filter (where s.home) as completed_steps,
         sum(s.band_units) as units,
         round(sum(s.band_units * s.unit_price), 2) as amount,
         min(s.completed_at) as first_completed_at,
         max(s.completed_at) as last_completed_at
    from (select * from flat union all select * from split) s
   group by s.client_id, s.period, s.pipeline, s.step, s.unit_price, s.priced, s.currency;
end
$$;
comment on function ledger._usage_lines_of(text, date, date, text) is
  'Usage lines per client, month, pipeline, step and unit price (contract §5), from job_steps or recomputed from the raw events.';

create or replace function ledger._usage_lines(p_client_id text, p_from date, p_to date)
returns table (client_id text, period date, pipeline text, step text, unit_price numeric,
               priced boolean, currency text, completed_steps bigint, units numeric,
               amount numeric, first_completed_at timestamptz, last_completed_at timestamptz)
language plpgsql stable
as $$
-- The live usage lines: what the materialized view holds once refreshed.
begin
  return query select * from ledger._usage_lines_of(p_client_id, p_from, p_to, 'job_steps');
end
$$;
comment on function ledger._usage_lines(text, date, date) is
  'Live usage lines of one client (null: all) for periods [p_from, p_to); the query of ledger.usage_lines_monthly.';

-- ---------------------------------------------------------------------------------------------
-- Freshness of the materialized view
-- ---------------------------------------------------------------------------------------------

create or replace function ledger._usage_fresh(p_client_id text, p_period date) returns boolean
language plpgsql stable
as $$
-- True when the materialized view (as the caller sees it) holds every change to this client's
-- usage in this period: no change row whose transaction the last refresh could not see.
-- PL/pgSQL, not SQL, and the refresh read on its own: Citus plans no statement with a SQL
-- function's parameters, nor one joining its tables with a plain local table (ADR 0012).
declare
  v_snapshot pg_snapshot;
begin
  select r.snapshot into v_snapshot
    from ledger.billing_refreshes r
   order by r.refresh_id desc
   limit 1;
  if not found then
    return false;
  end if;
  return not exists (
           select 1 from ledger.billing_changes ch
            where ch.client_id in (p_client_id, '')
              and ch.period_from <= p_period and p_period <= ch.period_to
              and not pg_visible_in_snapshot(ch.xid, v_snapshot));
end
$$;
comment on function ledger._usage_fresh(text, date) is
  'Whether ledger.usage_lines_monthly is current for one client and period.';

-- ---------------------------------------------------------------------------------------------
-- Change log: what the materialized view has not seen yet
-- ---------------------------------------------------------------------------------------------

-- Ingest writes the change log itself, in the statement that upserts ledger.job_steps
-- (ledger._fold_progress, 40_progress.sql): the month a billed completion joined and the month it
-- left. The statement triggers that did it until ADR 0014 read transition tables; migration 0080
-- drops them, and their functions go here:
drop function if exists ledger.tg_job_steps__log_billing_insert();
drop function if exists ledger.tg_job_steps__log_billing_update();

create or replace function ledger.tg_job_steps__log_billing_delete() returns trigger
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
-- A deleted step (a rebuild) leaves its month (a row trigger: it sees its own row only);
-- TRUNCATE marks everything.
begin
  if tg_op = 'TRUNCATE' then
    insert into ledger.billing_changes (client_id, period_from, period_to, reason)
    values ('', '-infinity', 'infinity', 'rebuild');
  elsif old.completed_at is not null then
    insert into ledger.billing_changes (client_id, period_from, period_to, reason)
    values (old.client_id, ledger._month(old.completed_at), ledger._month(old.completed_at), 'rebuild');
  end if;
  return null;
end
$$;
comment on function ledger.tg_job_steps__log_billing_delete() is 'Logs the months of deleted billed completions.';

create or replace trigger log_billing_delete
  after delete on ledger.job_steps
  for each row execute function ledger.tg_job_steps__log_billing_delete();

create or replace trigger log_billing_truncate
  after truncate on ledger.job_steps
  for each statement execute function ledger.tg_job_steps__log_billing_delete();

-- ---------------------------------------------------------------------------------------------
-- The price book and monthly minimums: validated, attributed, append-only
-- ---------------------------------------------------------------------------------------------

create or replace function ledger._normalized_tiers(p_tiers jsonb) returns jsonb
language plpgsql immutable
set search_path = pg_catalog, pg_temp
as $$
-- Checks graduated tiers, [{"from_units": N, "unit_price": P}, ...] with 0 < N strictly
-- increasing and P >= 0, and returns them with plain numbers (SL402 otherwise).
declare
  v_tier jsonb;
  v_from numeric;
  v_last numeric := 0;
  v_out jsonb := '[]';
  v_i integer := 0;
begin
  if p_tiers is null or p_tiers = 'null'::jsonb then
    return '[]';
  end if;
  if jsonb_typeof(p_tiers) <> 'array' then
    raise exception 'tiers must be an array of {"from_units", "unit_price"} objects'
      using errcode = 'SL402';
  end if;
  for v_tier in select e from jsonb_array_elements(p_tiers) e loop
    if jsonb_typeof(v_tier) <> 'object'
       or jsonb_typeof(v_tier->'from_units') is distinct from 'number'
       or jsonb_typeof(v_tier->'unit_price') is distinct from 'number'
       or exists (select from jsonb_object_keys(v_tier) k where k not in ('from_units', 'unit_price')) then
      raise exception 'tier % must be {"from_units": number, "unit_price": number}', v_i
        using errcode = 'SL402', detail = v_tier::text;
    end if;
    v_from := (v_tier->>'from_units')::numeric;
    if v_from <= v_last then
      raise exception 'tier %: from_units must be greater than %', v_i, v_last
        using errcode = 'SL402', hint = 'tiers start above 0 and in increasing order';
    end if;
    if (v_tier->>'unit_price')::numeric < 0 then
      raise exception 'tier %: unit_price must not be negative', v_i using errcode = 'SL402';
    end if;
    v_out := v_out || jsonb_build_array(jsonb_build_object(
               'from_units', trim_scale(v_from),
               'unit_price', trim_scale((v_tier->>'unit_price')::numeric)));
    v_last := v_from;
    v_i := v_i + 1;
  end loop;
  return v_out;
end
$$;
comment on function ledger._normalized_tiers(jsonb) is 'Validates and normalizes graduated price tiers (SL402).';

create or replace function ledger.tg_prices__check() returns trigger
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
-- Before a price row is stored: the step exists, the currency matches the client's, the numbers
-- are sane; who recorded it is filled in; the usage view learns that prices changed.
declare
  v_client_currency text;
  v_actor record;
begin
  if not exists (select from ledger.pipeline_steps s where s.pipeline = new.pipeline and s.step = new.step) then
    raise exception 'pipeline "%" has no step "%"', new.pipeline, new.step
      using errcode = 'SL401', hint = 'register the pipeline first (stepledger pipeline add)';
  end if;
  if new.client_id is not null then
    select c.currency into v_client_currency from ledger.clients c where c.client_id = new.client_id;
    if not found then
      raise exception 'unknown client "%"', new.client_id using errcode = 'SL404';
    end if;
    new.currency := coalesce(new.currency, v_client_currency);
    if new.currency <> v_client_currency then
      raise exception 'client "%" is billed in %, not %', new.client_id, v_client_currency, new.currency
        using errcode = 'SL403';
    end if;
  else
    new.currency := coalesce(new.currency, 'EUR');
  end if;
  if new.currency !~ '^[A-Z]{3}$' then
    raise exception 'invalid currency "%"', new.currency using errcode = 'SL402', hint = 'an ISO 4217 code such as EUR';
  end if;
  if new.unit_price is null or new.unit_price < 0 then
    raise exception 'unit_price must be a number >= 0, not %', coalesce(new.unit_price::text, 'null')
      using errcode = 'SL402';
  end if;
  new.unit_price := trim_scale(new.unit_price);
  new.tiers := ledger._normalized_tiers(new.tiers);
  new.effective_from := coalesce(new.effective_from, now());
  v_actor := ledger._actor();
  new.recorded_at := now();
  new.recorded_by := v_actor.actor;
  new.recorded_role := v_actor.role;
  new.recorded_token := v_actor.token;
  new.recorded_via := v_actor.via;

  insert into ledger.billing_changes (client_id, period_from, period_to, reason)
  values (coalesce(new.client_id, ''), ledger._month(new.effective_from), 'infinity', 'price');
  -- The stack's scheduler refreshes the usage view soon after the commit (loader/stepledger/scheduler.py).
  perform pg_notify('stepledger_scheduler', 'refresh_usage');
  return new;
end
$$;
comment on function ledger.tg_prices__check() is 'Validates and attributes a new price book row.';

create or replace trigger check_price
  before insert on ledger.prices
  for each row execute function ledger.tg_prices__check();

create or replace function ledger.tg_client_minimums__check() returns trigger
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
-- Before a monthly minimum is stored: client, currency and amount are checked, who recorded it
-- is filled in, and the usage view learns about it.
declare
  v_client_currency text;
  v_actor record;
begin
  select c.currency into v_client_currency from ledger.clients c where c.client_id = new.client_id;
  if not found then
    raise exception 'unknown client "%"', new.client_id using errcode = 'SL404';
  end if;
  new.currency := coalesce(new.currency, v_client_currency);
  if new.currency <> v_client_currency then
    raise exception 'client "%" is billed in %, not %', new.client_id, v_client_currency, new.currency
      using errcode = 'SL403';
  end if;
  if new.effective_from is null or extract(day from new.effective_from) <> 1 then
    raise exception 'a monthly minimum starts on the first day of a month, not %', new.effective_from
      using errcode = 'SL411';
  end if;
  if new.monthly_minimum is null or new.monthly_minimum < 0 then
    raise exception 'monthly_minimum must be a number >= 0' using errcode = 'SL411';
  end if;
  new.monthly_minimum := trim_scale(new.monthly_minimum);
  v_actor := ledger._actor();
  new.recorded_at := now();
  new.recorded_by := v_actor.actor;
  new.recorded_role := v_actor.role;
  new.recorded_token := v_actor.token;
  new.recorded_via := v_actor.via;
  insert into ledger.billing_changes (client_id, period_from, period_to, reason)
  values (new.client_id, new.effective_from, 'infinity', 'minimum');
  perform pg_notify('stepledger_scheduler', 'refresh_usage');
  return new;
end
$$;
comment on function ledger.tg_client_minimums__check() is 'Validates and attributes a new monthly minimum.';

create or replace trigger check_minimum
  before insert on ledger.client_minimums
  for each row execute function ledger.tg_client_minimums__check();

create or replace function ledger.tg_billing__immutable() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
-- Price book rows, minimums and finalized invoices are never changed or removed.
declare
  -- On a Citus worker the trigger fires on a shard (invoices_102008): name the table.
  v_table text := regexp_replace(tg_table_name, '_[0-9]+$', '');
begin
  raise exception '% rows are immutable: % refused', v_table, lower(tg_op)
    using errcode = 'SL409',
          hint = case when v_table in ('prices', 'client_minimums')
                      then 'record a new row with a later effective_from'
                      else 'late changes become adjustment lines on the next open invoice' end;
end
$$;
comment on function ledger.tg_billing__immutable() is 'Refuses UPDATE, DELETE and TRUNCATE on append-only billing tables.';

do $$
declare
  t text;
begin
  foreach t in array array['prices', 'client_minimums', 'invoices', 'invoice_lines',
                            'invoice_documents'] loop
    execute format('create or replace trigger immutable_rows before update or delete on ledger.%I
                      for each row execute function ledger.tg_billing__immutable()', t);
    execute format('create or replace trigger immutable_table before truncate on ledger.%I
                      for each statement execute function ledger.tg_billing__immutable()', t);
  end loop;
end
$$;

create or replace function ledger.tg_clients__currency_change() returns trigger
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
-- A client's currency may change only before anything is billed in the old one: not once an
-- invoice is finalized (its adjustments must stay in its currency), not while the client has
-- its own prices or minimums in the old currency (the price book is append-only: they would be
-- orphaned), and not while an open invoice bills completed steps (it would be repriced). The
-- rule holds for every path: the CLI, psql, PostgREST. A change reprices nothing else.
declare
  v_where text;
  v_period date;
begin
  if new.currency is distinct from old.currency then
    if exists (select 1 from ledger.invoices i where i.client_id = old.client_id) then
      v_where := 'finalized invoices';
    elsif exists (select from ledger.prices p
                   where p.client_id = old.client_id and p.currency = old.currency) then
      v_where := 'its own prices';
    elsif exists (select from ledger.client_minimums m
                   where m.client_id = old.client_id and m.currency = old.currency) then
      v_where := 'a monthly minimum';
    else
      select ledger._month(js.completed_at) into v_period
        from ledger.job_steps js
       where js.client_id = old.client_id and js.completed_at is not null
       limit 1;
      if v_period is not null then
        v_where := format('an open invoice (%s)', to_char(v_period, 'YYYY-MM'));
      end if;
    end if;
    if v_where is not null then
      raise exception 'cannot change the currency of client "%" from % to %: it has % in %',
        old.client_id, old.currency, new.currency, v_where, old.currency
        using errcode = 'SL410',
              hint = format('billing records keep their currency; bill %s under a new client id '
                            '(stepledger client add %s-%s --name ... --currency %s)',
                            new.currency, old.client_id, lower(new.currency), new.currency);
    end if;
    insert into ledger.billing_changes (client_id, period_from, period_to, reason)
    values (old.client_id, '-infinity', 'infinity', 'currency');
  end if;
  return new;
end
$$;
comment on function ledger.tg_clients__currency_change() is 'Guards and logs a change of a client''s billing currency.';

create or replace trigger billing_currency_change
  before update of currency on ledger.clients
  for each row execute function ledger.tg_clients__currency_change();

-- ---------------------------------------------------------------------------------------------
-- Invoices
-- ---------------------------------------------------------------------------------------------


create or replace function ledger._months_between(p_from date, p_to date) returns integer
language sql immutable parallel safe
as $$
  -- Whole calendar months from one period to another (2026-01 to 2026-03: 2).
  select ((extract(year from p_to) * 12 + extract(month from p_to))
          - (extract(year from p_from) * 12 + extract(month from p_from)))::integer
$$;
comment on function ledger._months_between(date, date) is 'Calendar months between two periods.';

create or replace function ledger._period_lines(p_client_id text, p_periods date[])
returns table (period date, basis text, pipeline text, step text, unit_price numeric,
               priced boolean, units numeric, completed_steps bigint, amount numeric,
               description text, source text)
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
-- What a client owes for each of the given periods as of now: its usage lines (from the
-- materialized view where that is current for the client and period, else computed live) and a
-- monthly-minimum top-up when usage is below the minimum in force. Runs with the caller's rights.
-- The live query is planned and run only when some period is stale: planning it is not free,
-- and the view path stays a cached plan.
declare
  v_periods date[];
  v_fresh date[];
  v_stale date[];
  v_currency text;
  v_usage jsonb := '[]';
  v_part jsonb;
begin
  select c.currency into v_currency from ledger.clients c where c.client_id = p_client_id;
  select coalesce(array_agg(x.p order by x.p), '{}') into v_periods
    from (select distinct unnest(p_periods) as p) x;
  select coalesce(array_agg(x.p) filter (where x.fresh), '{}'),
         coalesce(array_agg(x.p) filter (where not x.fresh), '{}')
    into v_fresh, v_stale
    from (select p, ledger._usage_fresh(p_client_id, p) as fresh from unnest(v_periods) p) x;

  if cardinality(v_fresh) > 0 then
    select coalesce(jsonb_agg(to_jsonb(l)), '[]') into v_part
      from (select v.period, v.pipeline, v.step, v.unit_price, v.priced, v.units,
                   v.completed_steps, v.amount, 'materialized' as source
              from ledger.usage_lines_visible v
             where v.client_id = p_client_id and v.period = any(v_fresh)) l;
    v_usage := v_usage || v_part;
  end if;
  if cardinality(v_stale) > 0 then
    -- Dynamic, so it is planned with the actual client and months: the inlined query's
    -- "client is null or client_id = client" filters then fold into index conditions. Literals,
    -- not parameters: Citus plans the inlined query only with constants (ADR 0012).
    execute format($q$
      select coalesce(jsonb_agg(to_jsonb(l)), '[]')
        from (select u.period, u.pipeline, u.step, u.unit_price, u.priced, u.units,
                     u.completed_steps, u.amount, 'live' as source
                from ledger._usage_lines(%L, %L::date, %L::date) u
               where u.period = any(%L::date[])) l
    $q$, p_client_id, v_stale[1], (v_stale[cardinality(v_stale)] + interval '1 month')::date,
          v_stale) into v_part;
    v_usage := v_usage || v_part;
  end if;

  return query
  with usage as (
    select * from jsonb_to_recordset(v_usage)
      as u(period date, pipeline text, step text, unit_price numeric, priced boolean,
           units numeric, completed_steps bigint, amount numeric, source text)
  ),
  totals as (
    select p.p as period, coalesce(sum(u.amount), 0) as usage_amount
      from unnest(v_periods) as p(p)
      left join usage u on u.period = p.p
     group by p.p
  ),
  minimums as (
    select t.period, m.monthly_minimum, t.usage_amount
      from totals t
      cross join lateral (
        select cm.monthly_minimum
          from ledger.client_minimums cm
         where cm.client_id = p_client_id and cm.currency = v_currency
           and cm.effective_from <= t.period
         order by cm.effective_from desc, cm.minimum_id desc
         limit 1) m
     where m.monthly_minimum > t.usage_amount
  )
  select u.period, 'usage'::text, u.pipeline, u.step, u.unit_price, u.priced, u.units,
         u.completed_steps, u.amount,
         case when not u.priced then 'no price in force: billed at 0' end, u.source
    from usage u
  union all
  select m.period, 'minimum'::text, null::text, null::text, null::numeric, null::boolean,
         null::numeric, null::bigint, m.monthly_minimum - m.usage_amount,
         format('monthly minimum %s %s; usage %s %s', m.monthly_minimum, v_currency,
                m.usage_amount, v_currency),
         case when m.period = any(v_fresh) then 'materialized' else 'live' end
    from minimums m;
end
$$;
comment on function ledger._period_lines(text, date[]) is
  'Usage and monthly-minimum lines a client owes for the given periods as of now.';

create or replace function ledger._invoice_lines(p_client_id text, p_period date)
returns table (line_no integer, kind text, basis text, for_period date, pipeline text,
               step text, unit_price numeric, priced boolean, units numeric,
               completed_steps bigint, amount numeric, description text, source text)
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
-- The lines of a client's open invoice for a period: the period's usage and minimum top-up, plus
-- adjustment lines for every finalized period whose next open invoice this is (every month
-- between it and this one is finalized). An adjustment is what is owed now for that period minus
-- what its finalized invoice and earlier adjustments billed, per (pipeline, step, unit price).
declare
  v_adjust date[];
  v_owed jsonb;
begin
  select coalesce(array_agg(i.period order by i.period), '{}') into v_adjust
    from ledger.invoices i
   where i.client_id = p_client_id and i.period < p_period
     and (select count(*) from ledger.invoices j
           where j.client_id = p_client_id and j.period > i.period and j.period < p_period)
         = ledger._months_between(i.period, p_period) - 1;

  -- What is owed, in a statement of its own: on a Citus cluster the statement below is sent to
  -- the worker that holds the client, where a function that reads Citus tables cannot run.
  select coalesce(jsonb_agg(to_jsonb(o)), '[]') into v_owed
    from ledger._period_lines(p_client_id, array[p_period] || v_adjust) o;

  return query
  with owed as (
    select * from jsonb_to_recordset(v_owed)
      as o(period date, basis text, pipeline text, step text, unit_price numeric,
           priced boolean, units numeric, completed_steps bigint, amount numeric,
           description text, source text)
  ),
  lines as (
    select o.basis as kind, o.basis, o.period as for_period, o.pipeline, o.step, o.unit_price,
           o.priced, o.units, o.completed_steps, o.amount, o.description, o.source
      from owed o
     where o.period = p_period
    union all
    select 'adjustment', d.basis, d.for_period, d.pipeline, d.step, min(d.unit_price), d.priced,
           sum(d.units), sum(d.completed_steps)::bigint, sum(d.amount),
           format('adjustment for %s', to_char(d.for_period, 'YYYY-MM'))
             || case when d.basis = 'minimum' then ': monthly minimum top-up'
                     when not d.priced then ': no price in force' else '' end,
           coalesce(min(d.source), 'finalized')
      from (
        select o.period as for_period, o.basis, o.pipeline, o.step, o.unit_price, o.priced,
               o.units, o.completed_steps, o.amount, o.source
          from owed o
         where o.period <> p_period
        union all
        select l.for_period, l.basis, l.pipeline, l.step, l.unit_price, l.priced,
               -l.units, -l.completed_steps, -l.amount, null
          from ledger.invoice_lines l
         where l.client_id = p_client_id and l.for_period = any(v_adjust)
      ) d
     group by d.for_period, d.basis, d.pipeline, d.step, d.unit_price, d.priced
    having sum(d.amount) <> 0 or coalesce(sum(d.units), 0) <> 0
        or coalesce(sum(d.completed_steps), 0) <> 0
  )
  select (row_number() over (order by
            case l.kind when 'usage' then 1 when 'minimum' then 2 else 3 end,
            l.for_period, l.basis desc, l.pipeline, s.step_index nulls last, l.step,
            l.unit_price desc, l.priced desc))::integer,
         l.kind, l.basis, l.for_period, l.pipeline, l.step, l.unit_price, l.priced, l.units,
         l.completed_steps, l.amount, l.description, l.source
    from lines l
    left join ledger.pipeline_steps s on s.pipeline = l.pipeline and s.step = l.step
   order by 1;
end
$$;
comment on function ledger._invoice_lines(text, date) is
  'Lines of a client''s open invoice for a period: usage, minimum top-up and adjustments of finalized periods.';

create or replace function ledger._invoice_json(p_client_id text, p_period date) returns jsonb
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
-- The invoice document of the contract: the frozen invoice when the period is finalized, else
-- the draft as of now.
declare
  v_inv ledger.invoices;
  v_lines jsonb;
  v_currency text;
  v_name text;
  v_terms integer;
  v_sources text[];
begin
  select * into v_inv from ledger.invoices i where i.client_id = p_client_id and i.period = p_period;
  if found then
    select coalesce(jsonb_agg(jsonb_build_object(
             'line_no', l.line_no, 'kind', l.kind, 'pipeline', l.pipeline, 'step', l.step,
             'unit_price', l.unit_price, 'units', l.units, 'amount', l.amount,
             'completed_steps', l.completed_steps, 'priced', l.priced,
             'for_period', to_char(l.for_period, 'YYYY-MM'), 'basis', l.basis,
             'description', l.description) order by l.line_no), '[]')
      into v_lines
      from ledger.invoice_lines l
     where l.client_id = p_client_id and l.period = p_period;
    return jsonb_build_object(
      'client_id', v_inv.client_id, 'period', to_char(v_inv.period, 'YYYY-MM'),
      'status', 'finalized', 'currency', v_inv.currency, 'invoice_no', v_inv.invoice_no,
      'number', v_inv.number, 'issued_on', v_inv.issued_on, 'due_on', v_inv.due_on,
      'payment_terms_days', v_inv.due_on - v_inv.issued_on,
      'client_name', (select c.name from ledger.clients c where c.client_id = v_inv.client_id),
      'lines', v_lines, 'usage_amount', v_inv.usage_amount,
      'minimum_amount', v_inv.minimum_amount, 'adjustments_amount', v_inv.adjustments_amount,
      'total', v_inv.total,
      'unpriced_steps', (select coalesce(sum((l->>'completed_steps')::bigint), 0)
                           from jsonb_array_elements(v_lines) l
                          where l->>'kind' = 'usage' and (l->>'priced')::boolean is false),
      'finalized_at', v_inv.finalized_at, 'finalized_by', v_inv.finalized_by,
      'generated_at', now(), 'source', 'finalized');
  end if;

  select c.currency, c.name, c.payment_terms_days into v_currency, v_name, v_terms
    from ledger.clients c where c.client_id = p_client_id;
  select coalesce(jsonb_agg(jsonb_build_object(
           'line_no', l.line_no, 'kind', l.kind, 'pipeline', l.pipeline, 'step', l.step,
           'unit_price', l.unit_price, 'units', l.units, 'amount', l.amount,
           'completed_steps', l.completed_steps, 'priced', l.priced,
           'for_period', to_char(l.for_period, 'YYYY-MM'), 'basis', l.basis,
           'description', l.description) order by l.line_no), '[]'),
         array_agg(distinct l.source) filter (where l.source is not null)
    into v_lines, v_sources
    from ledger._invoice_lines(p_client_id, p_period) l;
  return jsonb_build_object(
    'client_id', p_client_id, 'period', to_char(p_period, 'YYYY-MM'), 'status', 'draft',
    'currency', v_currency, 'invoice_no', null, 'number', null, 'issued_on', null, 'due_on', null,
    'payment_terms_days', v_terms, 'client_name', v_name, 'lines', v_lines,
    'usage_amount', ledger._sum_amounts(v_lines, 'usage'),
    'minimum_amount', ledger._sum_amounts(v_lines, 'minimum'),
    'adjustments_amount', ledger._sum_amounts(v_lines, 'adjustment'),
    'total', ledger._sum_amounts(v_lines, null),
    'unpriced_steps', (select coalesce(sum((l->>'completed_steps')::bigint), 0)
                         from jsonb_array_elements(v_lines) l
                        where l->>'kind' = 'usage' and (l->>'priced')::boolean is false),
    'finalized_at', null, 'finalized_by', null, 'generated_at', now(),
    'source', case when v_sources is null then 'materialized'
                   when cardinality(v_sources) = 1 then v_sources[1] else 'mixed' end);
end
$$;
comment on function ledger._invoice_json(text, date) is 'The invoice document (contract §4) of a client and period: finalized or draft.';

create or replace function ledger._sum_amounts(p_lines jsonb, p_kind text) returns numeric
language sql immutable
as $$
  -- Sum of the (already rounded) line amounts of one kind, or of every line when p_kind is null.
  select coalesce(sum((l->>'amount')::numeric), 0)
    from jsonb_array_elements(p_lines) l
   where p_kind is null or l->>'kind' = p_kind
$$;
comment on function ledger._sum_amounts(jsonb, text) is 'Sum of invoice line amounts, of one kind or all.';

create or replace function ledger._invoice_for_caller(p_client_id text, p_period text) returns jsonb
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
-- POST /rpc/invoice: a client's users get their own client's invoices only; admins any client's.
declare
  v_period date := ledger._parse_period(p_period);
begin
  if not ledger._sees_all_clients() and p_client_id is distinct from auth.client_id() then
    raise exception 'not allowed to see invoices of client "%"', p_client_id
      using errcode = 'SL406', hint = 'a client''s login sees only its own client''s invoices';
  end if;
  if not exists (select from ledger.clients c where c.client_id = p_client_id) then
    raise exception 'unknown client "%"', p_client_id using errcode = 'SL404';
  end if;
  return ledger._invoice_json(p_client_id, v_period);
end
$$;
comment on function ledger._invoice_for_caller(text, text) is 'The invoice of a client and period, for a caller allowed to see it.';

create or replace function api.invoice(client_id text, period text) returns jsonb
language sql stable
as $$
  select ledger._invoice_for_caller($1, $2)
$$;
comment on function api.invoice(text, text) is
  'The invoice of a client for a period (YYYY-MM): lines (pipeline, step, units, unit_price, amount), total, currency and status (draft until an admin finalizes the period, then frozen). Late events for a finalized period appear as adjustment lines on the next open invoice.';

-- PDFs are served with their own media type (a PostgREST 12 media type handler: a function
-- returning a domain named after the type answers Accept: application/pdf with the raw bytes).
do $$
begin
  if to_regtype('api."application/pdf"') is null then
    create domain api."application/pdf" as bytea;
  end if;
end
$$;

create or replace function api.invoice_pdf(client_id text, period text) returns api."application/pdf"
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
-- GET /rpc/invoice_pdf?client_id=C&period=YYYY-MM with Accept: application/pdf. Runs with the
-- caller's rights: another client's invoice is as absent as one that does not exist.
declare
  v_pdf bytea;
begin
  select d.document into v_pdf
    from ledger.invoice_documents d
   where d.client_id = invoice_pdf.client_id and d.period = ledger._parse_period(invoice_pdf.period);
  if v_pdf is null then
    perform ledger._raise_not_found('SL412',
      format('no PDF of an invoice of client "%s" for %s', invoice_pdf.client_id, invoice_pdf.period),
      'a PDF exists once the month is finalized (it is ready seconds later); a client sees only its own invoices');
  end if;
  return v_pdf;
end
$$;
comment on function api.invoice_pdf(text, text) is
  'The PDF of a finalized invoice (send Accept: application/pdf): the same document as the HTML and CLI views. Clients get their own invoices only.';

create or replace function ledger._finalize_invoice(p_client_id text, p_period text) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
-- Freezes a client's invoice for a period that is over: the draft's lines as of now become an
-- immutable invoice. Later changes for that period become adjustment lines of the next open
-- invoice. Admins only.
declare
  v_period date := ledger._parse_period(p_period);
  v_role text := auth.role();
  v_currency text;
  v_lines jsonb;
  v_actor record := ledger._actor();
  v_terms integer;
  v_number integer;
  v_issued date;
begin
  if v_role not in ('admin', 'stepledger_owner') then
    raise exception 'role "%" may not finalize invoices', v_role using errcode = 'SL406';
  end if;
  if ledger._month_start((v_period + interval '1 month')::date) > now() then
    raise exception 'period % is not over yet', p_period
      using errcode = 'SL407', hint = 'a period can be finalized once its month has ended (UTC)';
  end if;
  -- One finalization per client at a time; concurrent ones wait here, then see the first.
  select c.currency, c.payment_terms_days into v_currency, v_terms
    from ledger.clients c where c.client_id = p_client_id for update;
  if not found then
    raise exception 'unknown client "%"', p_client_id using errcode = 'SL404';
  end if;
  if exists (select 1 from ledger.invoices i where i.client_id = p_client_id and i.period = v_period) then
    raise exception 'invoice of client "%" for % is already finalized', p_client_id, p_period
      using errcode = 'SL408', hint = 'late changes appear as adjustments on the next open invoice';
  end if;

  -- One statement, one snapshot: the frozen lines are exactly the draft as of this moment.
  select coalesce(jsonb_agg(to_jsonb(l) order by l.line_no), '[]') into v_lines
    from ledger._invoice_lines(p_client_id, v_period) l;

  -- Numbered within the client (1, 2, ...) under the client's row lock taken above: gapless,
  -- and unique per client without a global index (docs/scaling.md).
  select coalesce(max(i.number), 0) + 1 into v_number from ledger.invoices i where i.client_id = p_client_id;
  v_issued := (now() at time zone 'UTC')::date;
  insert into ledger.invoices (client_id, period, invoice_no, number, issued_on, due_on, currency,
                               usage_amount, minimum_amount, adjustments_amount, total, lines_count,
                               finalized_by, finalized_role, finalized_token)
  values (p_client_id, v_period, format('%s-%s', p_client_id, lpad(v_number::text, 4, '0')),
          v_number, v_issued, v_issued + v_terms,
          v_currency, ledger._sum_amounts(v_lines, 'usage'), ledger._sum_amounts(v_lines, 'minimum'),
          ledger._sum_amounts(v_lines, 'adjustment'), ledger._sum_amounts(v_lines, null),
          jsonb_array_length(v_lines), v_actor.actor, v_actor.role, v_actor.token);

  insert into ledger.invoice_lines (client_id, period, line_no, kind, basis, for_period, pipeline,
                                    step, unit_price, priced, units, completed_steps, amount,
                                    description)
  select p_client_id, v_period, l.line_no, l.kind, l.basis, l.for_period, l.pipeline, l.step,
         l.unit_price, l.priced, l.units, l.completed_steps, l.amount, l.description
    from jsonb_to_recordset(v_lines) as l(line_no integer, kind text, basis text, for_period date,
                                          pipeline text, step text, unit_price numeric,
                                          priced boolean, units numeric, completed_steps bigint,
                                          amount numeric, description text);
  perform ledger._enqueue_invoice_finalized(p_client_id, v_period);  -- notifications outbox

  -- The stack's scheduler renders the PDF of the new invoice soon after the commit.
  perform pg_notify('stepledger_scheduler', 'render_invoices');
  return ledger._invoice_json(p_client_id, v_period);
end
$$;
comment on function ledger._finalize_invoice(text, text) is 'Freezes a client''s invoice for a finished period (admins).';

create or replace function api.finalize_invoice(client_id text, period text) returns jsonb
language sql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
  select ledger._finalize_invoice($1, $2)
$$;
comment on function api.finalize_invoice(text, text) is
  'Admins: freeze the invoice of a client for a finished period (YYYY-MM). The finalized invoice never changes; later events for that period become adjustment lines on the next open invoice.';

-- ---------------------------------------------------------------------------------------------
-- Refreshing the usage materialized view
-- ---------------------------------------------------------------------------------------------

create or replace function ledger.refresh_usage(p_requested_by text default null,
                                                p_concurrently boolean default true)
returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
set work_mem = '64MB'
as $$
-- Refreshes ledger.usage_lines_monthly (concurrently: readers and ingest are never blocked) and
-- records the snapshot it started from; change-log rows that snapshot saw are absorbed. Only one
-- refresh runs at a time: a second caller returns at once with refreshed = false.
declare
  v_started timestamptz := clock_timestamp();
  v_snapshot pg_snapshot;
  v_concurrently boolean;
  v_absorbed bigint;
  v_rows bigint;
  v_id bigint;
  v_finished timestamptz;
begin
  if not pg_try_advisory_xact_lock(hashtext('stepledger.refresh_usage')) then
    return jsonb_build_object('refreshed', false, 'reason', 'another refresh is running');
  end if;
  -- Taken before the refresh statement, whose own snapshot is at least as recent: every change
  -- visible here is in the refreshed view.
  v_snapshot := pg_current_snapshot();
  v_concurrently := p_concurrently and (select c.relispopulated from pg_class c
                                         where c.oid = 'ledger.usage_lines_monthly'::regclass);
  if v_concurrently then
    refresh materialized view concurrently ledger.usage_lines_monthly;
  else
    refresh materialized view ledger.usage_lines_monthly;
  end if;
  delete from ledger.billing_changes ch where pg_visible_in_snapshot(ch.xid, v_snapshot);
  get diagnostics v_absorbed = row_count;
  select count(*) into v_rows from ledger.usage_lines_monthly;
  v_finished := clock_timestamp();
  insert into ledger.billing_refreshes (started_at, finished_at, snapshot, duration_ms, line_rows,
                                        changes_absorbed, concurrent, requested_by)
  values (v_started, v_finished, v_snapshot,
          round(extract(epoch from v_finished - v_started) * 1000, 1), v_rows, v_absorbed,
          v_concurrently, coalesce(p_requested_by, (ledger._actor()).actor))
  returning refresh_id into v_id;
  delete from ledger.billing_refreshes r where r.refresh_id < v_id - 1000;
  perform ledger._enqueue_usage_crossings();  -- notifications outbox: usage thresholds
  return jsonb_build_object('refreshed', true, 'refresh_id', v_id, 'started_at', v_started,
                            'finished_at', v_finished,
                            'duration_ms', round(extract(epoch from v_finished - v_started) * 1000, 1),
                            'line_rows', v_rows, 'changes_absorbed', v_absorbed,
                            'concurrently', v_concurrently);
end
$$;
comment on function ledger.refresh_usage(text, boolean) is
  'Refreshes the usage materialized view (concurrently unless asked otherwise) and records it; the scheduler, pg_cron and POST /rpc/refresh_usage call it.';

create or replace function api.refresh_usage() returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
-- Admins: refresh the usage figures now instead of waiting for the schedule.
begin
  if auth.role() not in ('admin', 'stepledger_owner') then
    raise exception 'role "%" may not refresh usage', auth.role() using errcode = 'SL406';
  end if;
  return ledger.refresh_usage('api: ' || (ledger._actor()).actor);
end
$$;
comment on function api.refresh_usage() is
  'Admins: refresh the usage materialized view now (GET /usage shows refreshed_at and stale). Returns refreshed = false when a refresh is already running.';
