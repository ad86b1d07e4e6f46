-- The OpenAPI (Swagger 2.0) document served at GET / (deploy/postgrest.conf: db-root-spec).
--
-- PostgREST 12 builds its own document from updatability, not privileges: every updatable view
-- gets POST, PATCH and DELETE together (so /prices promised PATCH and DELETE, answered 403), and
-- it has no notion of which overloads or verbs a function answers. This document is built from
-- the caller's privileges instead, so it lists exactly what the caller's role can do:
--   relations  GET with SELECT; POST with INSERT on some column (and the view accepts inserts);
--              PATCH with UPDATE on some column; DELETE with DELETE (each where the view allows it)
--   functions  EXECUTE; POST always, GET only for functions that are not volatile
-- and it declares the bearer token scheme. Anonymous callers see only what anon may call (login).
-- Descriptions are the comments on the objects (conventions: comment on every exposed object).

-- The media type of the document (a PostgREST 12 media type handler): clients that ask for
-- application/openapi+json get it, as from PostgREST's own document.
select ledger._create_media_type('application/openapi+json', 'json');

create or replace function api.openapi() returns api."application/openapi+json"
language plpgsql stable set search_path = pg_catalog, pg_temp as $$
-- The caller's OpenAPI document: what this role may call, with the bearer scheme.
declare
  v_public text := nullif(current_setting('app.settings.public_api_url', true), '');
  v_scheme text := coalesce(substring(v_public from '^(https?)://'), 'http');
  v_host text := coalesce(substring(v_public from '^https?://([^/]+)'),
                          current_setting('request.headers', true)::json->>'host', 'localhost');
  v_base text := coalesce(nullif(substring(v_public from '^https?://[^/]+(/.*)$'), ''), '/');
  v_comment text := coalesce(obj_description('api'::regnamespace, 'pg_namespace'), 'stepledger API');
  -- OpenAPI's type of a column or argument by its PostgreSQL type; arrays are 'array', any other
  -- 'string'. json and jsonb hold any JSON: no type.
  v_types constant jsonb := '{"smallint": "integer", "integer": "integer", "bigint": "integer",
                              "numeric": "number", "real": "number", "double precision": "number",
                              "boolean": "boolean", "json": null, "jsonb": null}';
  v_definitions jsonb;
  v_relations jsonb;
  v_functions jsonb;
begin
  with rels as (
    select c.oid, c.relname::text as name, c.relkind,
           obj_description(c.oid, 'pg_class') as description,
           (has_table_privilege(c.oid, 'select') or has_any_column_privilege(c.oid, 'select')) as can_get,
           has_any_column_privilege(c.oid, 'insert')
             and (c.relkind in ('r', 'p') or (pg_relation_is_updatable(c.oid, true) & 8) = 8) as can_post,
           has_any_column_privilege(c.oid, 'update')
             and (c.relkind in ('r', 'p') or (pg_relation_is_updatable(c.oid, true) & 4) = 4) as can_patch,
           has_table_privilege(c.oid, 'delete')
             and (c.relkind in ('r', 'p') or (pg_relation_is_updatable(c.oid, true) & 16) = 16) as can_delete
      from pg_class c
     where c.relnamespace = 'api'::regnamespace and c.relkind in ('r', 'p', 'v', 'm', 'f')
  ),
  visible as (
    -- body_parameters: what POST and PATCH take, a row of the relation
    select r.*,
           jsonb_build_array(jsonb_build_object(
             'name', r.name, 'in', 'body', 'required', true,
             'schema', jsonb_build_object('$ref', '#/definitions/' || r.name))) as body_parameters
      from rels r
     where r.can_get or r.can_post or r.can_patch or r.can_delete
  ),
  cols as (
    select v.name as rel, a.attname::text as col, a.attnum,
           case when format_type(a.atttypid, null) like '%[]' then 'array'
                when v_types ? format_type(a.atttypid, null) then v_types->>format_type(a.atttypid, null)
                else 'string' end as type,
           format_type(a.atttypid, a.atttypmod) as format,
           col_description(v.oid, a.attnum) as description,
           has_column_privilege(v.oid, a.attnum, 'select') as readable
      from visible v
      join pg_attribute a on a.attrelid = v.oid and a.attnum > 0 and not a.attisdropped
     where has_column_privilege(v.oid, a.attnum, 'select')
        or has_column_privilege(v.oid, a.attnum, 'insert')
        or has_column_privilege(v.oid, a.attnum, 'update')
  )
  select coalesce(jsonb_object_agg(v.name, jsonb_strip_nulls(jsonb_build_object(
           'type', 'object', 'description', v.description,
           'properties', (select coalesce(jsonb_object_agg(c.col, jsonb_strip_nulls(jsonb_build_object(
                                   'type', c.type, 'format', c.format, 'description', c.description))), '{}')
                            from cols c where c.rel = v.name)))), '{}'),
         coalesce(jsonb_object_agg('/' || v.name, jsonb_strip_nulls(jsonb_build_object(
           'get', case when v.can_get then jsonb_build_object(
                    'tags', jsonb_build_array(v.name), 'summary', split_part(v.description, E'\n', 1),
                    'parameters',
                      (select coalesce(jsonb_agg(jsonb_build_object(
                                'name', c.col, 'in', 'query', 'required', false, 'type', 'string',
                                'description', 'PostgREST filter, e.g. eq.VALUE') order by c.attnum), '[]')
                         from cols c where c.rel = v.name and c.readable)
                      || jsonb_build_array(
                           jsonb_build_object('name', 'select', 'in', 'query', 'required', false, 'type', 'string',
                                              'description', 'columns to return, e.g. a,b'),
                           jsonb_build_object('name', 'order', 'in', 'query', 'required', false, 'type', 'string',
                                              'description', 'e.g. a.desc,b'),
                           jsonb_build_object('name', 'limit', 'in', 'query', 'required', false, 'type', 'integer'),
                           jsonb_build_object('name', 'offset', 'in', 'query', 'required', false, 'type', 'integer')),
                    'produces', jsonb_build_array('application/json', 'text/csv'),
                    'responses', jsonb_build_object('200', jsonb_build_object(
                      'description', 'OK',
                      'schema', jsonb_build_object('type', 'array',
                                                   'items', jsonb_build_object('$ref', '#/definitions/' || v.name)))))
                  end,
           'post', case when v.can_post then jsonb_build_object(
                     'tags', jsonb_build_array(v.name), 'summary', split_part(v.description, E'\n', 1),
                     'parameters', v.body_parameters,
                     'responses', jsonb_build_object('201', jsonb_build_object('description', 'Created')))
                   end,
           'patch', case when v.can_patch then jsonb_build_object(
                      'tags', jsonb_build_array(v.name),
                      'parameters', v.body_parameters,
                      'responses', jsonb_build_object('204', jsonb_build_object('description', 'No Content')))
                    end,
           'delete', case when v.can_delete then jsonb_build_object(
                       'tags', jsonb_build_array(v.name),
                       'responses', jsonb_build_object('204', jsonb_build_object('description', 'No Content')))
                     end))), '{}')
    into v_definitions, v_relations
    from visible v;

  -- Functions the caller may execute, by name (overloads merged); not the helpers PostgREST
  -- cannot call (computed columns over a row type, names starting with _).
  with procs as (
    select p.proname::text as name, p.oid, p.provolatile,
           obj_description(p.oid, 'pg_proc') as description
      from pg_proc p
     where p.pronamespace = 'api'::regnamespace and p.prokind = 'f'
       and p.proname not like '\_%'
       and has_function_privilege(p.oid, 'execute')
       and not exists (select from unnest(p.proargtypes) t(oid) join pg_type ty on ty.oid = t.oid
                        where ty.typtype = 'c')
  ),
  args as (
    -- Input arguments by position; names skip OUT and TABLE columns.
    select p.name, p.oid, coalesce(n.names[x.ord::integer], '') as arg, x.ord::integer as ord,
           case when format_type(x.typ, null) like '%[]' then 'array'
                when v_types ? format_type(x.typ, null) then v_types->>format_type(x.typ, null)
                else 'string' end as type,
           format_type(x.typ, null) as format,
           x.ord > pp.pronargs - pp.pronargdefaults as optional
      from procs p
      join pg_proc pp on pp.oid = p.oid
      cross join lateral (
        select case when pp.proargmodes is null then pp.proargnames
                    else array(select m.n
                                 from unnest(pp.proargnames, pp.proargmodes) with ordinality m(n, mode, i)
                                where m.mode in ('i', 'b', 'v') order by m.i) end as names) n
      cross join lateral unnest(pp.proargtypes::oid[]) with ordinality as x(typ, ord)
  ),
  by_name as (
    select p.name,
           bool_and(p.provolatile <> 'v') as can_get,
           min(p.description) as description,
           (select coalesce(jsonb_object_agg(a.arg, jsonb_strip_nulls(jsonb_build_object(
                      'type', a.type, 'format', a.format))), '{}')
              from (select distinct on (a.arg) a.* from args a
                     where a.name = p.name and a.arg <> '' order by a.arg, a.ord) a) as properties,
           (select coalesce(jsonb_agg(distinct a.arg), '[]')
              from args a where a.name = p.name and a.arg <> '' and not a.optional) as required,
           (select coalesce(jsonb_agg(jsonb_strip_nulls(jsonb_build_object(
                      'name', a.arg, 'in', 'query', 'required', not a.optional,
                      'type', coalesce(a.type, 'string'), 'format', a.format)) order by a.ord), '[]')
              from (select distinct on (a.arg) a.* from args a
                     where a.name = p.name and a.arg <> '' order by a.arg, a.ord) a) as query_params,
           bool_or(exists (select from args a where a.oid = p.oid and a.arg = '')) as raw_body
      from procs p
     group by p.name
  )
  select coalesce(jsonb_object_agg('/rpc/' || b.name, jsonb_strip_nulls(jsonb_build_object(
           'get', case when b.can_get then jsonb_build_object(
                    'tags', jsonb_build_array('(rpc) ' || b.name),
                    'summary', split_part(b.description, E'\n', 1),
                    'parameters', b.query_params,
                    'responses', jsonb_build_object('200', jsonb_build_object('description', 'OK')))
                  end,
           'post', jsonb_build_object(
                     'tags', jsonb_build_array('(rpc) ' || b.name),
                     'summary', split_part(b.description, E'\n', 1),
                     'description', b.description,
                     'parameters', jsonb_build_array(jsonb_build_object(
                       'name', 'args', 'in', 'body', 'required', true,
                       'schema', case when b.raw_body
                                      then jsonb_build_object('description', 'the request body as sent')
                                      else jsonb_build_object('type', 'object', 'properties', b.properties,
                                                              'required', b.required) end)),
                     'responses', jsonb_build_object('200', jsonb_build_object('description', 'OK')))))),
         '{}')
    into v_functions
    from by_name b;

  return json_build_object(
    'swagger', '2.0',
    'info', json_build_object('title', 'stepledger API', 'version', '1',
                              'description', v_comment
                                || E'\n\nThis document lists the endpoints and verbs of the role of the token it was '
                                || 'requested with (none: only login). Send Authorization: Bearer <token>.'),
    'host', v_host,
    'basePath', v_base,
    'schemes', json_build_array(v_scheme),
    'consumes', json_build_array('application/json', 'text/csv'),
    'produces', json_build_array('application/json', 'text/csv'),
    'securityDefinitions', json_build_object('JWT', json_build_object(
      'type', 'apiKey', 'in', 'header', 'name', 'Authorization',
      'description', 'Bearer <token>: a login token (POST /rpc/login) or an API token (stepledger token create).')),
    'security', json_build_array(json_build_object('JWT', json_build_array())),
    'paths', jsonb_build_object('/', jsonb_build_object('get', jsonb_build_object(
               'tags', jsonb_build_array('Introspection'), 'summary', 'OpenAPI description (this document)',
               'produces', jsonb_build_array('application/openapi+json', 'application/json'),
               'responses', jsonb_build_object('200', jsonb_build_object('description', 'OK')))))
             || v_relations || v_functions,
    'definitions', v_definitions);
end
$$;
comment on function api.openapi() is 'The OpenAPI document of the caller''s endpoints (GET /).';
