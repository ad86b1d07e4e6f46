-- Row-level security on every table that holds client data: a client's users see only rows whose
-- client_id is theirs; admins see everything. The helper is wrapped in (select ...) so it runs
-- once per statement, not once per row.

do $$
declare
  t text;
begin
  foreach t in array array['clients', 'jobs', 'step_runs', 'job_steps', 'events', 'vault', 'event_ids'] loop
    execute format('alter table ledger.%I enable row level security', t);
    execute format('drop policy if exists select_own_client on ledger.%I', t);
    execute format('create policy select_own_client on ledger.%I for select to client, bi_reader
                      using (client_id = (select auth.client_id()))', t);
    execute format('drop policy if exists all_admin on ledger.%I', t);
    execute format('create policy all_admin on ledger.%I for all to admin using (true) with check (true)', t);
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
