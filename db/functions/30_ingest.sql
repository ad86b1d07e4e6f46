-- Ingest: every element of a batch goes to the raw vault with its outcome; valid, new events go to
-- ledger.events, whose trigger (40_progress.sql) keeps jobs and step runs live.
--
-- Error codes raised here (SQLSTATE, asserted by tests):
--   SL201  caller may not ingest           SL202  batch too large
--   SL203  body is not an array or object

create or replace function ledger._calendar_date_ok(p_ts text) returns boolean
language sql immutable parallel safe
as $$
  -- The envelope's pattern admits 2026-02-30; this rejects days past the end of their month
  -- (and year 0000), so the timestamptz cast that follows can never fail. Integer arithmetic on
  -- the proleptic Gregorian calendar PostgreSQL uses (make_date and interval arithmetic cost
  -- a few microseconds an event).
  select substr(p_ts, 1, 4)::int >= 1
     and substr(p_ts, 9, 2)::int <= case substr(p_ts, 6, 2)::int
           when 2 then 28 + (substr(p_ts, 1, 4)::int % 4 = 0
                             and (substr(p_ts, 1, 4)::int % 100 <> 0
                                  or substr(p_ts, 1, 4)::int % 400 = 0))::int
           when 4 then 30 when 6 then 30 when 9 then 30 when 11 then 30
           else 31 end
$$;

create or replace function ledger._occurred_at(p_ts text) returns timestamptz
language sql stable parallel safe
as $$
  -- An envelope timestamp (RFC 3339, offsets up to ±23:59) as timestamptz. PostgreSQL's input
  -- accepts offsets only up to ±15:59, so the local time is read as UTC and the offset is
  -- subtracted: "+16:00" is valid in an event and must not fail its batch.
  select case when upper(right(p_ts, 1)) = 'Z' then upper(p_ts)::timestamptz
              else (upper(left(p_ts, -6)) || 'Z')::timestamptz
                   - (case substr(p_ts, length(p_ts) - 5, 1) when '-' then -1 else 1 end)
                     * make_interval(hours => substr(p_ts, length(p_ts) - 4, 2)::int,
                                     mins => substr(p_ts, length(p_ts) - 1, 2)::int)
         end
$$;
comment on function ledger._occurred_at(text) is 'An envelope occurred_at (RFC 3339, any offset up to ±23:59) as timestamptz.';

create or replace function ledger._parse_json(p_text text, out payload jsonb, out error text)
language plpgsql immutable parallel safe
as $$
declare
  v_detail text;
  v_context text;
begin
  payload := p_text::jsonb;
exception when others then
  -- e.g. 'not valid JSON: Token "nope" is invalid (JSON data, line 2: {"a": nope...)'
  get stacked diagnostics v_detail = pg_exception_detail, v_context = pg_exception_context;
  error := 'not valid JSON: ' || coalesce(nullif(v_detail, ''), sqlerrm)
           || coalesce(' (' || substring(v_context from '^JSON data, line \d+: [^\n]*') || ')', '');
end
$$;
comment on function ledger._parse_json(text) is 'Parses text as JSON, returning the parser''s message instead of raising.';

create or replace function ledger._ingest_batch(
  p_channel text,
  p_positions integer[],
  p_payloads jsonb[],
  p_raw text[],
  p_parse_errors text[]
) returns jsonb
language plpgsql volatile
set search_path = pg_catalog, pg_temp
-- The big statement below plans in ~2 ms and runs in ~0.5 ms for one event: plan it once per
-- connection, not on every call (a custom plan buys nothing here, the arrays are opaque).
set plan_cache_mode = force_generic_plan
as $$
-- The set-based core of ingest. Element i is either a parsed payload p_payloads[i] or a raw text
-- p_raw[i] that failed to parse with p_parse_errors[i]. One statement classifies every element,
-- claims the dedup keys of the valid ones, writes the whole batch to the vault and the accepted
-- events to ledger.events; it returns the contract's response object.
declare
  v_role text := auth.role();
  v_token_client text := auth.client_id();
  v_bound boolean;
  v_batch_id uuid := gen_random_uuid();
  v_token_id uuid := auth.token_id();
  v_code_version text := ledger.code_version();
  v_result jsonb;
begin
  if v_role not in ('ingest', 'admin') and v_role not in (select rolname from pg_roles where rolsuper) then
    raise exception 'role "%" may not ingest events', v_role
      using errcode = 'SL201', hint = 'use an ingest token (stepledger token create) or an admin login';
  end if;
  -- An ingest token is bound to its client unless created for all clients; admins write for any.
  v_bound := v_role = 'ingest' and v_token_client is not null;
  if coalesce(array_length(p_positions, 1), 0) > 10000 then
    raise exception 'batch of % events is too large', array_length(p_positions, 1)
      using errcode = 'SL202', hint = 'send at most 10000 events per request';
  end if;

  with input as (
    select u.position, u.payload, u.raw_text, u.parse_error,
           u.payload->>'client_id' as client_id, u.payload->>'event_id' as event_id,
           -- The token's right to write for the element's client comes first: nothing below
           -- reads a client's data (its existence, jobs, dedup keys) for an element whose client
           -- this caller may not write for, so no answer can depend on another client's data.
           not (v_bound and (u.payload->>'client_id') is distinct from v_token_client) as may_write
      from unnest(p_positions, p_payloads, p_raw, p_parse_errors)
           as u(position, payload, raw_text, parse_error)
  ),
  -- materialized: each element is validated exactly once, however often the result is read
  validated as materialized (
    select i.*,
           case
             when i.parse_error is not null then
               jsonb_build_array(jsonb_build_object('path', '', 'message', i.parse_error))
             when jsonb_typeof(i.payload) <> 'object' then
               jsonb_build_array(jsonb_build_object('path', '',
                 'message', format('an event must be a JSON object, not %s', jsonb_typeof(i.payload))))
             -- The validators recurse in Python and fail on documents nested ~1000 deep, which
             -- would fail the whole batch: refuse deep nesting first (docs/reliability.md).
             when jsonb_path_exists(i.payload, 'strict $.**{65}') then
               jsonb_build_array(jsonb_build_object('path', '',
                 'message', 'the event nests deeper than 64 levels'))
             -- The envelope compiled to SQL (ADR 0003); the detailed report only for bad ones.
             when not ledger.step_event_v1_valid(i.payload) then
               coalesce(nullif(public.jsonschema_errors(ledger.step_event_v1_schema(), i.payload), '[]'),
                        -- The check and the report are two implementations; should they ever
                        -- disagree, the rejection still says why in general terms.
                        jsonb_build_array(jsonb_build_object('path', '', 'keyword', null,
                          'message', 'the event does not match the event envelope '
                                     '(schemas/step_event.v1.json), but no single cause was found')))
           end as envelope_errors
      from input i
  ),
  classified as materialized (
    select v.position, v.payload, v.raw_text, v.client_id, v.event_id, v.may_write,
           coalesce(v.envelope_errors,
             -- Most events pass every check below: say so without building the error list
             -- (the list, in the else branch, is the reference; this test only skips it).
             case when v.may_write
                       and c.client_id is not null
                       and s.step is not null
                       and (j.pipeline is null or j.pipeline = v.payload->>'pipeline')
                       and ledger._calendar_date_ok(v.payload->>'occurred_at')
                       and not (s.data_schema is not null and v.payload ? 'data'
                                and not public.jsonb_matches_schema(s.data_schema::json, v.payload->'data'))
                  then '[]'::jsonb
                  else (
             select coalesce(jsonb_agg(e order by e->>'path'), '[]'::jsonb)
               from (
                 select jsonb_build_object('path', '/client_id', 'message',
                          format('this token may only write events for client "%s"', v_token_client)) as e
                  where not v.may_write
                 union all
                 select jsonb_build_object('path', '/client_id', 'message',
                          format('unknown client "%s"', v.client_id))
                  where v.may_write and c.client_id is null
                 union all
                 select jsonb_build_object('path', '/pipeline', 'message',
                          format('unknown pipeline "%s"', v.payload->>'pipeline'))
                  where p.pipeline is null
                 union all
                 select jsonb_build_object('path', '/step', 'message',
                          format('pipeline "%s" has no step "%s"', p.pipeline, v.payload->>'step'))
                  where p.pipeline is not null and s.step is null
                 union all
                 select jsonb_build_object('path', '/pipeline', 'message',
                          format('job "%s" belongs to pipeline "%s"', j.job_id, j.pipeline))
                  where j.pipeline is not null and j.pipeline <> v.payload->>'pipeline'
                 union all
                 select jsonb_build_object('path', '/occurred_at', 'message',
                          format('"%s" is not a date that exists', v.payload->>'occurred_at'))
                  where not ledger._calendar_date_ok(v.payload->>'occurred_at')
                 union all
                 select d || jsonb_build_object('path', '/data' || (d->>'path'))
                   from jsonb_array_elements(
                          case when s.data_schema is not null and v.payload ? 'data'
                                    and not public.jsonb_matches_schema(s.data_schema::json, v.payload->'data')
                               then public.jsonschema_errors(s.data_schema::json, v.payload->'data')
                               else '[]'::jsonb end) d
               ) checks
           ) end) as errors
      from validated v
      -- clients and jobs are read only for elements this caller may write (see may_write);
      -- the catalog (pipelines, steps, their schemas) is the same for every client
      left join ledger.clients c
             on c.client_id = v.client_id and v.envelope_errors is null and v.may_write
      left join ledger.pipelines p on p.pipeline = v.payload->>'pipeline' and v.envelope_errors is null
      left join ledger.pipeline_steps s
             on s.pipeline = p.pipeline and s.step = v.payload->>'step'
      left join ledger.jobs j
             on j.client_id = v.client_id and j.job_id = v.payload->>'job_id'
            and v.envelope_errors is null and v.may_write
  ),
  keyed as (
    -- An element has a dedup key when it names a client this caller may write for and an event
    -- id; sending a key again is a duplicate whatever the body (contract §3).
    select c.*,
           jsonb_array_length(c.errors) = 0 as valid,
           jsonb_typeof(c.payload->'client_id') = 'string' and jsonb_typeof(c.payload->'event_id') = 'string'
             and c.may_write as has_key
      from classified c
  ),
  ranked as (
    select k.*,
           e.event_id is not null as seen_before,
           min(k.position) filter (where k.valid) over (partition by k.has_key, k.client_id, k.event_id)
             as first_valid_position
      from keyed k
      left join ledger.event_ids e
             on k.has_key and e.client_id = k.client_id and e.event_id = k.event_id
  ),
  claimed as (
    insert into ledger.event_ids (client_id, event_id)
    select r.client_id, r.event_id from ranked r
     where r.valid and not r.seen_before and r.position = r.first_valid_position
     order by r.client_id, r.event_id
    on conflict do nothing
    returning client_id, event_id
  ),
  decided as (
    select r.*,
           case when r.seen_before then 'duplicate'
                when r.has_key and r.position > r.first_valid_position then 'duplicate'
                when not r.valid then 'rejected'
                when exists (select from claimed k where k.client_id = r.client_id and k.event_id = r.event_id)
                     then 'accepted'
                else 'duplicate' -- a concurrent request claimed the same key first
           end as outcome
      from ranked r
  ),
  vaulted as (
    insert into ledger.vault (client_id, batch_id, position, channel, event_id, payload, raw_text,
                              outcome, errors, sender_role, token_id, code_version)
    select case when v_bound then v_token_client
                when d.client_id ~ '^[a-z0-9][a-z0-9_-]{0,62}$' then d.client_id
                else '' end,
           v_batch_id, d.position, p_channel,
           left(d.event_id, 128), d.payload, d.raw_text, d.outcome,
           case when d.outcome = 'rejected' then d.errors else '[]'::jsonb end,
           v_role, v_token_id, v_code_version
      from decided d
     -- vault ids follow the batch order, so ties between events of one batch resolve by position
     order by d.position
    returning vault_id, received_at, position
  ),
  stored as (
    insert into ledger.events (client_id, received_at, event_id, vault_id, job_id, pipeline, step,
                               status, occurred_at, attempt, units, error_code, error_message,
                               error_retryable, source, payload)
    select d.client_id, w.received_at, d.event_id, w.vault_id, d.payload->>'job_id',
           d.payload->>'pipeline', d.payload->>'step', d.payload->>'status',
           ledger._occurred_at(d.payload->>'occurred_at'),
           -- The envelope reads numbers as JSON Schema does: 1.0 is an integer, and a decimal
           -- that rounds to a valid double is valid (1.00000000000000001, -1e-400 >= 0).
           coalesce(round((d.payload->>'attempt')::numeric)::integer, 1),
           greatest(coalesce((d.payload->>'units')::numeric, 1), 0),
           d.payload->'error'->>'code', d.payload->'error'->>'message',
           (d.payload->'error'->>'retryable')::boolean,
           d.payload->>'source', d.payload
      from decided d
      join vaulted w using (position)
     where d.outcome = 'accepted'
     order by d.client_id, d.payload->>'job_id'
    returning 1
  )
  select jsonb_build_object(
           'accepted', count(*) filter (where d.outcome = 'accepted'),
           'duplicates', count(*) filter (where d.outcome = 'duplicate'),
           'rejected', coalesce(jsonb_agg(jsonb_build_object('index', d.position, 'event_id', d.event_id,
                                                              'errors', d.errors)
                                          order by d.position) filter (where d.outcome = 'rejected'),
                                '[]'::jsonb))
    into v_result
    from decided d;
  -- (data-modifying CTEs always run to completion, read or not)

  return v_result;
end
$$;
comment on function ledger._ingest_batch(text, integer[], jsonb[], text[], text[]) is
  'Set-based ingest core: vaults every element, accepts the valid new ones, returns the response.';

create or replace function ledger._ingest_json(p_body jsonb) returns jsonb
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
-- A JSON body is an array of events or one event object.
declare
  v_elements jsonb;
begin
  v_elements := case jsonb_typeof(p_body) when 'array' then p_body when 'object' then jsonb_build_array(p_body) end;
  if v_elements is null then
    raise exception 'request body must be a JSON array of events or one event object, not %', jsonb_typeof(p_body)
      using errcode = 'SL203';
  end if;
  return ledger._ingest_batch('json',
    (select array_agg(i - 1 order by i) from generate_series(1, jsonb_array_length(v_elements)) i),
    (select array_agg(e order by i) from jsonb_array_elements(v_elements) with ordinality t(e, i)),
    array_fill(null::text, array[jsonb_array_length(v_elements)]),
    array_fill(null::text, array[jsonb_array_length(v_elements)]));
end
$$;

create or replace function ledger._vault_unparsable(p_channel text, p_text text, p_error text) returns bigint
language sql volatile
set search_path = pg_catalog, pg_temp
as $$
  -- A body that is not JSON at all is kept as received, attributed to the token's client.
  insert into ledger.vault (client_id, batch_id, position, channel, raw_text, outcome, errors,
                            sender_role, token_id, code_version)
  values (coalesce(auth.client_id(), ''), gen_random_uuid(), 0, p_channel, p_text, 'rejected',
          jsonb_build_array(jsonb_build_object('path', '', 'message', p_error)),
          auth.role(), auth.token_id(), ledger.code_version())
  returning vault_id
$$;

create or replace function ledger._refuse_oversized(p_channel text, p_text text, p_count integer)
returns jsonb
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
-- A batch over the 10000-event limit: kept in the vault as one rejected raw row, answered 413.
declare
  v_message text := format('batch of %s events is too large', p_count);
  v_vault_id bigint := ledger._vault_unparsable(p_channel, p_text, v_message);
begin
  perform set_config('response.status', '413', true);
  return jsonb_build_object('code', 'SL202', 'message', v_message,
    'details', format('kept in the vault as row %s', v_vault_id),
    'hint', 'send at most 10000 events per request');
end
$$;
comment on function ledger._refuse_oversized(text, text, integer) is
  'Keeps an over-limit batch in the vault as one rejected raw row and answers 413 (SL202).';

create or replace function api.ingest(text) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
-- The body as raw text (the API gateway forwards application/json bodies of /rpc/ingest as
-- text/plain), so that heterogeneous batches and bodies that are not JSON reach the database:
-- the latter are kept in the vault and answered with 400.
declare
  v_parsed record;
  v_vault_id bigint;
begin
  if auth.role() not in ('ingest', 'admin') then
    raise exception 'role "%" may not ingest events', auth.role() using errcode = 'SL201';
  end if;
  v_parsed := ledger._parse_json($1);
  if v_parsed.error is not null then
    v_vault_id := ledger._vault_unparsable('json', $1, 'request body is ' || v_parsed.error);
    perform set_config('response.status', '400', true);
    return jsonb_build_object('code', 'SL204', 'message', 'request body is ' || v_parsed.error,
      'details', format('kept in the vault as row %s', v_vault_id),
      'hint', 'send a JSON array of events or one event object');
  end if;
  if jsonb_typeof(v_parsed.payload) not in ('array', 'object') then
    v_vault_id := ledger._vault_unparsable('json', $1,
      format('request body must be a JSON array of events or one event object, not %s', jsonb_typeof(v_parsed.payload)));
    perform set_config('response.status', '400', true);
    return jsonb_build_object('code', 'SL203',
      'message', format('request body must be a JSON array of events or one event object, not %s', jsonb_typeof(v_parsed.payload)),
      'details', format('kept in the vault as row %s', v_vault_id), 'hint', null);
  end if;
  if jsonb_typeof(v_parsed.payload) = 'array' and jsonb_array_length(v_parsed.payload) > 10000 then
    -- Refused whole, but kept: the vault holds every body that reached the database.
    return ledger._refuse_oversized('json', $1, jsonb_array_length(v_parsed.payload));
  end if;
  return ledger._ingest_json(v_parsed.payload);
end
$$;
comment on function api.ingest(text) is
  'Ingest step events: a JSON array of events (or one event object). Every element is kept in the raw vault; the answer lists accepted, duplicate and rejected elements with the JSON path and reason of each error.';

create or replace function api.ingest(jsonb) returns jsonb
language sql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
  select ledger._ingest_json($1)
$$;
comment on function api.ingest(jsonb) is
  'Ingest step events: a JSON array of events (or one event object). Every element is kept in the raw vault; the answer lists accepted, duplicate and rejected elements with the JSON path and reason of each error.';

create or replace function api.ingest_ndjson(text) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
-- One event per line (application/x-ndjson, forwarded as text/plain by the API gateway). Blank
-- lines are skipped; a line that is not JSON is kept raw and rejected with its line number
-- (`index` is the 1-based line number here).
declare
  v_lines text[];
  v_numbers integer[];
  v_payloads jsonb[];
  v_raw text[];
  v_errors text[];
  v_all jsonb;
  v_n integer;
begin
  if auth.role() not in ('ingest', 'admin') then
    raise exception 'role "%" may not ingest events', auth.role() using errcode = 'SL201';
  end if;
  select coalesce(array_agg(rtrim(l, E'\r') order by n), '{}'), coalesce(array_agg(n::integer order by n), '{}')
    into v_lines, v_numbers
    from string_to_table($1, E'\n') with ordinality t(l, n)
   where btrim(l, E' \t\r') <> '';
  v_n := coalesce(array_length(v_lines, 1), 0);
  if v_n > 10000 then
    return ledger._refuse_oversized('ndjson', $1, v_n);
  end if;

  -- Fast path: parse every line in one go; only when that fails (or a line held several values)
  -- parse line by line to find the bad ones.
  v_all := (ledger._parse_json('[' || array_to_string(v_lines, ',') || ']')).payload;
  if v_all is not null and jsonb_array_length(v_all) = v_n then
    select coalesce(array_agg(e order by i), '{}') into v_payloads
      from jsonb_array_elements(v_all) with ordinality t(e, i);
    v_raw := array_fill(null::text, array[v_n]);
    v_errors := v_raw;
  else
    select array_agg(p.payload order by i), array_agg(case when p.error is not null then l end order by i),
           array_agg(case when p.error is not null then format('line %s is %s', v_numbers[i], p.error) end order by i)
      into v_payloads, v_raw, v_errors
      from unnest(v_lines) with ordinality t(l, i), ledger._parse_json(l) p;
  end if;
  return ledger._ingest_batch('ndjson', v_numbers, v_payloads, v_raw, v_errors);
end
$$;
comment on function api.ingest_ndjson(text) is
  'Ingest step events sent as NDJSON (one event per line). Lines that are not JSON are kept raw in the vault and rejected with their line number as index.';
