-- Grants of the catalog views the web app reads (db/functions/10_catalog/50_web_catalog_views.sql). The views are
-- security_invoker: the row-level policies of ledger.clients (select_own_client, all_admin) and of
-- ledger.pipelines / ledger.pipeline_steps (select_all) decide which rows each role sees.

grant select on api.clients, api.pipelines, api.pipeline_steps to client, admin;

-- The CSV export of usage (db/functions/40_billing/60_web_exports_views.sql): security_invoker over api.usage, so the
-- usage rule (own client only, admins everything) applies.
grant select on api.usage_export to client, admin;
