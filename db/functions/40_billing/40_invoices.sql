-- Invoices: what a client owes, drafts, finalizing (billing rules and error codes: 10_common.sql).

-- ---------------------------------------------------------------------------------------------
-- Invoices
-- ---------------------------------------------------------------------------------------------


create or replace function ledger._months_between(p_from date, p_to date) returns integer
language sql immutable parallel safe as $$
  -- Whole calendar months from one period to another (2026-01 to 2026-03: 2).
  select ((extract(year from p_to) * 12 + extract(month from p_to))
          - (extract(year from p_from) * 12 + extract(month from p_from)))::integer
$$;
comment on function ledger._months_between(date, date) is 'Calendar months between two periods.';

create or replace function ledger._period_lines(p_client_id text, p_periods date[])
returns table (period date, basis text, pipeline text, step text, unit_price numeric,
               priced boolean, units numeric, completed_steps bigint, amount numeric,
               description text, source text)
language plpgsql stable set search_path = pg_catalog, pg_temp as $$
-- What a client owes for each of the given periods as of now: its usage lines (from the
-- refreshed lines where those are current for the client and period, else computed live) and a
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
language plpgsql stable set search_path = pg_catalog, pg_temp as $$
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
language plpgsql stable set search_path = pg_catalog, pg_temp as $$
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
language sql immutable as $$
  -- Sum of the (already rounded) line amounts of one kind, or of every line when p_kind is null.
  select coalesce(sum((l->>'amount')::numeric), 0)
    from jsonb_array_elements(p_lines) l
   where p_kind is null or l->>'kind' = p_kind
$$;
comment on function ledger._sum_amounts(jsonb, text) is 'Sum of invoice line amounts, of one kind or all.';

create or replace function ledger._invoice_for_caller(p_client_id text, p_period text) returns jsonb
language plpgsql stable set search_path = pg_catalog, pg_temp as $$
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
language sql stable as $$
  select ledger._invoice_for_caller($1, $2)
$$;
comment on function api.invoice(text, text) is
  'The invoice of a client for a period (YYYY-MM): lines (pipeline, step, units, unit_price, amount), total, currency and status (draft until an admin finalizes the period, then frozen). Late events for a finalized period appear as adjustment lines on the next open invoice.';

-- PDFs are served with their own media type (a PostgREST 12 media type handler: a function
-- returning a domain named after the type answers Accept: application/pdf with the raw bytes).
select ledger._create_media_type('application/pdf', 'bytea');

create or replace function api.invoice_pdf(client_id text, period text) returns api."application/pdf"
language plpgsql stable set search_path = pg_catalog, pg_temp as $$
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
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
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
language sql volatile security definer set search_path = pg_catalog, pg_temp as $$
  select ledger._finalize_invoice($1, $2)
$$;
comment on function api.finalize_invoice(text, text) is
  'Admins: freeze the invoice of a client for a finished period (YYYY-MM). The finalized invoice never changes; later events for that period become adjustment lines on the next open invoice.';
