-- The step catalog for pipelines (db/functions/10_catalog/20_step_keys.sql): ingest tokens, clients and admins.
grant execute on function api.step_keys(text) to ingest, client, admin;
