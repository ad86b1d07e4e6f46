-- The caller's client for the Citus workers (db/functions/00_common/20_request_client.sql, ADR 0012).
-- PostgREST's db-pre-request runs as the request's role.
grant execute on function auth.start_request() to anon, client, admin, ingest;
-- Read by policies, as the caller.
grant execute on function auth.caller_client_id() to anon, client, admin, ingest, bi_reader;
