-- Row-level security on every table that holds client data. Policy key: client_id.
--
--   select_own_client   client, bi_reader: rows of the caller's client only
--   select_all_clients  bi_all_clients (BI logins bound to no client): every row
--   all_admin           admin: everything
--
-- Every table of schema ledger with a client_id column gets these, whichever area created it, so
-- a new tenant table is never readable across clients by accident (an area may add policies of
-- its own in its db/policies/NN_<area>.sql, which runs after this file). The helper is wrapped
-- in (select ...) so it runs once per statement, not once per row; client_id leads an index of
-- every such table (tests/test_access_matrix.py checks both).

do $$
declare
  t regclass;
begin
  for t in
    select c.oid::regclass
      from pg_catalog.pg_class c
      join pg_catalog.pg_namespace n on n.oid = c.relnamespace
     where n.nspname = 'ledger' and c.relkind in ('r', 'p') and not c.relispartition
       and exists (select from pg_catalog.pg_attribute a
                    where a.attrelid = c.oid and a.attname = 'client_id' and not a.attisdropped)
     order by c.relname
  loop
    execute format('alter table %s enable row level security', t);
    execute format('drop policy if exists select_own_client on %s', t);
    execute format('create policy select_own_client on %s for select to client, bi_reader
                      using (client_id = (select auth.client_id()))', t);
    execute format('drop policy if exists select_all_clients on %s', t);
    execute format('create policy select_all_clients on %s for select to bi_all_clients using (true)', t);
    execute format('drop policy if exists all_admin on %s', t);
    execute format('create policy all_admin on %s for all to admin using (true) with check (true)', t);
  end loop;
end
$$;

-- The catalog of pipelines is not client data: every signed-in role may read it.
alter table ledger.pipelines enable row level security;
drop policy if exists select_all on ledger.pipelines;
create policy select_all on ledger.pipelines for select to client, admin, bi_reader using (true);
alter table ledger.pipeline_steps enable row level security;
drop policy if exists select_all on ledger.pipeline_steps;
create policy select_all on ledger.pipeline_steps for select to client, admin, bi_reader using (true);
