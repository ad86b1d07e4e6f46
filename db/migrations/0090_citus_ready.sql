-- A schema that Citus can distribute by client_id (docs/adr/0012-citus-distribution.md,
-- Decision 3). Runs the same on a single node; the distribution itself is done by
-- `stepledger migrate` on a coordinator (stepledger/citus.py) after this.
--
-- 1. One type for client_id in every table distributed by it: Citus co-locates only tables whose
--    distribution columns have the same type, and the vault keeps rejected payloads whose
--    client_id is not a slug, so the type is text. Where the column was the domain ledger.slug,
--    a check constraint keeps the same rule (a cast to the domain, so the rule is written once).
-- 2. ledger.billing_changes is keyed by (client_id, change_id): every unique key of a distributed
--    table includes the distribution column, and a distribution column holds no null. A change
--    that concerns every client (a default price, a rebuild) is now client_id '' instead of null.
-- 3. BI logins carry their client as the role default stepledger.client_id, which every Citus
--    node applies to their connections (auth.add_bi_login writes it for new ones).

-- Views and policies that read these columns are re-created by the idempotent phase of the same
-- migrate (db/views, db/policies), right after the migrations.
drop view if exists api.invoices, api.invoice_lines, api.usage_export,
                    reporting.revenue_by_client_month, reporting.minimum_commitments;

do $$
declare
  p record;
begin
  for p in select pol.polname, c.oid::regclass as tbl
             from pg_catalog.pg_policy pol
             join pg_catalog.pg_class c on c.oid = pol.polrelid
            where c.oid in ('ledger.events'::regclass, 'ledger.invoices'::regclass,
                            'ledger.invoice_lines'::regclass, 'ledger.invoice_documents'::regclass,
                            'ledger.billing_changes'::regclass)
  loop
    execute format('drop policy %I on %s', p.polname, p.tbl);
  end loop;
end
$$;

alter table ledger.events alter column client_id type text;
alter table ledger.invoices alter column client_id type text;
alter table ledger.invoice_lines alter column client_id type text;
alter table ledger.invoice_documents alter column client_id type text;

-- events: ingest validates the client before it inserts, this keeps the rule for every path.
-- invoices reference ledger.clients; lines and documents reference invoices.
alter table ledger.events
  add constraint events_client_id_is_slug check ((client_id::ledger.slug) is not null);

alter table ledger.billing_changes drop constraint billing_changes_pkey;
update ledger.billing_changes set client_id = '' where client_id is null;
alter table ledger.billing_changes
  alter column client_id set default '',
  alter column client_id set not null,
  add primary key (client_id, change_id);
comment on column ledger.billing_changes.client_id is
  'The client whose usage changed; '''' when the change concerns every client (a default price, a rebuild).';

do $$
declare
  b record;
begin
  for b in select l.rolname, l.client_id from auth.bi_logins l loop
    execute format('alter role %I set stepledger.client_id = %L', b.rolname,
                   coalesce(b.client_id, ''));
  end loop;
end
$$;
