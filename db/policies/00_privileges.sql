-- Who may touch what, in one place for the spine; each area adds db/policies/NN_<area>.sql.
-- Row-level policies are in 20_row_security.sql. The intended result, role by role, is written
-- down in tests/access/*.yaml and checked against the catalog by tests/test_access_matrix.py.
--
-- Every function is executable by PUBLIC by default: revoke that here, once, for every schema of
-- ours (and for functions created later), so the feature files below only grant, explicitly.

alter default privileges for role stepledger_owner revoke execute on functions from public;
revoke execute on all functions in schema api, ledger, auth, reporting from public;

-- Schemas. anon, client, admin and ingest are the API roles PostgREST switches to; bi_reader is
-- the group of BI logins (bi_all_clients inherits it).
grant usage on schema api to anon, client, admin, ingest;
grant usage on schema auth to anon, client, admin, ingest, bi_reader;
grant usage on schema reporting to bi_reader;

-- Who is calling: policies and functions evaluate these as the caller.
grant execute on function auth.claims(), auth.role(), auth.client_id(), auth.token_id(),
                          auth._session_claims()
  to anon, client, admin, ingest, bi_reader;

-- security_invoker views read the tables with the caller's rights, under row-level security.
grant usage on schema ledger to client, admin, bi_reader;
grant select on ledger.clients, ledger.pipelines, ledger.pipeline_steps,
                ledger.jobs, ledger.step_runs, ledger.job_steps
  to client, admin, bi_reader;
grant select on ledger.vault, ledger.vault_bodies, ledger.events to admin;

grant select on ledger.job_rows to client, admin, bi_reader;
grant select on api.jobs, api.step_runs to client, admin;
grant execute on function api.step_runs(api.jobs) to client, admin;
grant select on reporting.jobs to bi_reader;

grant execute on function api.ingest(bytea), api.ingest(text), api.ingest(jsonb),
                          api.ingest_ndjson(bytea), api.ingest_ndjson(text)
  to ingest, admin;
grant execute on function auth.pre_request() to anon, client, admin, ingest;

-- The job-state rules read by ledger.job_rows (api.jobs, reporting.jobs) and the analytics counts, which run with
-- the caller's rights (db/functions/30_jobs/10_job_state.sql).
grant execute on function ledger.job_status(text, timestamptz, interval),
                          ledger.job_progress(integer, integer)
  to client, admin, bi_reader;
-- The job_changes cursor, sealed and opened as the caller of api.job_changes (not reachable over
-- HTTP: PostgREST exposes schema api only).
grant execute on function ledger._job_cursor_key(), ledger._seal_job_cursor(bigint),
                          ledger._open_job_cursor(text)
  to client, admin;

-- Ending a request with an HTTP status and our error code (db/functions/00_common/): raising an
-- error reveals nothing, and the not-found answers of every role go through it.
grant execute on function auth._http_error(integer, text, text, text, json) to client, admin, bi_reader;
