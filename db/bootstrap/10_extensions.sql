-- Extensions need a superuser. pgcrypto: bcrypt password hashes and random token secrets.
-- plpython3u: the JSON Schema validator where pg_jsonschema is not installed (20_jsonschema/).
create extension if not exists pgcrypto;
create extension if not exists plpython3u;

-- The database being migrated (usually `stepledger`; the schema snapshot uses a scratch one): its
-- owner, and its rights in one place. TEMP is granted to PUBLIC by default: a BI login could fill
-- the disk with temporary tables (docs/bi.md "Limits"). Nothing of the stack creates temporary
-- tables (the API roles, ingest, the loader); the owner keeps the right for operators' ad-hoc SQL.
do $$
begin
  execute format('alter database %I owner to stepledger_owner', current_database());
  execute format('grant create on database %I to stepledger_owner', current_database());
  execute format('revoke temporary on database %I from public', current_database());
  execute format('grant temporary on database %I to stepledger_owner', current_database());
end
$$;
-- PostgreSQL 15 no longer lets everyone create objects in public; keep it that way.
revoke create on schema public from public;
