-- The catalog: clients and pipelines with their ordered steps.

create or replace function ledger.register_pipeline(p_definition jsonb)
returns jsonb
language plpgsql volatile set search_path = pg_catalog, pg_temp as $$
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
       and exists (select 1 from ledger.job_steps js where js.pipeline = v_pipeline and js.step = ps.step)
     limit 1;
    if v_missing is not null then
      raise exception 'cannot remove step "%" from pipeline "%": jobs have run it', v_missing, v_pipeline
        using errcode = 'SL102', hint = 'keep the step in the definition; new jobs may skip it';
    end if;
    v_version := v_version + 1;
  else
    v_version := 1;
  end if;

  insert into ledger.pipelines as p (pipeline, title, description, stall_timeout, version, steps_total, definition,
                                     updated_at)
  values (v_pipeline, p_definition->>'title', p_definition->>'description', v_stall, v_version,
          jsonb_array_length(p_definition->'steps'), p_definition, now())
  on conflict (pipeline) do update
     set title = excluded.title, description = excluded.description,
         stall_timeout = excluded.stall_timeout, version = excluded.version,
         steps_total = excluded.steps_total, definition = excluded.definition,
         -- now() in VALUES, not in the SET list: on Citus, where pipelines is a reference
         -- table, functions in DO UPDATE SET must be immutable (ADR 0012).
         updated_at = excluded.updated_at;

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

create or replace function ledger._check_client_fields(p_client_id text, p_name text, p_currency text,
                                                       p_payment_terms_days integer)
returns void
language plpgsql immutable set search_path = pg_catalog, pg_temp as $$
-- The checks shared by create_client, update_client and add_client (SL103), so each says what is
-- wrong before a CHECK constraint would.
begin
  if p_client_id is null or p_client_id !~ '^[a-z0-9][a-z0-9_-]{0,62}$' then
    raise exception 'invalid client id "%"', p_client_id
      using errcode = 'SL103', hint = 'lower-case letters, digits, _ and -, starting with a letter or digit, at most 63 characters';
  end if;
  if p_name is not null and length(p_name) not between 1 and 200 then
    raise exception 'invalid name for client "%": 1 to 200 characters', p_client_id using errcode = 'SL103';
  end if;
  if p_currency is not null and p_currency !~ '^[A-Z]{3}$' then
    raise exception 'invalid currency "%"', p_currency using errcode = 'SL103', hint = 'an ISO 4217 code such as EUR';
  end if;
  if p_payment_terms_days is not null and p_payment_terms_days not between 0 and 365 then
    raise exception 'invalid payment terms for client "%": % days', p_client_id, p_payment_terms_days
      using errcode = 'SL103', hint = 'days from the issue date to the due date, 0 to 365';
  end if;
end
$$;
comment on function ledger._check_client_fields(text, text, text, integer) is 'Validates client fields (SL103).';

create or replace function ledger.create_client(p_client_id text, p_name text, p_currency text default 'EUR',
                                                p_payment_terms_days integer default null)
returns ledger.clients
language plpgsql volatile set search_path = pg_catalog, pg_temp as $$
-- Adds a new client; an existing id is refused (SL104), never changed: `stepledger client add`.
declare
  v_row ledger.clients;
begin
  perform ledger._check_client_fields(p_client_id, p_name, coalesce(p_currency, 'EUR'), p_payment_terms_days);
  if p_name is null then
    raise exception 'a new client needs a name' using errcode = 'SL103';
  end if;
  insert into ledger.clients as c (client_id, name, currency)
  values (p_client_id, p_name, coalesce(p_currency, 'EUR'))
  on conflict (client_id) do nothing
  returning * into v_row;
  if found and p_payment_terms_days is not null then  -- else the column's default
    update ledger.clients c set payment_terms_days = p_payment_terms_days
     where c.client_id = p_client_id
    returning * into v_row;
  elsif not found then
    select * into v_row from ledger.clients c where c.client_id = p_client_id;
    raise exception 'client "%" already exists (%, %)', p_client_id, v_row.name, v_row.currency
      using errcode = 'SL104', hint = 'change it with `stepledger client update ' || p_client_id || '`';
  end if;
  return v_row;
end
$$;
comment on function ledger.create_client(text, text, text, integer) is 'Adds a new client; refuses an existing id (SL104).';

create or replace function ledger.update_client(p_client_id text, p_name text default null,
                                                p_currency text default null,
                                                p_payment_terms_days integer default null)
returns ledger.clients
language plpgsql volatile set search_path = pg_catalog, pg_temp as $$
-- Changes an existing client's name, currency or payment terms (null: unchanged). A currency
-- change is guarded by the trigger billing_currency_change (SL410), whatever the path.
declare
  v_row ledger.clients;
begin
  perform ledger._check_client_fields(p_client_id, p_name, p_currency, p_payment_terms_days);
  perform ledger._approve_currency_change(p_client_id, p_currency);  -- SL410
  update ledger.clients c
     set name = coalesce(p_name, c.name),
         currency = coalesce(p_currency, c.currency),
         payment_terms_days = coalesce(p_payment_terms_days, c.payment_terms_days)
   where c.client_id = p_client_id
  returning * into v_row;
  if not found then
    raise exception 'unknown client "%"', p_client_id
      using errcode = 'SL404', hint = 'add it with `stepledger client add ' || p_client_id || ' --name NAME`';
  end if;
  return v_row;
end
$$;
comment on function ledger.update_client(text, text, text, integer) is 'Changes a client''s name, currency (SL410 rules) or payment terms.';

create or replace function ledger.add_client(p_client_id text, p_name text, p_currency text default 'EUR')
returns ledger.clients
language plpgsql volatile set search_path = pg_catalog, pg_temp as $$
-- Idempotent set-up for scripts and demos: creates the client, or brings an existing one to this
-- name and currency (a currency change is still guarded by billing_currency_change, SL410).
-- Operators use create_client / update_client (`stepledger client add|update`).
declare
  v_row ledger.clients;
begin
  perform ledger._check_client_fields(p_client_id, p_name, p_currency, null);
  if p_currency is null then
    raise exception 'invalid currency "%"', p_currency using errcode = 'SL103', hint = 'an ISO 4217 code such as EUR';
  end if;
  perform ledger._approve_currency_change(p_client_id, p_currency);  -- SL410
  insert into ledger.clients as c (client_id, name, currency) values (p_client_id, p_name, p_currency)
  on conflict (client_id) do update set name = excluded.name, currency = excluded.currency
  returning * into v_row;
  return v_row;
end
$$;
comment on function ledger.add_client(text, text, text) is 'Set-up scripts: adds a client or brings it to this name and currency (idempotent).';
