-- The step catalog for pipelines (db/functions/85_sdk.sql): ingest tokens, clients and admins.
revoke execute on function api.step_keys(text) from public;
grant execute on function api.step_keys(text) to ingest, client, admin;
