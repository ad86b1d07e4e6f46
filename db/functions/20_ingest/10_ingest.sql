-- Ingest: every element of a batch goes to the raw vault with its outcome; valid, new events go to
-- ledger.events and are folded into step runs, job steps, jobs and the billing change log by
-- ledger._fold_progress (40_progress.sql), called here: no trigger is involved (ADR 0014).
--
-- Error codes raised here (SQLSTATE, asserted by tests):
--   SL201  caller may not ingest           SL202  batch too large
--   SL203  body is not an array or object   SL204  body is not JSON (an answer, not raised)

create or replace function ledger._calendar_date_ok(p_ts text) returns boolean
language sql immutable parallel safe as $$
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
language sql stable parallel safe as $$
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
language plpgsql immutable parallel safe as $$
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

create or replace function ledger._classification_errors(
  p_may_write boolean, p_token_client text, p_client_id text, p_client_known boolean,
  p_pipeline text, p_pipeline_known boolean, p_step text, p_step_known boolean,
  p_job_id text, p_job_pipeline text, p_occurred_at text, p_data_schema jsonb, p_data jsonb
) returns jsonb
language plpgsql stable parallel safe as $$
-- The errors of an element that passed the envelope, by path: the token may not write for its
-- client, an unknown client, pipeline or step, a job of another pipeline, a date that does not
-- exist, data that does not match the step's schema. Ingest calls it only for an element that
-- fails its quick test (ledger._ingest_batch): a function of its own, so that the statement of
-- every request does not set up this list's plan when no element needs it. (PL/pgSQL: its plan
-- is kept for the session.)
begin
  return (
    select coalesce(jsonb_agg(e order by e->>'path'), '[]'::jsonb)
      from (
        select jsonb_build_object('path', '/client_id', 'message',
                 format('this token may only write events for client "%s"', p_token_client)) as e
         where not p_may_write
        union all
        select jsonb_build_object('path', '/client_id', 'message',
                 format('unknown client "%s"', p_client_id))
         where p_may_write and not p_client_known
        union all
        select jsonb_build_object('path', '/pipeline', 'message',
                 format('unknown pipeline "%s"', p_pipeline))
         where not p_pipeline_known
        union all
        select jsonb_build_object('path', '/step', 'message',
                 format('pipeline "%s" has no step "%s"', p_pipeline, p_step))
         where p_pipeline_known and not p_step_known
        union all
        select jsonb_build_object('path', '/pipeline', 'message',
                 format('job "%s" belongs to pipeline "%s"', p_job_id, p_job_pipeline))
         where p_job_pipeline is not null and p_job_pipeline <> p_pipeline
        union all
        select jsonb_build_object('path', '/occurred_at', 'message',
                 format('"%s" is not a date that exists', p_occurred_at))
         where not ledger._calendar_date_ok(p_occurred_at)
        union all
        select d || jsonb_build_object('path', '/data' || (d->>'path'))
          from jsonb_array_elements(
                 case when p_data_schema is not null and p_data is not null
                           and not public.jsonb_matches_schema(p_data_schema::json, p_data)
                      then public.jsonschema_errors(p_data_schema::json, p_data)
                      else '[]'::jsonb end) d
      ) checks);
end
$$;
comment on function ledger._classification_errors(boolean, text, text, boolean, text, boolean, text, boolean, text, text, text, jsonb, jsonb) is
  'The errors of an element that passed the envelope: its client, pipeline, step, job, date and data checked against the catalog.';

drop function if exists ledger._ingest_batch(text, integer[], jsonb[], text[], text[]);
create or replace function ledger._ingest_batch(
  p_channel text,
  p_positions integer[],
  p_payloads jsonb[],
  p_raw text[],
  p_parse_errors text[],
  p_body bytea default null,
  p_body_problems jsonb default '[]'
) returns jsonb
language plpgsql volatile set search_path = pg_catalog, pg_temp
-- The big statement below plans in ~2 ms and runs in ~0.5 ms for one event: plan it once per
-- connection, not on every call (a custom plan buys nothing here, the arrays are opaque).
set plan_cache_mode = force_generic_plan
-- That one plan lives as long as the connection, however the tables grow: it must not depend on
-- their size when it was made. It does not: the arrays count as 10 rows when it is planned, so
-- jobs and dedup keys are probed by key (a nested loop over their primary keys) even when the
-- plan is made on empty or freshly analyzed tables; no planner setting is needed for that
-- (tests/test_ingest_plans.py; docs/benchmarks.md, "Ingest plans").
as $$
-- The set-based core of ingest. Element i is either a parsed payload p_payloads[i] or a raw text
-- p_raw[i] that failed to parse with p_parse_errors[i]. One statement classifies every element,
-- claims the dedup keys of the valid ones, writes the whole batch to the vault (and the request
-- body as received, p_body, once: ledger.vault_bodies) and the accepted events to ledger.events;
-- it returns the contract's response object.
declare
  v_role text := auth.role();
  v_token_client text := auth.client_id();
  v_bound boolean;
  v_batch_id uuid := gen_random_uuid();
  v_token_id uuid := auth.token_id();
  v_code_version text := ledger.code_version();
  v_result jsonb;
  v_stored ledger.events[];
  -- The instant of receipt, given as a value: on a Citus cluster a column default would be
  -- evaluated on the worker, whose transaction started later than this one.
  v_received_at timestamptz := now();
begin
  -- (two tests: the first, on every request, is a simple expression that runs no query)
  if v_role not in ('ingest', 'admin') then
    if v_role not in (select rolname from pg_roles where rolsuper) then
      raise exception 'role "%" may not ingest events', v_role
        using errcode = 'SL201', hint = 'use an ingest token (stepledger token create) or an admin login';
    end if;
  end if;
  -- An ingest token is bound to its client unless created for all clients; admins write for any.
  v_bound := v_role = 'ingest' and v_token_client is not null;
  if coalesce(array_length(p_positions, 1), 0) > 10000 then
    raise exception 'batch of % events is too large', array_length(p_positions, 1)
      using errcode = 'SL202', hint = 'send at most 10000 events per request';
  end if;

  with input as (
    -- The envelope's fields read once per element, as text (a field of the wrong JSON type reads
    -- as its JSON text, as ->> would; the envelope check below decides), typed only once valid.
    select u.position, u.payload, u.raw_text, u.parse_error, f.*,
           -- The token's right to write for the element's client comes first: nothing below
           -- reads a client's data (its existence, jobs, dedup keys) for an element whose client
           -- this caller may not write for, so no answer can depend on another client's data.
           not (v_bound and f.client_id is distinct from v_token_client) as may_write
      from unnest(p_positions, p_payloads, p_raw, p_parse_errors)
           as u(position, payload, raw_text, parse_error)
      left join lateral jsonb_to_record(case when jsonb_typeof(u.payload) = 'object' then u.payload end)
           as f(client_id text, event_id text, job_id text, pipeline text, step text, status text,
                occurred_at text, attempt text, units text, error jsonb, source text, data jsonb)
           on true
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
    select v.position, v.payload, v.raw_text, v.client_id, v.event_id, v.may_write, v.job_id,
           v.pipeline, v.step, v.status, v.occurred_at, v.attempt, v.units, v.error, v.source,
           v.data,
           coalesce(v.envelope_errors,
             -- Most events pass every check below: say so without building the error list
             -- (the list, in the else branch, is the reference; this test only skips it).
             case when v.may_write
                       and c.client_id is not null
                       and s.step is not null
                       and (j.pipeline is null or j.pipeline = v.pipeline)
                       and ledger._calendar_date_ok(v.occurred_at)
                       and not (s.data_schema is not null and v.data is not null
                                and not public.jsonb_matches_schema(s.data_schema::json, v.data))
                  then '[]'::jsonb
                  else ledger._classification_errors(v.may_write, v_token_client, v.client_id,
                         c.client_id is not null, v.pipeline, p.pipeline is not null, v.step,
                         s.step is not null, j.job_id, j.pipeline, v.occurred_at, s.data_schema,
                         v.data)
             end) as errors
      from validated v
      -- clients and jobs are read only for elements this caller may write (see may_write);
      -- the catalog (pipelines, steps, their schemas) is the same for every client
      left join ledger.clients c
             on c.client_id = v.client_id and v.envelope_errors is null and v.may_write
      left join ledger.pipelines p on p.pipeline = v.pipeline and v.envelope_errors is null
      left join ledger.pipeline_steps s
             on s.pipeline = p.pipeline and s.step = v.step
      -- (plain joins on the keys: Citus plans no LATERAL subquery over its tables here)
      left join ledger.jobs j
             on j.client_id = v.client_id and j.job_id = v.job_id
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
           e.seen_before is not null as seen_before,
           min(k.position) filter (where k.valid) over (partition by k.has_key, k.client_id, k.event_id)
             as first_valid_position
      from keyed k
      left join (select true as seen_before, e.client_id, e.event_id from ledger.event_ids e) e
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
                              outcome, errors, sender_role, token_id, code_version, received_at)
    select case when v_bound then v_token_client
                -- a slug (ledger.slug), spelled without {0,62}: a bounded repetition costs the
                -- regular expression engine ~15 µs a match, `*` and a length test ~0.5 µs
                when d.client_id ~ '^[a-z0-9][a-z0-9_-]*$' and length(d.client_id) <= 63
                  then d.client_id
                else '' end,
           v_batch_id, d.position, p_channel,
           left(d.event_id, 128), d.payload, d.raw_text, d.outcome,
           case when d.outcome = 'rejected' then d.errors else '[]'::jsonb end,
           v_role, v_token_id, v_code_version, v_received_at
      from decided d
     -- vault ids follow the batch order, so ties between events of one batch resolve by position
     order by d.position
    returning vault_id, received_at, position, client_id
  ),
  bodied as (
    -- The body goes to the one client all its rows went to; a body of several clients or of none
    -- is attributed to nobody (''). Admins read bodies, no client role does.
    insert into ledger.vault_bodies (client_id, batch_id, channel, body, problems, elements,
                                     sender_role, token_id, code_version, received_at)
    select case when v_bound then v_token_client
                when count(distinct w.client_id) = 1 then min(w.client_id)
                else '' end,
           v_batch_id, p_channel, p_body, p_body_problems, count(*), v_role, v_token_id, v_code_version,
           v_received_at
      from vaulted w
    having p_body is not null
  ),
  stored as (
    insert into ledger.events as e (client_id, received_at, event_id, vault_id, job_id, pipeline, step,
                                    status, occurred_at, attempt, units, error_code, error_message,
                                    error_retryable, source, data)
    select d.client_id, w.received_at, d.event_id, w.vault_id, d.job_id, d.pipeline, d.step,
           d.status, ledger._occurred_at(d.occurred_at),
           -- The envelope reads numbers as JSON Schema does: 1.0 is an integer, and a decimal
           -- that rounds to a valid double is valid (1.00000000000000001, -1e-400 >= 0).
           coalesce(round(d.attempt::numeric)::integer, 1),
           greatest(coalesce(d.units::numeric, 1), 0),
           d.error->>'code', d.error->>'message', (d.error->>'retryable')::boolean,
           d.source, d.data
      from decided d
      join vaulted w using (position)
     where d.outcome = 'accepted'
     order by d.client_id, d.job_id
    returning e.*
  )
  select jsonb_build_object(
           'accepted', count(*) filter (where d.outcome = 'accepted'),
           'duplicates', count(*) filter (where d.outcome = 'duplicate'),
           'rejected', coalesce(jsonb_agg(jsonb_build_object('index', d.position, 'event_id', d.event_id,
                                                              'errors', d.errors)
                                          order by d.position) filter (where d.outcome = 'rejected'),
                                '[]'::jsonb)),
         (select array_agg(row(s.*)::ledger.events) from stored s)
    into v_result, v_stored
    from decided d;
  -- (data-modifying CTEs always run to completion, read or not)

  -- What the accepted events change: step runs, job steps, jobs, the billing change log and the
  -- job notifications, in set-based statements that read this batch (40_progress.sql).
  perform ledger._fold_progress(v_stored);
  return v_result;
end
$$;
comment on function ledger._ingest_batch(text, integer[], jsonb[], text[], text[], bytea, jsonb) is
  'Set-based ingest core: vaults every element (and the request body as received), accepts the valid new ones, returns the response.';

-- ---- the request body as received ---------------------------------------------------------------
-- Every ingest request keeps its body once, byte for byte, in ledger.vault_bodies (ADR 0007), and
-- what was wrong with those bytes: not UTF-8, a NUL byte, a byte order mark, duplicate keys.

create or replace function ledger._utf8_error_offset(p_body bytea) returns integer
language plpgsql immutable parallel safe set search_path = pg_catalog, pg_temp as $$
-- The 0-based offset of the first byte that is not part of well-formed UTF-8 (RFC 3629: no
-- overlong forms, no surrogates, nothing above U+10FFFF; NUL is well-formed), or null. Chunks of
-- 64 kB are checked by convert_from; only the first failing one is walked by a regular expression
-- over its hex form (walking 16 MB that way takes seconds).
declare
  v_length integer := length(p_body);
  v_start integer := 1;  -- 1-based, as substr counts
  v_end integer;
  v_chunk bytea;
  v_valid_prefix text;
begin
  while v_start <= v_length loop
    v_end := least(v_start + 65535, v_length);
    -- end the chunk on a character boundary: before a continuation byte (10xxxxxx)
    while v_end < v_length and v_end > v_start and get_byte(p_body, v_end) & 192 = 128 loop
      v_end := v_end - 1;
    end loop;
    v_chunk := substr(p_body, v_start, v_end - v_start + 1);
    begin
      perform convert_from(v_chunk, 'UTF8');
    exception when character_not_in_repertoire then
      v_valid_prefix := substring(encode(v_chunk, 'hex') from
        '^(?:[0-7][0-9a-f]'
        '|(?:c[2-9a-f]|d[0-9a-f])[89ab][0-9a-f]'
        '|e0[ab][0-9a-f][89ab][0-9a-f]'
        '|(?:e[1-9a-c]|e[ef])[89ab][0-9a-f][89ab][0-9a-f]'
        '|ed[89][0-9a-f][89ab][0-9a-f]'
        '|f0[9ab][0-9a-f][89ab][0-9a-f][89ab][0-9a-f]'
        '|f[1-3][89ab][0-9a-f][89ab][0-9a-f][89ab][0-9a-f]'
        '|f48[0-9a-f][89ab][0-9a-f][89ab][0-9a-f])*');
      -- a chunk that failed only for a NUL byte is well-formed: go on
      if length(v_valid_prefix) < 2 * length(v_chunk) then
        return v_start - 1 + length(v_valid_prefix) / 2;
      end if;
    end;
    v_start := v_end + 1;
  end loop;
  return null;
end
$$;
comment on function ledger._utf8_error_offset(bytea) is
  'The byte offset of the first byte that is not well-formed UTF-8, or null.';

create or replace function ledger._decode_body(p_body bytea, out body_text text, out problems jsonb)
language plpgsql immutable parallel safe set search_path = pg_catalog, pg_temp as $$
-- A request body as text, and what is wrong with its bytes ([{offset, message}], by offset).
-- body_text is null when the bytes are not text PostgreSQL can hold: invalid UTF-8 or a NUL byte
-- (JSON allows neither).
declare
  v_nul integer;
  v_bad integer;
begin
  problems := '[]';
  begin
    body_text := convert_from(p_body, 'UTF8');
  exception when character_not_in_repertoire then
    body_text := null;
    v_nul := position('\x00'::bytea in p_body);
    if v_nul > 0 then
      problems := problems || jsonb_build_array(jsonb_build_object('offset', v_nul - 1,
        'message', format('NUL byte at byte offset %s', v_nul - 1)));
    end if;
    v_bad := ledger._utf8_error_offset(p_body);
    if v_bad is not null then
      problems := problems || jsonb_build_array(jsonb_build_object('offset', v_bad,
        'message', format('invalid UTF-8 at byte offset %s (byte 0x%s)', v_bad,
                          encode(substr(p_body, v_bad + 1, 1), 'hex'))));
    end if;
    select jsonb_agg(p order by (p->>'offset')::bigint) into problems from jsonb_array_elements(problems) p;
  end;
end
$$;
comment on function ledger._decode_body(bytea) is
  'A request body as text (null when not UTF-8 or holding a NUL byte) and what is wrong with its bytes.';

create or replace function ledger._may_hold_duplicate_keys(p_text text, p_parsed jsonb) returns boolean
language plpgsql immutable parallel safe as $$
-- A cheap test run on every body; false means p_text surely has no duplicate key. When no key
-- is followed by white space (no '"' is), every key of p_text ends in '":', and so does every key
-- of p_parsed::text; '":' inside strings is written '\":' in both (unless p_text spells a quote
-- '\u0022'), and the text holds at least as many as the normalised form. So the same count
-- of '":' in both means that no key was dropped. (PL/pgSQL: planned once per session. One
-- pattern, not a search per spelling, and bytes, not characters, counted: for a batch of 1,000
-- events this test took 10 ms, now 5.)
declare
  v_normalised text := p_parsed::text;
begin
  return p_text ~ '"[ \t\r\n]|\\u0022'
      or octet_length(p_text) - octet_length(replace(p_text, '":', ''))
         <> octet_length(v_normalised) - octet_length(replace(v_normalised, '":', ''));
end
$$;
comment on function ledger._may_hold_duplicate_keys(text, jsonb) is
  'Cheap pre-test: false when a JSON text surely holds no object with a key twice.';

create or replace function ledger._duplicate_keys(p_json json)
returns table (path text, key text)
language sql immutable parallel safe as $$
  -- Every object (by JSON pointer) that holds a key more than once; the json type keeps them all.
  -- node identifies one value even when a duplicate key gives two values the same path. The walk
  -- stops 66 levels down (a batch, an event, and the 64 levels an event may nest): each level
  -- re-reads the text below it, and deeper events are rejected anyway.
  with recursive walk(node, path, value, depth) as (
    select '', '', p_json, 0
    union all
    select w.node || '.' || e.n, w.path || '/' || replace(replace(e.key, '~', '~0'), '/', '~1'),
           e.value, w.depth + 1
      from walk w
     cross join lateral (
       select o.key, o.value, o.n
         from json_each(case when json_typeof(w.value) = 'object' then w.value end)
              with ordinality o(key, value, n)
       union all
       select (a.n - 1)::text, a.value, a.n
         from json_array_elements(case when json_typeof(w.value) = 'array' then w.value end)
              with ordinality a(value, n)
     ) e
     where json_typeof(e.value) in ('object', 'array') and w.depth < 66
  )
  select min(w.path), k.key
    from walk w
   cross join lateral json_object_keys(case when json_typeof(w.value) = 'object' then w.value end) k(key)
   group by w.node, k.key
  having count(*) > 1
   order by 1, 2
$$;
comment on function ledger._duplicate_keys(json) is
  'The objects of a JSON text that hold a key twice: (JSON pointer of the object, key).';

create or replace function ledger._duplicate_key_message(p_key text, p_path text) returns text
language sql immutable parallel safe as $$
  select format('duplicate key "%s" in %s: only its last value was read', p_key,
                case when p_path = '' then 'the top-level object' else 'the object at ' || p_path end)
$$;

create or replace function ledger._duplicate_key_problems(p_text text, p_parsed jsonb) returns jsonb
language plpgsql immutable parallel safe as $$
-- [{path, key, message}] for each key given twice; only the last value of such a key is read.
-- PL/pgSQL, not SQL: ingest calls it once per request, and a SQL function's query would be
-- planned again on every call (about 1 ms, most of it for a walk that the pre-test skips).
begin
  if not ledger._may_hold_duplicate_keys(p_text, p_parsed) then
    return '[]';
  end if;
  return (select coalesce(jsonb_agg(jsonb_build_object('path', d.path, 'key', d.key,
                                                       'message', ledger._duplicate_key_message(d.key, d.path))
                                    order by d.path, d.key), '[]')
            from ledger._duplicate_keys(p_text::json) d);
end
$$;
comment on function ledger._duplicate_key_problems(text, jsonb) is
  'Problems [{path, key, message}] for keys a JSON text gives twice (jsonb keeps the last).';

create or replace function ledger._refuse_body(
  p_channel text, p_body bytea, p_text text, p_problems jsonb, p_status text,
  p_code text, p_message text, p_hint text
) returns jsonb
language plpgsql volatile set search_path = pg_catalog, pg_temp as $$
-- A body refused whole (not JSON, not a batch, too large) is still kept: its bytes in
-- vault_bodies and one rejected vault row with its text (an escaped form when the bytes are not
-- text), both attributed to the token's client. Answers p_status with the API's error shape.
declare
  v_batch_id uuid := gen_random_uuid();
  v_client_id text := coalesce(auth.client_id(), '');
  v_vault_id bigint;
begin
  insert into ledger.vault (client_id, batch_id, position, channel, raw_text, outcome, errors,
                            sender_role, token_id, code_version)
  values (v_client_id, v_batch_id, 0, p_channel, coalesce(p_text, encode(p_body, 'escape')),
          'rejected', jsonb_build_array(jsonb_build_object('path', '', 'message', p_message)),
          auth.role(), auth.token_id(), ledger.code_version())
  returning vault_id into v_vault_id;
  insert into ledger.vault_bodies (client_id, batch_id, channel, body, problems, elements,
                                   sender_role, token_id, code_version)
  values (v_client_id, v_batch_id, p_channel, p_body,
          -- bytes that are not text already say why; otherwise the refusal does
          p_problems || case when p_text is not null
                             then jsonb_build_array(jsonb_build_object('message', p_message))
                             else '[]' end,
          1,
          auth.role(), auth.token_id(), ledger.code_version());
  perform set_config('response.status', p_status, true);
  return jsonb_build_object('code', p_code, 'message', p_message,
    'details', format('kept in the vault as row %s', v_vault_id), 'hint', p_hint);
end
$$;
comment on function ledger._refuse_body(text, bytea, text, jsonb, text, text, text, text) is
  'Keeps a body refused whole (its bytes and one rejected vault row) and answers with the given status and error.';

drop function if exists ledger._ingest_json(jsonb);
drop function if exists ledger._vault_unparsable(text, text, text);
drop function if exists ledger._refuse_oversized(text, text, integer);

create or replace function ledger._ingest_body(p_channel text, p_body bytea) returns jsonb
language plpgsql volatile set search_path = pg_catalog, pg_temp as $$
-- One ingest request, from its bytes: a JSON array of events or one event ('json'), or one event
-- per line ('ndjson': blank lines skipped, a line that is not JSON rejected with its 1-based line
-- number as index). The body is kept as received whatever happens next; a body that is not JSON,
-- not a batch or too large is refused whole (400/413) and kept too.
declare
  v_text text;
  v_problems jsonb;
  v_decoded record;
  v_parsed record;
  v_elements jsonb;
  v_lines text[];
  v_numbers integer[];
  v_payloads jsonb[];
  v_raw text[];
  v_errors text[];
  v_n integer;
begin
  if auth.role() not in ('ingest', 'admin') then
    raise exception 'role "%" may not ingest events', auth.role()
      using errcode = 'SL201', hint = 'use an ingest token (stepledger token create) or an admin login';
  end if;
  v_decoded := ledger._decode_body(p_body);
  v_text := v_decoded.body_text;
  v_problems := v_decoded.problems;
  if v_text is null then
    return ledger._refuse_body(p_channel, p_body, null, v_problems, '400', 'SL204',
      'request body is not valid JSON: ' || (v_problems->0->>'message'),
      'send JSON text in UTF-8');
  end if;
  if starts_with(v_text, U&'\FEFF') then
    -- RFC 8259 8.1: JSON text sent over a network must not start with one
    return ledger._refuse_body(p_channel, p_body, v_text, v_problems, '400', 'SL204',
      'request body is not valid JSON: it starts with a byte order mark (EF BB BF at byte offset 0)',
      'send JSON text in UTF-8 without a byte order mark');
  end if;

  if p_channel = 'json' then
    v_parsed := ledger._parse_json(v_text);
    if v_parsed.error is not null then
      return ledger._refuse_body(p_channel, p_body, v_text, v_problems, '400', 'SL204',
        'request body is ' || v_parsed.error, 'send a JSON array of events or one event object');
    end if;
    v_elements := case jsonb_typeof(v_parsed.payload) when 'array' then v_parsed.payload
                                                       when 'object' then jsonb_build_array(v_parsed.payload) end;
    if v_elements is null then
      return ledger._refuse_body(p_channel, p_body, v_text, v_problems, '400', 'SL203',
        format('request body must be a JSON array of events or one event object, not %s',
               jsonb_typeof(v_parsed.payload)), null);
    end if;
    v_n := jsonb_array_length(v_elements);
    if v_n > 10000 then
      return ledger._refuse_body(p_channel, p_body, v_text, v_problems, '413', 'SL202',
        format('batch of %s events is too large', v_n), 'send at most 10000 events per request');
    end if;
    v_problems := v_problems || ledger._duplicate_key_problems(v_text, v_parsed.payload);
    -- One statement without a sublink: its plan is kept for the session (generate_series(1, n)
    -- in a sublink made every call plan again, as a custom plan for its n).
    select array_agg(t.i - 1 order by t.i), array_agg(t.e order by t.i)
      into v_numbers, v_payloads
      from jsonb_array_elements(v_elements) with ordinality t(e, i);
    v_raw := array_fill(null::text, array[v_n]);
    return ledger._ingest_batch('json', v_numbers, v_payloads, v_raw, v_raw, p_body, v_problems);
  end if;

  select coalesce(array_agg(rtrim(l, E'\r') order by n), '{}'), coalesce(array_agg(n::integer order by n), '{}')
    into v_lines, v_numbers
    from string_to_table(v_text, E'\n') with ordinality t(l, n)
   where btrim(l, E' \t\r') <> '';
  v_n := coalesce(array_length(v_lines, 1), 0);
  if v_n > 10000 then
    return ledger._refuse_body(p_channel, p_body, v_text, v_problems, '413', 'SL202',
      format('batch of %s events is too large', v_n), 'send at most 10000 events per request');
  end if;
  -- Fast path: parse every line in one go; only when that fails (or a line held several values)
  -- parse line by line to find the bad ones.
  v_parsed := ledger._parse_json('[' || array_to_string(v_lines, ',') || ']');
  if v_parsed.payload is not null and jsonb_array_length(v_parsed.payload) = v_n then
    select coalesce(array_agg(e order by i), '{}') into v_payloads
      from jsonb_array_elements(v_parsed.payload) with ordinality t(e, i);
    v_raw := array_fill(null::text, array[v_n]);
    v_errors := v_raw;
  else
    select array_agg(p.payload order by i), array_agg(case when p.error is not null then l end order by i),
           array_agg(case when p.error is not null then format('line %s is %s', v_numbers[i], p.error) end order by i)
      into v_payloads, v_raw, v_errors
      from unnest(v_lines) with ordinality t(l, i), ledger._parse_json(l) p;
    -- the body's account lists its lines that are not JSON too (each also has its vault row)
    select v_problems || coalesce(jsonb_agg(jsonb_build_object('line', v_numbers[i], 'message', e)
                                            order by i), '[]')
      into v_problems
      from unnest(v_errors) with ordinality t(e, i)
     where e is not null;
  end if;
  -- Duplicate keys, by line: the lines that parsed, as one array (path /k/... is its k-th line).
  select v_problems || coalesce(jsonb_agg(jsonb_build_object('line', v_numbers[k.i],
           'path', k.path, 'key', d.value->>'key',
           'message', format('line %s: %s', v_numbers[k.i],
                             ledger._duplicate_key_message(d.value->>'key', k.path)))), '[]')
    into v_problems
    from (select array_agg(l order by i) as lines, jsonb_agg(p order by i) as payloads,
                 array_agg(i order by i) as positions
            from unnest(v_lines, v_payloads) with ordinality t(l, p, i)
           where p is not null) ok
   cross join lateral jsonb_array_elements(
           ledger._duplicate_key_problems('[' || array_to_string(ok.lines, ',') || ']', ok.payloads)) d
   cross join lateral (
     select ok.positions[split_part(d.value->>'path', '/', 2)::integer + 1] as i,
            substr(d.value->>'path', length(split_part(d.value->>'path', '/', 2)) + 2) as path) k
   where ok.lines is not null;
  return ledger._ingest_batch('ndjson', v_numbers, v_payloads, v_raw, v_errors, p_body, v_problems);
end
$$;
comment on function ledger._ingest_body(text, bytea) is
  'One ingest request from its bytes (channel json or ndjson): keeps the body as received, then ingests its events or refuses it whole.';

-- ---- the HTTP surface ----------------------------------------------------------------------------
-- The API gateway forwards the bodies of /rpc/ingest and /rpc/ingest_ndjson as
-- application/octet-stream, which PostgREST hands unchanged to the bytea variants (ADR 0002,
-- 0004): every byte reaches the database. The text variants serve callers that send text/plain
-- to PostgREST directly (the loader, the SDK); the jsonb variant those that send parsed JSON.
-- PL/pgSQL, not SQL: a security definer SQL function is parsed and planned again on every
-- request; PL/pgSQL keeps its plan for the session.

create or replace function api.ingest(bytea) returns jsonb
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
begin
  return ledger._ingest_body('json', $1);
end
$$;
comment on function api.ingest(bytea) is
  'Ingest step events: a JSON array of events (or one event object). The body is kept as received and every element in the raw vault; the answer lists accepted, duplicate and rejected elements with the JSON path and reason of each error.';

create or replace function api.ingest(text) returns jsonb
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
begin
  return ledger._ingest_body('json', convert_to($1, 'UTF8'));
end
$$;
comment on function api.ingest(text) is
  'Ingest step events: a JSON array of events (or one event object). Every element is kept in the raw vault; the answer lists accepted, duplicate and rejected elements with the JSON path and reason of each error.';

create or replace function api.ingest(jsonb) returns jsonb
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
begin
  -- PostgREST parsed the body already: what is kept is its normalised text
  return ledger._ingest_body('json', convert_to($1::text, 'UTF8'));
end
$$;
comment on function api.ingest(jsonb) is
  'Ingest step events: a JSON array of events (or one event object). Every element is kept in the raw vault; the answer lists accepted, duplicate and rejected elements with the JSON path and reason of each error.';

create or replace function api.ingest_ndjson(bytea) returns jsonb
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
begin
  return ledger._ingest_body('ndjson', $1);
end
$$;
comment on function api.ingest_ndjson(bytea) is
  'Ingest step events sent as NDJSON (one event per line). The body is kept as received; lines that are not JSON are kept raw in the vault and rejected with their line number as index.';

create or replace function api.ingest_ndjson(text) returns jsonb
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
begin
  return ledger._ingest_body('ndjson', convert_to($1, 'UTF8'));
end
$$;
comment on function api.ingest_ndjson(text) is
  'Ingest step events sent as NDJSON (one event per line). Lines that are not JSON are kept raw in the vault and rejected with their line number as index.';
