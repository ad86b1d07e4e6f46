-- Billing: row-level security, then grants (docs/billing.md).
--
-- Who may do what:
--   client     reads its own usage, invoices, minimums, and the default prices plus its own;
--              POST /rpc/invoice for its own client
--   admin      reads everything; POST /prices, POST /client_minimums, POST /rpc/finalize_invoice,
--              POST /rpc/refresh_usage
--   bi_reader  the reporting views, under the same row-level security
--   ingest, anon: nothing here

-- -- Row-level security (policies before grants) -----------------------------------------------
do $$
declare
  t text;
begin
  foreach t in array array['client_minimums', 'invoices', 'invoice_lines', 'invoice_documents'] loop
    execute format('alter table ledger.%I enable row level security', t);
    execute format('drop policy if exists select_own_client on ledger.%I', t);
    execute format('create policy select_own_client on ledger.%I for select to client, bi_reader
                      using (client_id = (select auth.client_id()))', t);
    execute format('drop policy if exists all_admin on ledger.%I', t);
    execute format('create policy all_admin on ledger.%I for all to admin using (true) with check (true)', t);
  end loop;
  -- Default prices (client_id null) and changes that concern every client (client_id '') are
  -- everyone's.
  foreach t in array array['prices', 'billing_changes'] loop
    execute format('alter table ledger.%I enable row level security', t);
    execute format('drop policy if exists select_own_client on ledger.%I', t);
    execute format('create policy select_own_client on ledger.%I for select to client, bi_reader
                      using (%s or client_id = (select auth.client_id()))', t,
                   case t when 'prices' then 'client_id is null' else 'client_id = ''''' end);
    execute format('drop policy if exists all_admin on ledger.%I', t);
    execute format('create policy all_admin on ledger.%I for all to admin using (true) with check (true)', t);
  end loop;
end
$$;

-- -- Tables -------------------------------------------------------------------------------------
revoke all on ledger.prices, ledger.client_minimums, ledger.invoices, ledger.invoice_lines,
              ledger.invoice_documents, ledger.billing_changes, ledger.billing_refreshes, ledger.usage_lines_monthly
  from public, anon, client, admin, ingest, bi_reader;

grant select on ledger.prices, ledger.client_minimums, ledger.invoices, ledger.invoice_lines,
                ledger.billing_changes
  to client, admin, bi_reader;
-- The usage lines are read through ledger.usage_lines_visible; the grant (under the table's
-- row-level security, 02_row_security.sql) is what a Citus worker checks for the caller when
-- that view reads the table's shards.
grant select on ledger.usage_lines_monthly to client, admin, bi_reader;
-- Invoice PDFs: read by the invoice's client and admins; written only by the owner (the renderer).
grant select on ledger.invoice_documents to client, admin;
-- Append-only: rows are written only by the owner's functions ledger.add_price and
-- ledger.add_client_minimum, which no role may call (admins reach them through POST /prices and
-- POST /client_minimums, the views' triggers); no insert, update, delete or truncate for anyone.

-- Refresh history: no client data, but requested_by names staff.
grant select (refresh_id, started_at, finished_at, snapshot, duration_ms, line_rows,
              changes_absorbed, concurrent)
  on ledger.billing_refreshes to client, bi_reader;
grant select on ledger.billing_refreshes to admin;

grant select on ledger.usage_lines_visible, ledger.usage_lines_current, ledger.usage_last_refresh,
                ledger.usage_unseen_months
  to client, admin, bi_reader;

-- -- HTTP surface -------------------------------------------------------------------------------
grant select on api.usage, api.usage_freshness, api.prices, api.client_minimums, api.invoices,
                api.invoice_lines
  to client, admin;
grant insert (pipeline, step, client_id, unit_price, currency, effective_from, tiers, note)
  on api.prices to admin;
grant insert (client_id, monthly_minimum, currency, effective_from, note)
  on api.client_minimums to admin;

-- -- Reports ------------------------------------------------------------------------------------
grant usage on schema reporting to admin, bi_reader;
grant select on reporting.usage_by_step, reporting.revenue_by_client_month,
                reporting.unpriced_completed_steps, reporting.minimum_commitments
  to admin, bi_reader;

-- -- Functions: exactly what each role calls (nothing for PUBLIC: 00_privileges.sql) ------------
-- Read paths run with the caller's rights (row-level security applies), so the caller needs
-- the helpers they use. (_charges_from_events reads raw events, which only admins may.)
grant execute on function
  ledger._month(timestamptz), ledger._month_start(date), ledger._parse_period(text),
  ledger._sees_all_clients(), ledger._months_between(date, date),
  ledger._charges_from_events(text, date, date),
  ledger._usage_lines_of(text, date, date, text), ledger._usage_lines(text, date, date),
  ledger._usage_fresh(text, date),
  ledger._usage_month_stale(date, timestamptz, datemultirange, datemultirange),
  ledger._usage_changes_pending(), ledger._period_lines(text, date[]),
  ledger._invoice_lines(text, date), ledger._invoice_json(text, date),
  ledger._sum_amounts(jsonb, text), ledger._invoice_for_caller(text, text)
  to client, admin;
-- BI logins read the reporting views, which need only these.
grant execute on function ledger._month(timestamptz), ledger._sees_all_clients(),
                          ledger._usage_month_stale(date, timestamptz, datemultirange,
                                                    datemultirange)
  to bi_reader;

grant execute on function api.invoice(text, text) to client, admin;
-- The PDF of a finalized invoice: runs with the caller's rights, so row-level security of
-- ledger.invoice_documents keeps each client to its own.
grant execute on function api.invoice_pdf(text, text) to client, admin;
grant execute on function api.finalize_invoice(text, text), api.refresh_usage() to admin;
