-- Billing views (contract §4: /usage, /prices, /rpc/invoice; docs/billing.md).
--
-- ledger.usage_lines_visible is the usage lines as the caller may see them: the table's own
-- row-level security (02_row_security.sql: own client only, admins everything) applies, as the
-- view runs with the caller's rights; on a Citus cluster the workers apply it where the lines
-- are. Every view that clients, admins and BI logins use is security_invoker on top of it.

create or replace view ledger.usage_lines_visible with (security_barrier = true, security_invoker = true) as
select m.client_id, m.period, m.pipeline, m.step, m.unit_price, m.priced, m.currency,
       m.completed_steps, m.units, m.amount, m.first_completed_at, m.last_completed_at
  from ledger.usage_lines_monthly m;

comment on view ledger.usage_lines_visible is 'The usage lines under their row-level security: own client only, admins everything.';

-- The visible lines with the last refresh's time and whether their month is stale
-- (ledger._usage_month_stale), joined with the unseen months once per statement (30_usage.sql).
create or replace view ledger.usage_lines_current with (security_invoker = true) as
select u.client_id, u.period, u.pipeline, u.step, u.unit_price, u.priced, u.currency,
       u.completed_steps, u.units, u.amount, u.first_completed_at, u.last_completed_at,
       r.finished_at as refreshed_at,
       ledger._usage_month_stale(u.period, r.finished_at, own.months, every.months) as stale
  from ledger.usage_lines_visible u
  left join ledger.usage_last_refresh r on true
  left join ledger.usage_unseen_months own on own.client_id = u.client_id
  -- every client's unseen months filtered inside: on a cluster, a query of the one shard of ''
  left join (select a.months from ledger.usage_unseen_months a where a.client_id = '') every
         on true;

comment on view ledger.usage_lines_current is 'The visible usage lines, with when the lines were last refreshed and whether their month changed since.';

-- ---------------------------------------------------------------------------------------------
-- HTTP surface
-- ---------------------------------------------------------------------------------------------

create or replace view api.usage with (security_invoker = true) as
select u.client_id,
       to_char(u.period, 'YYYY-MM') as period,
       u.pipeline,
       u.step,
       sum(u.completed_steps)::bigint as completed_steps,
       sum(u.units) as units,
       sum(u.amount) as amount,
       u.currency,
       coalesce(sum(u.completed_steps) filter (where not u.priced), 0)::bigint as unpriced_steps,
       max(u.refreshed_at) as refreshed_at,
       bool_or(u.stale) as stale
  from ledger.usage_lines_current u
 group by u.client_id, u.period, u.pipeline, u.step, u.currency;

comment on view api.usage is 'Billed usage per client, month (UTC), pipeline and step: completed steps, units and amount (sum of the rounded invoice lines). Served from the usage lines, refreshed seconds after each change: refreshed_at says when, stale whether changes arrived since.';
comment on column api.usage.period is 'Calendar month in UTC of the billed completions, YYYY-MM.';
comment on column api.usage.completed_steps is 'Billed (client, job, step) completions: one per step of a job, the latest completed attempt.';
comment on column api.usage.units is 'Sum of the units of the billed completions.';
comment on column api.usage.amount is 'Sum of the invoice lines of this step: units x unit price, rounded half away from zero per line.';
comment on column api.usage.unpriced_steps is 'Completed steps with no price in force (billed at 0).';
comment on column api.usage.refreshed_at is 'When the usage lines were last refreshed.';
comment on column api.usage.stale is 'True when usage of this client and month changed after that refresh (POST /rpc/invoice is always current).';

create or replace view api.usage_freshness with (security_invoker = true) as
select r.finished_at as refreshed_at,
       r.started_at as refresh_started_at,
       r.duration_ms as refresh_duration_ms,
       round(extract(epoch from now() - r.finished_at)::numeric, 1) as age_s,
       ledger._usage_changes_pending() as pending_changes
  from ledger.usage_last_refresh r;

comment on view api.usage_freshness is 'How fresh GET /usage is: last refresh of the usage lines and the number of changes (of the caller''s clients) since.';

create or replace view api.prices with (security_invoker = true) as
select p.pipeline,
       p.step,
       p.client_id,
       p.unit_price,
       p.currency,
       p.effective_from,
       p.tiers,
       p.note,
       p.price_id,
       p.recorded_at,
       p.recorded_by,
       p.recorded_role,
       -- The billing rule of ledger._usage_lines_of (docs/billing.md): a row is in force from its
       -- effective_from until the next row of the same pipeline, step, client and currency; of
       -- two rows with the same effective_from the later recorded one wins.
       case when p.effective_from > now() then 'scheduled'
            when exists (select 1 from ledger.prices n
                          where n.pipeline = p.pipeline and n.step = p.step
                            and n.client_id is not distinct from p.client_id
                            and n.currency = p.currency
                            and n.effective_from <= now()
                            and (n.effective_from, n.price_id) > (p.effective_from, p.price_id))
              then 'superseded'
            else 'in force'
       end as state
  from ledger.prices p;

comment on view api.prices is 'The price book. A client sees the default prices and its own. Admins add prices with POST /prices; rows are never changed: a change is a new row with a later effective_from.';
comment on column api.prices.client_id is 'null: the default price (per currency); else this client''s own price, which beats the default.';
comment on column api.prices.currency is 'ISO 4217 code; a client''s own price is in the client''s currency (default: the client''s, or EUR for default prices).';
comment on column api.prices.effective_from is 'In force from this instant until the next row of the same pipeline, step, client and currency (default: now).';
comment on column api.prices.state is 'in force (the row billing uses now for its pipeline, step, client and currency), scheduled (effective_from is in the future) or superseded (a later row is in force).';
comment on column api.prices.tiers is 'Graduated tiers per client and month, e.g. [{"from_units": 1000, "unit_price": 0.03}]: unit_price applies below the first tier.';

create or replace trigger add_price
  instead of insert on api.prices
  for each row execute function ledger.tg_api_prices__insert();

create or replace view api.client_minimums with (security_invoker = true) as
select m.client_id,
       m.monthly_minimum,
       m.currency,
       m.effective_from,
       m.note,
       m.minimum_id,
       m.recorded_at,
       m.recorded_by
  from ledger.client_minimums m;

comment on view api.client_minimums is 'Monthly minimum per client from a calendar month on (effective_from is a first day of month); 0 ends it. Admins add rows with POST /client_minimums.';

create or replace trigger add_client_minimum
  instead of insert on api.client_minimums
  for each row execute function ledger.tg_api_client_minimums__insert();

create or replace view api.invoices with (security_invoker = true) as
select i.client_id,
       to_char(i.period, 'YYYY-MM') as period,
       'finalized'::text as status,
       i.currency,
       i.total,
       i.usage_amount,
       i.minimum_amount,
       i.adjustments_amount,
       i.invoice_no,
       i.lines_count,
       i.finalized_at,
       i.finalized_by,
       i.number,
       i.issued_on,
       i.due_on,
       exists (select from ledger.invoice_documents d
                where d.client_id = i.client_id and d.period = i.period) as pdf_ready
  from ledger.invoices i;

comment on view api.invoices is 'Finalized (immutable) invoices. Drafts of open periods: POST /rpc/invoice.';
comment on column api.invoices.number is 'Number of the invoice within its client (1, 2, ...); invoice_no is the printed form.';
comment on column api.invoices.due_on is 'Issue date plus the client''s payment terms.';
comment on column api.invoices.pdf_ready is 'Whether the PDF is ready at GET /rpc/invoice_pdf (rendered within seconds of finalizing).';

create or replace view api.invoice_lines with (security_invoker = true) as
select l.client_id,
       to_char(l.period, 'YYYY-MM') as period,
       l.line_no,
       l.kind,
       l.pipeline,
       l.step,
       l.unit_price,
       l.units,
       l.amount,
       l.completed_steps,
       l.priced,
       to_char(l.for_period, 'YYYY-MM') as for_period,
       l.basis,
       l.description
  from ledger.invoice_lines l;

comment on view api.invoice_lines is 'Lines of finalized invoices: usage, monthly-minimum top-up, and adjustments of earlier periods (for_period).';

-- ---------------------------------------------------------------------------------------------
-- Reports (schema reporting, for admins and BI logins; same row-level security)
-- ---------------------------------------------------------------------------------------------

create or replace view reporting.usage_by_step with (security_invoker = true) as
select u.client_id,
       to_char(u.period, 'YYYY-MM') as period,
       u.period as period_start,
       u.pipeline,
       u.step,
       s.step_index,
       sum(u.completed_steps)::bigint as completed_steps,
       sum(u.units) as units,
       sum(u.amount) as amount,
       u.currency,
       coalesce(sum(u.completed_steps) filter (where not u.priced), 0)::bigint as unpriced_steps,
       coalesce(sum(u.units) filter (where not u.priced), 0) as unpriced_units,
       bool_or(u.stale) as stale
  from ledger.usage_lines_current u
  left join ledger.pipeline_steps s on s.pipeline = u.pipeline and s.step = u.step
 group by u.client_id, u.period, u.pipeline, u.step, s.step_index, u.currency;

comment on view reporting.usage_by_step is 'Usage and amount per client, month, pipeline and step (from the usage lines).';

create or replace view reporting.revenue_by_client_month with (security_invoker = true) as
select p.client_id,
       to_char(p.period, 'YYYY-MM') as period,
       p.period as period_start,
       c.currency,
       coalesce(u.completed_steps, 0) as completed_steps,
       coalesce(u.units, 0) as units,
       coalesce(u.usage_amount, 0) as usage_amount,
       m.monthly_minimum,
       greatest(coalesce(m.monthly_minimum, 0) - coalesce(u.usage_amount, 0), 0) as minimum_topup,
       coalesce(u.usage_amount, 0)
         + greatest(coalesce(m.monthly_minimum, 0) - coalesce(u.usage_amount, 0), 0) as amount,
       coalesce(u.unpriced_steps, 0) as unpriced_steps,
       case when i.client_id is null then 'open' else 'finalized' end as invoice_status,
       i.invoice_no,
       i.total as invoiced_total,
       ledger._usage_month_stale(p.period, lr.finished_at, own.months, every.months) as stale
  from (
    select v.client_id, v.period from ledger.usage_lines_visible v
    union
    select i.client_id, i.period from ledger.invoices i
    union
    select f.client_id, g::date
      from (select cm.client_id, min(cm.effective_from) as first_month
              from ledger.client_minimums cm where cm.monthly_minimum > 0
             group by cm.client_id) f
      cross join generate_series(f.first_month, ledger._month(now()), interval '1 month') g
  ) p
  join ledger.clients c on c.client_id = p.client_id
  left join (
    select v.client_id, v.period, sum(v.completed_steps)::bigint as completed_steps,
           sum(v.units) as units, sum(v.amount) as usage_amount,
           sum(v.completed_steps) filter (where not v.priced)::bigint as unpriced_steps
      from ledger.usage_lines_visible v
     group by v.client_id, v.period
  ) u on u.client_id = p.client_id and u.period = p.period
  -- the minimum in force: the latest row from the period on (of two from the same month the
  -- later recorded), in the client's currency. Each row as a range up to the next one rather
  -- than a lateral subquery: on a cluster the minimums are distributed and Citus plans no lateral
  -- outer join whose subquery reads the client's currency from ledger.clients (a reference table).
  left join (
    select cm.client_id, cm.currency, cm.monthly_minimum, cm.effective_from,
           lead(cm.effective_from) over (partition by cm.client_id, cm.currency
                                         order by cm.effective_from, cm.minimum_id) as until
      from ledger.client_minimums cm
  ) m on m.client_id = p.client_id and m.currency = c.currency and m.effective_from <= p.period
     and (m.until is null or p.period < m.until)
  left join ledger.invoices i on i.client_id = p.client_id and i.period = p.period
  left join ledger.usage_last_refresh lr on true
  left join ledger.usage_unseen_months own on own.client_id = p.client_id
  left join (select a.months from ledger.usage_unseen_months a where a.client_id = '') every
         on true
 where u.client_id is not null or i.client_id is not null or m.monthly_minimum > 0;

comment on view reporting.revenue_by_client_month is 'Revenue per client and month: usage amount, monthly-minimum top-up, and the finalized invoice (whose total also carries adjustments of earlier months).';

create or replace view reporting.unpriced_completed_steps with (security_invoker = true) as
select u.client_id,
       to_char(u.period, 'YYYY-MM') as period,
       u.period as period_start,
       u.pipeline,
       u.step,
       sum(u.completed_steps)::bigint as completed_steps,
       sum(u.units) as units,
       min(u.first_completed_at) as first_completed_at,
       max(u.last_completed_at) as last_completed_at
  from ledger.usage_lines_visible u
 where not u.priced
 group by u.client_id, u.period, u.pipeline, u.step;

comment on view reporting.unpriced_completed_steps is 'Completed steps billed at 0 because no price was in force: add a price (stepledger price set) to bill them.';

create or replace view reporting.minimum_commitments with (security_invoker = true) as
select r.client_id,
       r.period,
       r.period_start,
       r.currency,
       r.monthly_minimum,
       r.usage_amount,
       r.usage_amount - r.monthly_minimum as difference,
       case when r.usage_amount >= r.monthly_minimum then 'over' else 'under' end as status,
       r.minimum_topup,
       r.invoice_status
  from reporting.revenue_by_client_month r
 where r.monthly_minimum > 0;

comment on view reporting.minimum_commitments is 'Clients over or under their monthly minimum, per month.';
