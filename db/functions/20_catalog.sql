-- The catalog: clients and pipelines with their ordered steps.

create or replace function ledger.register_pipeline(p_definition jsonb)
returns jsonb
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
-- Registers a pipeline or a new version of it (schemas/pipeline.v1.json). Steps may be added and
-- reordered; a step that already has events may not be removed, so history stays explainable.
-- Jobs keep the step count they started with (ledger.jobs.steps_total).
declare
  v_errors jsonb;
  v_pipeline text := p_definition->>'pipeline';
  v_old jsonb;
  v_version integer;
  v_stall interval;
  v_missing text;
  v_unique boolean;
  v_step jsonb;
  v_position integer;
  v_reason text;
begin
  v_errors := public.jsonschema_errors(ledger.pipeline_v1_schema(), p_definition);
  if jsonb_array_length(v_errors) > 0 then
    raise exception 'invalid pipeline definition: % at "%"', v_errors->0->>'message', v_errors->0->>'path'
      using errcode = 'SL101', detail = v_errors::text;
  end if;

  select count(*) = count(distinct s->>'key') into v_unique
    from jsonb_array_elements(p_definition->'steps') s;
  if not v_unique then
    raise exception 'invalid pipeline definition: step keys must be unique' using errcode = 'SL101';
  end if;

  begin
    v_stall := coalesce((p_definition->>'stall_timeout')::interval, interval '1 hour');
  exception when others then
    raise exception 'invalid pipeline definition: stall_timeout % is not an interval', p_definition->>'stall_timeout'
      using errcode = 'SL101', hint = 'use e.g. "2 hours", "45 minutes" or "PT2H"';
  end;
  if v_stall <= interval '0' then
    raise exception 'invalid pipeline definition: stall_timeout must be positive' using errcode = 'SL101';
  end if;

  -- A step's data schema must itself be a valid JSON Schema: compiling it says why not (22023),
  -- here, rather than with every event of that step later.
  for v_step, v_position in
    select s, o - 1 from jsonb_array_elements(p_definition->'steps') with ordinality as e(s, o)
     where s ? 'data_schema'
  loop
    begin
      perform public.jsonb_matches_schema((v_step->'data_schema')::json, 'null'::jsonb);
    exception when invalid_parameter_value then
      get stacked diagnostics v_reason = message_text;
      raise exception 'invalid pipeline definition: data_schema of step "%" is not a valid JSON Schema: %',
          v_step->>'key', regexp_replace(v_reason, '^plpy\.Error: ', '')
        using errcode = 'SL101', detail = format('at /steps/%s/data_schema', v_position),
              hint = 'check the schema against its draft''s meta-schema (drafts 4, 6, 7, 2019-09, 2020-12)';
    end;
  end loop;

  select definition, version into v_old, v_version from ledger.pipelines where pipeline = v_pipeline for update;
  if v_old = p_definition then
    return jsonb_build_object('pipeline', v_pipeline, 'version', v_version, 'changed', false);
  end if;

  if v_old is not null then
    select ps.step into v_missing
      from ledger.pipeline_steps ps
     where ps.pipeline = v_pipeline
       and not exists (select from jsonb_array_elements(p_definition->'steps') s where s->>'key' = ps.step)
       and exists (select from ledger.job_steps js where js.pipeline = v_pipeline and js.step = ps.step)
     limit 1;
    if v_missing is not null then
      raise exception 'cannot remove step "%" from pipeline "%": jobs have run it', v_missing, v_pipeline
        using errcode = 'SL102', hint = 'keep the step in the definition; new jobs may skip it';
    end if;
    v_version := v_version + 1;
  else
    v_version := 1;
  end if;

  insert into ledger.pipelines as p (pipeline, title, description, stall_timeout, version, steps_total, definition)
  values (v_pipeline, p_definition->>'title', p_definition->>'description', v_stall, v_version,
          jsonb_array_length(p_definition->'steps'), p_definition)
  on conflict (pipeline) do update
     set title = excluded.title, description = excluded.description,
         stall_timeout = excluded.stall_timeout, version = excluded.version,
         steps_total = excluded.steps_total, definition = excluded.definition, updated_at = now();

  delete from ledger.pipeline_steps ps
   where ps.pipeline = v_pipeline
     and not exists (select from jsonb_array_elements(p_definition->'steps') s where s->>'key' = ps.step);

  insert into ledger.pipeline_steps as ps (pipeline, step, step_index, title, description, data_schema, added_in_version)
  select v_pipeline, s->>'key', i::integer, s->>'title', s->>'description', s->'data_schema', v_version
    from jsonb_array_elements(p_definition->'steps') with ordinality as t(s, i)
  on conflict (pipeline, step) do update
     set step_index = excluded.step_index, title = excluded.title,
         description = excluded.description, data_schema = excluded.data_schema;

  return jsonb_build_object('pipeline', v_pipeline, 'version', v_version, 'changed', true,
                            'steps', jsonb_array_length(p_definition->'steps'));
end
$$;
comment on function ledger.register_pipeline(jsonb) is 'Registers a pipeline definition (schemas/pipeline.v1.json) or a new version of it.';

create or replace function ledger.add_client(p_client_id text, p_name text, p_currency text default 'EUR')
returns ledger.clients
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
-- Adds a client or updates its name and currency; the id is the slug events carry in client_id.
declare
  v_row ledger.clients;
begin
  if p_client_id is null or p_client_id !~ '^[a-z0-9][a-z0-9_-]{0,62}$' then
    raise exception 'invalid client id "%"', p_client_id
      using errcode = 'SL103', hint = 'lower-case letters, digits, _ and -, starting with a letter or digit, at most 63 characters';
  end if;
  if p_currency is null or p_currency !~ '^[A-Z]{3}$' then
    raise exception 'invalid currency "%"', p_currency using errcode = 'SL103', hint = 'an ISO 4217 code such as EUR';
  end if;
  insert into ledger.clients as c (client_id, name, currency) values (p_client_id, p_name, p_currency)
  on conflict (client_id) do update set name = excluded.name, currency = excluded.currency
  returning * into v_row;
  return v_row;
end
$$;
comment on function ledger.add_client(text, text, text) is 'Adds a client (or renames it / changes its currency).';
