-- The price book and monthly minimums (billing rules and error codes: 10_common.sql).

-- ---------------------------------------------------------------------------------------------
-- The price book and monthly minimums: validated, attributed, append-only
-- ---------------------------------------------------------------------------------------------

create or replace function ledger._normalized_tiers(p_tiers jsonb) returns jsonb
language plpgsql immutable set search_path = pg_catalog, pg_temp as $$
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

create or replace function ledger._price_book_changed(p_client_id text, p_from date, p_reason text)
returns void
language plpgsql volatile set search_path = pg_catalog, pg_temp as $$
-- A price or minimum from p_from on changes usage from that month on: log it for the usage view,
-- and wake the stack's scheduler (loader/stepledger/stack/scheduler.py) to refresh it soon after
-- the commit.
begin
  insert into ledger.billing_changes (client_id, period_from, period_to, reason, xid)
  values (p_client_id, p_from, 'infinity', p_reason, ledger._change_log_xid());
  perform pg_notify('stepledger_scheduler', 'refresh_usage');
end
$$;
comment on function ledger._price_book_changed(text, date, text) is
  'Logs a price book change for the usage view and asks the scheduler to refresh it.';

create or replace function ledger._client_billing_currency(p_client_id text, p_currency text)
returns text
language plpgsql stable set search_path = pg_catalog, pg_temp as $$
-- A client's own price or minimum is in the client's currency: the currency given (null: the
-- client's), SL404 for an unknown client and SL403 for another currency.
declare
  v_client_currency text;
begin
  select c.currency into v_client_currency from ledger.clients c where c.client_id = p_client_id;
  if not found then
    raise exception 'unknown client "%"', p_client_id using errcode = 'SL404';
  end if;
  if coalesce(p_currency, v_client_currency) <> v_client_currency then
    raise exception 'client "%" is billed in %, not %', p_client_id, v_client_currency, p_currency
      using errcode = 'SL403';
  end if;
  return v_client_currency;
end
$$;
comment on function ledger._client_billing_currency(text, text) is
  'The currency of a client''s own price or minimum: the client''s (SL404 unknown client, SL403 another currency).';

-- Every row of the price book and of the monthly minimums is written by the owner's function of
-- its table: POST /prices and POST /client_minimums through the views' INSTEAD OF triggers
-- (50_billing_views.sql), the CLI, the demo and scripts by calling it. The checks, who recorded
-- the row (the caller's claims) and the change-log write run once, where it is called: on a
-- Citus coordinator, not in a row trigger on every copy of the reference table ledger.prices or
-- on the worker holding the shard of ledger.client_minimums (ADR 0012).

create or replace function ledger.add_price(
  p_pipeline ledger.slug, p_step ledger.slug, p_unit_price numeric,
  p_client_id ledger.slug default null, p_currency text default null,
  p_effective_from timestamptz default null, p_tiers jsonb default null, p_note text default null)
returns bigint
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
-- Stores a price row and returns its price_id: the step exists, the currency matches the
-- client's, the numbers are sane; who recorded it is filled in; the usage lines learn that
-- prices changed.
declare
  v_effective_from timestamptz := coalesce(p_effective_from, now());
  v_currency text;
  v_actor record;
  v_price_id bigint;
begin
  if not exists (select from ledger.pipeline_steps s where s.pipeline = p_pipeline and s.step = p_step) then
    raise exception 'pipeline "%" has no step "%"', p_pipeline, p_step
      using errcode = 'SL401', hint = 'register the pipeline first (stepledger pipeline add)';
  end if;
  if p_client_id is not null then
    v_currency := ledger._client_billing_currency(p_client_id, p_currency);
  else
    v_currency := coalesce(p_currency, 'EUR');
  end if;
  if v_currency !~ '^[A-Z]{3}$' then
    raise exception 'invalid currency "%"', v_currency using errcode = 'SL402', hint = 'an ISO 4217 code such as EUR';
  end if;
  if p_unit_price is null or p_unit_price < 0 then
    raise exception 'unit_price must be a number >= 0, not %', coalesce(p_unit_price::text, 'null')
      using errcode = 'SL402';
  end if;
  select * into v_actor from ledger._actor();
  insert into ledger.prices (pipeline, step, client_id, unit_price, currency, tiers,
                             effective_from, note, recorded_at, recorded_by, recorded_role,
                             recorded_token, recorded_via)
  values (p_pipeline, p_step, p_client_id, trim_scale(p_unit_price), v_currency,
          ledger._normalized_tiers(p_tiers), v_effective_from, p_note, now(),
          v_actor.actor, v_actor.role, v_actor.token, v_actor.via)
  returning price_id into v_price_id;
  perform ledger._price_book_changed(coalesce(p_client_id, ''), ledger._month(v_effective_from),
                                     'price');
  return v_price_id;
end
$$;
comment on function ledger.add_price(ledger.slug, ledger.slug, numeric, ledger.slug, text, timestamptz, jsonb, text) is
  'Validates, attributes and stores a price book row (the only writer of ledger.prices); returns its price_id.';

create or replace function ledger.add_client_minimum(
  p_client_id ledger.slug, p_monthly_minimum numeric, p_effective_from date,
  p_currency text default null, p_note text default null)
returns bigint
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
-- Stores a monthly minimum and returns its minimum_id: client, currency and amount are checked,
-- who recorded it is filled in, and the usage lines learn about it.
declare
  v_currency text := ledger._client_billing_currency(p_client_id, p_currency);
  v_actor record;
  v_minimum_id bigint;
begin
  if p_effective_from is null or extract(day from p_effective_from) <> 1 then
    raise exception 'a monthly minimum starts on the first day of a month, not %', p_effective_from
      using errcode = 'SL411';
  end if;
  if p_monthly_minimum is null or p_monthly_minimum < 0 then
    raise exception 'monthly_minimum must be a number >= 0' using errcode = 'SL411';
  end if;
  select * into v_actor from ledger._actor();
  insert into ledger.client_minimums (client_id, monthly_minimum, currency, effective_from, note,
                                      recorded_at, recorded_by, recorded_role, recorded_token,
                                      recorded_via)
  values (p_client_id, trim_scale(p_monthly_minimum), v_currency, p_effective_from, p_note, now(),
          v_actor.actor, v_actor.role, v_actor.token, v_actor.via)
  returning minimum_id into v_minimum_id;
  perform ledger._price_book_changed(p_client_id, p_effective_from, 'minimum');
  return v_minimum_id;
end
$$;
comment on function ledger.add_client_minimum(ledger.slug, numeric, date, text, text) is
  'Validates, attributes and stores a monthly minimum (the only writer of ledger.client_minimums); returns its minimum_id.';

-- The views' triggers read the new row back as the owner, who wrote it: on a Citus cluster a
-- transaction may not read placements that another user modified in it.
create or replace function ledger.tg_api_prices__insert() returns trigger
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
-- POST /prices: ledger.add_price stores the row, answered as GET /prices shows it (Prefer:
-- return=representation).
declare
  v_price_id bigint := ledger.add_price(new.pipeline, new.step, new.unit_price, new.client_id,
                                        new.currency, new.effective_from, new.tiers, new.note);
begin
  select p.* into new from api.prices p where p.price_id = v_price_id;
  return new;
end
$$;
comment on function ledger.tg_api_prices__insert() is 'POST /prices: stores the row through ledger.add_price.';

create or replace function ledger.tg_api_client_minimums__insert() returns trigger
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
-- POST /client_minimums: ledger.add_client_minimum stores the row, answered as GET shows it.
declare
  v_minimum_id bigint := ledger.add_client_minimum(new.client_id, new.monthly_minimum,
                                                   new.effective_from, new.currency, new.note);
begin
  select m.* into new from api.client_minimums m
   where m.client_id = new.client_id and m.minimum_id = v_minimum_id;
  return new;
end
$$;
comment on function ledger.tg_api_client_minimums__insert() is 'POST /client_minimums: stores the row through ledger.add_client_minimum.';

create or replace function ledger.tg_billing__immutable() returns trigger
language plpgsql set search_path = pg_catalog, pg_temp as $$
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

select ledger._refuse_changes(t, 'ledger.tg_billing__immutable', 'immutable_rows', 'immutable_table')
  from unnest(array['ledger.prices', 'ledger.client_minimums', 'ledger.invoices',
                    'ledger.invoice_lines', 'ledger.invoice_documents']::regclass[]) t;

create or replace function ledger._check_currency_change(p_client_id text, p_old text, p_new text)
returns void
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
-- A client's currency may change only before anything is billed in the old one: not once an
-- invoice is finalized (its adjustments must stay in its currency), not while the client has
-- its own prices or minimums in the old currency (the price book is append-only: they would be
-- orphaned), and not while an open invoice bills completed steps (it would be repriced). The
-- rule holds for every path: the CLI, psql, PostgREST. A change reprices nothing else; it is
-- logged for the usage view.
declare
  v_where text;
  v_period date;
  v_xid xid8 := ledger._change_log_xid();
begin
  if exists (select 1 from ledger.invoices i where i.client_id = p_client_id) then
    v_where := 'finalized invoices';
  elsif exists (select from ledger.prices p
                 where p.client_id = p_client_id and p.currency = p_old) then
    v_where := 'its own prices';
  elsif exists (select from ledger.client_minimums m
                 where m.client_id = p_client_id and m.currency = p_old) then
    v_where := 'a monthly minimum';
  else
    select ledger._month(js.completed_at) into v_period
      from ledger.job_steps js
     where js.client_id = p_client_id and js.completed_at is not null
     limit 1;
    if v_period is not null then
      v_where := format('an open invoice (%s)', to_char(v_period, 'YYYY-MM'));
    end if;
  end if;
  if v_where is not null then
    raise exception 'cannot change the currency of client "%" from % to %: it has % in %',
      p_client_id, p_old, p_new, v_where, p_old
      using errcode = 'SL410',
            hint = format('billing records keep their currency; bill %s under a new client id '
                          '(stepledger client add %s-%s --name ... --currency %s)',
                          p_new, p_client_id, lower(p_new), p_new);
  end if;
  insert into ledger.billing_changes (client_id, period_from, period_to, reason, xid)
  values (p_client_id, '-infinity', 'infinity', 'currency', v_xid);
end
$$;
comment on function ledger._check_currency_change(text, text, text) is 'Refuses (SL410) or logs a change of a client''s billing currency.';

create or replace function ledger._approve_currency_change(p_client_id text, p_currency text)
returns void
language plpgsql volatile set search_path = pg_catalog, pg_temp as $$
-- Called by the functions that change a client before their UPDATE: checks a currency change
-- here, once, and tells the trigger below that it was checked. On a Citus cluster the trigger
-- runs on every copy of ledger.clients (a reference table), where the checks' reads of
-- distributed tables are refused (ADR 0012); the mark reaches those copies.
declare
  v_old text;
begin
  select c.currency into v_old from ledger.clients c where c.client_id = p_client_id;
  if v_old is not null and p_currency is not null and p_currency <> v_old then
    perform ledger._check_currency_change(p_client_id, v_old, p_currency);
    perform ledger._set_local_on_every_node('stepledger.currency_checked',
                                            p_client_id || ' ' || p_currency);
  end if;
end
$$;
comment on function ledger._approve_currency_change(text, text) is 'Checks a client''s currency change before the functions that change clients write it.';

create or replace function ledger.tg_clients__currency_change() returns trigger
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
-- Every path that changes a currency meets the rule (ledger._check_currency_change), once: a
-- change that update_client or add_client checked already is marked so.
begin
  if new.currency is distinct from old.currency
     and current_setting('stepledger.currency_checked', true)
         is distinct from old.client_id || ' ' || new.currency then
    perform ledger._check_currency_change(old.client_id, old.currency, new.currency);
  end if;
  return new;
end
$$;
comment on function ledger.tg_clients__currency_change() is 'Guards and logs a change of a client''s billing currency.';

create or replace trigger billing_currency_change
  before update of currency on ledger.clients
  for each row execute function ledger.tg_clients__currency_change();
