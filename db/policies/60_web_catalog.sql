-- Grants of the catalog views the web app reads (db/views/60_web_catalog.sql). The views are
-- security_invoker: the row-level policies of ledger.clients (select_own_client, all_admin) and of
-- ledger.pipelines / ledger.pipeline_steps (select_all) decide which rows each role sees.

grant select on api.clients, api.pipelines, api.pipeline_steps to client, admin;
