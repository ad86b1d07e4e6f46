-- Extensions need a superuser. pgcrypto: bcrypt password hashes and random token secrets.
-- plpython3u: the JSON Schema validator where pg_jsonschema is not installed (20_jsonschema.sql).
create extension if not exists pgcrypto;
create extension if not exists plpython3u;

alter database stepledger owner to stepledger_owner;
grant create on database stepledger to stepledger_owner;
-- PostgreSQL 15 no longer lets everyone create objects in public; keep it that way.
revoke create on schema public from public;
