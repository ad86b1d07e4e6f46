-- Extensions need a superuser. pgcrypto: bcrypt password hashes and random token secrets.
-- plpython3u: the JSON Schema validator where pg_jsonschema is not installed (20_jsonschema/).
create extension if not exists pgcrypto;
create extension if not exists plpython3u;

-- The database being migrated (usually `stepledger`; the schema snapshot uses a scratch one).
do $$
begin
  execute format('alter database %I owner to stepledger_owner', current_database());
  execute format('grant create on database %I to stepledger_owner', current_database());
end
$$;
-- PostgreSQL 15 no longer lets everyone create objects in public; keep it that way.
revoke create on schema public from public;
