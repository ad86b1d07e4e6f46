-- Who may touch what, in one place. Row-level policies are in 20_row_security.sql.
-- Every function is executable by PUBLIC by default: revoke that, then grant explicitly.

alter default privileges for role stepledger_owner revoke execute on functions from public;
revoke execute on all functions in schema api, ledger, auth from public;

grant usage on schema api to anon, client, admin, ingest;
grant usage on schema auth to anon, client, admin, ingest, bi_reader;
grant execute on function auth.claims(), auth.role(), auth.client_id(), auth.token_id()
  to anon, client, admin, ingest, bi_reader;

-- security_invoker views read the tables with the caller's rights, under row-level security.
grant usage on schema ledger to client, admin, bi_reader;
grant select on ledger.clients, ledger.pipelines, ledger.pipeline_steps,
                ledger.jobs, ledger.step_runs, ledger.job_steps
  to client, admin, bi_reader;
grant select on ledger.vault, ledger.events to admin;

grant select on api.jobs, api.step_runs to client, admin;

grant execute on function api.ingest(text), api.ingest(jsonb), api.ingest_ndjson(text) to ingest, admin;
grant execute on function auth.pre_request() to anon, client, admin, ingest;
