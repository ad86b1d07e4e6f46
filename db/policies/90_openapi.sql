-- GET / (db-root-spec): every API role, anonymous callers included, reads the document of its
-- own endpoints (db/functions/90_openapi/10_openapi.sql).
grant execute on function api.openapi() to anon, client, admin, ingest;
