-- JSON Schema validation inside PostgreSQL.
--
-- Uses the pg_jsonschema extension when the server has it. Otherwise installs functions with
-- pg_jsonschema's exact signatures, written in plpython3u over Debian's python3-jsonschema and
-- python3-fastjsonschema (see docs/adr/0001-jsonschema-in-database.md). Always installs our own
-- jsonschema_errors() (JSON paths for every error) and the $ref registry.
--
-- Run by a superuser on every migrate: everything here is idempotent.

create extension if not exists plpython3u;

-- Remote $ref targets. Nothing is ever fetched over the network: a $ref to a URI that is not
-- here is an error.
create table if not exists public.jsonschema_registry (
    uri text primary key,
    schema jsonb not null
);
comment on table public.jsonschema_registry is
    'JSON Schema documents that remote $refs may point to, by URI. Never fetched over the network.';

-- One row; bumped by every statement that changes the registry, so backends can tell when their
-- compiled validators that used the registry are stale.
create table if not exists public.jsonschema_registry_version (
    singleton boolean primary key default true check (singleton),
    version bigint not null default 0
);
comment on table public.jsonschema_registry_version is
    'Change counter of public.jsonschema_registry (one row), read by the validator cache.';
insert into public.jsonschema_registry_version (singleton, version) values (true, 0)
on conflict (singleton) do nothing;

create or replace function public.tg_jsonschema_registry__bump_version() returns trigger
language plpgsql as $$
begin
    update public.jsonschema_registry_version set version = version + 1;
    return null;
end
$$;
comment on function public.tg_jsonschema_registry__bump_version() is
    'Statement trigger: invalidates compiled validators that resolved refs through the registry.';

drop trigger if exists jsonschema_registry__bump_version on public.jsonschema_registry;
create trigger jsonschema_registry__bump_version
    after insert or update or delete or truncate on public.jsonschema_registry
    for each statement execute function public.tg_jsonschema_registry__bump_version();

-- Validation runs as the calling role (e.g. inside a CHECK constraint during ingest): these two
-- definer helpers let it read the registry without a grant on the tables.
create or replace function public._jsonschema_registry_lookup(p_uri text) returns text
language sql stable security definer set search_path = pg_catalog, pg_temp as $$
    select r.schema::text from public.jsonschema_registry r
    where r.uri = p_uri or r.uri = p_uri || '#' or r.uri || '#' = p_uri
    order by r.uri = p_uri desc
    limit 1
$$;
comment on function public._jsonschema_registry_lookup(text) is
    'Private: the registered schema for a $ref URI (exact, or differing by an empty fragment).';

create or replace function public._jsonschema_registry_version() returns bigint
language sql stable security definer set search_path = pg_catalog, pg_temp as $$
    select v.version from public.jsonschema_registry_version v
$$;
comment on function public._jsonschema_registry_version() is
    'Private: current change counter of public.jsonschema_registry.';

-- The shared Python implementation, installed once per backend into GD. Every public function
-- starts by fetching it from GD; this function runs only on a backend's first call.
create or replace function public._jsonschema_boot() returns void
language plpython3u as $py$
# include: validator.py
$py$;
comment on function public._jsonschema_boot() is
    'Private: installs the plpython JSON Schema implementation into this backend (GD).';

-- The SQL entry points. Each is the same two lines of Python: fetch the implementation from GD
-- (installing it on a backend's first call) and call one of its methods. pg_jsonschema's four
-- functions are created only where that extension is not available (it then provides them);
-- the other three are ours: errors with their JSON Pointers, and two for tests and diagnostics.
do $do$
declare
    v_fn record;
    v_matches constant text := 'True when instance is valid against the JSON Schema '
                               '(pg_jsonschema-compatible; raises SQLSTATE 22023 for an invalid schema).';
    v_have_extension boolean :=
        exists (select from pg_available_extensions where name = 'pg_jsonschema');
begin
    if v_have_extension and not exists (select from pg_extension where extname = 'pg_jsonschema') then
        -- Replace a plpython fallback installed before the extension became available.
        drop function if exists public.json_matches_schema(json, json);
        drop function if exists public.jsonb_matches_schema(json, jsonb);
        drop function if exists public.jsonschema_is_valid(json);
        drop function if exists public.jsonschema_validation_errors(json, json);
    end if;
    if v_have_extension then
        create extension if not exists pg_jsonschema;
    end if;

    for v_fn in
        select * from (values
            (true, 'json_matches_schema', 'schema json, instance json', 'boolean',
             'matches(schema, instance)',
             v_matches),
            (true, 'jsonb_matches_schema', 'schema json, instance jsonb', 'boolean',
             'matches(schema, instance)',
             v_matches),
            (true, 'jsonschema_is_valid', 'schema json', 'boolean',
             'is_valid_schema(schema)',
             'True when the schema is a valid JSON Schema (checked against its meta-schema); '
             'otherwise false with a NOTICE saying why (pg_jsonschema-compatible).'),
            (true, 'jsonschema_validation_errors', 'schema json, instance json', 'text[]',
             'validation_errors(schema, instance)',
             'Messages of every validation error of instance against schema, empty when valid; for '
             'an invalid schema, one message saying why (pg_jsonschema-compatible).'),
            (false, 'jsonschema_errors', 'schema json, instance jsonb', 'jsonb',
             'errors(schema, instance)',
             'Validation errors of instance against schema as a JSON array of {path, message, keyword, '
             'schema_path}, sorted by path; path is a JSON Pointer ("" = root). Empty array when valid. '
             'Raises SQLSTATE 22023 for an invalid schema.'),
            (false, '_jsonschema_path', 'schema json', 'text',
             'path_of(schema)',
             'Private: "fast" (fastjsonschema) or "general" (jsonschema) for the plpython implementation.'),
            (false, '_jsonschema_matches_on', 'schema json, instance jsonb, path text', 'boolean',
             'matches_on(schema, instance, path)',
             'Private, tests: the answer of the "fast" (null when the schema has no fast form) or the '
             '"general" path alone.')
        ) as f(compatible, name, args, returns, call, description)
        where not (f.compatible and v_have_extension)
    loop
        execute format(
            'create or replace function public.%I(%s) returns %s '
            'language plpython3u immutable strict parallel safe as %L',
            v_fn.name, v_fn.args, v_fn.returns,
            concat_ws(E'\n',
                      'if "stepledger.jsonschema/1" not in GD:',
                      '    plpy.execute("select public._jsonschema_boot()")',
                      format('return GD["stepledger.jsonschema/1"].%s', v_fn.call)));
        execute format('comment on function public.%I(%s) is %L',
                       v_fn.name, v_fn.args, v_fn.description);
    end loop;
end
$do$;

-- Who may validate. Validation runs Python inside the backend: it is bounded in time (ADR 0004),
-- but it is no service for every login. The database's own code calls it as the owner (ingest
-- and replay are security definer, the catalog and migrations run as the owner); API roles, BI
-- logins and anonymous callers may not call it directly.
-- Each function once, with whether the owner calls it (the tests' path switch and the trigger
-- are nobody's to call).
do $do$
declare
    v_fn record;
begin
    for v_fn in
        select * from (values
            ('json_matches_schema(json, json)', true),
            ('jsonb_matches_schema(json, jsonb)', true),
            ('jsonschema_is_valid(json)', true),
            ('jsonschema_validation_errors(json, json)', true),
            ('jsonschema_errors(json, jsonb)', true),
            ('_jsonschema_path(json)', true),
            ('_jsonschema_boot()', true),
            ('_jsonschema_registry_lookup(text)', true),
            ('_jsonschema_registry_version()', true),
            ('_jsonschema_matches_on(json, jsonb, text)', false),
            ('tg_jsonschema_registry__bump_version()', false)
        ) as f(signature, owner_calls)
    loop
        execute format('revoke execute on function public.%s from public', v_fn.signature);
        if v_fn.owner_calls then
            execute format('grant execute on function public.%s to stepledger_owner', v_fn.signature);
        end if;
    end loop;
end
$do$;
