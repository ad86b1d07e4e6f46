--
-- PostgreSQL database dump
--



SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

--
-- Name: api; Type: SCHEMA; Schema: -; Owner: -
--

CREATE SCHEMA api;


--
-- Name: SCHEMA api; Type: COMMENT; Schema: -; Owner: -
--

COMMENT ON SCHEMA api IS 'stepledger HTTP API: pipelines send step events; clients follow jobs, usage and errors.';


--
-- Name: auth; Type: SCHEMA; Schema: -; Owner: -
--

CREATE SCHEMA auth;


--
-- Name: ledger; Type: SCHEMA; Schema: -; Owner: -
--

CREATE SCHEMA ledger;


--
-- Name: reporting; Type: SCHEMA; Schema: -; Owner: -
--

CREATE SCHEMA reporting;


--
-- Name: plpython3u; Type: EXTENSION; Schema: -; Owner: -
--

CREATE EXTENSION IF NOT EXISTS plpython3u WITH SCHEMA pg_catalog;


--
-- Name: EXTENSION plpython3u; Type: COMMENT; Schema: -; Owner: -
--

COMMENT ON EXTENSION plpython3u IS 'PL/Python3U untrusted procedural language';


--
-- Name: pgcrypto; Type: EXTENSION; Schema: -; Owner: -
--

CREATE EXTENSION IF NOT EXISTS pgcrypto WITH SCHEMA public;


--
-- Name: EXTENSION pgcrypto; Type: COMMENT; Schema: -; Owner: -
--

COMMENT ON EXTENSION pgcrypto IS 'cryptographic functions';


--
-- Name: slug; Type: DOMAIN; Schema: ledger; Owner: -
--

CREATE DOMAIN ledger.slug AS text
	CONSTRAINT slug_check CHECK ((VALUE ~ '^[a-z0-9][a-z0-9_-]{0,62}$'::text));


--
-- Name: DOMAIN slug; Type: COMMENT; Schema: ledger; Owner: -
--

COMMENT ON DOMAIN ledger.slug IS 'Lower-case identifier: letters, digits, _ and -, 1 to 63 characters.';


--
-- Name: step_status; Type: DOMAIN; Schema: ledger; Owner: -
--

CREATE DOMAIN ledger.step_status AS text
	CONSTRAINT step_status_check CHECK ((VALUE = ANY (ARRAY['started'::text, 'completed'::text, 'failed'::text, 'skipped'::text])));


--
-- Name: create_api_token(text, text, text); Type: FUNCTION; Schema: api; Owner: -
--

CREATE FUNCTION api.create_api_token(client_id text, name text, scope text DEFAULT 'ingest'::text) RETURNS jsonb
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
-- POST /rpc/create_api_token (admin).
begin
  if auth.role() <> 'admin' then
    raise exception 'only admins create API tokens' using errcode = 'SL309';
  end if;
  return auth.create_api_token(create_api_token.client_id, create_api_token.name, create_api_token.scope,
                               'admin ' || coalesce(auth.claims()->>'email', auth.claims()->>'sub', 'token'));
end
$$;


--
-- Name: FUNCTION create_api_token(client_id text, name text, scope text); Type: COMMENT; Schema: api; Owner: -
--

COMMENT ON FUNCTION api.create_api_token(client_id text, name text, scope text) IS 'Admin: create an API token for pipelines (scope ingest) bound to one client, or to every client when client_id is null. The token is shown only in this answer; the database keeps its SHA-256.';


--
-- Name: error_codes(date, date, text); Type: FUNCTION; Schema: api; Owner: -
--

CREATE FUNCTION api.error_codes(since date DEFAULT NULL::date, until date DEFAULT NULL::date, client text DEFAULT NULL::text) RETURNS TABLE(pipeline text, step text, error_code text, failures bigint, share numeric, retryable bigint, clients bigint, sources bigint, first_at timestamp with time zone, last_at timestamp with time zone, sample_message text)
    LANGUAGE plpgsql STABLE
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
#variable_conflict use_column
-- Every error code per pipeline and step, most frequent first, with its share of the step's
-- failures, how many clients and sites saw it, and the latest message as a sample.
begin
  return query
  with o as (
    select * from ledger._outcomes(error_codes.since, error_codes.until,
                                   null, error_codes.client)
     where failed > 0
  ),
  per_code as (
    select o.pipeline, o.step, o.error_code, sum(o.failed)::bigint as failures,
           sum(o.retryable)::bigint as retryable, count(distinct o.client_id) as clients,
           count(distinct (o.client_id, o.source)) as sources,
           min(o.first_at) as first_at, max(o.last_at) as last_at,
           (array_agg(o.sample_message order by o.last_at desc)
              filter (where o.sample_message is not null))[1] as sample_message
      from o group by o.pipeline, o.step, o.error_code
  )
  select c.pipeline, c.step, c.error_code, c.failures,
         round(c.failures::numeric / sum(c.failures) over (partition by c.pipeline, c.step), 4),
         c.retryable, c.clients, c.sources, c.first_at, c.last_at, c.sample_message
    from per_code c
   order by c.failures desc, c.pipeline, c.step, c.error_code;
end
$$;


--
-- Name: FUNCTION error_codes(since date, until date, client text); Type: COMMENT; Schema: api; Owner: -
--

COMMENT ON FUNCTION api.error_codes(since date, until date, client text) IS 'Error codes per pipeline and step, most frequent first: failures, share of the step''s failures, retryable failures, clients and sites affected, first and last seen, a sample message.';


--
-- Name: error_stats_by_day(date, date, text); Type: FUNCTION; Schema: api; Owner: -
--

CREATE FUNCTION api.error_stats_by_day(since date DEFAULT NULL::date, until date DEFAULT NULL::date, client text DEFAULT NULL::text) RETURNS TABLE(day date, pipeline text, step text, failures bigint, attempts bigint, failure_rate numeric, top_error_code text, step_index integer)
    LANGUAGE plpgsql STABLE
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
#variable_conflict use_column
-- Failures and failure rate per UTC day and step (default: the last 30 days).
declare
  v_today date := (now() at time zone 'UTC')::date;
  v_since date := coalesce(error_stats_by_day.since, coalesce(error_stats_by_day.until, v_today) - 29);
  v_until date := coalesce(error_stats_by_day.until, v_today);
begin
  perform ledger._check_window(v_since, v_until);
  return query
  with cells as (
    select d.day, d.pipeline::text as pipeline, d.step::text as step, d.error_code,
           sum(d.completed)::bigint as completed, sum(d.failed)::bigint as failed,
           max(d.last_at) as last_at
      from ledger.visible_step_outcomes_daily d
     where d.day between v_since and v_until
       and (error_stats_by_day.client is null or d.client_id = error_stats_by_day.client)
     group by d.day, d.pipeline, d.step, d.error_code
  ),
  per_step as (
    select c.day, c.pipeline, c.step, sum(c.failed)::bigint as failures,
           sum(c.completed + c.failed)::bigint as attempts
      from cells c group by c.day, c.pipeline, c.step
  ),
  top as (
    select distinct on (c.day, c.pipeline, c.step) c.day, c.pipeline, c.step, c.error_code
      from cells c where c.failed > 0
     order by c.day, c.pipeline, c.step, c.failed desc, c.last_at desc, c.error_code
  )
  select s.day, s.pipeline, s.step, s.failures, s.attempts,
         round(s.failures::numeric / nullif(s.attempts, 0), 4), t.error_code, ps.step_index
    from per_step s
    left join top t on t.day = s.day and t.pipeline = s.pipeline and t.step = s.step
    left join ledger.pipeline_steps ps on ps.pipeline = s.pipeline and ps.step = s.step
   order by s.day, s.pipeline, ps.step_index, s.step;
end
$$;


--
-- Name: FUNCTION error_stats_by_day(since date, until date, client text); Type: COMMENT; Schema: api; Owner: -
--

COMMENT ON FUNCTION api.error_stats_by_day(since date, until date, client text) IS 'Failures, attempts, failure rate and top error code per UTC day and step over a window (default: the last 30 days).';


--
-- Name: error_stats_by_source(date, date, text, text); Type: FUNCTION; Schema: api; Owner: -
--

CREATE FUNCTION api.error_stats_by_source(since date DEFAULT NULL::date, until date DEFAULT NULL::date, pipeline text DEFAULT NULL::text, client text DEFAULT NULL::text) RETURNS TABLE(client_id text, source text, failures bigint, attempts bigint, failure_rate numeric, top_error_code text, top_error_step text, last_failure_at timestamp with time zone)
    LANGUAGE plpgsql STABLE
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
#variable_conflict use_column
-- Failures per site (the events' `source`; '' when they named none), with the code and step that
-- failed most there. A site belongs to its client.
begin
  return query
  with o as (
    select * from ledger._outcomes(error_stats_by_source.since, error_stats_by_source.until,
                                   error_stats_by_source.pipeline, error_stats_by_source.client)
  ),
  per_source as (
    select o.client_id, o.source, sum(o.failed)::bigint as failures,
           sum(o.completed + o.failed)::bigint as attempts,
           max(o.last_at) filter (where o.failed > 0) as last_failure_at
      from o group by o.client_id, o.source
  ),
  top as (
    select distinct on (x.client_id, x.source) x.client_id, x.source, x.error_code, x.step
      from (select o.client_id, o.source, o.error_code, o.step, sum(o.failed) as failed,
                   max(o.last_at) as last_at
              from o where o.failed > 0
             group by o.client_id, o.source, o.error_code, o.step) x
     order by x.client_id, x.source, x.failed desc, x.last_at desc, x.error_code, x.step
  )
  select s.client_id, s.source, s.failures, s.attempts,
         round(s.failures::numeric / nullif(s.attempts, 0), 4), t.error_code, t.step,
         s.last_failure_at
    from per_source s
    left join top t on t.client_id = s.client_id and t.source = s.source
   order by s.failures desc, s.client_id, s.source;
end
$$;


--
-- Name: FUNCTION error_stats_by_source(since date, until date, pipeline text, client text); Type: COMMENT; Schema: api; Owner: -
--

COMMENT ON FUNCTION api.error_stats_by_source(since date, until date, pipeline text, client text) IS 'Failures, attempts and failure rate per site (client and event source), with the error code and step that failed most there.';


--
-- Name: error_stats_window(date, date, text); Type: FUNCTION; Schema: api; Owner: -
--

CREATE FUNCTION api.error_stats_window(since date DEFAULT NULL::date, until date DEFAULT NULL::date, client text DEFAULT NULL::text) RETURNS TABLE(pipeline text, step text, failures bigint, attempts bigint, failure_rate numeric, top_error_code text, step_index integer, top_error_message text, top_error_failures bigint, retryable_failures bigint, skipped bigint, last_failure_at timestamp with time zone, refreshed_at timestamp with time zone)
    LANGUAGE plpgsql STABLE
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
#variable_conflict use_column
-- GET /error_stats over a window of UTC days (both ends included, either may be open), for one
-- pipeline or client if asked. Attempts are finished attempts (completed or failed).
begin
  return query
  with o as (
    select * from ledger._outcomes(error_stats_window.since, error_stats_window.until,
                                   null, error_stats_window.client)
  ),
  per_step as (
    select o.pipeline, o.step, sum(o.failed)::bigint as failures,
           sum(o.completed + o.failed)::bigint as attempts,
           sum(o.retryable)::bigint as retryable, sum(o.skipped)::bigint as skipped,
           max(o.last_at) filter (where o.failed > 0) as last_failure_at
      from o group by o.pipeline, o.step
  ),
  per_code as (
    select o.pipeline, o.step, o.error_code, sum(o.failed)::bigint as failures, max(o.last_at) as last_at,
           (array_agg(o.sample_message order by o.last_at desc)
              filter (where o.sample_message is not null))[1] as sample_message
      from o where o.failed > 0
     group by o.pipeline, o.step, o.error_code
  ),
  top as (
    select distinct on (c.pipeline, c.step) c.*
      from per_code c
     order by c.pipeline, c.step, c.failures desc, c.last_at desc, c.error_code
  )
  select s.pipeline, s.step, s.failures, s.attempts,
         round(s.failures::numeric / nullif(s.attempts, 0), 4),
         t.error_code, ps.step_index, t.sample_message, t.failures, s.retryable, s.skipped,
         s.last_failure_at,
         (select r.refreshed_at from ledger.analytics_refreshes r
           where r.view_name = case when error_stats_window.since is null
                                     and error_stats_window.until is null
                                    then 'step_outcomes_total' else 'step_outcomes_daily' end)
    from per_step s
    left join top t on t.pipeline = s.pipeline and t.step = s.step
    left join ledger.pipeline_steps ps on ps.pipeline = s.pipeline and ps.step = s.step
   order by s.pipeline, ps.step_index, s.step;
end
$$;


--
-- Name: FUNCTION error_stats_window(since date, until date, client text); Type: COMMENT; Schema: api; Owner: -
--

COMMENT ON FUNCTION api.error_stats_window(since date, until date, client text) IS 'Error statistics per pipeline and step, as GET /error_stats, over a window of UTC days (since, until, both included) and optionally one pipeline or client.';


--
-- Name: finalize_invoice(text, text); Type: FUNCTION; Schema: api; Owner: -
--

CREATE FUNCTION api.finalize_invoice(client_id text, period text) RETURNS jsonb
    LANGUAGE sql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $_$
  select ledger._finalize_invoice($1, $2)
$_$;


--
-- Name: FUNCTION finalize_invoice(client_id text, period text); Type: COMMENT; Schema: api; Owner: -
--

COMMENT ON FUNCTION api.finalize_invoice(client_id text, period text) IS 'Admins: freeze the invoice of a client for a finished period (YYYY-MM). The finalized invoice never changes; later events for that period become adjustment lines on the next open invoice.';


--
-- Name: ingest(jsonb); Type: FUNCTION; Schema: api; Owner: -
--

CREATE FUNCTION api.ingest(jsonb) RETURNS jsonb
    LANGUAGE sql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $_$
  select ledger._ingest_json($1)
$_$;


--
-- Name: FUNCTION ingest(jsonb); Type: COMMENT; Schema: api; Owner: -
--

COMMENT ON FUNCTION api.ingest(jsonb) IS 'Ingest step events: a JSON array of events (or one event object). Every element is kept in the raw vault; the answer lists accepted, duplicate and rejected elements with the JSON path and reason of each error.';


--
-- Name: ingest(text); Type: FUNCTION; Schema: api; Owner: -
--

CREATE FUNCTION api.ingest(text) RETURNS jsonb
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $_$
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
$_$;


--
-- Name: FUNCTION ingest(text); Type: COMMENT; Schema: api; Owner: -
--

COMMENT ON FUNCTION api.ingest(text) IS 'Ingest step events: a JSON array of events (or one event object). Every element is kept in the raw vault; the answer lists accepted, duplicate and rejected elements with the JSON path and reason of each error.';


--
-- Name: ingest_ndjson(text); Type: FUNCTION; Schema: api; Owner: -
--

CREATE FUNCTION api.ingest_ndjson(text) RETURNS jsonb
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $_$
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
$_$;


--
-- Name: FUNCTION ingest_ndjson(text); Type: COMMENT; Schema: api; Owner: -
--

COMMENT ON FUNCTION api.ingest_ndjson(text) IS 'Ingest step events sent as NDJSON (one event per line). Lines that are not JSON are kept raw in the vault and rejected with their line number as index.';


--
-- Name: ingest_unreadable(jsonb); Type: FUNCTION; Schema: api; Owner: -
--

CREATE FUNCTION api.ingest_unreadable(lines jsonb) RETURNS jsonb
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
-- Each element {line, text, error} is a line (or a multi-line record) of a file that a loader
-- could not read as an event: a legacy log line that breaks the format, a CSV row with the wrong
-- number of fields, a broken element of a JSON array. It is kept raw in the vault (channel
-- 'file', position = line number), rejected with `error`, and attributed to the token's client.
-- Answers like POST /rpc/ingest: {accepted: 0, duplicates: 0, rejected: [{index: line, ...}]}.
declare
  v_bad jsonb;
begin
  if jsonb_typeof(lines) is distinct from 'array' then
    raise exception 'lines must be a JSON array of {line, text, error} objects, not %',
      coalesce(jsonb_typeof(lines), 'null') using errcode = 'SL611';
  end if;
  select e into v_bad
    from jsonb_array_elements(lines) e
   where jsonb_typeof(e) <> 'object'
      or case when jsonb_typeof(e->'line') = 'number'
              then (e->>'line')::numeric <> floor((e->>'line')::numeric)
                   or (e->>'line')::numeric not between 1 and 2147483647
              else true end
      or jsonb_typeof(e->'text') is distinct from 'string'
      or jsonb_typeof(e->'error') is distinct from 'string'
      or length(e->>'error') = 0
   limit 1;
  if v_bad is not null then
    raise exception 'each element of lines must be {line: integer >= 1, text: string, error: non-empty string}'
      using errcode = 'SL611', detail = left(v_bad::text, 200);
  end if;
  return ledger._ingest_batch('file',
    (select coalesce(array_agg((e->>'line')::integer order by i), '{}') from jsonb_array_elements(lines) with ordinality t(e, i)),
    array_fill(null::jsonb, array[jsonb_array_length(lines)]),
    (select coalesce(array_agg(e->>'text' order by i), '{}') from jsonb_array_elements(lines) with ordinality t(e, i)),
    (select coalesce(array_agg(e->>'error' order by i), '{}') from jsonb_array_elements(lines) with ordinality t(e, i)));
end
$$;


--
-- Name: FUNCTION ingest_unreadable(lines jsonb); Type: COMMENT; Schema: api; Owner: -
--

COMMENT ON FUNCTION api.ingest_unreadable(lines jsonb) IS 'For loaders: keep lines of a file that are not events (e.g. a malformed log line) in the raw vault, rejected with the loader''s reason. Body {"lines": [{"line": 12, "text": "...", "error": "..."}]}; answers like /rpc/ingest with index = line number.';


--
-- Name: invoice(text, text); Type: FUNCTION; Schema: api; Owner: -
--

CREATE FUNCTION api.invoice(client_id text, period text) RETURNS jsonb
    LANGUAGE sql STABLE
    AS $_$
  select ledger._invoice_for_caller($1, $2)
$_$;


--
-- Name: FUNCTION invoice(client_id text, period text); Type: COMMENT; Schema: api; Owner: -
--

COMMENT ON FUNCTION api.invoice(client_id text, period text) IS 'The invoice of a client for a period (YYYY-MM): lines (pipeline, step, units, unit_price, amount), total, currency and status (draft until an admin finalizes the period, then frozen). Late events for a finalized period appear as adjustment lines on the next open invoice.';


--
-- Name: job_changes(bigint, integer); Type: FUNCTION; Schema: api; Owner: -
--

CREATE FUNCTION api.job_changes(since bigint DEFAULT NULL::bigint, max_jobs integer DEFAULT 500) RETURNS jsonb
    LANGUAGE plpgsql STABLE
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
#variable_conflict use_column
-- Live updates by polling. Without `since`: only a cursor. With the cursor of the previous call:
-- the jobs (as in GET /jobs) changed since then and the next cursor. The cursor is the xmin of
-- this call's snapshot, so a batch still being written now is reported by the next call. When more
-- than max_jobs changed, `resync` is true and no jobs are listed: reload the list instead.
declare
  v_cursor bigint := pg_snapshot_xmin(pg_current_snapshot())::text::bigint;
  v_jobs jsonb;
  v_count integer;
begin
  if job_changes.since is not null and job_changes.since < 0 then
    raise exception 'cursor % is not a cursor', job_changes.since
      using errcode = 'SL501', hint = 'use the cursor a previous call returned';
  end if;
  if max_jobs is null or max_jobs not between 1 and 10000 then
    raise exception 'max_jobs must be between 1 and 10000, not %', max_jobs using errcode = 'SL501';
  end if;
  if job_changes.since is null then
    return jsonb_build_object('cursor', v_cursor, 'as_of', now(), 'resync', false, 'jobs', '[]'::jsonb);
  end if;
  select count(*), coalesce(jsonb_agg(to_jsonb(c) order by c.changed_xid, c.client_id, c.job_id), '[]')
    into v_count, v_jobs
    from (select j.* from api.jobs j
           where j.changed_xid >= job_changes.since
           order by j.changed_xid, j.client_id, j.job_id
           limit max_jobs + 1) c;
  if v_count > max_jobs then
    return jsonb_build_object('cursor', v_cursor, 'as_of', now(), 'resync', true, 'jobs', '[]'::jsonb);
  end if;
  return jsonb_build_object('cursor', v_cursor, 'as_of', now(), 'resync', false, 'jobs', v_jobs);
end
$$;


--
-- Name: FUNCTION job_changes(since bigint, max_jobs integer); Type: COMMENT; Schema: api; Owner: -
--

COMMENT ON FUNCTION api.job_changes(since bigint, max_jobs integer) IS 'Live updates: call without `since` for a cursor, then with the last cursor to get the jobs changed since (as in GET /jobs) and the next cursor. `resync: true` means more than max_jobs changed: reload the list.';


--
-- Name: job_counts(text, timestamp with time zone, timestamp with time zone, text, text); Type: FUNCTION; Schema: api; Owner: -
--

CREATE FUNCTION api.job_counts(pipeline text DEFAULT NULL::text, since timestamp with time zone DEFAULT NULL::timestamp with time zone, until timestamp with time zone DEFAULT NULL::timestamp with time zone, job_prefix text DEFAULT NULL::text, client text DEFAULT NULL::text) RETURNS jsonb
    LANGUAGE plpgsql STABLE
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
#variable_conflict use_column
-- Jobs per state (running, completed, failed, stalled) among the caller's visible jobs, with the
-- same filters as the job list: pipeline, started in [since, until), job id prefix, client.
declare
  v_result jsonb;
begin
  if job_counts.since is not null and job_counts.until is not null
     and job_counts.since > job_counts.until then
    raise exception 'since (%) is after until (%)', job_counts.since, job_counts.until
      using errcode = 'SL501';
  end if;
  if job_counts.pipeline is null and job_counts.since is null and job_counts.until is null
     and job_counts.job_prefix is null then
    -- No filter but the client: count states from the index on (client_id, status, updated_at)
    -- alone, then look up the pipelines of the running jobs only, to tell the stalled ones.
    select jsonb_build_object(
             'running', c.running - st.stalled, 'completed', c.completed, 'failed', c.failed,
             'stalled', st.stalled, 'total', c.total, 'as_of', now())
      into v_result
      from (select count(*) filter (where j.status = 'running') as running,
                   count(*) filter (where j.status = 'completed') as completed,
                   count(*) filter (where j.status = 'failed') as failed,
                   count(*) as total
              from ledger.jobs j
             where job_counts.client is null or j.client_id = job_counts.client) c,
           (select count(*) as stalled
              from ledger.jobs j
              join ledger.pipelines p on p.pipeline = j.pipeline
             where j.status = 'running' and now() - j.updated_at > p.stall_timeout
               and (job_counts.client is null or j.client_id = job_counts.client)) st;
    return v_result;
  end if;
  select jsonb_build_object(
           'running', count(*) filter (where s.status = 'running'),
           'completed', count(*) filter (where s.status = 'completed'),
           'failed', count(*) filter (where s.status = 'failed'),
           'stalled', count(*) filter (where s.status = 'stalled'),
           'total', count(*),
           'as_of', now())
    into v_result
    from ledger.jobs j
    join ledger.pipelines p on p.pipeline = j.pipeline
   cross join lateral (
     select case when j.status = 'running' and now() - j.updated_at > p.stall_timeout
                 then 'stalled' else j.status end as status
   ) s
   where (job_counts.client is null or j.client_id = job_counts.client)
     and (job_counts.pipeline is null or j.pipeline = job_counts.pipeline)
     and (job_counts.since is null or j.started_at >= job_counts.since)
     and (job_counts.until is null or j.started_at < job_counts.until)
     and (job_counts.job_prefix is null or starts_with(j.job_id, job_counts.job_prefix));
  return v_result;
end
$$;


--
-- Name: FUNCTION job_counts(pipeline text, since timestamp with time zone, until timestamp with time zone, job_prefix text, client text); Type: COMMENT; Schema: api; Owner: -
--

COMMENT ON FUNCTION api.job_counts(pipeline text, since timestamp with time zone, until timestamp with time zone, job_prefix text, client text) IS 'Jobs per state (running, completed, failed, stalled, total) among your jobs, filtered like GET /jobs: pipeline, started in [since, until), job id prefix, client (admins).';


--
-- Name: job_timeline(text, text); Type: FUNCTION; Schema: api; Owner: -
--

CREATE FUNCTION api.job_timeline(job_id text, client_id text DEFAULT NULL::text) RETURNS jsonb
    LANGUAGE plpgsql STABLE
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
#variable_conflict use_column
-- A Gantt-ready timeline of one job in one request: the job, then every step of its pipeline
-- version in order (steps not reached yet are `pending`) with each attempt as a bar: start, end,
-- state, duration and the queue time before it. Bars of running attempts have no end yet: draw
-- them to `as_of`.
declare
  v_job record;
  v_matches integer;
  v_steps jsonb;
  v_span_start timestamptz;
  v_span_end timestamptz;
begin
  select count(*) into v_matches
    from api.jobs j
   where j.job_id = job_timeline.job_id
     and (job_timeline.client_id is null or j.client_id = job_timeline.client_id);
  if v_matches = 0 then
    perform ledger._raise_not_found('SL504', format('job "%s" not found', job_timeline.job_id),
      'check the job id (and client_id); you only see the jobs of your own client');
  elsif v_matches > 1 then
    raise exception 'job id "%" exists for % clients', job_timeline.job_id, v_matches
      using errcode = 'SL503', hint = 'pass client_id';
  end if;
  select j.* into v_job
    from api.jobs j
   where j.job_id = job_timeline.job_id
     and (job_timeline.client_id is null or j.client_id = job_timeline.client_id);

  with runs as (
    select r.*,
           max(r.finished_at) over (order by r.started_at nulls last, r.step_index, r.attempt
                                    rows between unbounded preceding and 1 preceding) as ready_at
      from api.step_runs r
     where r.client_id = v_job.client_id and r.job_id = v_job.job_id
  ),
  bars as (
    select r.step, r.attempt, r.started_at, r.ended_at, r.state,
           jsonb_build_object(
             'attempt', r.attempt, 'status', r.status, 'state', r.state,
             'started_at', r.started_at, 'ended_at', r.ended_at, 'finished_at', r.finished_at,
             'duration_s', r.duration_s,
             'queue_s', case when r.started_at is not null and r.ready_at is not null
                             then round(greatest(0, extract(epoch from r.started_at - r.ready_at)), 3) end,
             'units', r.units, 'error_code', r.error_code, 'error_message', r.error_message,
             'error_retryable', r.error_retryable, 'source', r.source) as bar
      from runs r
  ),
  steps as (
    select ps.step, ps.step_index, ps.title,
           coalesce(jsonb_agg(b.bar order by b.attempt) filter (where b.attempt is not null), '[]') as bars,
           count(b.attempt) as attempts,
           (array_agg(b.state order by b.attempt desc) filter (where b.attempt is not null))[1] as state,
           min(b.started_at) as started_at,
           (array_agg(b.ended_at order by b.attempt desc) filter (where b.attempt is not null))[1] as ended_at
      from ledger.pipeline_steps ps
      left join bars b on b.step = ps.step
     where ps.pipeline = v_job.pipeline
       and (ps.added_in_version <= v_job.pipeline_version or b.step is not null)
     group by ps.step, ps.step_index, ps.title
  )
  select jsonb_agg(jsonb_build_object(
           'step', s.step, 'step_index', s.step_index, 'title', s.title,
           'state', coalesce(s.state, 'pending'), 'attempts', s.attempts,
           'started_at', s.started_at, 'ended_at', s.ended_at, 'runs', s.bars)
         order by s.step_index),
         min(s.started_at),
         max(s.ended_at)
    into v_steps, v_span_start, v_span_end
    from steps s;

  return to_jsonb(v_job) || jsonb_build_object(
    'as_of', now(),
    'span', jsonb_build_object(
      'start', coalesce(v_span_start, v_job.started_at),
      'end', case when v_job.status in ('completed', 'failed') then greatest(v_job.finished_at, v_span_end)
                  when v_job.status = 'stalled' then greatest(v_job.updated_at, v_span_end)
                  else greatest(now(), v_span_end) end),
    'steps', coalesce(v_steps, '[]'::jsonb));
end
$$;


--
-- Name: FUNCTION job_timeline(job_id text, client_id text); Type: COMMENT; Schema: api; Owner: -
--

COMMENT ON FUNCTION api.job_timeline(job_id text, client_id text) IS 'Gantt-ready timeline of one job: the job as in GET /jobs, its span, and every step of its pipeline with each attempt (start, end, state, duration, queue time, error). 404 when you cannot see the job.';


--
-- Name: login(text, text, text); Type: FUNCTION; Schema: api; Owner: -
--

CREATE FUNCTION api.login(email text, password text, role text DEFAULT NULL::text) RETURNS jsonb
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $_$
-- POST /rpc/login. Answers without raising, so that a failure is recorded (the transaction
-- commits) while the HTTP status says what happened:
--   200  {token, role, client_id, expires_at}
--   401  SL301: wrong email or password; unknown and disabled users get the same answer, after
--        the same bcrypt work (a dummy hash), so neither the body nor the timing tells them apart
--   403  SL302: right password, but the user does not hold the role asked for
--   429  SL303: 5 failures within 15 minutes lock the email for 15 minutes (known or not)
declare
  v_email text := lower(btrim(coalesce(login.email, '')));
  v_key bytea := sha256(convert_to(v_email, 'UTF8'));
  v_locked_until timestamptz;
  v_user auth.users;
  v_hash text;
  v_computed text;
  v_role text;
  v_wait integer;
begin
  -- What a login writes (failure counts, last login) may be lost in a crash without harm: do not
  -- make the caller wait for the WAL flush (about 8 ms here, on top of bcrypt's 55 ms).
  perform set_config('synchronous_commit', 'off', true);
  select f.locked_until into v_locked_until from auth.login_failures f where f.email_hash = v_key;
  if v_locked_until > now() then
    v_wait := greatest(1, ceil(extract(epoch from v_locked_until - now())))::integer;
    perform set_config('response.status', '429', true);
    perform set_config('response.headers',
                       json_build_array(json_build_object('Retry-After', v_wait::text))::text, true);
    return jsonb_build_object('code', 'SL303', 'message', 'too many failed logins for this email',
                              'details', format('try again in %s seconds', v_wait), 'hint', null);
  end if;

  select * into v_user from auth.users u where u.email = v_email and u.disabled_at is null;
  -- The dummy hash has the same cost as real ones: an unknown email costs the same bcrypt work.
  v_hash := coalesce(v_user.password_hash, '$2a$10$ahLS.u1vm65eo6LVctCwguGhl5CEbNfdZMHysZm9wxr6.0P0ktgmO');
  v_computed := public.crypt(coalesce(login.password, ''), v_hash);
  if v_user.user_id is null or v_computed <> v_hash then
    insert into auth.login_failures as f (email_hash, failures, first_failed_at, last_failed_at)
    values (v_key, 1, now(), now())
    on conflict (email_hash) do update
       set failures = case when f.last_failed_at > now() - interval '15 minutes' then f.failures + 1 else 1 end,
           first_failed_at = case when f.last_failed_at > now() - interval '15 minutes'
                                  then f.first_failed_at else now() end,
           last_failed_at = now(),
           locked_until = case when f.last_failed_at > now() - interval '15 minutes' and f.failures + 1 >= 5
                               then now() + interval '15 minutes' end;
    -- Forget failures nobody repeated for a day, so the table stays small.
    delete from auth.login_failures f where f.last_failed_at < now() - interval '1 day';
    perform set_config('response.status', '401', true);
    return jsonb_build_object('code', 'SL301', 'message', 'invalid email or password',
                              'details', null, 'hint', null);
  end if;

  v_role := coalesce(nullif(login.role, ''),
                     case when 'client' = any(v_user.roles) then 'client' else 'admin' end);
  if not v_role = any(v_user.roles) then
    perform set_config('response.status', '403', true);
    return jsonb_build_object('code', 'SL302', 'message', format('this user does not have role "%s"', v_role),
                              'details', null, 'hint', format('roles: %s', array_to_string(v_user.roles, ', ')));
  end if;

  delete from auth.login_failures f where f.email_hash = v_key;
  update auth.users u set last_login_at = now() where u.user_id = v_user.user_id;
  return auth._login_token(v_user.user_id, v_role, now());
end
$_$;


--
-- Name: FUNCTION login(email text, password text, role text); Type: COMMENT; Schema: api; Owner: -
--

COMMENT ON FUNCTION api.login(email text, password text, role text) IS 'Log in with email and password. Returns a signed token (30 minutes), its role, client_id and expires_at. Wrong email or password: 401; 5 failures in 15 minutes lock the email for 15 minutes (429). A user with several roles gets the client role unless role is given.';


--
-- Name: refresh_analytics(integer); Type: FUNCTION; Schema: api; Owner: -
--

CREATE FUNCTION api.refresh_analytics(max_age_s integer DEFAULT 0) RETURNS jsonb
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
-- Admins: refresh error statistics and step timings now (or when older than max_age_s seconds).
begin
  if max_age_s is null or max_age_s < 0 then
    raise exception 'max_age_s must be 0 or more, not %', max_age_s using errcode = 'SL501';
  end if;
  return ledger.refresh_analytics(make_interval(secs => max_age_s));
end
$$;


--
-- Name: FUNCTION refresh_analytics(max_age_s integer); Type: COMMENT; Schema: api; Owner: -
--

COMMENT ON FUNCTION api.refresh_analytics(max_age_s integer) IS 'Admins: refresh the error statistics and step timings now, or only those older than max_age_s seconds. Returns what was refreshed and how long it took.';


--
-- Name: refresh_token(); Type: FUNCTION; Schema: api; Owner: -
--

CREATE FUNCTION api.refresh_token() RETURNS jsonb
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $_$
-- POST /rpc/refresh_token: a fresh login token for the caller's own login token (same user, role
-- and client), up to 12 hours after the password was given. auth.pre_request has already checked
-- that the user is enabled and still holds the role.
declare
  v_claims jsonb := auth.claims();
  v_auth_time timestamptz;
begin
  if v_claims->>'role' not in ('client', 'admin')
     or coalesce(v_claims->>'sub', '') !~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
     or not exists (select from auth.users u where u.user_id = (v_claims->>'sub')::uuid and u.disabled_at is null) then
    raise exception 'only tokens from /rpc/login can be refreshed' using errcode = 'SL309';
  end if;
  v_auth_time := to_timestamp(coalesce((v_claims->>'auth_time')::bigint, (v_claims->>'iat')::bigint, 0));
  if v_auth_time < now() - interval '12 hours' then
    raise exception 'this login is more than 12 hours old' using errcode = 'SL309', hint = 'log in again';
  end if;
  return auth._login_token((v_claims->>'sub')::uuid, v_claims->>'role', v_auth_time);
end
$_$;


--
-- Name: FUNCTION refresh_token(); Type: COMMENT; Schema: api; Owner: -
--

COMMENT ON FUNCTION api.refresh_token() IS 'A new 30-minute token for the caller''s login (same user, role and client), up to 12 hours after logging in with a password.';


--
-- Name: refresh_usage(); Type: FUNCTION; Schema: api; Owner: -
--

CREATE FUNCTION api.refresh_usage() RETURNS jsonb
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
-- Admins: refresh the usage figures now instead of waiting for the schedule.
begin
  if auth.role() not in ('admin', 'stepledger_owner') then
    raise exception 'role "%" may not refresh usage', auth.role() using errcode = 'SL406';
  end if;
  return ledger.refresh_usage('api: ' || (ledger._actor()).actor);
end
$$;


--
-- Name: FUNCTION refresh_usage(); Type: COMMENT; Schema: api; Owner: -
--

COMMENT ON FUNCTION api.refresh_usage() IS 'Admins: refresh the usage materialized view now (GET /usage shows refreshed_at and stale). Returns refreshed = false when a refresh is already running.';


--
-- Name: replay(text, timestamp with time zone, timestamp with time zone, text, uuid, integer, boolean); Type: FUNCTION; Schema: api; Owner: -
--

CREATE FUNCTION api.replay(outcome text DEFAULT 'rejected'::text, since timestamp with time zone DEFAULT NULL::timestamp with time zone, until timestamp with time zone DEFAULT NULL::timestamp with time zone, client_id text DEFAULT NULL::text, replay_id uuid DEFAULT NULL::uuid, max_rows integer DEFAULT 1000, dry_run boolean DEFAULT false) RETURNS jsonb
    LANGUAGE sql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $_$
  select ledger._replay($1, $2, $3, $4, $5, $6, $7)
$_$;


--
-- Name: FUNCTION replay(outcome text, since timestamp with time zone, until timestamp with time zone, client_id text, replay_id uuid, max_rows integer, dry_run boolean); Type: COMMENT; Schema: api; Owner: -
--

COMMENT ON FUNCTION api.replay(outcome text, since timestamp with time zone, until timestamp with time zone, client_id text, replay_id uuid, max_rows integer, dry_run boolean) IS 'Admin: reprocess vault rows (by current outcome, arrival time range [since, until) and client) through today''s validation and catalog. Rejected events that are valid now are accepted; events already accepted count as duplicates, never twice. Each vault row records its replays. Replays at most max_rows rows per call: call again with the returned replay_id while "more" is true. dry_run only counts the matching rows.';


--
-- Name: revoke_api_token(uuid); Type: FUNCTION; Schema: api; Owner: -
--

CREATE FUNCTION api.revoke_api_token(token_id uuid) RETURNS jsonb
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
-- POST /rpc/revoke_api_token (admin).
begin
  if auth.role() <> 'admin' then
    raise exception 'only admins revoke API tokens' using errcode = 'SL309';
  end if;
  return auth.revoke_api_token(revoke_api_token.token_id,
                               'admin ' || coalesce(auth.claims()->>'email', auth.claims()->>'sub', 'token'));
end
$$;


--
-- Name: FUNCTION revoke_api_token(token_id uuid); Type: COMMENT; Schema: api; Owner: -
--

COMMENT ON FUNCTION api.revoke_api_token(token_id uuid) IS 'Admin: revoke an API token. It is refused from its next request on.';


--
-- Name: step_durations(date, date, text); Type: FUNCTION; Schema: api; Owner: -
--

CREATE FUNCTION api.step_durations(since date DEFAULT NULL::date, until date DEFAULT NULL::date, client text DEFAULT NULL::text) RETURNS TABLE(pipeline text, step text, step_index integer, attempts bigint, completed bigint, p50_s numeric, p95_s numeric, max_s numeric, mean_s numeric, queue_p50_s numeric, queue_p95_s numeric, queue_max_s numeric, window_start date, window_end date, refreshed_at timestamp with time zone)
    LANGUAGE plpgsql STABLE
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
#variable_conflict use_column
-- Duration of completed attempts and queue time before attempts, per (pipeline, step), over the
-- attempts that started in a window of UTC days (default: the last 7 days, today included).
-- Exact percentiles (linear interpolation) over the caller's visible clients.
declare
  v_today date := (now() at time zone 'UTC')::date;
  v_since date := coalesce(step_durations.since, coalesce(step_durations.until, v_today) - 6);
  v_until date := coalesce(step_durations.until, v_today);
begin
  perform ledger._check_window(v_since, v_until);
  return query
  with cells as (
    select t.pipeline, t.step, t.attempts, t.completed, t.durations_s, t.queues_s
      from ledger.visible_step_timings_daily t
     where t.day between v_since and v_until
       and (step_durations.client is null or t.client_id = step_durations.client)
  ),
  counts as (
    select c.pipeline, c.step, sum(c.attempts)::bigint as attempts, sum(c.completed)::bigint as completed
      from cells c group by c.pipeline, c.step
  ),
  durations as (
    select c.pipeline, c.step,
           percentile_cont(0.5) within group (order by d) as p50,
           percentile_cont(0.95) within group (order by d) as p95,
           max(d) as mx, avg(d) as mean
      from cells c cross join unnest(c.durations_s) d
     group by c.pipeline, c.step
  ),
  queues as (
    select c.pipeline, c.step,
           percentile_cont(0.5) within group (order by q) as p50,
           percentile_cont(0.95) within group (order by q) as p95,
           max(q) as mx
      from cells c cross join unnest(c.queues_s) q
     group by c.pipeline, c.step
  )
  select n.pipeline, n.step, ps.step_index, n.attempts, n.completed,
         round(d.p50::numeric, 3), round(d.p95::numeric, 3), round(d.mx::numeric, 3),
         round(d.mean::numeric, 3),
         round(q.p50::numeric, 3), round(q.p95::numeric, 3), round(q.mx::numeric, 3),
         v_since, v_until,
         (select r.refreshed_at from ledger.analytics_refreshes r where r.view_name = 'step_timings_daily')
    from counts n
    left join durations d on d.pipeline = n.pipeline and d.step = n.step
    left join queues q on q.pipeline = n.pipeline and q.step = n.step
    left join ledger.pipeline_steps ps on ps.pipeline = n.pipeline and ps.step = n.step
   order by n.pipeline, ps.step_index, n.step;
end
$$;


--
-- Name: FUNCTION step_durations(since date, until date, client text); Type: COMMENT; Schema: api; Owner: -
--

COMMENT ON FUNCTION api.step_durations(since date, until date, client text) IS 'Step timings per pipeline and step over a window of UTC days (default: last 7): p50, p95, max and mean duration of completed attempts, p50, p95 and max queue time before attempts. As of refreshed_at.';


SET default_tablespace = '';

SET default_table_access_method = heap;

--
-- Name: jobs; Type: TABLE; Schema: ledger; Owner: -
--

CREATE TABLE ledger.jobs (
    client_id text NOT NULL,
    job_id text NOT NULL,
    pipeline text NOT NULL,
    steps_total integer NOT NULL,
    steps_done integer DEFAULT 0 NOT NULL,
    status text DEFAULT 'running'::text NOT NULL,
    started_at timestamp with time zone NOT NULL,
    updated_at timestamp with time zone NOT NULL,
    finished_at timestamp with time zone,
    last_error text,
    last_error_step text,
    last_received_at timestamp with time zone DEFAULT now() NOT NULL,
    events integer DEFAULT 0 NOT NULL,
    pipeline_version integer DEFAULT 1 NOT NULL,
    changed_xid bigint DEFAULT 0 NOT NULL,
    CONSTRAINT jobs_status_check CHECK ((status = ANY (ARRAY['running'::text, 'completed'::text, 'failed'::text])))
);


--
-- Name: pipelines; Type: TABLE; Schema: ledger; Owner: -
--

CREATE TABLE ledger.pipelines (
    pipeline ledger.slug NOT NULL,
    title text NOT NULL,
    description text,
    stall_timeout interval DEFAULT '01:00:00'::interval NOT NULL,
    version integer DEFAULT 1 NOT NULL,
    steps_total integer DEFAULT 0 NOT NULL,
    definition jsonb NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT pipelines_stall_timeout_check CHECK ((stall_timeout > '00:00:00'::interval)),
    CONSTRAINT pipelines_steps_total_check CHECK ((steps_total >= 0)),
    CONSTRAINT pipelines_title_check CHECK (((length(title) >= 1) AND (length(title) <= 200))),
    CONSTRAINT pipelines_version_check CHECK ((version >= 1))
);


--
-- Name: jobs; Type: VIEW; Schema: api; Owner: -
--

CREATE VIEW api.jobs WITH (security_invoker='true') AS
 SELECT j.client_id,
    j.job_id,
    j.pipeline,
        CASE
            WHEN ((j.status = 'running'::text) AND ((now() - j.updated_at) > p.stall_timeout)) THEN 'stalled'::text
            ELSE j.status
        END AS status,
    j.steps_total,
    j.steps_done,
    round(LEAST((1)::numeric, ((j.steps_done)::numeric / (NULLIF(j.steps_total, 0))::numeric)), 4) AS progress,
    j.started_at,
    j.updated_at,
    j.finished_at,
    j.last_error,
    j.last_error_step,
    j.events,
    j.last_received_at,
    j.pipeline_version,
        CASE
            WHEN (j.status = 'running'::text) THEN (j.updated_at + p.stall_timeout)
            ELSE NULL::timestamp with time zone
        END AS stalls_at,
    j.changed_xid
   FROM (ledger.jobs j
     JOIN ledger.pipelines p ON (((p.pipeline)::text = j.pipeline)));


--
-- Name: VIEW jobs; Type: COMMENT; Schema: api; Owner: -
--

COMMENT ON VIEW api.jobs IS 'One row per job: status (running, completed, failed, stalled), progress from 0 to 1 and the last error. A client sees only its own jobs.';


--
-- Name: COLUMN jobs.status; Type: COMMENT; Schema: api; Owner: -
--

COMMENT ON COLUMN api.jobs.status IS 'completed when every step is done; failed when a step''s latest attempt failed; stalled when running with no event for longer than the pipeline''s stall timeout; else running.';


--
-- Name: COLUMN jobs.steps_total; Type: COMMENT; Schema: api; Owner: -
--

COMMENT ON COLUMN api.jobs.steps_total IS 'Steps registered for the pipeline when the job started.';


--
-- Name: COLUMN jobs.steps_done; Type: COMMENT; Schema: api; Owner: -
--

COMMENT ON COLUMN api.jobs.steps_done IS 'Distinct steps whose latest attempt is completed or skipped.';


--
-- Name: COLUMN jobs.progress; Type: COMMENT; Schema: api; Owner: -
--

COMMENT ON COLUMN api.jobs.progress IS 'steps_done / steps_total, from 0 to 1.';


--
-- Name: COLUMN jobs.updated_at; Type: COMMENT; Schema: api; Owner: -
--

COMMENT ON COLUMN api.jobs.updated_at IS 'occurred_at of the job''s latest event.';


--
-- Name: COLUMN jobs.last_error; Type: COMMENT; Schema: api; Owner: -
--

COMMENT ON COLUMN api.jobs.last_error IS 'error code and message of the latest failed step, if any.';


--
-- Name: COLUMN jobs.last_received_at; Type: COMMENT; Schema: api; Owner: -
--

COMMENT ON COLUMN api.jobs.last_received_at IS 'When the latest batch with events of this job arrived.';


--
-- Name: COLUMN jobs.pipeline_version; Type: COMMENT; Schema: api; Owner: -
--

COMMENT ON COLUMN api.jobs.pipeline_version IS 'The pipeline version whose steps the job counts: the version current at its first event, or a later one when the job reports a step that version added.';


--
-- Name: COLUMN jobs.stalls_at; Type: COMMENT; Schema: api; Owner: -
--

COMMENT ON COLUMN api.jobs.stalls_at IS 'For a running (or stalled) job: when it counts as stalled without a further event.';


--
-- Name: COLUMN jobs.changed_xid; Type: COMMENT; Schema: api; Owner: -
--

COMMENT ON COLUMN api.jobs.changed_xid IS 'Transaction that last changed the job; poll GET /rpc/job_changes with a cursor to get changed jobs (docs/api.md).';


--
-- Name: job_steps; Type: TABLE; Schema: ledger; Owner: -
--

CREATE TABLE ledger.job_steps (
    client_id text NOT NULL,
    job_id text NOT NULL,
    step text NOT NULL,
    pipeline text NOT NULL,
    step_index integer NOT NULL,
    latest_attempt integer NOT NULL,
    latest_status ledger.step_status NOT NULL,
    latest_at timestamp with time zone NOT NULL,
    billed_attempt integer,
    billed_units numeric,
    completed_at timestamp with time zone
);


--
-- Name: step_runs; Type: TABLE; Schema: ledger; Owner: -
--

CREATE TABLE ledger.step_runs (
    client_id text NOT NULL,
    job_id text NOT NULL,
    step text NOT NULL,
    attempt integer NOT NULL,
    pipeline text NOT NULL,
    step_index integer NOT NULL,
    status ledger.step_status NOT NULL,
    started_at timestamp with time zone,
    finished_at timestamp with time zone,
    units numeric,
    error_code text,
    error_message text,
    error_retryable boolean,
    source text,
    decided_at timestamp with time zone NOT NULL,
    events integer DEFAULT 0 NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL
);


--
-- Name: step_runs; Type: VIEW; Schema: api; Owner: -
--

CREATE VIEW api.step_runs WITH (security_invoker='true') AS
 SELECT r.client_id,
    r.job_id,
    r.step,
    r.step_index,
    r.attempt,
    r.status,
    r.started_at,
    r.finished_at,
    round(EXTRACT(epoch FROM (r.finished_at - r.started_at)), 3) AS duration_s,
    r.units,
    r.error_code,
    r.error_message,
    r.pipeline,
    r.error_retryable,
    r.source,
    (js.latest_attempt = r.attempt) AS is_latest,
    s.state,
        CASE s.state
            WHEN 'running'::text THEN NULL::timestamp with time zone
            WHEN 'stalled'::text THEN GREATEST(r.started_at, j.updated_at)
            WHEN 'abandoned'::text THEN GREATEST(r.started_at, COALESCE(( SELECT min(COALESCE(n.started_at, n.decided_at)) AS min
               FROM ledger.step_runs n
              WHERE ((n.client_id = r.client_id) AND (n.job_id = r.job_id) AND (n.step = r.step) AND (n.attempt > r.attempt))), j.finished_at, j.updated_at))
            ELSE r.finished_at
        END AS ended_at
   FROM ((((ledger.step_runs r
     JOIN ledger.job_steps js ON (((js.client_id = r.client_id) AND (js.job_id = r.job_id) AND (js.step = r.step))))
     JOIN ledger.jobs j ON (((j.client_id = r.client_id) AND (j.job_id = r.job_id))))
     JOIN ledger.pipelines p ON (((p.pipeline)::text = j.pipeline)))
     CROSS JOIN LATERAL ( SELECT
                CASE
                    WHEN ((r.status)::text <> 'started'::text) THEN (r.status)::text
                    WHEN ((r.attempt < js.latest_attempt) OR (j.status <> 'running'::text)) THEN 'abandoned'::text
                    WHEN ((now() - j.updated_at) > p.stall_timeout) THEN 'stalled'::text
                    ELSE 'running'::text
                END AS state) s);


--
-- Name: VIEW step_runs; Type: COMMENT; Schema: api; Owner: -
--

COMMENT ON VIEW api.step_runs IS 'One row per attempt of a step in a job, with its timing, units and error. Filter with ?client_id=eq.C&job_id=eq.J.';


--
-- Name: COLUMN step_runs.duration_s; Type: COMMENT; Schema: api; Owner: -
--

COMMENT ON COLUMN api.step_runs.duration_s IS 'Seconds from the started event to the completed, failed or skipped event.';


--
-- Name: COLUMN step_runs.is_latest; Type: COMMENT; Schema: api; Owner: -
--

COMMENT ON COLUMN api.step_runs.is_latest IS 'Whether this is the latest attempt of the step, the one that decides its state.';


--
-- Name: COLUMN step_runs.state; Type: COMMENT; Schema: api; Owner: -
--

COMMENT ON COLUMN api.step_runs.state IS 'completed, failed or skipped as reported; for an attempt still `started`: running, stalled (its job is stalled), or abandoned (a later attempt of the step exists, or the job failed or completed without it).';


--
-- Name: COLUMN step_runs.ended_at; Type: COMMENT; Schema: api; Owner: -
--

COMMENT ON COLUMN api.step_runs.ended_at IS 'When the bar ends on a timeline: finished_at, the last sign of life of a stalled job, or when an abandoned attempt was given up (the next attempt, else the end of the job); null while running.';


--
-- Name: step_runs(api.jobs); Type: FUNCTION; Schema: api; Owner: -
--

CREATE FUNCTION api.step_runs(api.jobs) RETURNS SETOF api.step_runs
    LANGUAGE sql STABLE
    AS $_$
  select r.* from api.step_runs r
   where r.client_id = $1.client_id and r.job_id = $1.job_id
   order by r.step_index, r.attempt
$_$;


--
-- Name: FUNCTION step_runs(api.jobs); Type: COMMENT; Schema: api; Owner: -
--

COMMENT ON FUNCTION api.step_runs(api.jobs) IS 'Embeds the step runs of a job: GET /jobs?select=*,step_runs(*).';


--
-- Name: _b64url(bytea); Type: FUNCTION; Schema: auth; Owner: -
--

CREATE FUNCTION auth._b64url(p_data bytea) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$
  -- base64url without padding or line breaks (RFC 7515 §2)
  select translate(encode(p_data, 'base64'), E'+/=\n', '-_')
$$;


--
-- Name: FUNCTION _b64url(p_data bytea); Type: COMMENT; Schema: auth; Owner: -
--

COMMENT ON FUNCTION auth._b64url(p_data bytea) IS 'Private: base64url encoding without padding, as JWTs use it.';


--
-- Name: _hash_password(text); Type: FUNCTION; Schema: auth; Owner: -
--

CREATE FUNCTION auth._hash_password(p_password text) RETURNS text
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
-- bcrypt with cost 10 (about 60 ms here): slow enough to make guessing expensive, fast enough
-- for login p50 under 100 ms (docs/benchmarks-auth.md).
begin
  if p_password is null or length(p_password) < 10 then
    raise exception 'a password needs at least 10 characters' using errcode = 'SL304';
  end if;
  if octet_length(p_password) > 72 then
    raise exception 'a password may have at most 72 bytes' using errcode = 'SL304',
      hint = 'bcrypt ignores everything after the 72nd byte';
  end if;
  return public.crypt(p_password, public.gen_salt('bf', 10));
end
$$;


--
-- Name: FUNCTION _hash_password(p_password text); Type: COMMENT; Schema: auth; Owner: -
--

COMMENT ON FUNCTION auth._hash_password(p_password text) IS 'Private: checks a new password and returns its bcrypt hash.';


--
-- Name: _login_token(uuid, text, timestamp with time zone); Type: FUNCTION; Schema: auth; Owner: -
--

CREATE FUNCTION auth._login_token(p_user_id uuid, p_role text, p_auth_time timestamp with time zone) RETURNS jsonb
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
-- A login token for a user and one of its roles: 30 minutes, refreshable for 12 hours after the
-- password was given (auth_time). Returns the contract's login response.
declare
  v_user auth.users;
  v_now timestamptz := now();
  v_exp timestamptz := now() + interval '30 minutes';
  v_client text;
begin
  select * into v_user from auth.users u where u.user_id = p_user_id;
  v_client := case when p_role = 'client' then v_user.client_id end;
  return jsonb_build_object(
    'token', auth._sign_jwt(jsonb_strip_nulls(jsonb_build_object(
               'role', p_role,
               'client_id', v_client,
               'sub', v_user.user_id,
               'email', v_user.email,
               'iat', floor(extract(epoch from v_now))::bigint,
               'exp', floor(extract(epoch from v_exp))::bigint,
               'auth_time', floor(extract(epoch from p_auth_time))::bigint,
               'jti', gen_random_uuid()))),
    'role', p_role,
    'client_id', v_client,
    'expires_at', to_char(v_exp at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'));
end
$$;


--
-- Name: FUNCTION _login_token(p_user_id uuid, p_role text, p_auth_time timestamp with time zone); Type: COMMENT; Schema: auth; Owner: -
--

COMMENT ON FUNCTION auth._login_token(p_user_id uuid, p_role text, p_auth_time timestamp with time zone) IS 'Private: signs a 30-minute login token for a user and role.';


--
-- Name: _refuse(text, text, text); Type: FUNCTION; Schema: auth; Owner: -
--

CREATE FUNCTION auth._refuse(p_code text, p_message text, p_hint text DEFAULT NULL::text) RETURNS void
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
-- Ends the request with HTTP 401 and a body in PostgREST's error shape carrying our own code
-- (PostgREST turns sqlstate PGRST into the response its message and detail describe).
begin
  raise sqlstate 'PGRST' using
    message = json_build_object('code', p_code, 'message', p_message, 'details', null,
                                'hint', p_hint)::text,
    detail = json_build_object('status', 401,
                               'headers', json_build_object('WWW-Authenticate',
                                                            'Bearer error="invalid_token"'))::text;
end
$$;


--
-- Name: FUNCTION _refuse(p_code text, p_message text, p_hint text); Type: COMMENT; Schema: auth; Owner: -
--

COMMENT ON FUNCTION auth._refuse(p_code text, p_message text, p_hint text) IS 'Private: refuses the HTTP request with 401 and the given stepledger error code.';


--
-- Name: _session_claims(); Type: FUNCTION; Schema: auth; Owner: -
--

CREATE FUNCTION auth._session_claims() RETURNS jsonb
    LANGUAGE sql STABLE SECURITY DEFINER PARALLEL SAFE
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
  -- Claims of a session that did not come through PostgREST (whose login is authenticator):
  -- a BI login gets claims built from auth.bi_logins and can never choose its own; a superuser
  -- or the owner (operators, migrations, tests) may set request.jwt.claims itself, as they
  -- could bypass row-level security anyway; any other login gets no claims.
  select case
           when b.rolname is not null then
             jsonb_strip_nulls(jsonb_build_object('role', 'bi_reader', 'client_id', b.client_id,
                                                  'sub', 'bi:' || b.rolname))
           when r.rolsuper or r.rolname = 'stepledger_owner' then
             coalesce(nullif(current_setting('request.jwt.claims', true), ''), '{}')::jsonb
           else '{}'::jsonb
         end
    from pg_catalog.pg_roles r
    left join auth.bi_logins b on b.rolname = r.rolname
   where r.rolname = session_user
$$;


--
-- Name: FUNCTION _session_claims(); Type: COMMENT; Schema: auth; Owner: -
--

COMMENT ON FUNCTION auth._session_claims() IS 'Private: claims of a session outside PostgREST (BI login: from auth.bi_logins; superuser or owner: request.jwt.claims; else none).';


--
-- Name: _sign_jwt(jsonb); Type: FUNCTION; Schema: auth; Owner: -
--

CREATE FUNCTION auth._sign_jwt(p_claims jsonb) RETURNS text
    LANGUAGE plpgsql STABLE
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
-- An HS256 JWT of p_claims, signed with the secret PostgREST verifies with. Not executable by any
-- API role: only the owner's security definer functions below call it.
declare
  v_secret text;
  v_input text;
begin
  select s.value into v_secret from auth.secrets s where s.name = 'jwt_secret';
  if v_secret is null then
    raise exception 'the JWT secret is not installed' using errcode = 'SL305', hint = 'run stepledger migrate';
  end if;
  v_input := auth._b64url(convert_to('{"alg":"HS256","typ":"JWT"}', 'UTF8')) || '.'
          || auth._b64url(convert_to(p_claims::text, 'UTF8'));
  return v_input || '.'
      || auth._b64url(public.hmac(convert_to(v_input, 'UTF8'), convert_to(v_secret, 'UTF8'), 'sha256'));
end
$$;


--
-- Name: FUNCTION _sign_jwt(p_claims jsonb); Type: COMMENT; Schema: auth; Owner: -
--

COMMENT ON FUNCTION auth._sign_jwt(p_claims jsonb) IS 'Private: signs claims as an HS256 JWT with the stack''s secret.';


--
-- Name: add_bi_login(text, text, text); Type: FUNCTION; Schema: auth; Owner: -
--

CREATE FUNCTION auth.add_bi_login(p_name text, p_client_id text, p_password_verifier text) RETURNS jsonb
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $_$
-- Creates a PostgreSQL login for a BI tool, or re-binds an existing BI login and sets its
-- password. It joins bi_reader (bound to p_client_id) or bi_all_clients (p_client_id null) and
-- reads the reporting schema under the same row-level security as the API. The password arrives
-- as a SCRAM-SHA-256 verifier computed by the client, so the clear text never reaches the server.
declare
  v_exists boolean;
  v_created boolean;
begin
  if p_name is null or p_name !~ '^[a-z][a-z0-9_]{2,62}$' then
    raise exception 'invalid BI login name "%"', p_name using errcode = 'SL308',
      hint = 'lower-case letters, digits and _, starting with a letter, 3 to 63 characters';
  end if;
  if p_password_verifier is null or p_password_verifier !~ '^SCRAM-SHA-256\$' then
    raise exception 'the password must be given as a SCRAM-SHA-256 verifier' using errcode = 'SL308';
  end if;
  if p_client_id is not null and not exists (select from ledger.clients c where c.client_id = p_client_id) then
    raise exception 'unknown client "%"', p_client_id using errcode = 'SL308';
  end if;
  v_exists := exists (select from pg_catalog.pg_roles r where r.rolname = p_name);
  if v_exists and not exists (select from auth.bi_logins b where b.rolname = p_name) then
    raise exception 'role "%" exists and is not a BI login', p_name using errcode = 'SL308';
  end if;
  v_created := not v_exists;

  if v_created then
    execute format('create role %I login password %L connection limit 10', p_name, p_password_verifier);
    insert into auth.bi_logins (rolname, client_id) values (p_name, p_client_id);
  else
    execute format('alter role %I with login password %L', p_name, p_password_verifier);
    execute format('revoke bi_reader, bi_all_clients from %I', p_name);
    update auth.bi_logins b set client_id = p_client_id, updated_at = now() where b.rolname = p_name;
  end if;
  execute format('grant %I to %I', case when p_client_id is null then 'bi_all_clients' else 'bi_reader' end, p_name);
  -- Defaults for BI tools: reporting first, read-only transactions, bounded statements.
  execute format('alter role %I set search_path = reporting', p_name);
  execute format('alter role %I set default_transaction_read_only = on', p_name);
  execute format('alter role %I set statement_timeout = %L', p_name, '5min');
  return jsonb_build_object('name', p_name, 'client_id', p_client_id, 'created', v_created);
end
$_$;


--
-- Name: FUNCTION add_bi_login(p_name text, p_client_id text, p_password_verifier text); Type: COMMENT; Schema: auth; Owner: -
--

COMMENT ON FUNCTION auth.add_bi_login(p_name text, p_client_id text, p_password_verifier text) IS 'Creates or re-binds a BI database login (stepledger bi-user add). Owner only.';


--
-- Name: add_user(text, text, text[], text); Type: FUNCTION; Schema: auth; Owner: -
--

CREATE FUNCTION auth.add_user(p_email text, p_password text, p_roles text[], p_client_id text DEFAULT NULL::text) RETURNS jsonb
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $_$
-- Adds a user, or updates an existing one (same email): sets the password, the client when one is
-- given, adds the roles and enables it. Operator function (stepledger user add, the demo).
declare
  v_email text := lower(btrim(p_email));
  v_roles text[];
  v_hash text;
  v_row auth.users;
  v_created boolean;
begin
  if v_email is null or v_email !~ '^[^@\s]+@[^@\s]+\.[^@\s]+$' or length(v_email) > 254 then
    raise exception 'invalid email "%"', p_email using errcode = 'SL304';
  end if;
  select coalesce(array_agg(distinct r order by r), '{}') into v_roles
    from unnest(coalesce(p_roles, '{}')) r;
  if cardinality(v_roles) = 0 then
    raise exception 'a user needs at least one role' using errcode = 'SL304', hint = 'admin or client';
  end if;
  if not v_roles <@ array['admin', 'client'] then
    raise exception 'unknown role in %', v_roles using errcode = 'SL304', hint = 'roles are admin and client';
  end if;
  if p_client_id is not null and not exists (select from ledger.clients c where c.client_id = p_client_id) then
    raise exception 'unknown client "%"', p_client_id using errcode = 'SL304', hint = 'add it with stepledger client add';
  end if;
  v_hash := auth._hash_password(p_password);

  select * into v_row from auth.users u where u.email = v_email for update;
  v_created := not found;
  if 'client' = any(v_roles) and coalesce(p_client_id, v_row.client_id) is null then
    raise exception 'a client user must belong to a client' using errcode = 'SL304', hint = 'give --client ID';
  end if;
  if v_created then
    insert into auth.users (email, password_hash, client_id, roles)
    values (v_email, v_hash, p_client_id, v_roles)
    returning * into v_row;
  else
    update auth.users u
       set password_hash = v_hash,
           client_id = coalesce(p_client_id, u.client_id),
           roles = (select array_agg(distinct r order by r) from unnest(u.roles || v_roles) r),
           disabled_at = null,
           updated_at = now()
     where u.user_id = v_row.user_id
    returning * into v_row;
  end if;
  return jsonb_build_object('user_id', v_row.user_id, 'email', v_row.email, 'client_id', v_row.client_id,
                            'roles', to_jsonb(v_row.roles), 'created', v_created);
end
$_$;


--
-- Name: FUNCTION add_user(p_email text, p_password text, p_roles text[], p_client_id text); Type: COMMENT; Schema: auth; Owner: -
--

COMMENT ON FUNCTION auth.add_user(p_email text, p_password text, p_roles text[], p_client_id text) IS 'Adds a user or updates one (password, client, more roles). Operator function.';


--
-- Name: claims(); Type: FUNCTION; Schema: auth; Owner: -
--

CREATE FUNCTION auth.claims() RETURNS jsonb
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$
  -- PostgREST verified these claims before it switched role; only its login may pass them.
  select case when session_user = 'authenticator'
              then coalesce(nullif(current_setting('request.jwt.claims', true), ''), '{}')::jsonb
              else coalesce(auth._session_claims(), '{}'::jsonb) end
$$;


--
-- Name: FUNCTION claims(); Type: COMMENT; Schema: auth; Owner: -
--

COMMENT ON FUNCTION auth.claims() IS 'The verified JWT claims of the current HTTP request, the claims of a BI login, or {} otherwise.';


--
-- Name: client_id(); Type: FUNCTION; Schema: auth; Owner: -
--

CREATE FUNCTION auth.client_id() RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$
  select nullif(auth.claims()->>'client_id', '')
$$;


--
-- Name: FUNCTION client_id(); Type: COMMENT; Schema: auth; Owner: -
--

COMMENT ON FUNCTION auth.client_id() IS 'The client the caller is bound to, or null when bound to none (admin, all-clients token or BI login).';


--
-- Name: create_api_token(text, text, text, text); Type: FUNCTION; Schema: auth; Owner: -
--

CREATE FUNCTION auth.create_api_token(p_client_id text, p_name text, p_scope text, p_created_by text) RETURNS jsonb
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
-- Issues an API token: a JWT with role ingest, client_id (omitted for every client), jti = the new
-- token id, and no expiry. Only its SHA-256 is stored; the token is returned this once.
declare
  v_token_id uuid := gen_random_uuid();
  v_token text;
begin
  if coalesce(p_scope, 'ingest') <> 'ingest' then
    raise exception 'unknown token scope "%"', p_scope using errcode = 'SL306', hint = 'the only scope is ingest';
  end if;
  if p_name is null or length(btrim(p_name)) not between 1 and 200 then
    raise exception 'an API token needs a name of 1 to 200 characters' using errcode = 'SL306';
  end if;
  if p_client_id is not null and not exists (select from ledger.clients c where c.client_id = p_client_id) then
    raise exception 'unknown client "%"', p_client_id using errcode = 'SL306';
  end if;
  v_token := auth._sign_jwt(jsonb_strip_nulls(jsonb_build_object(
               'role', 'ingest',
               'client_id', p_client_id,
               'sub', 'token:' || v_token_id,
               'iat', floor(extract(epoch from now()))::bigint,
               'jti', v_token_id)));
  insert into auth.api_tokens (token_id, client_id, name, scope, token_hash, created_by)
  values (v_token_id, p_client_id, btrim(p_name), coalesce(p_scope, 'ingest'),
          sha256(convert_to(v_token, 'UTF8')), coalesce(p_created_by, current_user::text));
  return jsonb_build_object('token', v_token, 'token_id', v_token_id, 'client_id', p_client_id,
                            'name', btrim(p_name), 'scope', coalesce(p_scope, 'ingest'));
end
$$;


--
-- Name: FUNCTION create_api_token(p_client_id text, p_name text, p_scope text, p_created_by text); Type: COMMENT; Schema: auth; Owner: -
--

COMMENT ON FUNCTION auth.create_api_token(p_client_id text, p_name text, p_scope text, p_created_by text) IS 'Issues an ingest API token for one client or (null) every client. Operator function behind stepledger token create.';


--
-- Name: drop_bi_login(text); Type: FUNCTION; Schema: auth; Owner: -
--

CREATE FUNCTION auth.drop_bi_login(p_name text) RETURNS jsonb
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
-- Drops a BI login created by auth.add_bi_login (never any other role).
begin
  if not exists (select from auth.bi_logins b where b.rolname = p_name) then
    raise exception '"%" is not a BI login', p_name using errcode = 'SL308';
  end if;
  delete from auth.bi_logins b where b.rolname = p_name;
  if exists (select from pg_catalog.pg_roles r where r.rolname = p_name) then
    execute format('drop role %I', p_name);
  end if;
  return jsonb_build_object('name', p_name, 'dropped', true);
end
$$;


--
-- Name: FUNCTION drop_bi_login(p_name text); Type: COMMENT; Schema: auth; Owner: -
--

COMMENT ON FUNCTION auth.drop_bi_login(p_name text) IS 'Drops a BI database login (stepledger bi-user remove). Owner only.';


--
-- Name: install_jwt_secret(text); Type: FUNCTION; Schema: auth; Owner: -
--

CREATE FUNCTION auth.install_jwt_secret(p_secret text) RETURNS void
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
-- Stores the secret PostgREST verifies JWTs with; the migration runner calls it on every migrate.
-- Owner only: nobody else may execute this or read auth.secrets.
begin
  if p_secret is null or length(p_secret) < 32 then
    raise exception 'the JWT secret must have at least 32 characters' using errcode = 'SL305';
  end if;
  insert into auth.secrets as s (name, value) values ('jwt_secret', p_secret)
  on conflict (name) do update set value = excluded.value, updated_at = now()
   where s.value is distinct from excluded.value;
end
$$;


--
-- Name: FUNCTION install_jwt_secret(p_secret text); Type: COMMENT; Schema: auth; Owner: -
--

COMMENT ON FUNCTION auth.install_jwt_secret(p_secret text) IS 'Stores the JWT signing secret (called by stepledger migrate). Owner only.';


--
-- Name: pre_request(); Type: FUNCTION; Schema: auth; Owner: -
--

CREATE FUNCTION auth.pre_request() RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $_$
-- Runs before every PostgREST request (db-pre-request), after PostgREST verified the signature
-- and expiry and switched to the token's role. Refuses tokens that are well signed but must not
-- be honoured. Kept to primary-key lookups: it runs on every request.
--   ingest        the token must be a live row of auth.api_tokens, issued exactly as presented
--                 (same client, same SHA-256); its last use is recorded at most once a minute.
--   client/admin  must expire; a client token must name its client; a login token (sub = a
--                 user id) must belong to an enabled user who still holds the role and client.
--   anon          nothing to check.
declare
  v_claims jsonb := auth.claims();
  v_role text := v_claims->>'role';
  v_jti text := v_claims->>'jti';
  v_sub text := v_claims->>'sub';
  v_token record;
  v_user record;
  v_bearer text;
begin
  if v_role is null or v_role = 'anon' then
    return;
  end if;

  if v_role = 'ingest' then
    if v_jti is null or v_jti !~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' then
      perform auth._refuse('SL311', 'this API token has no token id',
                           'create API tokens with stepledger token create or /rpc/create_api_token');
    end if;
    select t.token_id, t.client_id, t.token_hash, t.revoked_at, t.last_used_at into v_token
      from auth.api_tokens t where t.token_id = v_jti::uuid;
    if not found then
      perform auth._refuse('SL311', 'unknown API token');
    end if;
    if v_token.revoked_at is not null then
      perform auth._refuse('SL311', 'this API token has been revoked');
    end if;
    v_bearer := substring(current_setting('request.headers', true)::json->>'authorization'
                          from '^[Bb]earer[ ]+([^ ]+)');
    if v_token.client_id is distinct from nullif(v_claims->>'client_id', '')
       or v_bearer is null or sha256(convert_to(v_bearer, 'UTF8')) <> v_token.token_hash then
      perform auth._refuse('SL311', 'this API token is not the one issued under its id');
    end if;
    -- Last use, at most once a minute and never waiting on a concurrent request's row lock.
    -- GET requests run read-only: they are not recorded (ingest tokens may only POST anyway).
    if (v_token.last_used_at is null or v_token.last_used_at < now() - interval '1 minute')
       and current_setting('transaction_read_only') = 'off' then
      update auth.api_tokens t set last_used_at = now()
       where t.token_id = (select l.token_id from auth.api_tokens l
                            where l.token_id = v_token.token_id for update skip locked);
    end if;
    return;
  end if;

  if v_role in ('client', 'admin') then
    if v_role = 'client' and nullif(v_claims->>'client_id', '') is null then
      perform auth._refuse('SL312', 'a client token must name its client');
    end if;
    if not v_claims ? 'exp' then
      perform auth._refuse('SL312', 'login tokens must expire');
    end if;
    -- Tokens from POST /rpc/login carry the user's id; other tokens can only be signed by
    -- whoever holds the stack's secret (operator tools).
    if v_sub ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' then
      select u.roles, u.client_id, u.disabled_at into v_user
        from auth.users u where u.user_id = v_sub::uuid;
      if not found or v_user.disabled_at is not null or not v_role = any(v_user.roles)
         or (v_role = 'client' and v_user.client_id is distinct from v_claims->>'client_id') then
        perform auth._refuse('SL312', 'this login is no longer valid', 'log in again');
      end if;
    end if;
    return;
  end if;

  perform auth._refuse('SL313', format('the API does not serve role "%s"', v_role));
end
$_$;


--
-- Name: FUNCTION pre_request(); Type: COMMENT; Schema: auth; Owner: -
--

COMMENT ON FUNCTION auth.pre_request() IS 'PostgREST db-pre-request hook: refuses revoked or unknown API tokens and login tokens that must no longer be honoured.';


--
-- Name: revoke_api_token(uuid, text); Type: FUNCTION; Schema: auth; Owner: -
--

CREATE FUNCTION auth.revoke_api_token(p_token_id uuid, p_revoked_by text) RETURNS jsonb
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
-- Revokes an API token; revoking it again changes nothing. auth.pre_request refuses it from the
-- next request on.
declare
  v_row auth.api_tokens;
begin
  update auth.api_tokens t
     set revoked_at = coalesce(t.revoked_at, now()),
         revoked_by = coalesce(t.revoked_by, p_revoked_by, current_user::text)
   where t.token_id = p_token_id
  returning * into v_row;
  if not found then
    raise exception 'unknown API token %', p_token_id using errcode = 'SL307';
  end if;
  return jsonb_build_object('token_id', v_row.token_id, 'revoked_at', v_row.revoked_at);
end
$$;


--
-- Name: FUNCTION revoke_api_token(p_token_id uuid, p_revoked_by text); Type: COMMENT; Schema: auth; Owner: -
--

COMMENT ON FUNCTION auth.revoke_api_token(p_token_id uuid, p_revoked_by text) IS 'Revokes an API token at once. Operator function behind stepledger token revoke.';


--
-- Name: role(); Type: FUNCTION; Schema: auth; Owner: -
--

CREATE FUNCTION auth.role() RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$
  select coalesce(auth.claims()->>'role', current_user::text)
$$;


--
-- Name: FUNCTION role(); Type: COMMENT; Schema: auth; Owner: -
--

COMMENT ON FUNCTION auth.role() IS 'The API role of the caller: the JWT role claim, else the database role.';


--
-- Name: set_user_disabled(text, boolean); Type: FUNCTION; Schema: auth; Owner: -
--

CREATE FUNCTION auth.set_user_disabled(p_email text, p_disabled boolean) RETURNS jsonb
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
-- Disables (or enables) a user. A disabled user cannot log in, and the tokens it already holds are
-- refused by auth.pre_request on their next request.
declare
  v_row auth.users;
begin
  update auth.users u
     set disabled_at = case when p_disabled then coalesce(u.disabled_at, now()) end, updated_at = now()
   where u.email = lower(btrim(p_email))
  returning * into v_row;
  if not found then
    raise exception 'unknown user "%"', p_email using errcode = 'SL304';
  end if;
  return jsonb_build_object('user_id', v_row.user_id, 'email', v_row.email, 'disabled_at', v_row.disabled_at);
end
$$;


--
-- Name: FUNCTION set_user_disabled(p_email text, p_disabled boolean); Type: COMMENT; Schema: auth; Owner: -
--

COMMENT ON FUNCTION auth.set_user_disabled(p_email text, p_disabled boolean) IS 'Disables or enables a user; a disabled user''s tokens stop working at once. Operator function.';


--
-- Name: token_id(); Type: FUNCTION; Schema: auth; Owner: -
--

CREATE FUNCTION auth.token_id() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $_$
  select case when auth.claims()->>'jti' ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
              then (auth.claims()->>'jti')::uuid end
$_$;


--
-- Name: FUNCTION token_id(); Type: COMMENT; Schema: auth; Owner: -
--

COMMENT ON FUNCTION auth.token_id() IS 'The id (jti) of the token that authenticated the request, when it is a UUID.';


--
-- Name: _actor(); Type: FUNCTION; Schema: ledger; Owner: -
--

CREATE FUNCTION ledger._actor(OUT actor text, OUT role text, OUT token uuid, OUT via text) RETURNS record
    LANGUAGE sql STABLE
    AS $$
  -- Who is acting, for the recorded_* and finalized_* columns: the e-mail or subject of the
  -- token when there is one, else the database login.
  select coalesce(nullif(auth.claims()->>'email', ''), nullif(auth.claims()->>'sub', ''),
                  session_user::text),
         auth.role(), auth.token_id(), nullif(current_setting('application_name', true), '')
$$;


--
-- Name: FUNCTION _actor(OUT actor text, OUT role text, OUT token uuid, OUT via text); Type: COMMENT; Schema: ledger; Owner: -
--

COMMENT ON FUNCTION ledger._actor(OUT actor text, OUT role text, OUT token uuid, OUT via text) IS 'The caller as recorded on price book rows and finalized invoices.';


--
-- Name: _calendar_date_ok(text); Type: FUNCTION; Schema: ledger; Owner: -
--

CREATE FUNCTION ledger._calendar_date_ok(p_ts text) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
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


--
-- Name: _charges_from_events(text, date, date); Type: FUNCTION; Schema: ledger; Owner: -
--

CREATE FUNCTION ledger._charges_from_events(p_client_id text, p_from date, p_to date) RETURNS TABLE(client_id text, job_id text, pipeline text, step text, units numeric, completed_at timestamp with time zone)
    LANGUAGE plpgsql STABLE
    SET search_path TO 'pg_catalog', 'pg_temp'
    SET plan_cache_mode TO 'force_custom_plan'
    AS $$
-- The billed completions recomputed from the accepted raw events alone, as a log parser would:
-- per attempt the terminal event with the latest occurred_at decides (ties broken as the ingest
-- trigger breaks them: later batch, then vault id);
-- the billed attempt is the latest one that completed. The reference that job_steps must match,
-- and the baseline of the benchmark. A function of its own (not inlined) so that the planner
-- drops it entirely from the job_steps path, which clients use without access to raw events.
begin
  return query
  select b.client_id::text, b.job_id, b.pipeline::text, b.step::text, b.units, b.occurred_at
    from (
      select distinct on (t.client_id, t.job_id, t.step) t.*
        from (
          select distinct on (e.client_id, e.job_id, e.step, e.attempt)
                 e.client_id, e.job_id, e.pipeline, e.step, e.attempt, e.status, e.units,
                 e.occurred_at
            from ledger.events e
           where e.status <> 'started'
             and (p_client_id is null or e.client_id = p_client_id)
             and (p_from is null or exists (
                   select from ledger.events c
                    where c.client_id = e.client_id and c.job_id = e.job_id and c.step = e.step
                      and c.status = 'completed'
                      and c.occurred_at >= ledger._month_start(p_from)
                      and (p_to is null or c.occurred_at < ledger._month_start(p_to))))
           order by e.client_id, e.job_id, e.step, e.attempt,
                    e.occurred_at desc, e.received_at desc, e.vault_id desc
        ) t
       where t.status = 'completed'
       order by t.client_id, t.job_id, t.step, t.attempt desc
    ) b
   where (p_from is null or b.occurred_at >= ledger._month_start(p_from))
     and (p_to is null or b.occurred_at < ledger._month_start(p_to));
end
$$;


--
-- Name: FUNCTION _charges_from_events(p_client_id text, p_from date, p_to date); Type: COMMENT; Schema: ledger; Owner: -
--

COMMENT ON FUNCTION ledger._charges_from_events(p_client_id text, p_from date, p_to date) IS 'Billed completions recomputed from the raw accepted events (reference and benchmark baseline).';


--
-- Name: _check_window(date, date); Type: FUNCTION; Schema: ledger; Owner: -
--

CREATE FUNCTION ledger._check_window(p_since date, p_until date) RETURNS void
    LANGUAGE plpgsql IMMUTABLE
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
-- A window of UTC days is [since, until], both included; either end may be open (null).
begin
  if p_since is not null and p_until is not null and p_since > p_until then
    raise exception 'window starts (%) after it ends (%)', p_since, p_until
      using errcode = 'SL501', hint = 'since and until are UTC dates, both included';
  end if;
end
$$;


--
-- Name: FUNCTION _check_window(p_since date, p_until date); Type: COMMENT; Schema: ledger; Owner: -
--

COMMENT ON FUNCTION ledger._check_window(p_since date, p_until date) IS 'Validates a window of UTC days.';


--
-- Name: _finalize_invoice(text, text); Type: FUNCTION; Schema: ledger; Owner: -
--

CREATE FUNCTION ledger._finalize_invoice(p_client_id text, p_period text) RETURNS jsonb
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
-- Freezes a client's invoice for a period that is over: the draft's lines as of now become an
-- immutable invoice. Later changes for that period become adjustment lines of the next open
-- invoice. Admins only.
declare
  v_period date := ledger._parse_period(p_period);
  v_role text := auth.role();
  v_currency text;
  v_lines jsonb;
  v_actor record := ledger._actor();
begin
  if v_role not in ('admin', 'stepledger_owner') then
    raise exception 'role "%" may not finalize invoices', v_role using errcode = 'SL406';
  end if;
  if ledger._month_start((v_period + interval '1 month')::date) > now() then
    raise exception 'period % is not over yet', p_period
      using errcode = 'SL407', hint = 'a period can be finalized once its month has ended (UTC)';
  end if;
  -- One finalization per client at a time; concurrent ones wait here, then see the first.
  select c.currency into v_currency from ledger.clients c where c.client_id = p_client_id for update;
  if not found then
    raise exception 'unknown client "%"', p_client_id using errcode = 'SL404';
  end if;
  if exists (select from ledger.invoices i where i.client_id = p_client_id and i.period = v_period) then
    raise exception 'invoice of client "%" for % is already finalized', p_client_id, p_period
      using errcode = 'SL408', hint = 'late changes appear as adjustments on the next open invoice';
  end if;

  -- One statement, one snapshot: the frozen lines are exactly the draft as of this moment.
  select coalesce(jsonb_agg(to_jsonb(l) order by l.line_no), '[]') into v_lines
    from ledger._invoice_lines(p_client_id, v_period) l;

  insert into ledger.invoices (client_id, period, invoice_no, currency, usage_amount,
                               minimum_amount, adjustments_amount, total, lines_count,
                               finalized_by, finalized_role, finalized_token)
  values (p_client_id, v_period, format('%s-%s', p_client_id, to_char(v_period, 'YYYYMM')),
          v_currency, ledger._sum_amounts(v_lines, 'usage'), ledger._sum_amounts(v_lines, 'minimum'),
          ledger._sum_amounts(v_lines, 'adjustment'), ledger._sum_amounts(v_lines, null),
          jsonb_array_length(v_lines), v_actor.actor, v_actor.role, v_actor.token);

  insert into ledger.invoice_lines (client_id, period, line_no, kind, basis, for_period, pipeline,
                                    step, unit_price, priced, units, completed_steps, amount,
                                    description)
  select p_client_id, v_period, l.line_no, l.kind, l.basis, l.for_period, l.pipeline, l.step,
         l.unit_price, l.priced, l.units, l.completed_steps, l.amount, l.description
    from jsonb_to_recordset(v_lines) as l(line_no integer, kind text, basis text, for_period date,
                                          pipeline text, step text, unit_price numeric,
                                          priced boolean, units numeric, completed_steps bigint,
                                          amount numeric, description text);

  return ledger._invoice_json(p_client_id, v_period);
end
$$;


--
-- Name: FUNCTION _finalize_invoice(p_client_id text, p_period text); Type: COMMENT; Schema: ledger; Owner: -
--

COMMENT ON FUNCTION ledger._finalize_invoice(p_client_id text, p_period text) IS 'Freezes a client''s invoice for a finished period (admins).';


--
-- Name: _ingest_batch(text, integer[], jsonb[], text[], text[]); Type: FUNCTION; Schema: ledger; Owner: -
--

CREATE FUNCTION ledger._ingest_batch(p_channel text, p_positions integer[], p_payloads jsonb[], p_raw text[], p_parse_errors text[]) RETURNS jsonb
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
    SET plan_cache_mode TO 'force_generic_plan'
    AS $_$
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
           u.payload->>'client_id' as client_id, u.payload->>'event_id' as event_id
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
    select v.position, v.payload, v.raw_text, v.client_id, v.event_id,
           coalesce(v.envelope_errors,
             -- Most events pass every check below: say so without building the error list
             -- (the list, in the else branch, is the reference; this test only skips it).
             case when not (v_bound and v.client_id <> v_token_client)
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
                  where v_bound and v.client_id <> v_token_client
                 union all
                 select jsonb_build_object('path', '/client_id', 'message',
                          format('unknown client "%s"', v.client_id))
                  where not (v_bound and v.client_id <> v_token_client) and c.client_id is null
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
      left join ledger.clients c on c.client_id = v.client_id and v.envelope_errors is null
      left join ledger.pipelines p on p.pipeline = v.payload->>'pipeline' and v.envelope_errors is null
      left join ledger.pipeline_steps s
             on s.pipeline = p.pipeline and s.step = v.payload->>'step'
      left join ledger.jobs j
             on j.client_id = v.client_id and j.job_id = v.payload->>'job_id' and v.envelope_errors is null
  ),
  keyed as (
    -- An element has a dedup key when it names a client this caller may write for and an event
    -- id; sending a key again is a duplicate whatever the body (contract §3).
    select c.*,
           jsonb_array_length(c.errors) = 0 as valid,
           jsonb_typeof(c.payload->'client_id') = 'string' and jsonb_typeof(c.payload->'event_id') = 'string'
             and not (v_bound and c.client_id <> v_token_client) as has_key
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
$_$;


--
-- Name: FUNCTION _ingest_batch(p_channel text, p_positions integer[], p_payloads jsonb[], p_raw text[], p_parse_errors text[]); Type: COMMENT; Schema: ledger; Owner: -
--

COMMENT ON FUNCTION ledger._ingest_batch(p_channel text, p_positions integer[], p_payloads jsonb[], p_raw text[], p_parse_errors text[]) IS 'Set-based ingest core: vaults every element, accepts the valid new ones, returns the response.';


--
-- Name: _ingest_json(jsonb); Type: FUNCTION; Schema: ledger; Owner: -
--

CREATE FUNCTION ledger._ingest_json(p_body jsonb) RETURNS jsonb
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
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


--
-- Name: _invoice_for_caller(text, text); Type: FUNCTION; Schema: ledger; Owner: -
--

CREATE FUNCTION ledger._invoice_for_caller(p_client_id text, p_period text) RETURNS jsonb
    LANGUAGE plpgsql STABLE
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
-- POST /rpc/invoice: a client's users get their own client's invoices only; admins any client's.
declare
  v_period date := ledger._parse_period(p_period);
begin
  if not ledger._sees_all_clients() and p_client_id is distinct from auth.client_id() then
    raise exception 'not allowed to see invoices of client "%"', p_client_id
      using errcode = 'SL406', hint = 'a client''s login sees only its own client''s invoices';
  end if;
  if not exists (select from ledger.clients c where c.client_id = p_client_id) then
    raise exception 'unknown client "%"', p_client_id using errcode = 'SL404';
  end if;
  return ledger._invoice_json(p_client_id, v_period);
end
$$;


--
-- Name: FUNCTION _invoice_for_caller(p_client_id text, p_period text); Type: COMMENT; Schema: ledger; Owner: -
--

COMMENT ON FUNCTION ledger._invoice_for_caller(p_client_id text, p_period text) IS 'The invoice of a client and period, for a caller allowed to see it.';


--
-- Name: _invoice_json(text, date); Type: FUNCTION; Schema: ledger; Owner: -
--

CREATE FUNCTION ledger._invoice_json(p_client_id text, p_period date) RETURNS jsonb
    LANGUAGE plpgsql STABLE
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
-- The invoice document of the contract: the frozen invoice when the period is finalized, else
-- the draft as of now.
declare
  v_inv ledger.invoices;
  v_lines jsonb;
  v_currency text;
  v_sources text[];
begin
  select * into v_inv from ledger.invoices i where i.client_id = p_client_id and i.period = p_period;
  if found then
    select coalesce(jsonb_agg(jsonb_build_object(
             'line_no', l.line_no, 'kind', l.kind, 'pipeline', l.pipeline, 'step', l.step,
             'unit_price', l.unit_price, 'units', l.units, 'amount', l.amount,
             'completed_steps', l.completed_steps, 'priced', l.priced,
             'for_period', to_char(l.for_period, 'YYYY-MM'), 'basis', l.basis,
             'description', l.description) order by l.line_no), '[]')
      into v_lines
      from ledger.invoice_lines l
     where l.client_id = p_client_id and l.period = p_period;
    return jsonb_build_object(
      'client_id', v_inv.client_id, 'period', to_char(v_inv.period, 'YYYY-MM'),
      'status', 'finalized', 'currency', v_inv.currency, 'invoice_no', v_inv.invoice_no,
      'lines', v_lines, 'usage_amount', v_inv.usage_amount,
      'minimum_amount', v_inv.minimum_amount, 'adjustments_amount', v_inv.adjustments_amount,
      'total', v_inv.total,
      'unpriced_steps', (select coalesce(sum((l->>'completed_steps')::bigint), 0)
                           from jsonb_array_elements(v_lines) l
                          where l->>'kind' = 'usage' and (l->>'priced')::boolean is false),
      'finalized_at', v_inv.finalized_at, 'finalized_by', v_inv.finalized_by,
      'generated_at', now(), 'source', 'finalized');
  end if;

  select c.currency into v_currency from ledger.clients c where c.client_id = p_client_id;
  select coalesce(jsonb_agg(jsonb_build_object(
           'line_no', l.line_no, 'kind', l.kind, 'pipeline', l.pipeline, 'step', l.step,
           'unit_price', l.unit_price, 'units', l.units, 'amount', l.amount,
           'completed_steps', l.completed_steps, 'priced', l.priced,
           'for_period', to_char(l.for_period, 'YYYY-MM'), 'basis', l.basis,
           'description', l.description) order by l.line_no), '[]'),
         array_agg(distinct l.source) filter (where l.source is not null)
    into v_lines, v_sources
    from ledger._invoice_lines(p_client_id, p_period) l;
  return jsonb_build_object(
    'client_id', p_client_id, 'period', to_char(p_period, 'YYYY-MM'), 'status', 'draft',
    'currency', v_currency, 'invoice_no', null, 'lines', v_lines,
    'usage_amount', ledger._sum_amounts(v_lines, 'usage'),
    'minimum_amount', ledger._sum_amounts(v_lines, 'minimum'),
    'adjustments_amount', ledger._sum_amounts(v_lines, 'adjustment'),
    'total', ledger._sum_amounts(v_lines, null),
    'unpriced_steps', (select coalesce(sum((l->>'completed_steps')::bigint), 0)
                         from jsonb_array_elements(v_lines) l
                        where l->>'kind' = 'usage' and (l->>'priced')::boolean is false),
    'finalized_at', null, 'finalized_by', null, 'generated_at', now(),
    'source', case when v_sources is null then 'materialized'
                   when cardinality(v_sources) = 1 then v_sources[1] else 'mixed' end);
end
$$;


--
-- Name: FUNCTION _invoice_json(p_client_id text, p_period date); Type: COMMENT; Schema: ledger; Owner: -
--

COMMENT ON FUNCTION ledger._invoice_json(p_client_id text, p_period date) IS 'The invoice document (contract §4) of a client and period: finalized or draft.';


--
-- Name: _invoice_lines(text, date); Type: FUNCTION; Schema: ledger; Owner: -
--

CREATE FUNCTION ledger._invoice_lines(p_client_id text, p_period date) RETURNS TABLE(line_no integer, kind text, basis text, for_period date, pipeline text, step text, unit_price numeric, priced boolean, units numeric, completed_steps bigint, amount numeric, description text, source text)
    LANGUAGE plpgsql STABLE
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
-- The lines of a client's open invoice for a period: the period's usage and minimum top-up, plus
-- adjustment lines for every finalized period whose next open invoice this is (every month
-- between it and this one is finalized). An adjustment is what is owed now for that period minus
-- what its finalized invoice and earlier adjustments billed, per (pipeline, step, unit price).
declare
  v_adjust date[];
begin
  select coalesce(array_agg(i.period order by i.period), '{}') into v_adjust
    from ledger.invoices i
   where i.client_id = p_client_id and i.period < p_period
     and (select count(*) from ledger.invoices j
           where j.client_id = p_client_id and j.period > i.period and j.period < p_period)
         = ledger._months_between(i.period, p_period) - 1;

  return query
  with owed as (
    select * from ledger._period_lines(p_client_id, array[p_period] || v_adjust)
  ),
  lines as (
    select o.basis as kind, o.basis, o.period as for_period, o.pipeline, o.step, o.unit_price,
           o.priced, o.units, o.completed_steps, o.amount, o.description, o.source
      from owed o
     where o.period = p_period
    union all
    select 'adjustment', d.basis, d.for_period, d.pipeline, d.step, min(d.unit_price), d.priced,
           sum(d.units), sum(d.completed_steps)::bigint, sum(d.amount),
           format('adjustment for %s', to_char(d.for_period, 'YYYY-MM'))
             || case when d.basis = 'minimum' then ': monthly minimum top-up'
                     when not d.priced then ': no price in force' else '' end,
           coalesce(min(d.source), 'finalized')
      from (
        select o.period as for_period, o.basis, o.pipeline, o.step, o.unit_price, o.priced,
               o.units, o.completed_steps, o.amount, o.source
          from owed o
         where o.period <> p_period
        union all
        select l.for_period, l.basis, l.pipeline, l.step, l.unit_price, l.priced,
               -l.units, -l.completed_steps, -l.amount, null
          from ledger.invoice_lines l
         where l.client_id = p_client_id and l.for_period = any(v_adjust)
      ) d
     group by d.for_period, d.basis, d.pipeline, d.step, d.unit_price, d.priced
    having sum(d.amount) <> 0 or coalesce(sum(d.units), 0) <> 0
        or coalesce(sum(d.completed_steps), 0) <> 0
  )
  select (row_number() over (order by
            case l.kind when 'usage' then 1 when 'minimum' then 2 else 3 end,
            l.for_period, l.basis desc, l.pipeline, s.step_index nulls last, l.step,
            l.unit_price desc, l.priced desc))::integer,
         l.kind, l.basis, l.for_period, l.pipeline, l.step, l.unit_price, l.priced, l.units,
         l.completed_steps, l.amount, l.description, l.source
    from lines l
    left join ledger.pipeline_steps s on s.pipeline = l.pipeline and s.step = l.step
   order by 1;
end
$$;


--
-- Name: FUNCTION _invoice_lines(p_client_id text, p_period date); Type: COMMENT; Schema: ledger; Owner: -
--

COMMENT ON FUNCTION ledger._invoice_lines(p_client_id text, p_period date) IS 'Lines of a client''s open invoice for a period: usage, minimum top-up and adjustments of finalized periods.';


--
-- Name: _month(timestamp with time zone); Type: FUNCTION; Schema: ledger; Owner: -
--

CREATE FUNCTION ledger._month(p_at timestamp with time zone) RETURNS date
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
  -- The billing period of an instant: its calendar month in UTC (contract §5).
  select date_trunc('month', p_at at time zone 'UTC')::date
$$;


--
-- Name: FUNCTION _month(p_at timestamp with time zone); Type: COMMENT; Schema: ledger; Owner: -
--

COMMENT ON FUNCTION ledger._month(p_at timestamp with time zone) IS 'The billing period (first day of the UTC calendar month) of an instant.';


--
-- Name: _month_start(date); Type: FUNCTION; Schema: ledger; Owner: -
--

CREATE FUNCTION ledger._month_start(p_period date) RETURNS timestamp with time zone
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
  -- The first instant of a period, in UTC.
  select p_period::timestamp at time zone 'UTC'
$$;


--
-- Name: FUNCTION _month_start(p_period date); Type: COMMENT; Schema: ledger; Owner: -
--

COMMENT ON FUNCTION ledger._month_start(p_period date) IS 'The first instant (UTC) of the month that starts on the given date.';


--
-- Name: _months_between(date, date); Type: FUNCTION; Schema: ledger; Owner: -
--

CREATE FUNCTION ledger._months_between(p_from date, p_to date) RETURNS integer
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
  -- Whole calendar months from one period to another (2026-01 to 2026-03: 2).
  select ((extract(year from p_to) * 12 + extract(month from p_to))
          - (extract(year from p_from) * 12 + extract(month from p_from)))::integer
$$;


--
-- Name: FUNCTION _months_between(p_from date, p_to date); Type: COMMENT; Schema: ledger; Owner: -
--

COMMENT ON FUNCTION ledger._months_between(p_from date, p_to date) IS 'Calendar months between two periods.';


--
-- Name: _normalized_tiers(jsonb); Type: FUNCTION; Schema: ledger; Owner: -
--

CREATE FUNCTION ledger._normalized_tiers(p_tiers jsonb) RETURNS jsonb
    LANGUAGE plpgsql IMMUTABLE
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
-- Checks graduated tiers, [{"from_units": N, "unit_price": P}, ...] with 0 < N strictly
-- increasing and P >= 0, and returns them with plain numbers (SL402 otherwise).
declare
  v_tier jsonb;
  v_from numeric;
  v_last numeric := 0;
  v_out jsonb := '[]';
  v_i integer := 0;
begin
  if p_tiers is null or p_tiers = 'null'::jsonb then
    return '[]';
  end if;
  if jsonb_typeof(p_tiers) <> 'array' then
    raise exception 'tiers must be an array of {"from_units", "unit_price"} objects'
      using errcode = 'SL402';
  end if;
  for v_tier in select e from jsonb_array_elements(p_tiers) e loop
    if jsonb_typeof(v_tier) <> 'object'
       or jsonb_typeof(v_tier->'from_units') is distinct from 'number'
       or jsonb_typeof(v_tier->'unit_price') is distinct from 'number'
       or exists (select from jsonb_object_keys(v_tier) k where k not in ('from_units', 'unit_price')) then
      raise exception 'tier % must be {"from_units": number, "unit_price": number}', v_i
        using errcode = 'SL402', detail = v_tier::text;
    end if;
    v_from := (v_tier->>'from_units')::numeric;
    if v_from <= v_last then
      raise exception 'tier %: from_units must be greater than %', v_i, v_last
        using errcode = 'SL402', hint = 'tiers start above 0 and in increasing order';
    end if;
    if (v_tier->>'unit_price')::numeric < 0 then
      raise exception 'tier %: unit_price must not be negative', v_i using errcode = 'SL402';
    end if;
    v_out := v_out || jsonb_build_array(jsonb_build_object(
               'from_units', trim_scale(v_from),
               'unit_price', trim_scale((v_tier->>'unit_price')::numeric)));
    v_last := v_from;
    v_i := v_i + 1;
  end loop;
  return v_out;
end
$$;


--
-- Name: FUNCTION _normalized_tiers(p_tiers jsonb); Type: COMMENT; Schema: ledger; Owner: -
--

COMMENT ON FUNCTION ledger._normalized_tiers(p_tiers jsonb) IS 'Validates and normalizes graduated price tiers (SL402).';


--
-- Name: _occurred_at(text); Type: FUNCTION; Schema: ledger; Owner: -
--

CREATE FUNCTION ledger._occurred_at(p_ts text) RETURNS timestamp with time zone
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$
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


--
-- Name: FUNCTION _occurred_at(p_ts text); Type: COMMENT; Schema: ledger; Owner: -
--

COMMENT ON FUNCTION ledger._occurred_at(p_ts text) IS 'An envelope occurred_at (RFC 3339, any offset up to ±23:59) as timestamptz.';


--
-- Name: _outcomes(date, date, text, text); Type: FUNCTION; Schema: ledger; Owner: -
--

CREATE FUNCTION ledger._outcomes(p_since date, p_until date, p_pipeline text, p_client_id text) RETURNS TABLE(client_id text, pipeline text, step text, source text, error_code text, completed bigint, failed bigint, skipped bigint, retryable bigint, first_at timestamp with time zone, last_at timestamp with time zone, sample_message text)
    LANGUAGE plpgsql STABLE
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
-- Outcomes of finished attempts per client, pipeline, step, site and error code over a window of
-- UTC days, for the caller's visible clients: from the all-time roll-up when the window is open
-- at both ends, else summed from the daily cells.
begin
  perform ledger._check_window(p_since, p_until);
  if p_since is null and p_until is null then
    return query
    select t.client_id::text, t.pipeline::text, t.step::text, t.source, t.error_code, t.completed,
           t.failed, t.skipped, t.retryable, t.first_at, t.last_at, t.sample_message
      from ledger.visible_step_outcomes_total t
     where (p_pipeline is null or t.pipeline = p_pipeline)
       and (p_client_id is null or t.client_id = p_client_id);
  else
    return query
    select d.client_id::text, d.pipeline::text, d.step::text, d.source, d.error_code,
           sum(d.completed)::bigint, sum(d.failed)::bigint, sum(d.skipped)::bigint,
           sum(d.retryable)::bigint, min(d.first_at), max(d.last_at),
           (array_agg(d.sample_message order by d.last_at desc)
              filter (where d.sample_message is not null))[1]
      from ledger.visible_step_outcomes_daily d
     where (p_since is null or d.day >= p_since)
       and (p_until is null or d.day <= p_until)
       and (p_pipeline is null or d.pipeline = p_pipeline)
       and (p_client_id is null or d.client_id = p_client_id)
     group by d.client_id, d.pipeline, d.step, d.source, d.error_code;
  end if;
end
$$;


--
-- Name: FUNCTION _outcomes(p_since date, p_until date, p_pipeline text, p_client_id text); Type: COMMENT; Schema: ledger; Owner: -
--

COMMENT ON FUNCTION ledger._outcomes(p_since date, p_until date, p_pipeline text, p_client_id text) IS 'Finished attempts per client, pipeline, step, site and error code over a window, for the caller''s clients.';


--
-- Name: _parse_json(text); Type: FUNCTION; Schema: ledger; Owner: -
--

CREATE FUNCTION ledger._parse_json(p_text text, OUT payload jsonb, OUT error text) RETURNS record
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
    AS $$
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


--
-- Name: FUNCTION _parse_json(p_text text, OUT payload jsonb, OUT error text); Type: COMMENT; Schema: ledger; Owner: -
--

COMMENT ON FUNCTION ledger._parse_json(p_text text, OUT payload jsonb, OUT error text) IS 'Parses text as JSON, returning the parser''s message instead of raising.';


--
-- Name: _parse_period(text); Type: FUNCTION; Schema: ledger; Owner: -
--

CREATE FUNCTION ledger._parse_period(p_period text) RETURNS date
    LANGUAGE plpgsql IMMUTABLE
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $_$
-- 'YYYY-MM' to the first day of that month; anything else is SL405.
begin
  if p_period is null or p_period !~ '^[0-9]{4}-(0[1-9]|1[0-2])$' or left(p_period, 4) = '0000' then
    raise exception 'invalid period "%"', p_period
      using errcode = 'SL405', hint = 'a calendar month as YYYY-MM, e.g. 2026-03';
  end if;
  return to_date(p_period || '-01', 'YYYY-MM-DD');
end
$_$;


--
-- Name: FUNCTION _parse_period(p_period text); Type: COMMENT; Schema: ledger; Owner: -
--

COMMENT ON FUNCTION ledger._parse_period(p_period text) IS 'Parses a billing period written YYYY-MM (SL405 otherwise).';


--
-- Name: _period_lines(text, date[]); Type: FUNCTION; Schema: ledger; Owner: -
--

CREATE FUNCTION ledger._period_lines(p_client_id text, p_periods date[]) RETURNS TABLE(period date, basis text, pipeline text, step text, unit_price numeric, priced boolean, units numeric, completed_steps bigint, amount numeric, description text, source text)
    LANGUAGE plpgsql STABLE
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $_$
-- What a client owes for each of the given periods as of now: its usage lines (from the
-- materialized view where that is current for the client and period, else computed live) and a
-- monthly-minimum top-up when usage is below the minimum in force. Runs with the caller's rights.
-- The live query is planned and run only when some period is stale: planning it is not free,
-- and the view path stays a cached plan.
declare
  v_periods date[];
  v_fresh date[];
  v_stale date[];
  v_currency text;
  v_usage jsonb := '[]';
  v_part jsonb;
begin
  select c.currency into v_currency from ledger.clients c where c.client_id = p_client_id;
  select coalesce(array_agg(x.p order by x.p), '{}') into v_periods
    from (select distinct unnest(p_periods) as p) x;
  select coalesce(array_agg(x.p) filter (where x.fresh), '{}'),
         coalesce(array_agg(x.p) filter (where not x.fresh), '{}')
    into v_fresh, v_stale
    from (select p, ledger._usage_fresh(p_client_id, p) as fresh from unnest(v_periods) p) x;

  if cardinality(v_fresh) > 0 then
    select coalesce(jsonb_agg(to_jsonb(l)), '[]') into v_part
      from (select v.period, v.pipeline, v.step, v.unit_price, v.priced, v.units,
                   v.completed_steps, v.amount, 'materialized' as source
              from ledger.usage_lines_visible v
             where v.client_id = p_client_id and v.period = any(v_fresh)) l;
    v_usage := v_usage || v_part;
  end if;
  if cardinality(v_stale) > 0 then
    -- Dynamic, so it is planned with the actual client and months: the inlined query's
    -- "client is null or client_id = client" filters then fold into index conditions.
    execute $q$
      select coalesce(jsonb_agg(to_jsonb(l)), '[]')
        from (select u.period, u.pipeline, u.step, u.unit_price, u.priced, u.units,
                     u.completed_steps, u.amount, 'live' as source
                from ledger._usage_lines($1, $2, $3) u
               where u.period = any($4)) l
    $q$ into v_part
    using p_client_id, v_stale[1], (v_stale[cardinality(v_stale)] + interval '1 month')::date,
          v_stale;
    v_usage := v_usage || v_part;
  end if;

  return query
  with usage as (
    select * from jsonb_to_recordset(v_usage)
      as u(period date, pipeline text, step text, unit_price numeric, priced boolean,
           units numeric, completed_steps bigint, amount numeric, source text)
  ),
  totals as (
    select p.p as period, coalesce(sum(u.amount), 0) as usage_amount
      from unnest(v_periods) as p(p)
      left join usage u on u.period = p.p
     group by p.p
  ),
  minimums as (
    select t.period, m.monthly_minimum, t.usage_amount
      from totals t
      cross join lateral (
        select cm.monthly_minimum
          from ledger.client_minimums cm
         where cm.client_id = p_client_id and cm.currency = v_currency
           and cm.effective_from <= t.period
         order by cm.effective_from desc, cm.minimum_id desc
         limit 1) m
     where m.monthly_minimum > t.usage_amount
  )
  select u.period, 'usage'::text, u.pipeline, u.step, u.unit_price, u.priced, u.units,
         u.completed_steps, u.amount,
         case when not u.priced then 'no price in force: billed at 0' end, u.source
    from usage u
  union all
  select m.period, 'minimum'::text, null::text, null::text, null::numeric, null::boolean,
         null::numeric, null::bigint, m.monthly_minimum - m.usage_amount,
         format('monthly minimum %s %s; usage %s %s', m.monthly_minimum, v_currency,
                m.usage_amount, v_currency),
         case when m.period = any(v_fresh) then 'materialized' else 'live' end
    from minimums m;
end
$_$;


--
-- Name: FUNCTION _period_lines(p_client_id text, p_periods date[]); Type: COMMENT; Schema: ledger; Owner: -
--

COMMENT ON FUNCTION ledger._period_lines(p_client_id text, p_periods date[]) IS 'Usage and monthly-minimum lines a client owes for the given periods as of now.';


--
-- Name: _raise_not_found(text, text, text); Type: FUNCTION; Schema: ledger; Owner: -
--

CREATE FUNCTION ledger._raise_not_found(p_code text, p_message text, p_hint text) RETURNS void
    LANGUAGE plpgsql IMMUTABLE
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
-- Raises an error that PostgREST answers with HTTP 404 and the body
-- {"code": p_code, "message": ..., "hint": ...} (SQLSTATE PGRST, PostgREST >= 11.2).
begin
  raise sqlstate 'PGRST' using
    message = json_build_object('code', p_code, 'message', p_message, 'details', null,
                                'hint', p_hint)::text,
    detail = json_build_object('status', 404, 'headers', json_build_object())::text;
end
$$;


--
-- Name: FUNCTION _raise_not_found(p_code text, p_message text, p_hint text); Type: COMMENT; Schema: ledger; Owner: -
--

COMMENT ON FUNCTION ledger._raise_not_found(p_code text, p_message text, p_hint text) IS 'Raises a PostgREST 404 whose JSON body carries a stepledger error code.';


--
-- Name: _refuse_oversized(text, text, integer); Type: FUNCTION; Schema: ledger; Owner: -
--

CREATE FUNCTION ledger._refuse_oversized(p_channel text, p_text text, p_count integer) RETURNS jsonb
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
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


--
-- Name: FUNCTION _refuse_oversized(p_channel text, p_text text, p_count integer); Type: COMMENT; Schema: ledger; Owner: -
--

COMMENT ON FUNCTION ledger._refuse_oversized(p_channel text, p_text text, p_count integer) IS 'Keeps an over-limit batch in the vault as one rejected raw row and answers 413 (SL202).';


--
-- Name: _replay(text, timestamp with time zone, timestamp with time zone, text, uuid, integer, boolean); Type: FUNCTION; Schema: ledger; Owner: -
--

CREATE FUNCTION ledger._replay(p_outcome text, p_since timestamp with time zone, p_until timestamp with time zone, p_client_id text, p_replay_id uuid, p_max_rows integer, p_dry_run boolean) RETURNS jsonb
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $_$
-- Replays at most p_max_rows vault rows that match the filters and that this replay run has not
-- replayed yet, oldest first. Call again with the returned replay_id while `more` is true: every
-- call is its own transaction, so a long replay never holds locks or a statement for long.
-- Rows kept raw (not JSON) cannot be re-read and are only counted (`unparsable`).
declare
  v_claims text := current_setting('request.jwt.claims', true);
  v_role text := auth.role();
  v_predicate text := ledger._replay_filter(p_outcome);
  v_where text;
  v_replay_id uuid := p_replay_id;
  v_code_version text := ledger.code_version();
  v_offset integer;
  v_clients text[];
  v_received timestamptz[];
  v_vault_ids bigint[];
  v_payloads jsonb[];
  v_senders text[];
  v_n integer;
  v_group record;
  v_counts record;
  v_rejections jsonb;
  v_more boolean;
  v_result jsonb;
begin
  if v_role <> 'admin' and v_role <> 'stepledger_owner'
     and v_role not in (select rolname from pg_roles where rolsuper) then
    raise exception 'role "%" may not replay the vault', v_role
      using errcode = 'SL601', hint = 'replay needs an admin login or the database owner';
  end if;
  if v_predicate is null then
    raise exception 'unknown outcome filter "%"', p_outcome
      using errcode = 'SL602', hint = 'use rejected, duplicate, accepted or any';
  end if;
  if p_since is not null and p_until is not null and p_since >= p_until then
    raise exception 'since (%) must be before until (%)', p_since, p_until using errcode = 'SL603';
  end if;
  if p_max_rows is null or p_max_rows not between 1 and 10000 then
    raise exception 'max_rows must be between 1 and 10000, not %', p_max_rows using errcode = 'SL605';
  end if;

  v_where := format(
    'v.channel <> %L and (%L::text is null or v.client_id = %L::text) '
    'and (%L::timestamptz is null or v.received_at >= %L::timestamptz) '
    'and (%L::timestamptz is null or v.received_at < %L::timestamptz) and %s',
    'replay', p_client_id, p_client_id, p_since, p_since, p_until, p_until, v_predicate);

  if p_dry_run then
    execute format('select jsonb_build_object(''matching'', count(*) filter (where v.payload is not null), '
                   '''unparsable'', count(*) filter (where v.payload is null)) from ledger.vault v where %s',
                   v_where)
      into v_result;
    return v_result || jsonb_build_object('dry_run', true);
  end if;

  -- One replay at a time: two runs over the same rows would only record duplicates, but the
  -- counters and the `replays` arrays stay simple to read when runs do not interleave.
  perform pg_advisory_xact_lock(hashtext('stepledger.replay'));

  if v_replay_id is null then
    insert into ledger.replays (requested_by, filters, code_version)
    values (concat_ws(':', v_role, auth.claims()->>'sub'),
            jsonb_build_object('outcome', p_outcome, 'since', p_since, 'until', p_until,
                               'client_id', p_client_id),
            v_code_version)
    returning replay_id, 0 into v_replay_id, v_offset;
  else
    select r.replayed into v_offset from ledger.replays r where r.replay_id = v_replay_id for update;
    if not found then
      raise exception 'unknown replay run %', v_replay_id using errcode = 'SL604';
    end if;
  end if;

  execute format(
    'select coalesce(array_agg(v.client_id order by v.received_at, v.vault_id), ''{}''), '
    '       coalesce(array_agg(v.received_at order by v.received_at, v.vault_id), ''{}''), '
    '       coalesce(array_agg(v.vault_id order by v.received_at, v.vault_id), ''{}''), '
    '       coalesce(array_agg(v.payload order by v.received_at, v.vault_id), ''{}''), '
    '       coalesce(array_agg(case when v.sender_role = ''ingest'' then ''ingest'' else ''admin'' end '
    '                          order by v.received_at, v.vault_id), ''{}'') '
    '  from (select v.* from ledger.vault v '
    '         where %s and v.payload is not null '
    '           and not v.replays @> jsonb_build_array(jsonb_build_object(''replay_id'', $1)) '
    '         order by v.received_at, v.vault_id limit $2) v',
    v_where)
    into v_clients, v_received, v_vault_ids, v_payloads, v_senders
    using v_replay_id::text, p_max_rows;
  v_n := coalesce(array_length(v_vault_ids, 1), 0);

  -- Through the ingest path, one call per original sender: an ingest token's rows are replayed
  -- bound to the client they were attributed to, exactly as when they were received. The claims'
  -- jti becomes the replay rows' token_id, which identifies them below.
  for v_group in
    select u.sender, u.client_id, array_agg(u.i::integer order by u.i) as idx
      from unnest(v_senders, v_clients) with ordinality u(sender, client_id, i)
     group by u.sender, u.client_id
  loop
    perform set_config('request.jwt.claims', jsonb_strip_nulls(jsonb_build_object(
      'role', v_group.sender,
      'client_id', case when v_group.sender = 'ingest' then nullif(v_group.client_id, '') end,
      'sub', 'replay', 'jti', v_replay_id))::text, true);
    perform ledger._ingest_batch(
      'replay',
      (select array_agg(v_offset + i order by i) from unnest(v_group.idx) i),
      (select array_agg(v_payloads[i] order by i) from unnest(v_group.idx) i),
      array_fill(null::text, array[array_length(v_group.idx, 1)]),
      array_fill(null::text, array[array_length(v_group.idx, 1)]));
  end loop;
  perform set_config('request.jwt.claims', coalesce(v_claims, ''), true);

  -- Record each replay on its original row; the replay rows are this transaction's rows of the
  -- channel 'replay' with this run's id.
  with fresh as (
    select w.position - v_offset as i, w.vault_id, w.outcome, w.errors, w.event_id
      from ledger.vault w
     where w.received_at = now() and w.channel = 'replay' and w.token_id = v_replay_id
       and w.position > v_offset and w.position <= v_offset + v_n
  ),
  recorded as (
    update ledger.vault v
       set replays = v.replays || jsonb_build_array(jsonb_build_object(
             'replay_id', v_replay_id, 'replayed_at', now(), 'outcome', f.outcome,
             'errors', f.errors, 'vault_id', f.vault_id, 'code_version', v_code_version))
      from fresh f
     where v.client_id = v_clients[f.i] and v.received_at = v_received[f.i]
       and v.vault_id = v_vault_ids[f.i]
    returning f.i, f.outcome, f.errors, f.event_id, v.vault_id
  )
  select count(*) as replayed,
         count(*) filter (where r.outcome = 'accepted') as accepted,
         count(*) filter (where r.outcome = 'duplicate') as duplicates,
         count(*) filter (where r.outcome = 'rejected') as rejected,
         coalesce(jsonb_agg(jsonb_build_object('vault_id', r.vault_id, 'event_id', r.event_id,
                                               'errors', r.errors) order by r.i)
                    filter (where r.outcome = 'rejected'), '[]') as rejections
    into v_counts
    from recorded r;

  update ledger.replays r
     set replayed = r.replayed + v_counts.replayed, accepted = r.accepted + v_counts.accepted,
         duplicates = r.duplicates + v_counts.duplicates, rejected = r.rejected + v_counts.rejected,
         updated_at = now()
   where r.replay_id = v_replay_id;

  execute format('select exists (select from ledger.vault v where %s and v.payload is not null '
                 'and not v.replays @> jsonb_build_array(jsonb_build_object(''replay_id'', $1)))',
                 v_where)
    into v_more using v_replay_id::text;

  return jsonb_build_object('replay_id', v_replay_id, 'replayed', v_counts.replayed,
                            'accepted', v_counts.accepted, 'duplicates', v_counts.duplicates,
                            'rejected', v_counts.rejected, 'rejections', v_counts.rejections,
                            'more', v_more);
end
$_$;


--
-- Name: FUNCTION _replay(p_outcome text, p_since timestamp with time zone, p_until timestamp with time zone, p_client_id text, p_replay_id uuid, p_max_rows integer, p_dry_run boolean); Type: COMMENT; Schema: ledger; Owner: -
--

COMMENT ON FUNCTION ledger._replay(p_outcome text, p_since timestamp with time zone, p_until timestamp with time zone, p_client_id text, p_replay_id uuid, p_max_rows integer, p_dry_run boolean) IS 'Replays a chunk of vault rows through the ingest path and records the outcome on each row.';


--
-- Name: _replay_filter(text); Type: FUNCTION; Schema: ledger; Owner: -
--

CREATE FUNCTION ledger._replay_filter(p_outcome text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $_$
  -- The WHERE clause fragment that selects vault rows by current outcome: the latest replay's
  -- outcome when the row was replayed, else the outcome on receipt. Spelled out for 'rejected'
  -- so that the partial index on rejected rows serves it.
  select case p_outcome
    when 'rejected' then
      $f$v.outcome = 'rejected' and coalesce(v.replays->-1->>'outcome', 'rejected') = 'rejected'$f$
    when 'accepted' then $f$coalesce(v.replays->-1->>'outcome', v.outcome) = 'accepted'$f$
    when 'duplicate' then $f$coalesce(v.replays->-1->>'outcome', v.outcome) = 'duplicate'$f$
    when 'any' then 'true'
  end
$_$;


--
-- Name: FUNCTION _replay_filter(p_outcome text); Type: COMMENT; Schema: ledger; Owner: -
--

COMMENT ON FUNCTION ledger._replay_filter(p_outcome text) IS 'SQL predicate on vault rows (alias v) for a replay''s outcome filter.';


--
-- Name: _sees_all_clients(); Type: FUNCTION; Schema: ledger; Owner: -
--

CREATE FUNCTION ledger._sees_all_clients() RETURNS boolean
    LANGUAGE sql STABLE
    AS $$
  -- Admins (and the schema owner, and superusers) see every client's billing; everyone else sees
  -- at most the client of their token. The same rule as the all_admin row-level policies.
  select pg_has_role('admin', 'usage') or pg_has_role('stepledger_owner', 'usage')
$$;


--
-- Name: FUNCTION _sees_all_clients(); Type: COMMENT; Schema: ledger; Owner: -
--

COMMENT ON FUNCTION ledger._sees_all_clients() IS 'Whether the caller sees every client (admin, owner), as the all_admin policies allow.';


--
-- Name: _sum_amounts(jsonb, text); Type: FUNCTION; Schema: ledger; Owner: -
--

CREATE FUNCTION ledger._sum_amounts(p_lines jsonb, p_kind text) RETURNS numeric
    LANGUAGE sql IMMUTABLE
    AS $$
  -- Sum of the (already rounded) line amounts of one kind, or of every line when p_kind is null.
  select coalesce(sum((l->>'amount')::numeric), 0)
    from jsonb_array_elements(p_lines) l
   where p_kind is null or l->>'kind' = p_kind
$$;


--
-- Name: FUNCTION _sum_amounts(p_lines jsonb, p_kind text); Type: COMMENT; Schema: ledger; Owner: -
--

COMMENT ON FUNCTION ledger._sum_amounts(p_lines jsonb, p_kind text) IS 'Sum of invoice line amounts, of one kind or all.';


--
-- Name: _usage_fresh(text, date); Type: FUNCTION; Schema: ledger; Owner: -
--

CREATE FUNCTION ledger._usage_fresh(p_client_id text, p_period date) RETURNS boolean
    LANGUAGE sql STABLE
    AS $$
  -- True when the materialized view (as the caller sees it) holds every change to this client's
  -- usage in this period: no change row whose transaction the last refresh could not see.
  select coalesce((
    select not exists (
             select from ledger.billing_changes ch
              where (ch.client_id = p_client_id or ch.client_id is null)
                and ch.period_from <= p_period and p_period <= ch.period_to
                and not pg_visible_in_snapshot(ch.xid, r.snapshot))
      from ledger.billing_refreshes r
     order by r.refresh_id desc
     limit 1), false)
$$;


--
-- Name: FUNCTION _usage_fresh(p_client_id text, p_period date); Type: COMMENT; Schema: ledger; Owner: -
--

COMMENT ON FUNCTION ledger._usage_fresh(p_client_id text, p_period date) IS 'Whether ledger.usage_lines_monthly is current for one client and period.';


--
-- Name: _usage_lines(text, date, date); Type: FUNCTION; Schema: ledger; Owner: -
--

CREATE FUNCTION ledger._usage_lines(p_client_id text, p_from date, p_to date) RETURNS TABLE(client_id text, period date, pipeline text, step text, unit_price numeric, priced boolean, currency text, completed_steps bigint, units numeric, amount numeric, first_completed_at timestamp with time zone, last_completed_at timestamp with time zone)
    LANGUAGE sql STABLE
    AS $$
  -- The live usage lines: what the materialized view holds once refreshed.
  select * from ledger._usage_lines_of(p_client_id, p_from, p_to, 'job_steps')
$$;


--
-- Name: FUNCTION _usage_lines(p_client_id text, p_from date, p_to date); Type: COMMENT; Schema: ledger; Owner: -
--

COMMENT ON FUNCTION ledger._usage_lines(p_client_id text, p_from date, p_to date) IS 'Live usage lines of one client (null: all) for periods [p_from, p_to); the query of ledger.usage_lines_monthly.';


--
-- Name: _usage_lines_of(text, date, date, text); Type: FUNCTION; Schema: ledger; Owner: -
--

CREATE FUNCTION ledger._usage_lines_of(p_client_id text, p_from date, p_to date, p_source text) RETURNS TABLE(client_id text, period date, pipeline text, step text, unit_price numeric, priced boolean, currency text, completed_steps bigint, units numeric, amount numeric, first_completed_at timestamp with time zone, last_completed_at timestamp with time zone)
    LANGUAGE sql STABLE
    AS $$
  -- Usage lines of one client (or all, when null) for periods in [p_from, p_to) (all when null).
  -- p_source 'job_steps': charges from ledger.job_steps, as maintained at ingest (the product);
  -- p_source 'events': recomputed from the accepted raw events (the reference, and the baseline
  -- the benchmark compares with). One statement, inlined by the planner, so the filters reach
  -- the indexes. Runs with the caller's rights: row-level security applies.
  with charges as (
    select js.client_id, js.job_id, js.pipeline, js.step,
           coalesce(js.billed_units, 0) as units, js.completed_at
      from ledger.job_steps js
     where p_source = 'job_steps'
       and js.completed_at is not null
       and (p_client_id is null or js.client_id = p_client_id)
       and (p_from is null or js.completed_at >= ledger._month_start(p_from))
       and (p_to is null or js.completed_at < ledger._month_start(p_to))
    union all
    select f.client_id, f.job_id, f.pipeline, f.step, f.units, f.completed_at
      from ledger._charges_from_events(p_client_id, p_from, p_to) f
     where p_source = 'events'
  ),
  -- Each price row is in force from its effective_from until the next row of the same
  -- (client or default, pipeline, step, currency); of two rows with the same effective_from the
  -- later recorded one wins.
  price_rows as (
    select p.price_id, p.client_id, p.pipeline, p.step, p.currency, p.unit_price, p.tiers,
           p.effective_from,
           lead(p.effective_from) over (partition by p.client_id, p.pipeline, p.step, p.currency
                                        order by p.effective_from, p.price_id) as until
      from ledger.prices p
  ),
  priced as (
    -- A client's own price beats the default; a charge with neither is unpriced (billed at 0).
    select ch.client_id, ch.job_id, ch.pipeline, ch.step, ch.units, ch.completed_at,
           ledger._month(ch.completed_at) as period, cl.currency,
           coalesce(cp.price_id, dp.price_id) as price_id,
           coalesce(cp.unit_price, dp.unit_price) as base_price,
           coalesce(cp.tiers, dp.tiers) <> '[]'::jsonb as tiered
      from charges ch
      join ledger.clients cl on cl.client_id = ch.client_id
      left join price_rows cp
             on cp.client_id = ch.client_id and cp.pipeline = ch.pipeline and cp.step = ch.step
            and cp.currency = cl.currency
            and cp.effective_from <= ch.completed_at
            and (cp.until is null or ch.completed_at < cp.until)
      left join price_rows dp
             on dp.client_id is null and dp.pipeline = ch.pipeline and dp.step = ch.step
            and dp.currency = cl.currency
            and dp.effective_from <= ch.completed_at
            and (dp.until is null or ch.completed_at < dp.until)
  ),
  -- Graduated tiers count units per client, month, pipeline and step, in order of completion
  -- (then job id). Only months where some charge has a tiered price need that running total.
  tiered_months as (
    select distinct p.client_id, p.period, p.pipeline, p.step from priced p where p.tiered
  ),
  flat as (
    select p.client_id, p.period, p.pipeline, p.step, p.currency, p.completed_at,
           p.price_id is not null as priced, coalesce(p.base_price, 0) as unit_price,
           p.units as band_units, true as home
      from priced p
     where not exists (select from tiered_months t
                        where t.client_id = p.client_id and t.period = p.period
                          and t.pipeline = p.pipeline and t.step = p.step)
  ),
  running as (
    select p.*,
           sum(p.units) over (partition by p.client_id, p.period, p.pipeline, p.step
                              order by p.completed_at, p.job_id collate "C"
                              rows between unbounded preceding and current row) as cum_after
      from priced p
     where exists (select from tiered_months t
                    where t.client_id = p.client_id and t.period = p.period
                      and t.pipeline = p.pipeline and t.step = p.step)
  ),
  bands as (
    -- [lower, upper) bands of each tiered price: the base price below the first tier.
    select pr.price_id, 0::numeric as lower, (pr.tiers->0->>'from_units')::numeric as upper,
           pr.unit_price
      from price_rows pr
     where pr.tiers <> '[]'::jsonb
    union all
    select pr.price_id, (t.tier->>'from_units')::numeric,
           (pr.tiers->(t.i::integer)->>'from_units')::numeric, (t.tier->>'unit_price')::numeric
      from price_rows pr
      cross join lateral jsonb_array_elements(pr.tiers) with ordinality as t(tier, i)
  ),
  split as (
    -- A charge's units [cum_after - units, cum_after) fall into one or more bands; it counts as
    -- a completed step in the band where its first unit falls.
    select r.client_id, r.period, r.pipeline, r.step, r.currency, r.completed_at,
           r.price_id is not null as priced,
           coalesce(b.unit_price, r.base_price, 0) as unit_price,
           case when b.price_id is null then r.units
                else least(r.cum_after, coalesce(b.upper, r.cum_after))
                     - greatest(r.cum_after - r.units, b.lower) end as band_units,
           b.price_id is null
             or (b.lower <= r.cum_after - r.units
                 and (b.upper is null or r.cum_after - r.units < b.upper)) as home
      from running r
      left join bands b
             on b.price_id = r.price_id
            and (b.lower < r.cum_after or b.lower <= r.cum_after - r.units)
            and (b.upper is null or b.upper > r.cum_after - r.units)
  )
  select s.client_id, s.period, s.pipeline, s.step, s.unit_price, s.priced, s.currency,
         count(*) filter (where s.home) as completed_steps,
         sum(s.band_units) as units,
         round(sum(s.band_units * s.unit_price), 2) as amount,
         min(s.completed_at) as first_completed_at,
         max(s.completed_at) as last_completed_at
    from (select * from flat union all select * from split) s
   group by s.client_id, s.period, s.pipeline, s.step, s.unit_price, s.priced, s.currency
$$;


--
-- Name: FUNCTION _usage_lines_of(p_client_id text, p_from date, p_to date, p_source text); Type: COMMENT; Schema: ledger; Owner: -
--

COMMENT ON FUNCTION ledger._usage_lines_of(p_client_id text, p_from date, p_to date, p_source text) IS 'Usage lines per client, month, pipeline, step and unit price (contract §5), from job_steps or recomputed from the raw events.';


--
-- Name: _vault_unparsable(text, text, text); Type: FUNCTION; Schema: ledger; Owner: -
--

CREATE FUNCTION ledger._vault_unparsable(p_channel text, p_text text, p_error text) RETURNS bigint
    LANGUAGE sql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
  -- A body that is not JSON at all is kept as received, attributed to the token's client.
  insert into ledger.vault (client_id, batch_id, position, channel, raw_text, outcome, errors,
                            sender_role, token_id, code_version)
  values (coalesce(auth.client_id(), ''), gen_random_uuid(), 0, p_channel, p_text, 'rejected',
          jsonb_build_array(jsonb_build_object('path', '', 'message', p_error)),
          auth.role(), auth.token_id(), ledger.code_version())
  returning vault_id
$$;


--
-- Name: _visible_client_ids(); Type: FUNCTION; Schema: ledger; Owner: -
--

CREATE FUNCTION ledger._visible_client_ids() RETURNS text[]
    LANGUAGE plpgsql STABLE
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
-- The clients whose rows the caller may see: ledger.clients as the caller sees it under its
-- row-level security. plpgsql, so it is never inlined into a view that runs as the view's owner.
begin
  return coalesce((select array_agg(c.client_id::text) from ledger.clients c), '{}');
end
$$;


--
-- Name: FUNCTION _visible_client_ids(); Type: COMMENT; Schema: ledger; Owner: -
--

COMMENT ON FUNCTION ledger._visible_client_ids() IS 'Client ids visible to the caller under the row-level security of ledger.clients.';


--
-- Name: clients; Type: TABLE; Schema: ledger; Owner: -
--

CREATE TABLE ledger.clients (
    client_id ledger.slug NOT NULL,
    name text NOT NULL,
    currency text DEFAULT 'EUR'::text NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT clients_currency_check CHECK ((currency ~ '^[A-Z]{3}$'::text)),
    CONSTRAINT clients_name_check CHECK (((length(name) >= 1) AND (length(name) <= 200)))
);


--
-- Name: add_client(text, text, text); Type: FUNCTION; Schema: ledger; Owner: -
--

CREATE FUNCTION ledger.add_client(p_client_id text, p_name text, p_currency text DEFAULT 'EUR'::text) RETURNS ledger.clients
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $_$
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
$_$;


--
-- Name: FUNCTION add_client(p_client_id text, p_name text, p_currency text); Type: COMMENT; Schema: ledger; Owner: -
--

COMMENT ON FUNCTION ledger.add_client(p_client_id text, p_name text, p_currency text) IS 'Adds a client (or renames it / changes its currency).';


--
-- Name: code_version(); Type: FUNCTION; Schema: ledger; Owner: -
--

CREATE FUNCTION ledger.code_version() RETURNS text
    LANGUAGE sql STABLE
    AS $$
  select code_version from ledger.code_versions order by installed_at desc, code_version limit 1
$$;


--
-- Name: FUNCTION code_version(); Type: COMMENT; Schema: ledger; Owner: -
--

COMMENT ON FUNCTION ledger.code_version() IS 'The version of the code now processing events, recorded by the migration runner.';


--
-- Name: ensure_partitions(integer); Type: FUNCTION; Schema: ledger; Owner: -
--

CREATE FUNCTION ledger.ensure_partitions(p_months_ahead integer DEFAULT 3) RETURNS integer
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
-- Creates the monthly partitions of the vault and the events, from last month to p_months_ahead
-- months ahead. Rows never land in the default partitions while this runs often enough (migrate,
-- `stepledger up` and the scheduler call it). Returns how many partitions it created.
declare
  v_parent text;
  v_month date;
  v_name text;
  v_created integer := 0;
begin
  foreach v_parent in array array['vault', 'events'] loop
    for v_month in
      -- Months are UTC calendar months, whatever the session's time zone.
      select generate_series(date_trunc('month', (now() at time zone 'UTC') - interval '1 month'),
                             date_trunc('month', (now() at time zone 'UTC')
                                                 + make_interval(months => p_months_ahead)),
                             interval '1 month')::date
    loop
      v_name := format('%s_%s', v_parent, to_char(v_month, 'YYYY_MM'));
      if to_regclass(format('ledger.%I', v_name)) is null then
        execute format(
          'create table ledger.%I partition of ledger.%I for values from (%L) to (%L)',
          v_name, v_parent, v_month::timestamp at time zone 'UTC',
          (v_month + interval '1 month')::timestamp at time zone 'UTC');
        v_created := v_created + 1;
      end if;
    end loop;
  end loop;
  return v_created;
end
$$;


--
-- Name: FUNCTION ensure_partitions(p_months_ahead integer); Type: COMMENT; Schema: ledger; Owner: -
--

COMMENT ON FUNCTION ledger.ensure_partitions(p_months_ahead integer) IS 'Creates the monthly vault and events partitions from last month to N months ahead.';


--
-- Name: pipeline_v1_schema(); Type: FUNCTION; Schema: ledger; Owner: -
--

CREATE FUNCTION ledger.pipeline_v1_schema() RETURNS json
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $_$select '{"$id":"https://stepledger.dev/schemas/pipeline.v1.json","$schema":"https://json-schema.org/draft/2020-12/schema","additionalProperties":false,"description":"A pipeline and its ordered steps, registered with `stepledger pipeline add FILE.json`.","properties":{"description":{"maxLength":2000,"type":"string"},"pipeline":{"pattern":"^[a-z0-9][a-z0-9_-]{0,62}$","type":"string"},"stall_timeout":{"description":"How long a running job may go without an event before it counts as stalled (PostgreSQL interval, e.g. ''2 hours'' or ''PT2H'').","maxLength":50,"minLength":1,"type":"string"},"steps":{"items":{"additionalProperties":false,"properties":{"data_schema":{"description":"JSON Schema for the event''s `data` object.","type":"object"},"description":{"maxLength":2000,"type":"string"},"key":{"pattern":"^[a-z0-9][a-z0-9_-]{0,62}$","type":"string"},"title":{"maxLength":200,"minLength":1,"type":"string"}},"required":["key","title"],"type":"object"},"maxItems":1000,"minItems":1,"type":"array"},"title":{"maxLength":200,"minLength":1,"type":"string"}},"required":["pipeline","title","steps"],"title":"Pipeline definition v1","type":"object"}'::json$_$;


--
-- Name: FUNCTION pipeline_v1_schema(); Type: COMMENT; Schema: ledger; Owner: -
--

COMMENT ON FUNCTION ledger.pipeline_v1_schema() IS 'The JSON Schema in schemas/pipeline.v1.json.';


--
-- Name: refresh_analytics(interval); Type: FUNCTION; Schema: ledger; Owner: -
--

CREATE FUNCTION ledger.refresh_analytics(p_max_age interval DEFAULT '00:00:00'::interval) RETURNS jsonb
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
-- Refreshes the analytics materialized views concurrently (readers are never blocked), daily
-- outcomes before their all-time roll-up, and records each one's freshness. Views refreshed less
-- than p_max_age ago are left alone; when another refresh is running this one returns at once.
-- Called by `stepledger analytics refresh` (cron), by admins through POST /rpc/refresh_analytics.
declare
  v_view text;
  v_started timestamptz;
  v_rows bigint;
  v_done jsonb := '[]';
begin
  if not pg_try_advisory_xact_lock(hashtext('stepledger.refresh_analytics')) then
    return jsonb_build_object('refreshed', v_done, 'skipped', 'another refresh is running');
  end if;
  foreach v_view in array array['step_outcomes_daily', 'step_outcomes_total', 'step_timings_daily'] loop
    if exists (select from ledger.analytics_refreshes r
                where r.view_name = v_view and r.refreshed_at > clock_timestamp() - p_max_age) then
      continue;
    end if;
    v_started := clock_timestamp();
    execute format('refresh materialized view concurrently ledger.%I', v_view);
    execute format('select count(*) from ledger.%I', v_view) into v_rows;
    insert into ledger.analytics_refreshes as r (view_name, refreshed_at, duration_ms, row_count)
    values (v_view, v_started,
            round(extract(epoch from clock_timestamp() - v_started)::numeric * 1000, 1), v_rows)
    on conflict (view_name) do update
       set refreshed_at = excluded.refreshed_at, duration_ms = excluded.duration_ms,
           row_count = excluded.row_count;
    v_done := v_done || jsonb_build_object('view', v_view, 'rows', v_rows,
      'duration_ms', round(extract(epoch from clock_timestamp() - v_started)::numeric * 1000, 1));
  end loop;
  return jsonb_build_object('refreshed', v_done, 'skipped', null);
end
$$;


--
-- Name: FUNCTION refresh_analytics(p_max_age interval); Type: COMMENT; Schema: ledger; Owner: -
--

COMMENT ON FUNCTION ledger.refresh_analytics(p_max_age interval) IS 'Refreshes the analytics materialized views concurrently, skipping those younger than the given age.';


--
-- Name: refresh_usage(text, boolean); Type: FUNCTION; Schema: ledger; Owner: -
--

CREATE FUNCTION ledger.refresh_usage(p_requested_by text DEFAULT NULL::text, p_concurrently boolean DEFAULT true) RETURNS jsonb
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    SET work_mem TO '64MB'
    AS $$
-- Refreshes ledger.usage_lines_monthly (concurrently: readers and ingest are never blocked) and
-- records the snapshot it started from; change-log rows that snapshot saw are absorbed. Only one
-- refresh runs at a time: a second caller returns at once with refreshed = false.
declare
  v_started timestamptz := clock_timestamp();
  v_snapshot pg_snapshot;
  v_concurrently boolean;
  v_absorbed bigint;
  v_rows bigint;
  v_id bigint;
  v_finished timestamptz;
begin
  if not pg_try_advisory_xact_lock(hashtext('stepledger.refresh_usage')) then
    return jsonb_build_object('refreshed', false, 'reason', 'another refresh is running');
  end if;
  -- Taken before the refresh statement, whose own snapshot is at least as recent: every change
  -- visible here is in the refreshed view.
  v_snapshot := pg_current_snapshot();
  v_concurrently := p_concurrently and (select c.relispopulated from pg_class c
                                         where c.oid = 'ledger.usage_lines_monthly'::regclass);
  if v_concurrently then
    refresh materialized view concurrently ledger.usage_lines_monthly;
  else
    refresh materialized view ledger.usage_lines_monthly;
  end if;
  delete from ledger.billing_changes ch where pg_visible_in_snapshot(ch.xid, v_snapshot);
  get diagnostics v_absorbed = row_count;
  select count(*) into v_rows from ledger.usage_lines_monthly;
  v_finished := clock_timestamp();
  insert into ledger.billing_refreshes (started_at, finished_at, snapshot, duration_ms, line_rows,
                                        changes_absorbed, concurrent, requested_by)
  values (v_started, v_finished, v_snapshot,
          round(extract(epoch from v_finished - v_started) * 1000, 1), v_rows, v_absorbed,
          v_concurrently, coalesce(p_requested_by, (ledger._actor()).actor))
  returning refresh_id into v_id;
  delete from ledger.billing_refreshes r where r.refresh_id < v_id - 1000;
  return jsonb_build_object('refreshed', true, 'refresh_id', v_id, 'started_at', v_started,
                            'finished_at', v_finished,
                            'duration_ms', round(extract(epoch from v_finished - v_started) * 1000, 1),
                            'line_rows', v_rows, 'changes_absorbed', v_absorbed,
                            'concurrently', v_concurrently);
end
$$;


--
-- Name: FUNCTION refresh_usage(p_requested_by text, p_concurrently boolean); Type: COMMENT; Schema: ledger; Owner: -
--

COMMENT ON FUNCTION ledger.refresh_usage(p_requested_by text, p_concurrently boolean) IS 'Refreshes the usage materialized view (concurrently unless asked otherwise) and records it; the scheduler, pg_cron and POST /rpc/refresh_usage call it.';


--
-- Name: register_pipeline(jsonb); Type: FUNCTION; Schema: ledger; Owner: -
--

CREATE FUNCTION ledger.register_pipeline(p_definition jsonb) RETURNS jsonb
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
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

  -- A step's data schema must itself be a valid JSON Schema.
  select s->>'key' into v_missing
    from jsonb_array_elements(p_definition->'steps') s
   where s ? 'data_schema' and not public.jsonschema_is_valid((s->'data_schema')::json)
   limit 1;
  if v_missing is not null then
    raise exception 'invalid pipeline definition: data_schema of step "%" is not a valid JSON Schema', v_missing
      using errcode = 'SL101';
  end if;

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


--
-- Name: FUNCTION register_pipeline(p_definition jsonb); Type: COMMENT; Schema: ledger; Owner: -
--

COMMENT ON FUNCTION ledger.register_pipeline(p_definition jsonb) IS 'Registers a pipeline definition (schemas/pipeline.v1.json) or a new version of it.';


--
-- Name: step_event_v1_schema(); Type: FUNCTION; Schema: ledger; Owner: -
--

CREATE FUNCTION ledger.step_event_v1_schema() RETURNS json
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $_$select '{"$id":"https://stepledger.dev/schemas/step_event.v1.json","$schema":"https://json-schema.org/draft/2020-12/schema","additionalProperties":false,"description":"One event per pipeline step transition (started, completed, failed, skipped).","else":{"properties":{"error":false}},"if":{"properties":{"status":{"const":"failed"}},"required":["status"]},"properties":{"attempt":{"default":1,"description":"Attempt number of this step in this job; default 1.","maximum":1000000,"minimum":1,"type":"integer"},"client_id":{"description":"The billed organisation.","pattern":"^[a-z0-9][a-z0-9_-]{0,62}$","type":"string"},"data":{"description":"Step metrics, validated by the step''s own schema when one is registered.","type":"object"},"error":{"additionalProperties":false,"description":"Required when status is failed, forbidden otherwise.","properties":{"code":{"maxLength":100,"minLength":1,"type":"string"},"message":{"maxLength":10000,"type":"string"},"retryable":{"type":"boolean"}},"required":["code","message"],"type":"object"},"event_id":{"description":"Chosen by the sender; the deduplication key, unique per client.","maxLength":128,"minLength":1,"type":"string"},"job_id":{"description":"The job this step belongs to; unique per client.","maxLength":200,"minLength":1,"type":"string"},"occurred_at":{"description":"RFC 3339 date-time with an offset (Z or +hh:mm).","format":"date-time","pattern":"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])[Tt]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,9})?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$","type":"string"},"pipeline":{"description":"A registered pipeline, e.g. botimage.","pattern":"^[a-z0-9][a-z0-9_-]{0,62}$","type":"string"},"source":{"description":"Host or site that ran the step.","maxLength":200,"type":"string"},"status":{"description":"The transition this event reports.","enum":["started","completed","failed","skipped"]},"step":{"description":"A step key registered for that pipeline.","pattern":"^[a-z0-9][a-z0-9_-]{0,62}$","type":"string"},"units":{"default":1,"description":"Billable quantity of a completed step (e.g. images); default 1.","maximum":1000000000000,"minimum":0,"type":"number"}},"required":["event_id","client_id","job_id","pipeline","step","status","occurred_at"],"then":{"required":["error"]},"title":"Step event, envelope v1","type":"object"}'::json$_$;


--
-- Name: FUNCTION step_event_v1_schema(); Type: COMMENT; Schema: ledger; Owner: -
--

COMMENT ON FUNCTION ledger.step_event_v1_schema() IS 'The JSON Schema in schemas/step_event.v1.json.';


--
-- Name: step_event_v1_valid(jsonb); Type: FUNCTION; Schema: ledger; Owner: -
--

CREATE FUNCTION ledger.step_event_v1_valid(payload jsonb) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $_$-- Generated from schemas/step_event.v1.json by stepledger.schema_sql (ADR 0003).
select (case when jsonb_typeof(payload) = 'object' then ((payload ?& array['event_id', 'client_id', 'job_id', 'pipeline', 'step', 'status', 'occurred_at']::text[] and (case when jsonb_typeof((payload -> 'event_id')) = 'string' then abs(2 * char_length((payload ->> 'event_id')) - 129) <= 127 else false end) and (case when jsonb_typeof((payload -> 'client_id')) = 'string' then (abs(2 * char_length((payload ->> 'client_id')) - 64) <= 62 and (payload ->> 'client_id') ~ E'^[a-z0-9][a-z0-9\\_\\-]*$') else false end) and (case when jsonb_typeof((payload -> 'job_id')) = 'string' then abs(2 * char_length((payload ->> 'job_id')) - 201) <= 199 else false end) and (case when jsonb_typeof((payload -> 'pipeline')) = 'string' then (abs(2 * char_length((payload ->> 'pipeline')) - 64) <= 62 and (payload ->> 'pipeline') ~ E'^[a-z0-9][a-z0-9\\_\\-]*$') else false end) and (case when jsonb_typeof((payload -> 'step')) = 'string' then (abs(2 * char_length((payload ->> 'step')) - 64) <= 62 and (payload ->> 'step') ~ E'^[a-z0-9][a-z0-9\\_\\-]*$') else false end) and (payload -> 'status') in ('"started"'::jsonb, '"completed"'::jsonb, '"failed"'::jsonb, '"skipped"'::jsonb) and (case when jsonb_typeof((payload -> 'occurred_at')) = 'string' then (payload ->> 'occurred_at') ~ E'^[0-9]{4}\\-(?:0[1-9]|1[0-2])\\-(?:0[1-9]|[12][0-9]|3[01])[Tt](?:[01][0-9]|2[0-3])\\:[0-5][0-9]\\:[0-5][0-9](?:\\.[0-9]{1,9})?(?:[Zz]|[\\+\\-](?:[01][0-9]|2[0-3])\\:[0-5][0-9])$' else false end) and (case coalesce(jsonb_typeof((payload -> 'attempt')), '') when 'number' then (case when scale(((payload -> 'attempt'))::numeric) = 0 then ((payload -> 'attempt'))::numeric >= 1 and ((payload -> 'attempt'))::numeric <= 1000000 else ((payload -> 'attempt'))::numeric >= 0.999999999999999944488848768742172978818416595458984375 and ((payload -> 'attempt'))::numeric <= 1000000.0000000000582076609134674072265625 and (case when abs(((payload -> 'attempt'))::numeric) >= 179769313486231580793728971405303415079934132710037826936173778980444968292764750946649017977587207096330286416692887910946555547851940402630657488671505820681908902000708383676273854845817711531764475730270069855571366959622842914819860834936475292719074168444365510704342711559699508093042880177904174497792 then false when abs(((payload -> 'attempt'))::numeric) >= 4503599627370495.75 then true when abs(((payload -> 'attempt'))::numeric) < 0.5 then abs(((payload -> 'attempt'))::numeric) <= 0.0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000024703282292062327208828439643411068618252990130716238221279284125033775363510437593264991818081799618989828234772285886546332835517796989819938739800539093906315035659515570226392290858392449105184435931802849936536152500319370457678249219365623669863658480757001585769269903706311928279558551332927834338409351978015531246597263579574622766465272827220056374006485499977096599470454020828166226237857393450736339007967761930577506740176324673600968951340535537458516661134223766678604162159680461914467291840300530057530849048765391711386591646239524912623653881879636239373280423891018672348497668235089863388587925628302755995657524455507255189313690836254779186948667994968324049705821028513185451396213837722826145437693412532098591327667236328125 else ((payload -> 'attempt'))::numeric::float8 = trunc(((payload -> 'attempt'))::numeric::float8) end) end) when '' then true else false end) and (case coalesce(jsonb_typeof((payload -> 'units')), '') when 'number' then ((payload -> 'units'))::numeric >= -0.0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000024703282292062327208828439643411068618252990130716238221279284125033775363510437593264991818081799618989828234772285886546332835517796989819938739800539093906315035659515570226392290858392449105184435931802849936536152500319370457678249219365623669863658480757001585769269903706311928279558551332927834338409351978015531246597263579574622766465272827220056374006485499977096599470454020828166226237857393450736339007967761930577506740176324673600968951340535537458516661134223766678604162159680461914467291840300530057530849048765391711386591646239524912623653881879636239373280423891018672348497668235089863388587925628302755995657524455507255189313690836254779186948667994968324049705821028513185451396213837722826145437693412532098591327667236328125 and ((payload -> 'units'))::numeric <= 1000000000000.00006103515625 when '' then true else false end) and (case coalesce(jsonb_typeof((payload -> 'error')), '') when 'object' then ((payload -> 'error') ?& array['code', 'message']::text[] and (case when jsonb_typeof(((payload -> 'error') -> 'code')) = 'string' then abs(2 * char_length(((payload -> 'error') ->> 'code')) - 101) <= 99 else false end) and (case when jsonb_typeof(((payload -> 'error') -> 'message')) = 'string' then char_length(((payload -> 'error') ->> 'message')) <= 10000 else false end) and (case coalesce(jsonb_typeof(((payload -> 'error') -> 'retryable')), '') when 'boolean' then true when '' then true else false end) and ((payload -> 'error') - array['code', 'message', 'retryable']::text[]) = '{}'::jsonb) when '' then true else false end) and (case coalesce(jsonb_typeof((payload -> 'source')), '') when 'string' then char_length((payload ->> 'source')) <= 200 when '' then true else false end) and (case coalesce(jsonb_typeof((payload -> 'data')), '') when 'object' then true when '' then true else false end) and (payload - array['event_id', 'client_id', 'job_id', 'pipeline', 'step', 'status', 'occurred_at', 'attempt', 'units', 'error', 'source', 'data']::text[]) = '{}'::jsonb) and (case when (payload -> 'status') = '"failed"'::jsonb then payload ? 'error' else not (payload ? 'error') end)) else false end)$_$;


--
-- Name: FUNCTION step_event_v1_valid(payload jsonb); Type: COMMENT; Schema: ledger; Owner: -
--

COMMENT ON FUNCTION ledger.step_event_v1_valid(payload jsonb) IS 'True when payload matches schemas/step_event.v1.json, exactly as public.jsonb_matches_schema(ledger.step_event_v1_schema(), payload) says, without leaving SQL: generated by the migration runner (ADR 0003).';


--
-- Name: tg_billing__immutable(); Type: FUNCTION; Schema: ledger; Owner: -
--

CREATE FUNCTION ledger.tg_billing__immutable() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
-- Price book rows, minimums and finalized invoices are never changed or removed.
begin
  raise exception '% rows are immutable: % refused', tg_table_name, lower(tg_op)
    using errcode = 'SL409',
          hint = case when tg_table_name in ('prices', 'client_minimums')
                      then 'record a new row with a later effective_from'
                      else 'late changes become adjustment lines on the next open invoice' end;
end
$$;


--
-- Name: FUNCTION tg_billing__immutable(); Type: COMMENT; Schema: ledger; Owner: -
--

COMMENT ON FUNCTION ledger.tg_billing__immutable() IS 'Refuses UPDATE, DELETE and TRUNCATE on append-only billing tables.';


--
-- Name: tg_client_minimums__check(); Type: FUNCTION; Schema: ledger; Owner: -
--

CREATE FUNCTION ledger.tg_client_minimums__check() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
-- Before a monthly minimum is stored: client, currency and amount are checked, who recorded it
-- is filled in, and the usage view learns about it.
declare
  v_client_currency text;
  v_actor record;
begin
  select c.currency into v_client_currency from ledger.clients c where c.client_id = new.client_id;
  if not found then
    raise exception 'unknown client "%"', new.client_id using errcode = 'SL404';
  end if;
  new.currency := coalesce(new.currency, v_client_currency);
  if new.currency <> v_client_currency then
    raise exception 'client "%" is billed in %, not %', new.client_id, v_client_currency, new.currency
      using errcode = 'SL403';
  end if;
  if new.effective_from is null or extract(day from new.effective_from) <> 1 then
    raise exception 'a monthly minimum starts on the first day of a month, not %', new.effective_from
      using errcode = 'SL411';
  end if;
  if new.monthly_minimum is null or new.monthly_minimum < 0 then
    raise exception 'monthly_minimum must be a number >= 0' using errcode = 'SL411';
  end if;
  new.monthly_minimum := trim_scale(new.monthly_minimum);
  v_actor := ledger._actor();
  new.recorded_at := now();
  new.recorded_by := v_actor.actor;
  new.recorded_role := v_actor.role;
  new.recorded_token := v_actor.token;
  new.recorded_via := v_actor.via;
  insert into ledger.billing_changes (client_id, period_from, period_to, reason)
  values (new.client_id, new.effective_from, 'infinity', 'minimum');
  perform pg_notify('stepledger_scheduler', 'refresh_usage');
  return new;
end
$$;


--
-- Name: FUNCTION tg_client_minimums__check(); Type: COMMENT; Schema: ledger; Owner: -
--

COMMENT ON FUNCTION ledger.tg_client_minimums__check() IS 'Validates and attributes a new monthly minimum.';


--
-- Name: tg_clients__currency_change(); Type: FUNCTION; Schema: ledger; Owner: -
--

CREATE FUNCTION ledger.tg_clients__currency_change() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
-- A client's currency may change only while none of its invoices is finalized (adjustments of a
-- finalized invoice must be in its currency); the change reprices every open period.
begin
  if new.currency is distinct from old.currency then
    if exists (select from ledger.invoices i where i.client_id = old.client_id) then
      raise exception 'client "%" has finalized invoices in %; its currency cannot change',
        old.client_id, old.currency
        using errcode = 'SL410', hint = 'bill the new currency under a new client id';
    end if;
    insert into ledger.billing_changes (client_id, period_from, period_to, reason)
    values (old.client_id, '-infinity', 'infinity', 'currency');
  end if;
  return new;
end
$$;


--
-- Name: FUNCTION tg_clients__currency_change(); Type: COMMENT; Schema: ledger; Owner: -
--

COMMENT ON FUNCTION ledger.tg_clients__currency_change() IS 'Guards and logs a change of a client''s billing currency.';


--
-- Name: tg_events__apply_progress(); Type: FUNCTION; Schema: ledger; Owner: -
--

CREATE FUNCTION ledger.tg_events__apply_progress() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
declare
  v_xid bigint := pg_current_xact_id()::text::bigint;
begin
  -- 1. Lock the batch's jobs: one advisory lock per job (64-bit hash of client and job id).
  perform pg_advisory_xact_lock(k.key)
     from (select distinct hashtextextended(n.client_id || '/' || n.job_id, 0) as key
             from new_events n
            order by 1) k;

  -- 2. Step runs: merge the batch into each attempt. A terminal status (completed, failed,
  --    skipped) beats started whatever the arrival order; between terminal events the later
  --    occurred_at decides. started_at is the earliest started event.
  with per_attempt as (
    select distinct on (n.client_id, n.job_id, n.step, n.attempt)
           n.client_id, n.job_id, n.step, n.attempt, n.pipeline, n.status, n.occurred_at,
           n.units, n.error_code, n.error_message, n.error_retryable, n.source,
           min(n.occurred_at) filter (where n.status = 'started') over w as started_at,
           count(*) over w as events
      from new_events n
    window w as (partition by n.client_id, n.job_id, n.step, n.attempt
                 order by n.status <> 'started' desc, n.occurred_at desc, n.received_at desc,
                          n.vault_id desc
                 rows between unbounded preceding and unbounded following)
     -- the window's order is the one DISTINCT ON needs: one sort for both
     order by n.client_id, n.job_id, n.step, n.attempt,
              n.status <> 'started' desc, n.occurred_at desc, n.received_at desc, n.vault_id desc
  )
  insert into ledger.step_runs as r (client_id, job_id, step, attempt, pipeline, step_index, status,
                                     started_at, finished_at, units, error_code, error_message,
                                     error_retryable, source, decided_at, events, updated_at)
  select a.client_id, a.job_id, a.step, a.attempt, a.pipeline, s.step_index, a.status,
         a.started_at, case when a.status <> 'started' then a.occurred_at end,
         case when a.status = 'completed' then a.units end,
         a.error_code, a.error_message, a.error_retryable, a.source, a.occurred_at, a.events, now()
    from per_attempt a
    join ledger.pipeline_steps s on s.pipeline = a.pipeline and s.step = a.step
   order by a.client_id, a.job_id, a.step, a.attempt
  on conflict (client_id, job_id, step, attempt) do update
     set started_at = least(r.started_at, excluded.started_at),
         (status, finished_at, units, error_code, error_message, error_retryable, source, decided_at) =
           (select case when wins then excluded.status else r.status end,
                   case when wins then excluded.finished_at else r.finished_at end,
                   case when wins then excluded.units else r.units end,
                   case when wins then excluded.error_code else r.error_code end,
                   case when wins then excluded.error_message else r.error_message end,
                   case when wins then excluded.error_retryable else r.error_retryable end,
                   coalesce(case when wins then excluded.source else r.source end, r.source, excluded.source),
                   case when wins then excluded.decided_at else r.decided_at end
              from (select (excluded.status <> 'started' and r.status = 'started')
                        or ((excluded.status <> 'started') = (r.status <> 'started')
                            and excluded.decided_at >= r.decided_at) as wins) w),
         events = r.events + excluded.events,
         updated_at = now();

  -- 3. Job steps: the latest attempt decides the step's state; the latest completed attempt is
  --    the one billed (contract §5).
  insert into ledger.job_steps as js (client_id, job_id, step, pipeline, step_index, latest_attempt,
                                      latest_status, latest_at, billed_attempt, billed_units,
                                      completed_at)
  select r.client_id, r.job_id, r.step, min(r.pipeline), min(r.step_index),
         max(r.attempt),
         (array_agg(r.status order by r.attempt desc))[1],
         (array_agg(r.decided_at order by r.attempt desc))[1],
         max(r.attempt) filter (where r.status = 'completed'),
         (array_agg(r.units order by r.attempt desc) filter (where r.status = 'completed'))[1],
         (array_agg(r.finished_at order by r.attempt desc) filter (where r.status = 'completed'))[1]
    from ledger.step_runs r
   where (r.client_id, r.job_id, r.step) in (select distinct n.client_id, n.job_id, n.step from new_events n)
   group by r.client_id, r.job_id, r.step
   order by r.client_id, r.job_id, r.step
  on conflict (client_id, job_id, step) do update
     set latest_attempt = excluded.latest_attempt, latest_status = excluded.latest_status,
         latest_at = excluded.latest_at, billed_attempt = excluded.billed_attempt,
         billed_units = excluded.billed_units, completed_at = excluded.completed_at,
         step_index = excluded.step_index;

  -- 4. Jobs: create or update each job once: time span, the pipeline version it runs, progress
  --    and status from its steps (contract §6), and the transaction that changed it.
  insert into ledger.jobs as j (client_id, job_id, pipeline, pipeline_version, steps_total,
                                steps_done, status, started_at, updated_at, finished_at,
                                last_error, last_error_step, last_received_at, events, changed_xid)
  select b.client_id, b.job_id, b.pipeline, v.version, t.steps_total, a.done,
         case when a.done >= t.steps_total then 'completed'
              when a.failed > 0 then 'failed'
              else 'running' end,
         least(o.started_at, b.first_at), greatest(o.updated_at, b.last_at),
         case when a.done >= t.steps_total then a.last_finished
              when a.failed > 0 then a.last_failed end,
         a.last_error, a.last_error_step, now(), coalesce(o.events, 0) + b.events, v_xid
    from (select n.client_id, n.job_id, min(n.pipeline) as pipeline, min(n.occurred_at) as first_at,
                 max(n.occurred_at) as last_at, count(*) as events
            from new_events n
           group by n.client_id, n.job_id) b
    join ledger.pipelines p on p.pipeline = b.pipeline
    left join ledger.jobs o on o.client_id = b.client_id and o.job_id = b.job_id
   cross join lateral (
     select max(ps.added_in_version) as newest_step_version,
            count(*) filter (where js.latest_status in ('completed', 'skipped')) as done,
            count(*) filter (where js.latest_status = 'failed') as failed,
            max(js.latest_at) filter (where js.latest_status in ('completed', 'skipped')) as last_finished,
            max(js.latest_at) filter (where js.latest_status = 'failed') as last_failed,
            (array_agg(js.step order by js.latest_at desc) filter (where js.latest_status = 'failed'))[1]
              as last_error_step,
            (array_agg(concat_ws(': ', r.error_code, r.error_message) order by js.latest_at desc)
               filter (where js.latest_status = 'failed'))[1] as last_error
       from ledger.job_steps js
       left join ledger.pipeline_steps ps on ps.pipeline = js.pipeline and ps.step = js.step
       left join ledger.step_runs r
              on r.client_id = js.client_id and r.job_id = js.job_id and r.step = js.step
             and r.attempt = js.latest_attempt
      where js.client_id = b.client_id and js.job_id = b.job_id
   ) a
   cross join lateral (
     -- A new job runs the current version; one that reports a step of a newer version moves to it.
     select coalesce(o.pipeline_version, p.version) as base_version,
            greatest(coalesce(o.pipeline_version, p.version), coalesce(a.newest_step_version, 0))
              as version
   ) v
   cross join lateral (
     select case when o.job_id is null and v.version = v.base_version then p.steps_total
                 when v.version = v.base_version then o.steps_total
                 else (select count(*)::integer from ledger.pipeline_steps ps
                        where ps.pipeline = b.pipeline and ps.added_in_version <= v.version)
            end as steps_total
   ) t
   order by b.client_id, b.job_id
  on conflict (client_id, job_id) do update
     set pipeline_version = excluded.pipeline_version, steps_total = excluded.steps_total,
         steps_done = excluded.steps_done, status = excluded.status,
         started_at = excluded.started_at, updated_at = excluded.updated_at,
         finished_at = excluded.finished_at, last_error = excluded.last_error,
         last_error_step = excluded.last_error_step, last_received_at = excluded.last_received_at,
         events = excluded.events, changed_xid = excluded.changed_xid;

  -- 5. Tell listeners which clients have news (docs/api.md, live updates): one notification per
  --    client and batch on channel stepledger_jobs, delivered at commit.
  perform pg_notify('stepledger_jobs',
                    json_build_object('client_id', c.client_id, 'jobs', c.jobs,
                                      'changed_xid', v_xid)::text)
     from (select n.client_id, count(distinct n.job_id) as jobs
             from new_events n group by n.client_id) c;
  return null;
end
$$;


--
-- Name: FUNCTION tg_events__apply_progress(); Type: COMMENT; Schema: ledger; Owner: -
--

COMMENT ON FUNCTION ledger.tg_events__apply_progress() IS 'Folds a batch of new events into step runs, job steps and jobs.';


--
-- Name: tg_job_steps__log_billing_delete(); Type: FUNCTION; Schema: ledger; Owner: -
--

CREATE FUNCTION ledger.tg_job_steps__log_billing_delete() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
-- Deleted steps (a rebuild) leave their month; TRUNCATE marks everything.
begin
  if tg_op = 'TRUNCATE' then
    insert into ledger.billing_changes (client_id, period_from, period_to, reason)
    values (null, '-infinity', 'infinity', 'rebuild');
  else
    insert into ledger.billing_changes (client_id, period_from, period_to, reason)
    select distinct o.client_id, ledger._month(o.completed_at), ledger._month(o.completed_at), 'rebuild'
      from old_rows o
     where o.completed_at is not null;
  end if;
  return null;
end
$$;


--
-- Name: FUNCTION tg_job_steps__log_billing_delete(); Type: COMMENT; Schema: ledger; Owner: -
--

COMMENT ON FUNCTION ledger.tg_job_steps__log_billing_delete() IS 'Logs the months of deleted billed completions.';


--
-- Name: tg_job_steps__log_billing_insert(); Type: FUNCTION; Schema: ledger; Owner: -
--

CREATE FUNCTION ledger.tg_job_steps__log_billing_insert() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
-- New steps with a completion change the usage of their client and month.
begin
  insert into ledger.billing_changes (client_id, period_from, period_to, reason)
  select distinct n.client_id, ledger._month(n.completed_at), ledger._month(n.completed_at), 'completion'
    from new_rows n
   where n.completed_at is not null;
  return null;
end
$$;


--
-- Name: FUNCTION tg_job_steps__log_billing_insert(); Type: COMMENT; Schema: ledger; Owner: -
--

COMMENT ON FUNCTION ledger.tg_job_steps__log_billing_insert() IS 'Logs the (client, month) of new billed completions.';


--
-- Name: tg_job_steps__log_billing_update(); Type: FUNCTION; Schema: ledger; Owner: -
--

CREATE FUNCTION ledger.tg_job_steps__log_billing_update() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
-- A step whose billed completion changed (a later attempt completed, other units) changes the
-- month it left and the month it joined.
begin
  insert into ledger.billing_changes (client_id, period_from, period_to, reason)
  select distinct x.client_id, x.period, x.period, 'completion'
    from old_rows o
    join new_rows n on n.client_id = o.client_id and n.job_id = o.job_id and n.step = o.step
   cross join lateral (values (n.client_id, ledger._month(o.completed_at)),
                              (n.client_id, ledger._month(n.completed_at))) as x(client_id, period)
   where (o.completed_at, o.billed_units, o.pipeline) is distinct from
         (n.completed_at, n.billed_units, n.pipeline)
     and x.period is not null;
  return null;
end
$$;


--
-- Name: FUNCTION tg_job_steps__log_billing_update(); Type: COMMENT; Schema: ledger; Owner: -
--

COMMENT ON FUNCTION ledger.tg_job_steps__log_billing_update() IS 'Logs the months whose billed completions changed.';


--
-- Name: tg_prices__check(); Type: FUNCTION; Schema: ledger; Owner: -
--

CREATE FUNCTION ledger.tg_prices__check() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $_$
-- Before a price row is stored: the step exists, the currency matches the client's, the numbers
-- are sane; who recorded it is filled in; the usage view learns that prices changed.
declare
  v_client_currency text;
  v_actor record;
begin
  if not exists (select from ledger.pipeline_steps s where s.pipeline = new.pipeline and s.step = new.step) then
    raise exception 'pipeline "%" has no step "%"', new.pipeline, new.step
      using errcode = 'SL401', hint = 'register the pipeline first (stepledger pipeline add)';
  end if;
  if new.client_id is not null then
    select c.currency into v_client_currency from ledger.clients c where c.client_id = new.client_id;
    if not found then
      raise exception 'unknown client "%"', new.client_id using errcode = 'SL404';
    end if;
    new.currency := coalesce(new.currency, v_client_currency);
    if new.currency <> v_client_currency then
      raise exception 'client "%" is billed in %, not %', new.client_id, v_client_currency, new.currency
        using errcode = 'SL403';
    end if;
  else
    new.currency := coalesce(new.currency, 'EUR');
  end if;
  if new.currency !~ '^[A-Z]{3}$' then
    raise exception 'invalid currency "%"', new.currency using errcode = 'SL402', hint = 'an ISO 4217 code such as EUR';
  end if;
  if new.unit_price is null or new.unit_price < 0 then
    raise exception 'unit_price must be a number >= 0, not %', coalesce(new.unit_price::text, 'null')
      using errcode = 'SL402';
  end if;
  new.unit_price := trim_scale(new.unit_price);
  new.tiers := ledger._normalized_tiers(new.tiers);
  new.effective_from := coalesce(new.effective_from, now());
  v_actor := ledger._actor();
  new.recorded_at := now();
  new.recorded_by := v_actor.actor;
  new.recorded_role := v_actor.role;
  new.recorded_token := v_actor.token;
  new.recorded_via := v_actor.via;

  insert into ledger.billing_changes (client_id, period_from, period_to, reason)
  values (new.client_id, ledger._month(new.effective_from), 'infinity', 'price');
  -- The stack's scheduler refreshes the usage view soon after the commit (loader/stepledger/scheduler.py).
  perform pg_notify('stepledger_scheduler', 'refresh_usage');
  return new;
end
$_$;


--
-- Name: FUNCTION tg_prices__check(); Type: COMMENT; Schema: ledger; Owner: -
--

COMMENT ON FUNCTION ledger.tg_prices__check() IS 'Validates and attributes a new price book row.';


--
-- Name: tg_vault__append_only(); Type: FUNCTION; Schema: ledger; Owner: -
--

CREATE FUNCTION ledger.tg_vault__append_only() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
begin
  if current_user = 'stepledger_owner' then
    return case when tg_op = 'DELETE' then old else new end;
  end if;
  raise exception 'the raw vault is append-only: % by % refused', lower(tg_op), current_user
    using errcode = 'SL205', hint = 'vault rows are kept forever; replay records outcomes as the owner';
end
$$;


--
-- Name: FUNCTION tg_vault__append_only(); Type: COMMENT; Schema: ledger; Owner: -
--

COMMENT ON FUNCTION ledger.tg_vault__append_only() IS 'Refuses UPDATE, DELETE and TRUNCATE of the vault for every role but the owner.';


--
-- Name: _jsonschema_boot(); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public._jsonschema_boot() RETURNS void
    LANGUAGE plpython3u
    AS $_$
import json
import re
from urllib.parse import urldefrag, urljoin

import sys

import fastjsonschema
from fastjsonschema.exceptions import JsonSchemaDefinitionException, JsonSchemaValueException
from operator import methodcaller

from jsonschema import exceptions as js_exceptions
from jsonschema._legacy_validators import ignore_ref_siblings
from jsonschema import validators as js_validators

GD_KEY = "stepledger.jsonschema/1"
MAX_ENTRIES = 256
MEMO_ENTRIES = 4096  # recent instance results kept per schema (see make_match)
INVALID = "22023"  # invalid_parameter_value

loads = json.loads
D2020 = js_validators.Draft202012Validator
D7 = js_validators.Draft7Validator
D6 = js_validators.Draft6Validator
D4 = js_validators.Draft4Validator
OLD = (D4, D6, D7)
DRAFTS = {
    "json-schema.org/draft/2020-12/schema": D2020,
    "json-schema.org/draft/2019-09/schema": js_validators.Draft201909Validator,
    "json-schema.org/draft-07/schema": D7,
    "json-schema.org/draft-06/schema": D6,
    "json-schema.org/draft-04/schema": D4,
}


# ---- fixes over jsonschema 4.10.3 -------------------------------------------------------------

def json_equal(a, b):
    """Equality as JSON defines it: true is not 1, 1 is 1.0, recursively."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def enum_fixed(validator, enums, instance, schema):
    # 4.10.3 compares nested values with ==, so [0] equals [false].
    if not any(json_equal(instance, each) for each in enums):
        yield js_exceptions.ValidationError(f"{instance!r} is not one of {enums!r}")


def const_fixed(validator, const, instance, schema):
    if not json_equal(instance, const):
        yield js_exceptions.ValidationError(f"{const!r} was expected")


def unique_fixed(validator, unique, instance, schema):
    if unique and validator.is_type(instance, "array"):
        for i, item in enumerate(instance):
            if any(json_equal(item, other) for other in instance[i + 1:]):
                yield js_exceptions.ValidationError(f"{instance!r} has non-unique elements")
                return


def multiple_of_fixed(validator, dB, instance, schema):
    # A quotient that overflows a float is not a multiple (4.10.3 falls back to exact fractions,
    # which calls 1e308 a multiple of 0.123456789 once jsonb has written 1e308 as an integer).
    if not validator.is_type(instance, "number"):
        return
    if isinstance(dB, float) or isinstance(instance, float):
        try:
            quotient = instance / dB
            failed = int(quotient) != quotient
        except OverflowError:
            failed = True
    else:
        failed = instance % dB
    if failed:
        yield js_exceptions.ValidationError(f"{instance!r} is not a multiple of {dB}")


def ecma_pattern(pattern):
    """ECMA-262's `$` (no m flag) matches only at the very end; Python's also matches before a
    final newline, so "st-mary\\n" would pass ^[a-z-]+$. Rewrite unescaped `$` outside character
    classes to \\Z, as the fast path does."""
    out, i, in_class = [], 0, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            out.append(pattern[i:i + 2])
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
        elif c == "$":
            c = "\\Z"
        out.append(c)
        i += 1
    return "".join(out)


PATTERNS = {}


def pattern_fixed(validator, pattern, instance, schema):
    if not validator.is_type(instance, "string"):
        return
    compiled = PATTERNS.get(pattern)
    if compiled is None:
        compiled = PATTERNS[pattern] = re.compile(ecma_pattern(pattern))
    if not compiled.search(instance):
        yield js_exceptions.ValidationError(f"{instance!r} does not match {pattern!r}")


FIXES = {"enum": enum_fixed, "const": const_fixed, "uniqueItems": unique_fixed,
         "multipleOf": multiple_of_fixed, "pattern": pattern_fixed}


def fixed_class(cls):
    old = cls in (D4, D6, D7)
    base_id_of = cls.ID_OF

    def legacy_id_of(schema):
        # Drafts 4-7 ignore every keyword beside $ref, $id included (4.10.3 still uses it).
        if isinstance(schema, dict) and "$ref" in schema:
            return ""
        return base_id_of(schema)

    return js_validators.create(
        meta_schema=cls.META_SCHEMA,
        validators={**cls.VALIDATORS,
                    **{k: v for k, v in FIXES.items() if k in cls.VALIDATORS}},
        type_checker=cls.TYPE_CHECKER,
        format_checker=cls.FORMAT_CHECKER,
        id_of=legacy_id_of if old else base_id_of,
        applicable_validators=ignore_ref_siblings if old else methodcaller("items"),
    )


FIXED = {cls: fixed_class(cls) for cls in set(DRAFTS.values())}

# JSON numbers have no digit limit; Python 3.11 refuses to parse integers over 4,300 digits.
if hasattr(sys, "set_int_max_str_digits"):
    sys.set_int_max_str_digits(0)

version_plan = plpy.prepare("select public._jsonschema_registry_version() as v")
lookup_plan = plpy.prepare("select public._jsonschema_registry_lookup($1) as s", ["text"])


def registry_version():
    return version_plan.execute()[0]["v"]


class InvalidSchema(Exception):
    """The schema itself is unusable (not the instance)."""


def draft_of(schema):
    if isinstance(schema, dict):
        uri = schema.get("$schema")
        if isinstance(uri, str):
            key = uri.split("://", 1)[-1].rstrip("#")
            # Unknown meta-schemas (custom ones) validate as 2020-12, as jsonschema does.
            return DRAFTS.get(key, D2020)
    return D2020


# ---- fast path eligibility -------------------------------------------------------------------
# fastjsonschema implements draft 7. A schema goes through it only when every keyword in it is
# one we have checked means the same there as in the schema's own draft, and where
# fastjsonschema's Python-equality shortcuts cannot differ from JSON semantics.

class NotFast(Exception):
    pass


PLAIN = frozenset((
    "type", "maximum", "exclusiveMaximum", "minimum", "exclusiveMinimum",
    "maxLength", "minLength", "pattern", "maxItems", "minItems", "maxProperties",
    "minProperties", "required",
))
# Annotations, dropped from the compiled copy: format is not asserted (as in the general path),
# default must not be inserted into the instance.
ANNOTATIONS = frozenset((
    "title", "description", "default", "examples", "$comment", "readOnly", "writeOnly",
    "deprecated", "format",
))
ONE = frozenset(("additionalProperties", "propertyNames", "if", "then", "else", "not", "contains"))
MANY = frozenset(("allOf", "anyOf", "oneOf"))
NAMED = frozenset(("properties", "patternProperties", "definitions", "$defs"))


def is_plain_value(value):
    # Python's == says 1 == 1.0 == True; only strings and null compare like JSON.
    return value is None or isinstance(value, str)


def fast_copy(node, draft7, root):
    if isinstance(node, bool):
        return node
    if not isinstance(node, dict):
        raise NotFast
    out = {}
    for key, value in node.items():
        if key in PLAIN:
            out[key] = value
        elif key in ANNOTATIONS:
            continue
        elif key in ONE:
            out[key] = fast_copy(value, draft7, False)
            if key == "not" and out[key] == {}:
                raise NotFast  # fastjsonschema tests the instance's truthiness for not: {}
        elif key in NAMED:
            if not isinstance(value, dict):
                raise NotFast
            out[key] = {k: fast_copy(v, draft7, False) for k, v in value.items()}
        elif key in MANY:
            if not isinstance(value, list):
                raise NotFast
            out[key] = [fast_copy(v, draft7, False) for v in value]
        elif key == "items":
            if isinstance(value, list):
                if not draft7:
                    raise NotFast
                out[key] = [fast_copy(v, draft7, False) for v in value]
            else:
                out[key] = fast_copy(value, draft7, False)
        elif key == "additionalItems" and draft7:
            out[key] = fast_copy(value, draft7, False)
        elif key == "dependencies" and draft7:
            if not isinstance(value, dict):
                raise NotFast
            out[key] = {
                k: v if isinstance(v, list) else fast_copy(v, draft7, False)
                for k, v in value.items()
            }
        elif key in ("enum", "const"):
            values = value if key == "enum" else [value]
            if not isinstance(values, list) or not all(is_plain_value(v) for v in values):
                raise NotFast
            out[key] = value
        elif key == "multipleOf":
            # Float quotients overflow differently there; integer divisors are exact in both.
            if not isinstance(value, int) or isinstance(value, bool):
                raise NotFast
            out[key] = value
        elif key == "uniqueItems":
            if value is not False:  # fastjsonschema treats true and "True" as equal items
                raise NotFast
        elif key == "$ref":
            if not isinstance(value, str) or not (value == "#" or value.startswith("#/")):
                raise NotFast
            # Draft 7 ignores keywords beside $ref, 2020-12 applies them: only a lone $ref
            # means the same in both.
            if not draft7 and any(k != "$ref" and k not in ANNOTATIONS for k in node):
                raise NotFast
            out[key] = value
        elif key == "$schema" and root:
            continue
        elif key == "$id" and root and isinstance(value, str):
            continue  # only local refs reach the fast path, so the base URI changes nothing
        else:
            raise NotFast
    return out


def fast_form(schema, cls):
    """The schema as fastjsonschema should compile it, or None for the general path."""
    if cls is not D7 and cls is not D2020:
        return None
    try:
        return fast_copy(schema, cls is D7, True)
    except NotFast:
        return None


# Keywords whose values are data, not schemas: an "$id" inside them identifies nothing.
DATA_KEYWORDS = frozenset(("enum", "const", "default", "examples"))


def embedded_resources(node, base, old_draft):
    """(absolute URI, subschema) for every subschema with its own $id, resolved against the
    nearest enclosing base URI."""
    if isinstance(node, list):
        for item in node:
            yield from embedded_resources(item, base, old_draft)
        return
    if not isinstance(node, dict):
        return
    ident = node.get("$id")
    # In drafts 4-7, $ref makes siblings (including $id) ignored, and "#name" is an anchor.
    if isinstance(ident, str) and not ident.startswith("#") and not (old_draft and "$ref" in node):
        base = urldefrag(urljoin(base, ident))[0]
        if base:
            yield base, node
    for key, value in node.items():
        if key not in DATA_KEYWORDS:
            yield from embedded_resources(value, base, old_draft)


# ---- registry-backed $ref resolution ----------------------------------------------------------

class Resolver(js_validators.RefResolver):
    """Resolves non-local $refs from public.jsonschema_registry, never from the network."""

    def __init__(self, *args, compiled, **kwargs):
        super().__init__(*args, **kwargs)
        self.compiled = compiled

    def resolve_remote(self, uri):
        self.compiled.uses_registry = True
        row = lookup_plan.execute([uri])[0]["s"]
        if row is None:
            raise LookupError(
                f"unknown remote $ref {uri!r}: it is not in public.jsonschema_registry "
                "(remote schemas are never fetched over the network)"
            )
        document = loads(row)
        # Its own $id (and nested ones) may differ from the URI it is registered under.
        base = urldefrag(uri)[0]
        for inner, resource in embedded_resources(document, base, draft_of(document) in OLD):
            self.store.setdefault(inner, resource)
        if self.cache_remote:
            self.store[uri] = document
        return document


# ---- compiled schemas ------------------------------------------------------------------------

class Compiled:
    __slots__ = ("schema", "validator", "fast", "version", "uses_registry")

    def __init__(self, text):
        try:
            schema = loads(text)
        except ValueError as exc:
            raise InvalidSchema(f"schema is not JSON: {exc}") from None
        cls = draft_of(schema)
        try:
            cls.check_schema(schema)
        except js_exceptions.SchemaError as exc:
            raise InvalidSchema(
                f"invalid JSON Schema at {pointer(exc.absolute_path)!r}: {exc.message}"
            ) from None
        self.schema = schema
        self.uses_registry = False
        self.version = registry_version()
        fixed = FIXED[cls]
        resolver = Resolver.from_schema(schema, id_of=fixed.ID_OF, compiled=self)
        # jsonschema 4.10 finds an embedded $id only relative to its immediate parent; register
        # every embedded resource under its absolute URI so refs to it resolve locally.
        root = fixed.ID_OF(schema) if isinstance(schema, dict) else None
        old_draft = cls in OLD
        for uri, resource in embedded_resources(schema, root or "", old_draft):
            resolver.store.setdefault(uri, resource)
        self.validator = fixed(schema, resolver=resolver)
        self.fast = None
        form = fast_form(schema, cls)
        if form is not None:
            try:
                self.fast = fastjsonschema.compile(form, use_default=False)
            except Exception:  # noqa: BLE001
                # fastjsonschema cannot compile some valid schemas (refs into dropped
                # annotations, NUL in patterns, some boolean subschemas); the general path,
                # which already accepted the schema, is authoritative.
                self.fast = None

    def stale(self):
        return self.uses_registry and registry_version() != self.version

    def is_valid(self, instance):
        try:
            return self.validator.is_valid(instance)
        except js_exceptions.RefResolutionError as exc:
            raise InvalidSchema(f"cannot resolve $ref: {exc}") from None
        except re.error as exc:
            raise InvalidSchema(f"invalid regular expression in schema: {exc}") from None

    def iter_errors(self, instance):
        try:
            return list(self.validator.iter_errors(instance))
        except js_exceptions.RefResolutionError as exc:
            raise InvalidSchema(f"cannot resolve $ref: {exc}") from None
        except re.error as exc:
            raise InvalidSchema(f"invalid regular expression in schema: {exc}") from None


def make_match(compiled, cache, key):
    """The per-schema hot path: instance text -> bool.

    Results are memoised per schema for the most recent instances: ingest classifies an event and
    then stores it in a table whose CHECK constraint validates the same text again; the second
    call is a dict lookup. Validation is a pure function of (schema, instance), so this is safe.
    """
    fast = compiled.fast
    if fast is not None:
        def match(text, fast=fast, loads=loads, invalid=JsonSchemaValueException, memo={}):
            known = memo.get(text)
            if known is not None:
                return known
            try:
                fast(loads(text))
                valid = True
            except invalid:
                valid = False
            if len(memo) >= MEMO_ENTRIES:
                memo.clear()
            memo[text] = valid
            return valid
    else:
        def match(text, compiled=compiled, loads=loads, memo={}):
            if compiled.uses_registry and compiled.stale():
                return cache.refresh(key)(text)
            known = memo.get(text)
            if known is not None:
                return known
            valid = compiled.is_valid(loads(text))
            if len(memo) >= MEMO_ENTRIES:
                memo.clear()
            memo[text] = valid
            return valid
    match.compiled = compiled
    return match


class Cache(dict):
    """schema text -> match function; compiles on a miss, bounded (oldest entry evicted)."""

    def __missing__(self, key):
        return self.refresh(key)

    def refresh(self, key):
        self.pop(key, None)
        if len(self) >= MAX_ENTRIES:
            del self[next(iter(self))]
        match = make_match(Compiled(key), self, key)
        self[key] = match
        return match

    def compiled(self, key):
        compiled = self[key].compiled
        if compiled.stale():
            compiled = self.refresh(key).compiled
        return compiled


# ---- error reports ---------------------------------------------------------------------------

def pointer(parts):
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def show(value, limit=80):
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


JSON_TYPES = ((bool, "boolean"), (int, "integer"), (float, "number"), (str, "string"),
              (list, "array"), (dict, "object"), (type(None), "null"))


def type_name(value):
    for py, name in JSON_TYPES:
        if isinstance(value, py):
            return name
    return type(value).__name__


def describe(error):
    """One jsonschema error -> our report entries (several for additionalProperties)."""
    path = list(error.absolute_path)
    schema_path = pointer(error.absolute_schema_path)
    keyword = error.validator
    value = error.validator_value
    inst = error.instance
    if keyword == "required" and isinstance(inst, dict):
        for name in value:
            if name not in inst and error.message == f"{name!r} is a required property":
                return [entry(path + [name], error.message, keyword, schema_path)]
    if keyword == "additionalProperties" and value is False and isinstance(inst, dict):
        from jsonschema._utils import find_additional_properties

        allowed = ", ".join(sorted(error.schema.get("properties", {}))) or "none"
        return [
            entry(path + [extra], f"property {extra!r} is not allowed here "
                  f"(additional properties are forbidden; allowed: {allowed})",
                  keyword, schema_path)
            for extra in sorted(find_additional_properties(inst, error.schema))
        ]
    if keyword == "type":
        wanted = " or ".join(value) if isinstance(value, list) else value
        message = f"expected {wanted}, got {type_name(inst)} {show(inst)}"
    elif keyword == "enum":
        message = f"{show(inst)} is not one of the allowed values: " + ", ".join(
            show(v, 40) for v in value)
    elif keyword == "const":
        message = f"{show(inst)} is not the required value {show(value)}"
    elif keyword == "pattern":
        message = f"{show(inst)} does not match the pattern {value!r}"
    elif keyword == "minLength":
        message = f"{show(inst)} is too short: {len(inst)} characters, at least {value} required"
    elif keyword == "maxLength":
        message = f"{show(inst)} is too long: {len(inst)} characters, at most {value} allowed"
    elif keyword in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        rule = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">",
                "exclusiveMaximum": "<"}[keyword]
        message = f"{show(inst)} is out of range: must be {rule} {show(value)}"
    elif keyword is None:  # the false schema
        message = f"{show(inst)} is not allowed here (the schema is false)"
    else:
        message = error.message
    return [entry(path, message, keyword, schema_path)]


def entry(path, message, keyword, schema_path):
    return {"path": pointer(path), "message": message, "keyword": keyword,
            "schema_path": schema_path}


# ---- entry points used by the SQL functions --------------------------------------------------

def fail(exc):
    plpy.error(str(exc), sqlstate=INVALID)


class Api:
    def __init__(self):
        self.cache = Cache()

    def matches(self, schema, instance):
        try:
            return self.cache[schema](instance)
        except InvalidSchema as exc:
            fail(exc)

    def is_valid_schema(self, schema):
        try:
            self.cache[schema]
        except InvalidSchema as exc:
            plpy.notice(f"Invalid JSON schema: {exc}")
            return False
        return True

    def validation_errors(self, schema, instance):
        try:
            compiled = self.cache.compiled(schema)
            return [e.message for e in compiled.iter_errors(loads(instance))]
        except InvalidSchema as exc:
            return [str(exc)]

    def errors(self, schema, instance):
        try:
            compiled = self.cache.compiled(schema)
            found = compiled.iter_errors(loads(instance))
        except InvalidSchema as exc:
            fail(exc)
        report = [item for error in found for item in describe(error)]
        report.sort(key=lambda e: (e["path"], e["schema_path"], e["message"]))
        return json.dumps(report, ensure_ascii=False)

    def path_of(self, schema):
        try:
            return "fast" if self.cache[schema].compiled.fast is not None else "general"
        except InvalidSchema as exc:
            fail(exc)


GD[GD_KEY] = Api()
$_$;


--
-- Name: FUNCTION _jsonschema_boot(); Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON FUNCTION public._jsonschema_boot() IS 'Private: installs the plpython JSON Schema implementation into this backend (GD).';


--
-- Name: _jsonschema_path(json); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public._jsonschema_path(schema json) RETURNS text
    LANGUAGE plpython3u IMMUTABLE STRICT PARALLEL SAFE
    AS $$
api = GD.get("stepledger.jsonschema/1")
if api is None:
    plpy.execute("select public._jsonschema_boot()")
    api = GD["stepledger.jsonschema/1"]
return api.path_of(schema)
$$;


--
-- Name: FUNCTION _jsonschema_path(schema json); Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON FUNCTION public._jsonschema_path(schema json) IS 'Private: "fast" (fastjsonschema) or "general" (jsonschema) for the plpython implementation.';


--
-- Name: _jsonschema_registry_lookup(text); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public._jsonschema_registry_lookup(p_uri text) RETURNS text
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
    select r.schema::text from public.jsonschema_registry r
    where r.uri = p_uri or r.uri = p_uri || '#' or r.uri || '#' = p_uri
    order by r.uri = p_uri desc
    limit 1
$$;


--
-- Name: FUNCTION _jsonschema_registry_lookup(p_uri text); Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON FUNCTION public._jsonschema_registry_lookup(p_uri text) IS 'Private: the registered schema for a $ref URI (exact, or differing by an empty fragment).';


--
-- Name: _jsonschema_registry_version(); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public._jsonschema_registry_version() RETURNS bigint
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
    select v.version from public.jsonschema_registry_version v
$$;


--
-- Name: FUNCTION _jsonschema_registry_version(); Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON FUNCTION public._jsonschema_registry_version() IS 'Private: current change counter of public.jsonschema_registry.';


--
-- Name: json_matches_schema(json, json); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.json_matches_schema(schema json, instance json) RETURNS boolean
    LANGUAGE plpython3u IMMUTABLE STRICT PARALLEL SAFE
    AS $$
api = GD.get("stepledger.jsonschema/1")
if api is None:
    plpy.execute("select public._jsonschema_boot()")
    api = GD["stepledger.jsonschema/1"]
return api.matches(schema, instance)
$$;


--
-- Name: FUNCTION json_matches_schema(schema json, instance json); Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON FUNCTION public.json_matches_schema(schema json, instance json) IS 'True when instance is valid against the JSON Schema (pg_jsonschema-compatible; raises SQLSTATE 22023 for an invalid schema).';


--
-- Name: jsonb_matches_schema(json, jsonb); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.jsonb_matches_schema(schema json, instance jsonb) RETURNS boolean
    LANGUAGE plpython3u IMMUTABLE STRICT PARALLEL SAFE
    AS $$
api = GD.get("stepledger.jsonschema/1")
if api is None:
    plpy.execute("select public._jsonschema_boot()")
    api = GD["stepledger.jsonschema/1"]
return api.matches(schema, instance)
$$;


--
-- Name: FUNCTION jsonb_matches_schema(schema json, instance jsonb); Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON FUNCTION public.jsonb_matches_schema(schema json, instance jsonb) IS 'True when instance is valid against the JSON Schema (pg_jsonschema-compatible; raises SQLSTATE 22023 for an invalid schema).';


--
-- Name: jsonschema_errors(json, jsonb); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.jsonschema_errors(schema json, instance jsonb) RETURNS jsonb
    LANGUAGE plpython3u IMMUTABLE STRICT PARALLEL SAFE
    AS $$
api = GD.get("stepledger.jsonschema/1")
if api is None:
    plpy.execute("select public._jsonschema_boot()")
    api = GD["stepledger.jsonschema/1"]
return api.errors(schema, instance)
$$;


--
-- Name: FUNCTION jsonschema_errors(schema json, instance jsonb); Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON FUNCTION public.jsonschema_errors(schema json, instance jsonb) IS 'Validation errors of instance against schema as a JSON array of {path, message, keyword, schema_path}, sorted by path; path is a JSON Pointer ("" = root). Empty array when valid. Raises SQLSTATE 22023 for an invalid schema.';


--
-- Name: jsonschema_is_valid(json); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.jsonschema_is_valid(schema json) RETURNS boolean
    LANGUAGE plpython3u IMMUTABLE STRICT PARALLEL SAFE
    AS $$
api = GD.get("stepledger.jsonschema/1")
if api is None:
    plpy.execute("select public._jsonschema_boot()")
    api = GD["stepledger.jsonschema/1"]
return api.is_valid_schema(schema)
$$;


--
-- Name: FUNCTION jsonschema_is_valid(schema json); Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON FUNCTION public.jsonschema_is_valid(schema json) IS 'True when the schema is a valid JSON Schema (checked against its meta-schema); otherwise false with a NOTICE saying why (pg_jsonschema-compatible).';


--
-- Name: jsonschema_validation_errors(json, json); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.jsonschema_validation_errors(schema json, instance json) RETURNS text[]
    LANGUAGE plpython3u IMMUTABLE STRICT PARALLEL SAFE
    AS $$
api = GD.get("stepledger.jsonschema/1")
if api is None:
    plpy.execute("select public._jsonschema_boot()")
    api = GD["stepledger.jsonschema/1"]
return api.validation_errors(schema, instance)
$$;


--
-- Name: FUNCTION jsonschema_validation_errors(schema json, instance json); Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON FUNCTION public.jsonschema_validation_errors(schema json, instance json) IS 'Messages of every validation error of instance against schema, empty when valid; for an invalid schema, one message saying why (pg_jsonschema-compatible).';


--
-- Name: tg_jsonschema_registry__bump_version(); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.tg_jsonschema_registry__bump_version() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
begin
    update public.jsonschema_registry_version set version = version + 1;
    return null;
end
$$;


--
-- Name: FUNCTION tg_jsonschema_registry__bump_version(); Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON FUNCTION public.tg_jsonschema_registry__bump_version() IS 'Statement trigger: invalidates compiled validators that resolved refs through the registry.';


--
-- Name: analytics_refreshes; Type: TABLE; Schema: ledger; Owner: -
--

CREATE TABLE ledger.analytics_refreshes (
    view_name text NOT NULL,
    refreshed_at timestamp with time zone NOT NULL,
    duration_ms numeric NOT NULL,
    row_count bigint NOT NULL
);


--
-- Name: TABLE analytics_refreshes; Type: COMMENT; Schema: ledger; Owner: -
--

COMMENT ON TABLE ledger.analytics_refreshes IS 'Freshness of the analytics materialized views.';


--
-- Name: analytics_freshness; Type: VIEW; Schema: api; Owner: -
--

CREATE VIEW api.analytics_freshness WITH (security_invoker='true') AS
 SELECT r.view_name,
    r.refreshed_at,
    round(EXTRACT(epoch FROM (now() - r.refreshed_at)), 1) AS age_s,
    r.duration_ms,
    r.row_count
   FROM ledger.analytics_refreshes r;


--
-- Name: VIEW analytics_freshness; Type: COMMENT; Schema: api; Owner: -
--

COMMENT ON VIEW api.analytics_freshness IS 'When each analytics view (error statistics, step timings) was last refreshed, how long ago and how long it took.';


--
-- Name: api_tokens; Type: TABLE; Schema: auth; Owner: -
--

CREATE TABLE auth.api_tokens (
    token_id uuid NOT NULL,
    client_id ledger.slug,
    name text NOT NULL,
    scope text DEFAULT 'ingest'::text NOT NULL,
    token_hash bytea NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    created_by text NOT NULL,
    revoked_at timestamp with time zone,
    revoked_by text,
    last_used_at timestamp with time zone,
    CONSTRAINT api_tokens_name_check CHECK (((length(name) >= 1) AND (length(name) <= 200))),
    CONSTRAINT api_tokens_scope_check CHECK ((scope = 'ingest'::text)),
    CONSTRAINT api_tokens_token_hash_check CHECK ((length(token_hash) = 32))
);


--
-- Name: TABLE api_tokens; Type: COMMENT; Schema: auth; Owner: -
--

COMMENT ON TABLE auth.api_tokens IS 'API tokens of pipelines: scope, client binding, revocation and last use. The token is stored only as its SHA-256.';


--
-- Name: api_tokens; Type: VIEW; Schema: api; Owner: -
--

CREATE VIEW api.api_tokens WITH (security_invoker='true') AS
 SELECT t.token_id,
    t.client_id,
    t.name,
    t.scope,
    t.created_at,
    t.created_by,
    t.revoked_at,
    t.revoked_by,
    t.last_used_at,
    (t.revoked_at IS NULL) AS active
   FROM auth.api_tokens t;


--
-- Name: VIEW api_tokens; Type: COMMENT; Schema: api; Owner: -
--

COMMENT ON VIEW api.api_tokens IS 'Admin: API tokens of pipelines (never the token itself), with their client, scope, revocation and last use.';


--
-- Name: COLUMN api_tokens.client_id; Type: COMMENT; Schema: api; Owner: -
--

COMMENT ON COLUMN api.api_tokens.client_id IS 'The client the token may write for; null: every client.';


--
-- Name: COLUMN api_tokens.last_used_at; Type: COMMENT; Schema: api; Owner: -
--

COMMENT ON COLUMN api.api_tokens.last_used_at IS 'Last request made with the token (recorded at most once a minute, on write requests).';


--
-- Name: COLUMN api_tokens.active; Type: COMMENT; Schema: api; Owner: -
--

COMMENT ON COLUMN api.api_tokens.active IS 'false once revoked.';


--
-- Name: client_minimums; Type: TABLE; Schema: ledger; Owner: -
--

CREATE TABLE ledger.client_minimums (
    minimum_id bigint NOT NULL,
    client_id ledger.slug NOT NULL,
    effective_from date NOT NULL,
    monthly_minimum numeric NOT NULL,
    currency text NOT NULL,
    note text,
    recorded_at timestamp with time zone DEFAULT now() NOT NULL,
    recorded_by text NOT NULL,
    recorded_role text NOT NULL,
    recorded_token uuid,
    recorded_via text,
    CONSTRAINT client_minimums_currency_check CHECK ((currency ~ '^[A-Z]{3}$'::text)),
    CONSTRAINT client_minimums_effective_from_check CHECK ((EXTRACT(day FROM effective_from) = (1)::numeric)),
    CONSTRAINT client_minimums_monthly_minimum_check CHECK ((monthly_minimum >= (0)::numeric)),
    CONSTRAINT client_minimums_note_check CHECK ((length(note) <= 500))
);


--
-- Name: TABLE client_minimums; Type: COMMENT; Schema: ledger; Owner: -
--

COMMENT ON TABLE ledger.client_minimums IS 'Monthly minimum per client, effective from a calendar month; 0 ends a minimum. Append-only.';


--
-- Name: client_minimums; Type: VIEW; Schema: api; Owner: -
--

CREATE VIEW api.client_minimums WITH (security_invoker='true') AS
 SELECT m.client_id,
    m.monthly_minimum,
    m.currency,
    m.effective_from,
    m.note,
    m.minimum_id,
    m.recorded_at,
    m.recorded_by
   FROM ledger.client_minimums m;


--
-- Name: VIEW client_minimums; Type: COMMENT; Schema: api; Owner: -
--

COMMENT ON VIEW api.client_minimums IS 'Monthly minimum per client from a calendar month on (effective_from is a first day of month); 0 ends it. Admins add rows with POST /client_minimums.';


--
-- Name: clients; Type: VIEW; Schema: api; Owner: -
--

CREATE VIEW api.clients WITH (security_invoker='true') AS
 SELECT c.client_id,
    c.name,
    c.currency,
    c.created_at
   FROM ledger.clients c;


--
-- Name: VIEW clients; Type: COMMENT; Schema: api; Owner: -
--

COMMENT ON VIEW api.clients IS 'Billed organisations: id, display name and invoice currency. A client''s users see their own client only; admins see all.';


--
-- Name: COLUMN clients.currency; Type: COMMENT; Schema: api; Owner: -
--

COMMENT ON COLUMN api.clients.currency IS 'ISO 4217 code of the client''s invoices.';


--
-- Name: error_stats; Type: VIEW; Schema: api; Owner: -
--

CREATE VIEW api.error_stats WITH (security_invoker='true') AS
 SELECT s.pipeline,
    s.step,
    s.failures,
    s.attempts,
    s.failure_rate,
    s.top_error_code,
    s.step_index,
    s.top_error_message,
    s.top_error_failures,
    s.retryable_failures,
    s.skipped,
    s.last_failure_at,
    s.refreshed_at
   FROM api.error_stats_window() s(pipeline, step, failures, attempts, failure_rate, top_error_code, step_index, top_error_message, top_error_failures, retryable_failures, skipped, last_failure_at, refreshed_at);


--
-- Name: VIEW error_stats; Type: COMMENT; Schema: api; Owner: -
--

COMMENT ON VIEW api.error_stats IS 'Where errors occur: per pipeline and step, all time, over the jobs you can see (admins: every client). As of refreshed_at; GET /rpc/error_stats_window for a window of days.';


--
-- Name: COLUMN error_stats.failures; Type: COMMENT; Schema: api; Owner: -
--

COMMENT ON COLUMN api.error_stats.failures IS 'Attempts of the step that failed.';


--
-- Name: COLUMN error_stats.attempts; Type: COMMENT; Schema: api; Owner: -
--

COMMENT ON COLUMN api.error_stats.attempts IS 'Finished attempts of the step: completed or failed (skipped and still running ones are not attempts).';


--
-- Name: COLUMN error_stats.failure_rate; Type: COMMENT; Schema: api; Owner: -
--

COMMENT ON COLUMN api.error_stats.failure_rate IS 'failures / attempts, from 0 to 1, 4 decimals.';


--
-- Name: COLUMN error_stats.top_error_code; Type: COMMENT; Schema: api; Owner: -
--

COMMENT ON COLUMN api.error_stats.top_error_code IS 'The error code of most failures of the step (ties: the most recent).';


--
-- Name: COLUMN error_stats.top_error_message; Type: COMMENT; Schema: api; Owner: -
--

COMMENT ON COLUMN api.error_stats.top_error_message IS 'The latest message seen with the top error code.';


--
-- Name: COLUMN error_stats.top_error_failures; Type: COMMENT; Schema: api; Owner: -
--

COMMENT ON COLUMN api.error_stats.top_error_failures IS 'Failures with the top error code.';


--
-- Name: COLUMN error_stats.retryable_failures; Type: COMMENT; Schema: api; Owner: -
--

COMMENT ON COLUMN api.error_stats.retryable_failures IS 'Failures whose error said retryable: true.';


--
-- Name: COLUMN error_stats.refreshed_at; Type: COMMENT; Schema: api; Owner: -
--

COMMENT ON COLUMN api.error_stats.refreshed_at IS 'When the statistics were last computed (POST /rpc/refresh_analytics, stepledger analytics refresh).';


--
-- Name: invoice_lines; Type: TABLE; Schema: ledger; Owner: -
--

CREATE TABLE ledger.invoice_lines (
    client_id ledger.slug NOT NULL,
    period date NOT NULL,
    line_no integer NOT NULL,
    kind text NOT NULL,
    basis text NOT NULL,
    for_period date NOT NULL,
    pipeline text,
    step text,
    unit_price numeric,
    priced boolean,
    units numeric,
    completed_steps bigint,
    amount numeric NOT NULL,
    description text,
    CONSTRAINT invoice_lines_basis_check CHECK ((basis = ANY (ARRAY['usage'::text, 'minimum'::text]))),
    CONSTRAINT invoice_lines_check CHECK (((kind = 'adjustment'::text) = (for_period <> period))),
    CONSTRAINT invoice_lines_check1 CHECK (((kind = 'adjustment'::text) OR (kind = basis))),
    CONSTRAINT invoice_lines_check2 CHECK (((basis = 'minimum'::text) OR ((pipeline IS NOT NULL) AND (step IS NOT NULL) AND (unit_price IS NOT NULL) AND (priced IS NOT NULL) AND (units IS NOT NULL)))),
    CONSTRAINT invoice_lines_kind_check CHECK ((kind = ANY (ARRAY['usage'::text, 'minimum'::text, 'adjustment'::text]))),
    CONSTRAINT invoice_lines_line_no_check CHECK ((line_no >= 1))
);


--
-- Name: TABLE invoice_lines; Type: COMMENT; Schema: ledger; Owner: -
--

COMMENT ON TABLE ledger.invoice_lines IS 'Frozen lines of finalized invoices: usage, monthly-minimum top-up and adjustments of earlier periods.';


--
-- Name: invoice_lines; Type: VIEW; Schema: api; Owner: -
--

CREATE VIEW api.invoice_lines WITH (security_invoker='true') AS
 SELECT l.client_id,
    to_char((l.period)::timestamp with time zone, 'YYYY-MM'::text) AS period,
    l.line_no,
    l.kind,
    l.pipeline,
    l.step,
    l.unit_price,
    l.units,
    l.amount,
    l.completed_steps,
    l.priced,
    to_char((l.for_period)::timestamp with time zone, 'YYYY-MM'::text) AS for_period,
    l.basis,
    l.description
   FROM ledger.invoice_lines l;


--
-- Name: VIEW invoice_lines; Type: COMMENT; Schema: api; Owner: -
--

COMMENT ON VIEW api.invoice_lines IS 'Lines of finalized invoices: usage, monthly-minimum top-up, and adjustments of earlier periods (for_period).';


--
-- Name: invoices; Type: TABLE; Schema: ledger; Owner: -
--

CREATE TABLE ledger.invoices (
    client_id ledger.slug NOT NULL,
    period date NOT NULL,
    invoice_no text NOT NULL,
    currency text NOT NULL,
    usage_amount numeric NOT NULL,
    minimum_amount numeric NOT NULL,
    adjustments_amount numeric NOT NULL,
    total numeric NOT NULL,
    lines_count integer NOT NULL,
    finalized_at timestamp with time zone DEFAULT now() NOT NULL,
    finalized_by text NOT NULL,
    finalized_role text NOT NULL,
    finalized_token uuid,
    CONSTRAINT invoices_check CHECK ((total = ((usage_amount + minimum_amount) + adjustments_amount))),
    CONSTRAINT invoices_currency_check CHECK ((currency ~ '^[A-Z]{3}$'::text)),
    CONSTRAINT invoices_period_check CHECK ((EXTRACT(day FROM period) = (1)::numeric))
);


--
-- Name: TABLE invoices; Type: COMMENT; Schema: ledger; Owner: -
--

COMMENT ON TABLE ledger.invoices IS 'Finalized invoices, one per client and period; immutable.';


--
-- Name: invoices; Type: VIEW; Schema: api; Owner: -
--

CREATE VIEW api.invoices WITH (security_invoker='true') AS
 SELECT i.client_id,
    to_char((i.period)::timestamp with time zone, 'YYYY-MM'::text) AS period,
    'finalized'::text AS status,
    i.currency,
    i.total,
    i.usage_amount,
    i.minimum_amount,
    i.adjustments_amount,
    i.invoice_no,
    i.lines_count,
    i.finalized_at,
    i.finalized_by
   FROM ledger.invoices i;


--
-- Name: VIEW invoices; Type: COMMENT; Schema: api; Owner: -
--

COMMENT ON VIEW api.invoices IS 'Finalized (immutable) invoices. Drafts of open periods: POST /rpc/invoice.';


--
-- Name: pipeline_steps; Type: TABLE; Schema: ledger; Owner: -
--

CREATE TABLE ledger.pipeline_steps (
    pipeline ledger.slug NOT NULL,
    step ledger.slug NOT NULL,
    step_index integer NOT NULL,
    title text NOT NULL,
    description text,
    data_schema jsonb,
    added_in_version integer DEFAULT 1 NOT NULL,
    CONSTRAINT pipeline_steps_data_schema_check CHECK (((data_schema IS NULL) OR (jsonb_typeof(data_schema) = 'object'::text))),
    CONSTRAINT pipeline_steps_step_index_check CHECK ((step_index >= 1)),
    CONSTRAINT pipeline_steps_title_check CHECK (((length(title) >= 1) AND (length(title) <= 200)))
);


--
-- Name: pipeline_steps; Type: VIEW; Schema: api; Owner: -
--

CREATE VIEW api.pipeline_steps WITH (security_invoker='true') AS
 SELECT s.pipeline,
    s.step,
    s.step_index,
    s.title,
    s.description
   FROM ledger.pipeline_steps s;


--
-- Name: VIEW pipeline_steps; Type: COMMENT; Schema: api; Owner: -
--

COMMENT ON VIEW api.pipeline_steps IS 'The ordered steps of each registered pipeline, with their titles.';


--
-- Name: COLUMN pipeline_steps.step_index; Type: COMMENT; Schema: api; Owner: -
--

COMMENT ON COLUMN api.pipeline_steps.step_index IS 'Position of the step in its pipeline, from 1.';


--
-- Name: pipelines; Type: VIEW; Schema: api; Owner: -
--

CREATE VIEW api.pipelines WITH (security_invoker='true') AS
 SELECT p.pipeline,
    p.title,
    p.description,
    p.version,
    p.steps_total,
    (EXTRACT(epoch FROM p.stall_timeout))::integer AS stall_timeout_s,
    p.updated_at
   FROM ledger.pipelines p;


--
-- Name: VIEW pipelines; Type: COMMENT; Schema: api; Owner: -
--

COMMENT ON VIEW api.pipelines IS 'Registered pipelines: title, current version, number of steps and stall timeout.';


--
-- Name: COLUMN pipelines.stall_timeout_s; Type: COMMENT; Schema: api; Owner: -
--

COMMENT ON COLUMN api.pipelines.stall_timeout_s IS 'Seconds without an event after which a running job counts as stalled.';


--
-- Name: prices; Type: TABLE; Schema: ledger; Owner: -
--

CREATE TABLE ledger.prices (
    price_id bigint NOT NULL,
    pipeline ledger.slug NOT NULL,
    step ledger.slug NOT NULL,
    client_id ledger.slug,
    currency text NOT NULL,
    unit_price numeric NOT NULL,
    tiers jsonb DEFAULT '[]'::jsonb NOT NULL,
    effective_from timestamp with time zone DEFAULT now() NOT NULL,
    note text,
    recorded_at timestamp with time zone DEFAULT now() NOT NULL,
    recorded_by text NOT NULL,
    recorded_role text NOT NULL,
    recorded_token uuid,
    recorded_via text,
    CONSTRAINT prices_currency_check CHECK ((currency ~ '^[A-Z]{3}$'::text)),
    CONSTRAINT prices_note_check CHECK ((length(note) <= 500)),
    CONSTRAINT prices_tiers_check CHECK ((jsonb_typeof(tiers) = 'array'::text)),
    CONSTRAINT prices_unit_price_check CHECK ((unit_price >= (0)::numeric))
);


--
-- Name: TABLE prices; Type: COMMENT; Schema: ledger; Owner: -
--

COMMENT ON TABLE ledger.prices IS 'The price book: effective-dated unit prices per (pipeline, step), default (client_id null) or per client. Append-only.';


--
-- Name: prices; Type: VIEW; Schema: api; Owner: -
--

CREATE VIEW api.prices WITH (security_invoker='true') AS
 SELECT p.pipeline,
    p.step,
    p.client_id,
    p.unit_price,
    p.currency,
    p.effective_from,
    p.tiers,
    p.note,
    p.price_id,
    p.recorded_at,
    p.recorded_by,
    p.recorded_role
   FROM ledger.prices p;


--
-- Name: VIEW prices; Type: COMMENT; Schema: api; Owner: -
--

COMMENT ON VIEW api.prices IS 'The price book. A client sees the default prices and its own. Admins add prices with POST /prices; rows are never changed: a change is a new row with a later effective_from.';


--
-- Name: COLUMN prices.client_id; Type: COMMENT; Schema: api; Owner: -
--

COMMENT ON COLUMN api.prices.client_id IS 'null: the default price (per currency); else this client''s own price, which beats the default.';


--
-- Name: COLUMN prices.currency; Type: COMMENT; Schema: api; Owner: -
--

COMMENT ON COLUMN api.prices.currency IS 'ISO 4217 code; a client''s own price is in the client''s currency (default: the client''s, or EUR for default prices).';


--
-- Name: COLUMN prices.effective_from; Type: COMMENT; Schema: api; Owner: -
--

COMMENT ON COLUMN api.prices.effective_from IS 'In force from this instant until the next row of the same pipeline, step, client and currency (default: now).';


--
-- Name: COLUMN prices.tiers; Type: COMMENT; Schema: api; Owner: -
--

COMMENT ON COLUMN api.prices.tiers IS 'Graduated tiers per client and month, e.g. [{"from_units": 1000, "unit_price": 0.03}]: unit_price applies below the first tier.';


--
-- Name: replays; Type: TABLE; Schema: ledger; Owner: -
--

CREATE TABLE ledger.replays (
    replay_id uuid DEFAULT gen_random_uuid() NOT NULL,
    started_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    requested_by text NOT NULL,
    filters jsonb NOT NULL,
    code_version text NOT NULL,
    replayed integer DEFAULT 0 NOT NULL,
    accepted integer DEFAULT 0 NOT NULL,
    duplicates integer DEFAULT 0 NOT NULL,
    rejected integer DEFAULT 0 NOT NULL,
    CONSTRAINT replays_accepted_check CHECK ((accepted >= 0)),
    CONSTRAINT replays_duplicates_check CHECK ((duplicates >= 0)),
    CONSTRAINT replays_rejected_check CHECK ((rejected >= 0)),
    CONSTRAINT replays_replayed_check CHECK ((replayed >= 0))
);


--
-- Name: TABLE replays; Type: COMMENT; Schema: ledger; Owner: -
--

COMMENT ON TABLE ledger.replays IS 'One row per `stepledger replay` run: filters, code version and counters.';


--
-- Name: replays; Type: VIEW; Schema: api; Owner: -
--

CREATE VIEW api.replays WITH (security_invoker='true') AS
 SELECT r.replay_id,
    r.started_at,
    r.updated_at,
    r.requested_by,
    r.filters,
    r.code_version,
    r.replayed,
    r.accepted,
    r.duplicates,
    r.rejected
   FROM ledger.replays r;


--
-- Name: VIEW replays; Type: COMMENT; Schema: api; Owner: -
--

COMMENT ON VIEW api.replays IS 'Admin: one row per replay run of the vault, with its filters, the code version that ran it and what became of the replayed rows.';


--
-- Name: COLUMN replays.filters; Type: COMMENT; Schema: api; Owner: -
--

COMMENT ON COLUMN api.replays.filters IS 'The run''s filters: outcome, since, until, client_id.';


--
-- Name: COLUMN replays.replayed; Type: COMMENT; Schema: api; Owner: -
--

COMMENT ON COLUMN api.replays.replayed IS 'Vault rows replayed so far; accepted + duplicates + rejected.';


--
-- Name: billing_refreshes; Type: TABLE; Schema: ledger; Owner: -
--

CREATE TABLE ledger.billing_refreshes (
    refresh_id bigint NOT NULL,
    started_at timestamp with time zone NOT NULL,
    finished_at timestamp with time zone NOT NULL,
    snapshot pg_snapshot NOT NULL,
    duration_ms numeric NOT NULL,
    line_rows bigint NOT NULL,
    changes_absorbed bigint NOT NULL,
    concurrent boolean NOT NULL,
    requested_by text NOT NULL
);


--
-- Name: TABLE billing_refreshes; Type: COMMENT; Schema: ledger; Owner: -
--

COMMENT ON TABLE ledger.billing_refreshes IS 'Refreshes of the usage materialized view: when, how long, and the snapshot they saw.';


--
-- Name: usage_lines_monthly; Type: MATERIALIZED VIEW; Schema: ledger; Owner: -
--

CREATE MATERIALIZED VIEW ledger.usage_lines_monthly AS
 SELECT u.client_id,
    u.period,
    u.pipeline,
    u.step,
    u.unit_price,
    u.priced,
    u.currency,
    u.completed_steps,
    u.units,
    u.amount,
    u.first_completed_at,
    u.last_completed_at
   FROM ledger._usage_lines(NULL::text, NULL::date, NULL::date) u(client_id, period, pipeline, step, unit_price, priced, currency, completed_steps, units, amount, first_completed_at, last_completed_at)
  WITH NO DATA;


--
-- Name: MATERIALIZED VIEW usage_lines_monthly; Type: COMMENT; Schema: ledger; Owner: -
--

COMMENT ON MATERIALIZED VIEW ledger.usage_lines_monthly IS 'Invoice lines of usage per client, month, pipeline, step and unit price; refreshed concurrently (ledger.refresh_usage()). Read through ledger.usage_lines_visible.';


--
-- Name: usage_lines_visible; Type: VIEW; Schema: ledger; Owner: -
--

CREATE VIEW ledger.usage_lines_visible WITH (security_barrier='true') AS
 SELECT m.client_id,
    m.period,
    m.pipeline,
    m.step,
    m.unit_price,
    m.priced,
    m.currency,
    m.completed_steps,
    m.units,
    m.amount,
    m.first_completed_at,
    m.last_completed_at
   FROM ledger.usage_lines_monthly m
  WHERE (( SELECT ledger._sees_all_clients() AS _sees_all_clients) OR (m.client_id = ( SELECT auth.client_id() AS client_id)));


--
-- Name: VIEW usage_lines_visible; Type: COMMENT; Schema: ledger; Owner: -
--

COMMENT ON VIEW ledger.usage_lines_visible IS 'The usage materialized view under the row-level security rule: own client only, admins everything.';


--
-- Name: usage; Type: VIEW; Schema: api; Owner: -
--

CREATE VIEW api.usage WITH (security_invoker='true') AS
 SELECT u.client_id,
    to_char((u.period)::timestamp with time zone, 'YYYY-MM'::text) AS period,
    u.pipeline,
    u.step,
    (sum(u.completed_steps))::bigint AS completed_steps,
    sum(u.units) AS units,
    sum(u.amount) AS amount,
    u.currency,
    (COALESCE(sum(u.completed_steps) FILTER (WHERE (NOT u.priced)), (0)::numeric))::bigint AS unpriced_steps,
    ( SELECT r.finished_at
           FROM ledger.billing_refreshes r
          ORDER BY r.refresh_id DESC
         LIMIT 1) AS refreshed_at,
    (NOT ledger._usage_fresh(u.client_id, u.period)) AS stale
   FROM ledger.usage_lines_visible u
  GROUP BY u.client_id, u.period, u.pipeline, u.step, u.currency;


--
-- Name: VIEW usage; Type: COMMENT; Schema: api; Owner: -
--

COMMENT ON VIEW api.usage IS 'Billed usage per client, month (UTC), pipeline and step: completed steps, units and amount (sum of the rounded invoice lines). Served from a materialized view: refreshed_at says when it was refreshed, stale whether changes arrived since.';


--
-- Name: COLUMN usage.period; Type: COMMENT; Schema: api; Owner: -
--

COMMENT ON COLUMN api.usage.period IS 'Calendar month in UTC of the billed completions, YYYY-MM.';


--
-- Name: COLUMN usage.completed_steps; Type: COMMENT; Schema: api; Owner: -
--

COMMENT ON COLUMN api.usage.completed_steps IS 'Billed (client, job, step) completions: one per step of a job, the latest completed attempt.';


--
-- Name: COLUMN usage.units; Type: COMMENT; Schema: api; Owner: -
--

COMMENT ON COLUMN api.usage.units IS 'Sum of the units of the billed completions.';


--
-- Name: COLUMN usage.amount; Type: COMMENT; Schema: api; Owner: -
--

COMMENT ON COLUMN api.usage.amount IS 'Sum of the invoice lines of this step: units x unit price, rounded half away from zero per line.';


--
-- Name: COLUMN usage.unpriced_steps; Type: COMMENT; Schema: api; Owner: -
--

COMMENT ON COLUMN api.usage.unpriced_steps IS 'Completed steps with no price in force (billed at 0).';


--
-- Name: COLUMN usage.refreshed_at; Type: COMMENT; Schema: api; Owner: -
--

COMMENT ON COLUMN api.usage.refreshed_at IS 'When the usage materialized view was last refreshed.';


--
-- Name: COLUMN usage.stale; Type: COMMENT; Schema: api; Owner: -
--

COMMENT ON COLUMN api.usage.stale IS 'True when usage of this client and month changed after that refresh (POST /rpc/invoice is always current).';


--
-- Name: billing_changes; Type: TABLE; Schema: ledger; Owner: -
--

CREATE TABLE ledger.billing_changes (
    change_id bigint NOT NULL,
    client_id text,
    period_from date NOT NULL,
    period_to date NOT NULL,
    xid xid8 DEFAULT pg_current_xact_id() NOT NULL,
    reason text NOT NULL,
    changed_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT billing_changes_check CHECK ((period_to >= period_from)),
    CONSTRAINT billing_changes_reason_check CHECK ((reason = ANY (ARRAY['completion'::text, 'price'::text, 'minimum'::text, 'currency'::text, 'rebuild'::text])))
);


--
-- Name: TABLE billing_changes; Type: COMMENT; Schema: ledger; Owner: -
--

COMMENT ON TABLE ledger.billing_changes IS 'Changes to billed usage since the last refresh of the usage materialized view.';


--
-- Name: usage_freshness; Type: VIEW; Schema: api; Owner: -
--

CREATE VIEW api.usage_freshness WITH (security_invoker='true') AS
 SELECT r.finished_at AS refreshed_at,
    r.started_at AS refresh_started_at,
    r.duration_ms AS refresh_duration_ms,
    round(EXTRACT(epoch FROM (now() - r.finished_at)), 1) AS age_s,
    ( SELECT count(*) AS count
           FROM ledger.billing_changes ch
          WHERE (NOT pg_visible_in_snapshot(ch.xid, r.snapshot))) AS pending_changes
   FROM ( SELECT b.started_at,
            b.finished_at,
            b.duration_ms,
            b.snapshot
           FROM ledger.billing_refreshes b
          ORDER BY b.refresh_id DESC
         LIMIT 1) r;


--
-- Name: VIEW usage_freshness; Type: COMMENT; Schema: api; Owner: -
--

COMMENT ON VIEW api.usage_freshness IS 'How fresh GET /usage is: last refresh of the usage materialized view and the number of changes (of the caller''s clients) since.';


--
-- Name: bi_logins; Type: TABLE; Schema: auth; Owner: -
--

CREATE TABLE auth.bi_logins (
    rolname name NOT NULL,
    client_id ledger.slug,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL
);


--
-- Name: TABLE bi_logins; Type: COMMENT; Schema: auth; Owner: -
--

COMMENT ON TABLE auth.bi_logins IS 'BI database logins and the client each reads (null: every client).';


--
-- Name: login_failures; Type: TABLE; Schema: auth; Owner: -
--

CREATE TABLE auth.login_failures (
    email_hash bytea NOT NULL,
    failures integer NOT NULL,
    first_failed_at timestamp with time zone NOT NULL,
    last_failed_at timestamp with time zone NOT NULL,
    locked_until timestamp with time zone,
    CONSTRAINT login_failures_email_hash_check CHECK ((length(email_hash) = 32)),
    CONSTRAINT login_failures_failures_check CHECK ((failures >= 1))
);


--
-- Name: TABLE login_failures; Type: COMMENT; Schema: auth; Owner: -
--

COMMENT ON TABLE auth.login_failures IS 'Recent failed logins per email hash; enough of them lock the email for a while.';


--
-- Name: secrets; Type: TABLE; Schema: auth; Owner: -
--

CREATE TABLE auth.secrets (
    name text NOT NULL,
    value text NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT secrets_name_check CHECK ((name = 'jwt_secret'::text)),
    CONSTRAINT secrets_value_check CHECK ((length(value) >= 32))
);


--
-- Name: TABLE secrets; Type: COMMENT; Schema: auth; Owner: -
--

COMMENT ON TABLE auth.secrets IS 'Server-side secrets (the JWT signing key). Readable by the owner only.';


--
-- Name: users; Type: TABLE; Schema: auth; Owner: -
--

CREATE TABLE auth.users (
    user_id uuid DEFAULT gen_random_uuid() NOT NULL,
    email text NOT NULL,
    password_hash text NOT NULL,
    client_id ledger.slug,
    roles text[] NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    last_login_at timestamp with time zone,
    disabled_at timestamp with time zone,
    CONSTRAINT users_check CHECK (((NOT ('client'::text = ANY (roles))) OR (client_id IS NOT NULL))),
    CONSTRAINT users_email_check CHECK (((email = lower(email)) AND (length(email) <= 254) AND (email ~ '^[^@\s]+@[^@\s]+\.[^@\s]+$'::text))),
    CONSTRAINT users_password_hash_check CHECK ((password_hash ~ '^\$2[abxy]\$[0-9]{2}\$.{53}$'::text)),
    CONSTRAINT users_roles_check CHECK (((cardinality(roles) >= 1) AND (roles <@ ARRAY['admin'::text, 'client'::text])))
);


--
-- Name: TABLE users; Type: COMMENT; Schema: auth; Owner: -
--

COMMENT ON TABLE auth.users IS 'People who log in: bcrypt password hash, their client (or none) and API roles.';


--
-- Name: billing_changes_change_id_seq; Type: SEQUENCE; Schema: ledger; Owner: -
--

ALTER TABLE ledger.billing_changes ALTER COLUMN change_id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME ledger.billing_changes_change_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);


--
-- Name: billing_refreshes_refresh_id_seq; Type: SEQUENCE; Schema: ledger; Owner: -
--

ALTER TABLE ledger.billing_refreshes ALTER COLUMN refresh_id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME ledger.billing_refreshes_refresh_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);


--
-- Name: client_minimums_minimum_id_seq; Type: SEQUENCE; Schema: ledger; Owner: -
--

ALTER TABLE ledger.client_minimums ALTER COLUMN minimum_id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME ledger.client_minimums_minimum_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);


--
-- Name: code_versions; Type: TABLE; Schema: ledger; Owner: -
--

CREATE TABLE ledger.code_versions (
    code_version text NOT NULL,
    installed_at timestamp with time zone DEFAULT now() NOT NULL
);


--
-- Name: event_ids; Type: TABLE; Schema: ledger; Owner: -
--

CREATE TABLE ledger.event_ids (
    client_id text NOT NULL,
    event_id text NOT NULL
);


--
-- Name: events; Type: TABLE; Schema: ledger; Owner: -
--

CREATE TABLE ledger.events (
    client_id ledger.slug NOT NULL,
    received_at timestamp with time zone NOT NULL,
    event_id text NOT NULL,
    vault_id bigint NOT NULL,
    job_id text NOT NULL,
    pipeline ledger.slug NOT NULL,
    step ledger.slug NOT NULL,
    status ledger.step_status NOT NULL,
    occurred_at timestamp with time zone NOT NULL,
    attempt integer NOT NULL,
    units numeric NOT NULL,
    error_code text,
    error_message text,
    error_retryable boolean,
    source text,
    payload jsonb NOT NULL,
    CONSTRAINT events_attempt_check CHECK ((attempt >= 1)),
    CONSTRAINT events_payload_matches_envelope CHECK (ledger.step_event_v1_valid(payload)),
    CONSTRAINT events_units_check CHECK ((units >= (0)::numeric))
)
PARTITION BY RANGE (received_at);


--
-- Name: events_default; Type: TABLE; Schema: ledger; Owner: -
--

CREATE TABLE ledger.events_default (
    client_id ledger.slug NOT NULL,
    received_at timestamp with time zone NOT NULL,
    event_id text NOT NULL,
    vault_id bigint NOT NULL,
    job_id text NOT NULL,
    pipeline ledger.slug NOT NULL,
    step ledger.slug NOT NULL,
    status ledger.step_status NOT NULL,
    occurred_at timestamp with time zone NOT NULL,
    attempt integer NOT NULL,
    units numeric NOT NULL,
    error_code text,
    error_message text,
    error_retryable boolean,
    source text,
    payload jsonb NOT NULL,
    CONSTRAINT events_attempt_check CHECK ((attempt >= 1)),
    CONSTRAINT events_payload_matches_envelope CHECK (ledger.step_event_v1_valid(payload)),
    CONSTRAINT events_units_check CHECK ((units >= (0)::numeric))
);


--
-- Name: prices_price_id_seq; Type: SEQUENCE; Schema: ledger; Owner: -
--

ALTER TABLE ledger.prices ALTER COLUMN price_id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME ledger.prices_price_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);


--
-- Name: step_outcomes_daily; Type: MATERIALIZED VIEW; Schema: ledger; Owner: -
--

CREATE MATERIALIZED VIEW ledger.step_outcomes_daily AS
 SELECT r.client_id,
    ((r.finished_at AT TIME ZONE 'UTC'::text))::date AS day,
    r.pipeline,
    r.step,
    COALESCE(r.source, ''::text) AS source,
        CASE
            WHEN ((r.status)::text = 'failed'::text) THEN COALESCE(r.error_code, ''::text)
            ELSE ''::text
        END AS error_code,
    count(*) FILTER (WHERE ((r.status)::text = 'completed'::text)) AS completed,
    count(*) FILTER (WHERE ((r.status)::text = 'failed'::text)) AS failed,
    count(*) FILTER (WHERE ((r.status)::text = 'skipped'::text)) AS skipped,
    count(*) FILTER (WHERE (((r.status)::text = 'failed'::text) AND r.error_retryable)) AS retryable,
    min(r.finished_at) AS first_at,
    max(r.finished_at) AS last_at,
    (array_agg(r.error_message ORDER BY r.finished_at DESC, r.job_id DESC) FILTER (WHERE ((r.status)::text = 'failed'::text)))[1] AS sample_message
   FROM ledger.step_runs r
  WHERE (((r.status)::text <> 'started'::text) AND (r.finished_at IS NOT NULL))
  GROUP BY r.client_id, (((r.finished_at AT TIME ZONE 'UTC'::text))::date), r.pipeline, r.step, COALESCE(r.source, ''::text),
        CASE
            WHEN ((r.status)::text = 'failed'::text) THEN COALESCE(r.error_code, ''::text)
            ELSE ''::text
        END
  WITH NO DATA;


--
-- Name: step_outcomes_total; Type: MATERIALIZED VIEW; Schema: ledger; Owner: -
--

CREATE MATERIALIZED VIEW ledger.step_outcomes_total AS
 SELECT d.client_id,
    d.pipeline,
    d.step,
    d.source,
    d.error_code,
    (sum(d.completed))::bigint AS completed,
    (sum(d.failed))::bigint AS failed,
    (sum(d.skipped))::bigint AS skipped,
    (sum(d.retryable))::bigint AS retryable,
    min(d.first_at) AS first_at,
    max(d.last_at) AS last_at,
    (array_agg(d.sample_message ORDER BY d.last_at DESC) FILTER (WHERE (d.sample_message IS NOT NULL)))[1] AS sample_message
   FROM ledger.step_outcomes_daily d
  GROUP BY d.client_id, d.pipeline, d.step, d.source, d.error_code
  WITH NO DATA;


--
-- Name: step_timings_daily; Type: MATERIALIZED VIEW; Schema: ledger; Owner: -
--

CREATE MATERIALIZED VIEW ledger.step_timings_daily AS
 WITH ordered AS (
         SELECT r.client_id,
            r.job_id,
            r.pipeline,
            r.step,
            r.status,
            r.started_at,
            r.finished_at,
            max(r.finished_at) OVER (PARTITION BY r.client_id, r.job_id ORDER BY r.started_at, r.step_index, r.attempt ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS ready_at
           FROM ledger.step_runs r
          WHERE (r.started_at IS NOT NULL)
        )
 SELECT o.client_id,
    ((o.started_at AT TIME ZONE 'UTC'::text))::date AS day,
    o.pipeline,
    o.step,
    count(*) AS attempts,
    count(*) FILTER (WHERE (((o.status)::text = 'completed'::text) AND (o.finished_at IS NOT NULL))) AS completed,
    COALESCE(array_agg((EXTRACT(epoch FROM (o.finished_at - o.started_at)))::double precision ORDER BY (o.finished_at - o.started_at)) FILTER (WHERE (((o.status)::text = 'completed'::text) AND (o.finished_at IS NOT NULL))), '{}'::double precision[]) AS durations_s,
    COALESCE(array_agg((GREATEST((0)::numeric, EXTRACT(epoch FROM (o.started_at - o.ready_at))))::double precision ORDER BY GREATEST((0)::numeric, EXTRACT(epoch FROM (o.started_at - o.ready_at)))) FILTER (WHERE (o.ready_at IS NOT NULL)), '{}'::double precision[]) AS queues_s
   FROM ordered o
  GROUP BY o.client_id, (((o.started_at AT TIME ZONE 'UTC'::text))::date), o.pipeline, o.step
  WITH NO DATA;


--
-- Name: vault; Type: TABLE; Schema: ledger; Owner: -
--

CREATE TABLE ledger.vault (
    client_id text NOT NULL,
    received_at timestamp with time zone DEFAULT now() NOT NULL,
    vault_id bigint NOT NULL,
    batch_id uuid NOT NULL,
    "position" integer NOT NULL,
    channel text NOT NULL,
    event_id text,
    payload jsonb,
    raw_text text,
    outcome text NOT NULL,
    errors jsonb DEFAULT '[]'::jsonb NOT NULL,
    sender_role text,
    token_id uuid,
    code_version text NOT NULL,
    replays jsonb DEFAULT '[]'::jsonb NOT NULL,
    CONSTRAINT vault_channel_check CHECK ((channel = ANY (ARRAY['json'::text, 'ndjson'::text, 'file'::text, 'replay'::text]))),
    CONSTRAINT vault_check CHECK (((payload IS NOT NULL) OR (raw_text IS NOT NULL))),
    CONSTRAINT vault_errors_check CHECK ((jsonb_typeof(errors) = 'array'::text)),
    CONSTRAINT vault_outcome_check CHECK ((outcome = ANY (ARRAY['accepted'::text, 'duplicate'::text, 'rejected'::text]))),
    CONSTRAINT vault_replays_check CHECK ((jsonb_typeof(replays) = 'array'::text))
)
PARTITION BY RANGE (received_at);


--
-- Name: COLUMN vault.replays; Type: COMMENT; Schema: ledger; Owner: -
--

COMMENT ON COLUMN ledger.vault.replays IS 'Replays of this row, oldest first: [{replay_id, replayed_at, outcome, errors, vault_id, code_version}]; vault_id is the replay''s own vault row.';


--
-- Name: vault_default; Type: TABLE; Schema: ledger; Owner: -
--

CREATE TABLE ledger.vault_default (
    client_id text NOT NULL,
    received_at timestamp with time zone DEFAULT now() NOT NULL,
    vault_id bigint NOT NULL,
    batch_id uuid NOT NULL,
    "position" integer NOT NULL,
    channel text NOT NULL,
    event_id text,
    payload jsonb,
    raw_text text,
    outcome text NOT NULL,
    errors jsonb DEFAULT '[]'::jsonb NOT NULL,
    sender_role text,
    token_id uuid,
    code_version text NOT NULL,
    replays jsonb DEFAULT '[]'::jsonb NOT NULL,
    CONSTRAINT vault_channel_check CHECK ((channel = ANY (ARRAY['json'::text, 'ndjson'::text, 'file'::text, 'replay'::text]))),
    CONSTRAINT vault_check CHECK (((payload IS NOT NULL) OR (raw_text IS NOT NULL))),
    CONSTRAINT vault_errors_check CHECK ((jsonb_typeof(errors) = 'array'::text)),
    CONSTRAINT vault_outcome_check CHECK ((outcome = ANY (ARRAY['accepted'::text, 'duplicate'::text, 'rejected'::text]))),
    CONSTRAINT vault_replays_check CHECK ((jsonb_typeof(replays) = 'array'::text))
);


--
-- Name: vault_vault_id_seq; Type: SEQUENCE; Schema: ledger; Owner: -
--

ALTER TABLE ledger.vault ALTER COLUMN vault_id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME ledger.vault_vault_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);


--
-- Name: visible_step_outcomes_daily; Type: VIEW; Schema: ledger; Owner: -
--

CREATE VIEW ledger.visible_step_outcomes_daily WITH (security_barrier='true') AS
 SELECT d.client_id,
    d.day,
    d.pipeline,
    d.step,
    d.source,
    d.error_code,
    d.completed,
    d.failed,
    d.skipped,
    d.retryable,
    d.first_at,
    d.last_at,
    d.sample_message
   FROM ledger.step_outcomes_daily d
  WHERE (d.client_id = ANY (( SELECT ledger._visible_client_ids() AS _visible_client_ids)::text[]));


--
-- Name: VIEW visible_step_outcomes_daily; Type: COMMENT; Schema: ledger; Owner: -
--

COMMENT ON VIEW ledger.visible_step_outcomes_daily IS 'ledger.step_outcomes_daily, only the clients the caller can see.';


--
-- Name: visible_step_outcomes_total; Type: VIEW; Schema: ledger; Owner: -
--

CREATE VIEW ledger.visible_step_outcomes_total WITH (security_barrier='true') AS
 SELECT t.client_id,
    t.pipeline,
    t.step,
    t.source,
    t.error_code,
    t.completed,
    t.failed,
    t.skipped,
    t.retryable,
    t.first_at,
    t.last_at,
    t.sample_message
   FROM ledger.step_outcomes_total t
  WHERE (t.client_id = ANY (( SELECT ledger._visible_client_ids() AS _visible_client_ids)::text[]));


--
-- Name: VIEW visible_step_outcomes_total; Type: COMMENT; Schema: ledger; Owner: -
--

COMMENT ON VIEW ledger.visible_step_outcomes_total IS 'ledger.step_outcomes_total, only the clients the caller can see.';


--
-- Name: visible_step_timings_daily; Type: VIEW; Schema: ledger; Owner: -
--

CREATE VIEW ledger.visible_step_timings_daily WITH (security_barrier='true') AS
 SELECT t.client_id,
    t.day,
    t.pipeline,
    t.step,
    t.attempts,
    t.completed,
    t.durations_s,
    t.queues_s
   FROM ledger.step_timings_daily t
  WHERE (t.client_id = ANY (( SELECT ledger._visible_client_ids() AS _visible_client_ids)::text[]));


--
-- Name: VIEW visible_step_timings_daily; Type: COMMENT; Schema: ledger; Owner: -
--

COMMENT ON VIEW ledger.visible_step_timings_daily IS 'ledger.step_timings_daily, only the clients the caller can see.';


--
-- Name: jsonschema_registry; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.jsonschema_registry (
    uri text NOT NULL,
    schema jsonb NOT NULL
);


--
-- Name: TABLE jsonschema_registry; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON TABLE public.jsonschema_registry IS 'JSON Schema documents that remote $refs may point to, by URI. Never fetched over the network.';


--
-- Name: jsonschema_registry_version; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.jsonschema_registry_version (
    singleton boolean DEFAULT true NOT NULL,
    version bigint DEFAULT 0 NOT NULL,
    CONSTRAINT jsonschema_registry_version_singleton_check CHECK (singleton)
);


--
-- Name: TABLE jsonschema_registry_version; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON TABLE public.jsonschema_registry_version IS 'Change counter of public.jsonschema_registry (one row), read by the validator cache.';


--
-- Name: jobs; Type: VIEW; Schema: reporting; Owner: -
--

CREATE VIEW reporting.jobs WITH (security_invoker='true') AS
 SELECT j.client_id,
    j.job_id,
    j.pipeline,
        CASE
            WHEN ((j.status = 'running'::text) AND ((now() - j.updated_at) > p.stall_timeout)) THEN 'stalled'::text
            ELSE j.status
        END AS status,
    j.steps_total,
    j.steps_done,
    round(LEAST((1)::numeric, ((j.steps_done)::numeric / (NULLIF(j.steps_total, 0))::numeric)), 4) AS progress,
    j.started_at,
    j.updated_at,
    j.finished_at,
    j.last_error,
    j.last_error_step,
    j.events
   FROM (ledger.jobs j
     JOIN ledger.pipelines p ON (((p.pipeline)::text = j.pipeline)));


--
-- Name: VIEW jobs; Type: COMMENT; Schema: reporting; Owner: -
--

COMMENT ON VIEW reporting.jobs IS 'One row per job with status, progress and last error, as GET /jobs shows it. A BI login bound to a client sees only that client''s jobs.';


--
-- Name: COLUMN jobs.status; Type: COMMENT; Schema: reporting; Owner: -
--

COMMENT ON COLUMN reporting.jobs.status IS 'running, completed, failed, or stalled (running with no event for longer than the pipeline''s stall timeout).';


--
-- Name: COLUMN jobs.progress; Type: COMMENT; Schema: reporting; Owner: -
--

COMMENT ON COLUMN reporting.jobs.progress IS 'steps_done / steps_total, from 0 to 1.';


--
-- Name: revenue_by_client_month; Type: VIEW; Schema: reporting; Owner: -
--

CREATE VIEW reporting.revenue_by_client_month WITH (security_invoker='true') AS
 SELECT p.client_id,
    to_char((p.period)::timestamp with time zone, 'YYYY-MM'::text) AS period,
    p.period AS period_start,
    c.currency,
    COALESCE(u.completed_steps, (0)::bigint) AS completed_steps,
    COALESCE(u.units, (0)::numeric) AS units,
    COALESCE(u.usage_amount, (0)::numeric) AS usage_amount,
    m.monthly_minimum,
    GREATEST((COALESCE(m.monthly_minimum, (0)::numeric) - COALESCE(u.usage_amount, (0)::numeric)), (0)::numeric) AS minimum_topup,
    (COALESCE(u.usage_amount, (0)::numeric) + GREATEST((COALESCE(m.monthly_minimum, (0)::numeric) - COALESCE(u.usage_amount, (0)::numeric)), (0)::numeric)) AS amount,
    COALESCE(u.unpriced_steps, (0)::bigint) AS unpriced_steps,
        CASE
            WHEN (i.client_id IS NULL) THEN 'open'::text
            ELSE 'finalized'::text
        END AS invoice_status,
    i.invoice_no,
    i.total AS invoiced_total,
    (NOT ledger._usage_fresh(p.client_id, p.period)) AS stale
   FROM ((((( SELECT v.client_id,
            v.period
           FROM ledger.usage_lines_visible v
        UNION
         SELECT i_1.client_id,
            i_1.period
           FROM ledger.invoices i_1
        UNION
         SELECT f.client_id,
            (g.g)::date AS g
           FROM (( SELECT cm.client_id,
                    min(cm.effective_from) AS first_month
                   FROM ledger.client_minimums cm
                  WHERE (cm.monthly_minimum > (0)::numeric)
                  GROUP BY cm.client_id) f
             CROSS JOIN LATERAL generate_series((f.first_month)::timestamp with time zone, (ledger._month(now()))::timestamp with time zone, '1 mon'::interval) g(g))) p
     JOIN ledger.clients c ON (((c.client_id)::text = p.client_id)))
     LEFT JOIN ( SELECT v.client_id,
            v.period,
            (sum(v.completed_steps))::bigint AS completed_steps,
            sum(v.units) AS units,
            sum(v.amount) AS usage_amount,
            (sum(v.completed_steps) FILTER (WHERE (NOT v.priced)))::bigint AS unpriced_steps
           FROM ledger.usage_lines_visible v
          GROUP BY v.client_id, v.period) u ON (((u.client_id = p.client_id) AND (u.period = p.period))))
     LEFT JOIN LATERAL ( SELECT cm.monthly_minimum
           FROM ledger.client_minimums cm
          WHERE (((cm.client_id)::text = p.client_id) AND (cm.currency = c.currency) AND (cm.effective_from <= p.period))
          ORDER BY cm.effective_from DESC, cm.minimum_id DESC
         LIMIT 1) m ON (true))
     LEFT JOIN ledger.invoices i ON ((((i.client_id)::text = p.client_id) AND (i.period = p.period))))
  WHERE ((u.client_id IS NOT NULL) OR (i.client_id IS NOT NULL) OR (m.monthly_minimum > (0)::numeric));


--
-- Name: VIEW revenue_by_client_month; Type: COMMENT; Schema: reporting; Owner: -
--

COMMENT ON VIEW reporting.revenue_by_client_month IS 'Revenue per client and month: usage amount, monthly-minimum top-up, and the finalized invoice (whose total also carries adjustments of earlier months).';


--
-- Name: minimum_commitments; Type: VIEW; Schema: reporting; Owner: -
--

CREATE VIEW reporting.minimum_commitments WITH (security_invoker='true') AS
 SELECT r.client_id,
    r.period,
    r.period_start,
    r.currency,
    r.monthly_minimum,
    r.usage_amount,
    (r.usage_amount - r.monthly_minimum) AS difference,
        CASE
            WHEN (r.usage_amount >= r.monthly_minimum) THEN 'over'::text
            ELSE 'under'::text
        END AS status,
    r.minimum_topup,
    r.invoice_status
   FROM reporting.revenue_by_client_month r
  WHERE (r.monthly_minimum > (0)::numeric);


--
-- Name: VIEW minimum_commitments; Type: COMMENT; Schema: reporting; Owner: -
--

COMMENT ON VIEW reporting.minimum_commitments IS 'Clients over or under their monthly minimum, per month.';


--
-- Name: step_outcomes_daily; Type: VIEW; Schema: reporting; Owner: -
--

CREATE VIEW reporting.step_outcomes_daily WITH (security_invoker='true') AS
 SELECT d.client_id,
    d.day,
    d.pipeline,
    d.step,
    d.source,
    d.error_code,
    d.completed,
    d.failed,
    d.skipped,
    d.retryable,
    d.first_at,
    d.last_at,
    d.sample_message
   FROM ledger.visible_step_outcomes_daily d;


--
-- Name: VIEW step_outcomes_daily; Type: COMMENT; Schema: reporting; Owner: -
--

COMMENT ON VIEW reporting.step_outcomes_daily IS 'Finished step attempts per client, UTC day, pipeline, step, site (source) and error code; as of api.analytics_freshness.';


--
-- Name: unpriced_completed_steps; Type: VIEW; Schema: reporting; Owner: -
--

CREATE VIEW reporting.unpriced_completed_steps WITH (security_invoker='true') AS
 SELECT u.client_id,
    to_char((u.period)::timestamp with time zone, 'YYYY-MM'::text) AS period,
    u.period AS period_start,
    u.pipeline,
    u.step,
    (sum(u.completed_steps))::bigint AS completed_steps,
    sum(u.units) AS units,
    min(u.first_completed_at) AS first_completed_at,
    max(u.last_completed_at) AS last_completed_at
   FROM ledger.usage_lines_visible u
  WHERE (NOT u.priced)
  GROUP BY u.client_id, u.period, u.pipeline, u.step;


--
-- Name: VIEW unpriced_completed_steps; Type: COMMENT; Schema: reporting; Owner: -
--

COMMENT ON VIEW reporting.unpriced_completed_steps IS 'Completed steps billed at 0 because no price was in force: add a price (stepledger price set) to bill them.';


--
-- Name: usage_by_step; Type: VIEW; Schema: reporting; Owner: -
--

CREATE VIEW reporting.usage_by_step WITH (security_invoker='true') AS
 SELECT u.client_id,
    to_char((u.period)::timestamp with time zone, 'YYYY-MM'::text) AS period,
    u.period AS period_start,
    u.pipeline,
    u.step,
    s.step_index,
    (sum(u.completed_steps))::bigint AS completed_steps,
    sum(u.units) AS units,
    sum(u.amount) AS amount,
    u.currency,
    (COALESCE(sum(u.completed_steps) FILTER (WHERE (NOT u.priced)), (0)::numeric))::bigint AS unpriced_steps,
    COALESCE(sum(u.units) FILTER (WHERE (NOT u.priced)), (0)::numeric) AS unpriced_units,
    (NOT ledger._usage_fresh(u.client_id, u.period)) AS stale
   FROM (ledger.usage_lines_visible u
     LEFT JOIN ledger.pipeline_steps s ON ((((s.pipeline)::text = u.pipeline) AND ((s.step)::text = u.step))))
  GROUP BY u.client_id, u.period, u.pipeline, u.step, s.step_index, u.currency;


--
-- Name: VIEW usage_by_step; Type: COMMENT; Schema: reporting; Owner: -
--

COMMENT ON VIEW reporting.usage_by_step IS 'Usage and amount per client, month, pipeline and step (from the usage materialized view).';


--
-- Name: events_default; Type: TABLE ATTACH; Schema: ledger; Owner: -
--

ALTER TABLE ONLY ledger.events ATTACH PARTITION ledger.events_default DEFAULT;


--
-- Name: vault_default; Type: TABLE ATTACH; Schema: ledger; Owner: -
--

ALTER TABLE ONLY ledger.vault ATTACH PARTITION ledger.vault_default DEFAULT;


--
-- Name: api_tokens api_tokens_pkey; Type: CONSTRAINT; Schema: auth; Owner: -
--

ALTER TABLE ONLY auth.api_tokens
    ADD CONSTRAINT api_tokens_pkey PRIMARY KEY (token_id);


--
-- Name: api_tokens api_tokens_token_hash_key; Type: CONSTRAINT; Schema: auth; Owner: -
--

ALTER TABLE ONLY auth.api_tokens
    ADD CONSTRAINT api_tokens_token_hash_key UNIQUE (token_hash);


--
-- Name: bi_logins bi_logins_pkey; Type: CONSTRAINT; Schema: auth; Owner: -
--

ALTER TABLE ONLY auth.bi_logins
    ADD CONSTRAINT bi_logins_pkey PRIMARY KEY (rolname);


--
-- Name: login_failures login_failures_pkey; Type: CONSTRAINT; Schema: auth; Owner: -
--

ALTER TABLE ONLY auth.login_failures
    ADD CONSTRAINT login_failures_pkey PRIMARY KEY (email_hash);


--
-- Name: secrets secrets_pkey; Type: CONSTRAINT; Schema: auth; Owner: -
--

ALTER TABLE ONLY auth.secrets
    ADD CONSTRAINT secrets_pkey PRIMARY KEY (name);


--
-- Name: users users_email_key; Type: CONSTRAINT; Schema: auth; Owner: -
--

ALTER TABLE ONLY auth.users
    ADD CONSTRAINT users_email_key UNIQUE (email);


--
-- Name: users users_pkey; Type: CONSTRAINT; Schema: auth; Owner: -
--

ALTER TABLE ONLY auth.users
    ADD CONSTRAINT users_pkey PRIMARY KEY (user_id);


--
-- Name: analytics_refreshes analytics_refreshes_pkey; Type: CONSTRAINT; Schema: ledger; Owner: -
--

ALTER TABLE ONLY ledger.analytics_refreshes
    ADD CONSTRAINT analytics_refreshes_pkey PRIMARY KEY (view_name);


--
-- Name: billing_changes billing_changes_pkey; Type: CONSTRAINT; Schema: ledger; Owner: -
--

ALTER TABLE ONLY ledger.billing_changes
    ADD CONSTRAINT billing_changes_pkey PRIMARY KEY (change_id);


--
-- Name: billing_refreshes billing_refreshes_pkey; Type: CONSTRAINT; Schema: ledger; Owner: -
--

ALTER TABLE ONLY ledger.billing_refreshes
    ADD CONSTRAINT billing_refreshes_pkey PRIMARY KEY (refresh_id);


--
-- Name: client_minimums client_minimums_pkey; Type: CONSTRAINT; Schema: ledger; Owner: -
--

ALTER TABLE ONLY ledger.client_minimums
    ADD CONSTRAINT client_minimums_pkey PRIMARY KEY (minimum_id);


--
-- Name: clients clients_pkey; Type: CONSTRAINT; Schema: ledger; Owner: -
--

ALTER TABLE ONLY ledger.clients
    ADD CONSTRAINT clients_pkey PRIMARY KEY (client_id);


--
-- Name: code_versions code_versions_pkey; Type: CONSTRAINT; Schema: ledger; Owner: -
--

ALTER TABLE ONLY ledger.code_versions
    ADD CONSTRAINT code_versions_pkey PRIMARY KEY (code_version);


--
-- Name: event_ids event_ids_pkey; Type: CONSTRAINT; Schema: ledger; Owner: -
--

ALTER TABLE ONLY ledger.event_ids
    ADD CONSTRAINT event_ids_pkey PRIMARY KEY (client_id, event_id);


--
-- Name: events events_pkey; Type: CONSTRAINT; Schema: ledger; Owner: -
--

ALTER TABLE ONLY ledger.events
    ADD CONSTRAINT events_pkey PRIMARY KEY (client_id, received_at, event_id);


--
-- Name: events_default events_default_pkey; Type: CONSTRAINT; Schema: ledger; Owner: -
--

ALTER TABLE ONLY ledger.events_default
    ADD CONSTRAINT events_default_pkey PRIMARY KEY (client_id, received_at, event_id);


--
-- Name: invoice_lines invoice_lines_pkey; Type: CONSTRAINT; Schema: ledger; Owner: -
--

ALTER TABLE ONLY ledger.invoice_lines
    ADD CONSTRAINT invoice_lines_pkey PRIMARY KEY (client_id, period, line_no);


--
-- Name: invoices invoices_invoice_no_key; Type: CONSTRAINT; Schema: ledger; Owner: -
--

ALTER TABLE ONLY ledger.invoices
    ADD CONSTRAINT invoices_invoice_no_key UNIQUE (invoice_no);


--
-- Name: invoices invoices_pkey; Type: CONSTRAINT; Schema: ledger; Owner: -
--

ALTER TABLE ONLY ledger.invoices
    ADD CONSTRAINT invoices_pkey PRIMARY KEY (client_id, period);


--
-- Name: job_steps job_steps_pkey; Type: CONSTRAINT; Schema: ledger; Owner: -
--

ALTER TABLE ONLY ledger.job_steps
    ADD CONSTRAINT job_steps_pkey PRIMARY KEY (client_id, job_id, step);


--
-- Name: jobs jobs_pkey; Type: CONSTRAINT; Schema: ledger; Owner: -
--

ALTER TABLE ONLY ledger.jobs
    ADD CONSTRAINT jobs_pkey PRIMARY KEY (client_id, job_id);


--
-- Name: pipeline_steps pipeline_steps_pipeline_step_index_key; Type: CONSTRAINT; Schema: ledger; Owner: -
--

ALTER TABLE ONLY ledger.pipeline_steps
    ADD CONSTRAINT pipeline_steps_pipeline_step_index_key UNIQUE (pipeline, step_index) DEFERRABLE INITIALLY DEFERRED;


--
-- Name: pipeline_steps pipeline_steps_pkey; Type: CONSTRAINT; Schema: ledger; Owner: -
--

ALTER TABLE ONLY ledger.pipeline_steps
    ADD CONSTRAINT pipeline_steps_pkey PRIMARY KEY (pipeline, step);


--
-- Name: pipelines pipelines_pkey; Type: CONSTRAINT; Schema: ledger; Owner: -
--

ALTER TABLE ONLY ledger.pipelines
    ADD CONSTRAINT pipelines_pkey PRIMARY KEY (pipeline);


--
-- Name: prices prices_pkey; Type: CONSTRAINT; Schema: ledger; Owner: -
--

ALTER TABLE ONLY ledger.prices
    ADD CONSTRAINT prices_pkey PRIMARY KEY (price_id);


--
-- Name: replays replays_pkey; Type: CONSTRAINT; Schema: ledger; Owner: -
--

ALTER TABLE ONLY ledger.replays
    ADD CONSTRAINT replays_pkey PRIMARY KEY (replay_id);


--
-- Name: step_runs step_runs_pkey; Type: CONSTRAINT; Schema: ledger; Owner: -
--

ALTER TABLE ONLY ledger.step_runs
    ADD CONSTRAINT step_runs_pkey PRIMARY KEY (client_id, job_id, step, attempt);


--
-- Name: vault vault_pkey; Type: CONSTRAINT; Schema: ledger; Owner: -
--

ALTER TABLE ONLY ledger.vault
    ADD CONSTRAINT vault_pkey PRIMARY KEY (client_id, received_at, vault_id);


--
-- Name: vault_default vault_default_pkey; Type: CONSTRAINT; Schema: ledger; Owner: -
--

ALTER TABLE ONLY ledger.vault_default
    ADD CONSTRAINT vault_default_pkey PRIMARY KEY (client_id, received_at, vault_id);


--
-- Name: jsonschema_registry jsonschema_registry_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.jsonschema_registry
    ADD CONSTRAINT jsonschema_registry_pkey PRIMARY KEY (uri);


--
-- Name: jsonschema_registry_version jsonschema_registry_version_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.jsonschema_registry_version
    ADD CONSTRAINT jsonschema_registry_version_pkey PRIMARY KEY (singleton);


--
-- Name: api_tokens_client_id_idx; Type: INDEX; Schema: auth; Owner: -
--

CREATE INDEX api_tokens_client_id_idx ON auth.api_tokens USING btree (client_id);


--
-- Name: bi_logins_client_id_idx; Type: INDEX; Schema: auth; Owner: -
--

CREATE INDEX bi_logins_client_id_idx ON auth.bi_logins USING btree (client_id);


--
-- Name: login_failures_last_failed_at_idx; Type: INDEX; Schema: auth; Owner: -
--

CREATE INDEX login_failures_last_failed_at_idx ON auth.login_failures USING btree (last_failed_at);


--
-- Name: users_client_id_idx; Type: INDEX; Schema: auth; Owner: -
--

CREATE INDEX users_client_id_idx ON auth.users USING btree (client_id);


--
-- Name: billing_changes_client; Type: INDEX; Schema: ledger; Owner: -
--

CREATE INDEX billing_changes_client ON ledger.billing_changes USING btree (client_id, period_from);


--
-- Name: client_minimums_lookup; Type: INDEX; Schema: ledger; Owner: -
--

CREATE INDEX client_minimums_lookup ON ledger.client_minimums USING btree (client_id, effective_from);


--
-- Name: events_client_id_job_id_idx; Type: INDEX; Schema: ledger; Owner: -
--

CREATE INDEX events_client_id_job_id_idx ON ONLY ledger.events USING btree (client_id, job_id);


--
-- Name: events_default_client_id_job_id_idx; Type: INDEX; Schema: ledger; Owner: -
--

CREATE INDEX events_default_client_id_job_id_idx ON ledger.events_default USING btree (client_id, job_id);


--
-- Name: invoice_lines_for_period; Type: INDEX; Schema: ledger; Owner: -
--

CREATE INDEX invoice_lines_for_period ON ledger.invoice_lines USING btree (client_id, for_period);


--
-- Name: job_steps_billed; Type: INDEX; Schema: ledger; Owner: -
--

CREATE INDEX job_steps_billed ON ledger.job_steps USING btree (client_id, completed_at) WHERE (completed_at IS NOT NULL);


--
-- Name: jobs_changed_xid_idx; Type: INDEX; Schema: ledger; Owner: -
--

CREATE INDEX jobs_changed_xid_idx ON ledger.jobs USING btree (changed_xid);


--
-- Name: jobs_client_id_changed_xid_idx; Type: INDEX; Schema: ledger; Owner: -
--

CREATE INDEX jobs_client_id_changed_xid_idx ON ledger.jobs USING btree (client_id, changed_xid);


--
-- Name: jobs_client_id_status_updated_at_idx; Type: INDEX; Schema: ledger; Owner: -
--

CREATE INDEX jobs_client_id_status_updated_at_idx ON ledger.jobs USING btree (client_id, status, updated_at DESC);


--
-- Name: jobs_client_id_updated_at_idx; Type: INDEX; Schema: ledger; Owner: -
--

CREATE INDEX jobs_client_id_updated_at_idx ON ledger.jobs USING btree (client_id, updated_at DESC);


--
-- Name: jobs_updated_at_idx; Type: INDEX; Schema: ledger; Owner: -
--

CREATE INDEX jobs_updated_at_idx ON ledger.jobs USING btree (updated_at DESC);


--
-- Name: prices_client; Type: INDEX; Schema: ledger; Owner: -
--

CREATE INDEX prices_client ON ledger.prices USING btree (client_id, effective_from) WHERE (client_id IS NOT NULL);


--
-- Name: prices_lookup; Type: INDEX; Schema: ledger; Owner: -
--

CREATE INDEX prices_lookup ON ledger.prices USING btree (pipeline, step, currency, client_id, effective_from);


--
-- Name: step_outcomes_daily_day; Type: INDEX; Schema: ledger; Owner: -
--

CREATE INDEX step_outcomes_daily_day ON ledger.step_outcomes_daily USING btree (day);


--
-- Name: step_outcomes_daily_key; Type: INDEX; Schema: ledger; Owner: -
--

CREATE UNIQUE INDEX step_outcomes_daily_key ON ledger.step_outcomes_daily USING btree (client_id, day, pipeline, step, source, error_code);


--
-- Name: step_outcomes_total_key; Type: INDEX; Schema: ledger; Owner: -
--

CREATE UNIQUE INDEX step_outcomes_total_key ON ledger.step_outcomes_total USING btree (client_id, pipeline, step, source, error_code);


--
-- Name: step_timings_daily_day; Type: INDEX; Schema: ledger; Owner: -
--

CREATE INDEX step_timings_daily_day ON ledger.step_timings_daily USING btree (day);


--
-- Name: step_timings_daily_key; Type: INDEX; Schema: ledger; Owner: -
--

CREATE UNIQUE INDEX step_timings_daily_key ON ledger.step_timings_daily USING btree (client_id, day, pipeline, step);


--
-- Name: usage_lines_monthly_key; Type: INDEX; Schema: ledger; Owner: -
--

CREATE UNIQUE INDEX usage_lines_monthly_key ON ledger.usage_lines_monthly USING btree (client_id, period, pipeline, step, unit_price, priced);


--
-- Name: usage_lines_monthly_period; Type: INDEX; Schema: ledger; Owner: -
--

CREATE INDEX usage_lines_monthly_period ON ledger.usage_lines_monthly USING btree (period, client_id);


--
-- Name: vault_batch_id_idx; Type: INDEX; Schema: ledger; Owner: -
--

CREATE INDEX vault_batch_id_idx ON ONLY ledger.vault USING btree (batch_id);


--
-- Name: vault_outcome_received_at_idx; Type: INDEX; Schema: ledger; Owner: -
--

CREATE INDEX vault_outcome_received_at_idx ON ONLY ledger.vault USING btree (outcome, received_at) WHERE (outcome = 'rejected'::text);


--
-- Name: vault_received_at_idx; Type: INDEX; Schema: ledger; Owner: -
--

CREATE INDEX vault_received_at_idx ON ONLY ledger.vault USING btree (received_at);


--
-- Name: vault_default_batch_id_idx; Type: INDEX; Schema: ledger; Owner: -
--

CREATE INDEX vault_default_batch_id_idx ON ledger.vault_default USING btree (batch_id);


--
-- Name: vault_default_outcome_received_at_idx; Type: INDEX; Schema: ledger; Owner: -
--

CREATE INDEX vault_default_outcome_received_at_idx ON ledger.vault_default USING btree (outcome, received_at) WHERE (outcome = 'rejected'::text);


--
-- Name: vault_default_received_at_idx; Type: INDEX; Schema: ledger; Owner: -
--

CREATE INDEX vault_default_received_at_idx ON ledger.vault_default USING btree (received_at);


--
-- Name: events_default_client_id_job_id_idx; Type: INDEX ATTACH; Schema: ledger; Owner: -
--

ALTER INDEX ledger.events_client_id_job_id_idx ATTACH PARTITION ledger.events_default_client_id_job_id_idx;


--
-- Name: events_default_pkey; Type: INDEX ATTACH; Schema: ledger; Owner: -
--

ALTER INDEX ledger.events_pkey ATTACH PARTITION ledger.events_default_pkey;


--
-- Name: vault_default_batch_id_idx; Type: INDEX ATTACH; Schema: ledger; Owner: -
--

ALTER INDEX ledger.vault_batch_id_idx ATTACH PARTITION ledger.vault_default_batch_id_idx;


--
-- Name: vault_default_outcome_received_at_idx; Type: INDEX ATTACH; Schema: ledger; Owner: -
--

ALTER INDEX ledger.vault_outcome_received_at_idx ATTACH PARTITION ledger.vault_default_outcome_received_at_idx;


--
-- Name: vault_default_pkey; Type: INDEX ATTACH; Schema: ledger; Owner: -
--

ALTER INDEX ledger.vault_pkey ATTACH PARTITION ledger.vault_default_pkey;


--
-- Name: vault_default_received_at_idx; Type: INDEX ATTACH; Schema: ledger; Owner: -
--

ALTER INDEX ledger.vault_received_at_idx ATTACH PARTITION ledger.vault_default_received_at_idx;


--
-- Name: vault append_only; Type: TRIGGER; Schema: ledger; Owner: -
--

CREATE TRIGGER append_only BEFORE DELETE OR UPDATE ON ledger.vault FOR EACH ROW EXECUTE FUNCTION ledger.tg_vault__append_only();


--
-- Name: vault append_only_truncate; Type: TRIGGER; Schema: ledger; Owner: -
--

CREATE TRIGGER append_only_truncate BEFORE TRUNCATE ON ledger.vault FOR EACH STATEMENT EXECUTE FUNCTION ledger.tg_vault__append_only();


--
-- Name: events apply_progress; Type: TRIGGER; Schema: ledger; Owner: -
--

CREATE TRIGGER apply_progress AFTER INSERT ON ledger.events REFERENCING NEW TABLE AS new_events FOR EACH STATEMENT EXECUTE FUNCTION ledger.tg_events__apply_progress();


--
-- Name: clients billing_currency_change; Type: TRIGGER; Schema: ledger; Owner: -
--

CREATE TRIGGER billing_currency_change BEFORE UPDATE OF currency ON ledger.clients FOR EACH ROW EXECUTE FUNCTION ledger.tg_clients__currency_change();


--
-- Name: client_minimums check_minimum; Type: TRIGGER; Schema: ledger; Owner: -
--

CREATE TRIGGER check_minimum BEFORE INSERT ON ledger.client_minimums FOR EACH ROW EXECUTE FUNCTION ledger.tg_client_minimums__check();


--
-- Name: prices check_price; Type: TRIGGER; Schema: ledger; Owner: -
--

CREATE TRIGGER check_price BEFORE INSERT ON ledger.prices FOR EACH ROW EXECUTE FUNCTION ledger.tg_prices__check();


--
-- Name: client_minimums immutable_rows; Type: TRIGGER; Schema: ledger; Owner: -
--

CREATE TRIGGER immutable_rows BEFORE DELETE OR UPDATE ON ledger.client_minimums FOR EACH ROW EXECUTE FUNCTION ledger.tg_billing__immutable();


--
-- Name: invoice_lines immutable_rows; Type: TRIGGER; Schema: ledger; Owner: -
--

CREATE TRIGGER immutable_rows BEFORE DELETE OR UPDATE ON ledger.invoice_lines FOR EACH ROW EXECUTE FUNCTION ledger.tg_billing__immutable();


--
-- Name: invoices immutable_rows; Type: TRIGGER; Schema: ledger; Owner: -
--

CREATE TRIGGER immutable_rows BEFORE DELETE OR UPDATE ON ledger.invoices FOR EACH ROW EXECUTE FUNCTION ledger.tg_billing__immutable();


--
-- Name: prices immutable_rows; Type: TRIGGER; Schema: ledger; Owner: -
--

CREATE TRIGGER immutable_rows BEFORE DELETE OR UPDATE ON ledger.prices FOR EACH ROW EXECUTE FUNCTION ledger.tg_billing__immutable();


--
-- Name: client_minimums immutable_table; Type: TRIGGER; Schema: ledger; Owner: -
--

CREATE TRIGGER immutable_table BEFORE TRUNCATE ON ledger.client_minimums FOR EACH STATEMENT EXECUTE FUNCTION ledger.tg_billing__immutable();


--
-- Name: invoice_lines immutable_table; Type: TRIGGER; Schema: ledger; Owner: -
--

CREATE TRIGGER immutable_table BEFORE TRUNCATE ON ledger.invoice_lines FOR EACH STATEMENT EXECUTE FUNCTION ledger.tg_billing__immutable();


--
-- Name: invoices immutable_table; Type: TRIGGER; Schema: ledger; Owner: -
--

CREATE TRIGGER immutable_table BEFORE TRUNCATE ON ledger.invoices FOR EACH STATEMENT EXECUTE FUNCTION ledger.tg_billing__immutable();


--
-- Name: prices immutable_table; Type: TRIGGER; Schema: ledger; Owner: -
--

CREATE TRIGGER immutable_table BEFORE TRUNCATE ON ledger.prices FOR EACH STATEMENT EXECUTE FUNCTION ledger.tg_billing__immutable();


--
-- Name: job_steps log_billing_delete; Type: TRIGGER; Schema: ledger; Owner: -
--

CREATE TRIGGER log_billing_delete AFTER DELETE ON ledger.job_steps REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION ledger.tg_job_steps__log_billing_delete();


--
-- Name: job_steps log_billing_insert; Type: TRIGGER; Schema: ledger; Owner: -
--

CREATE TRIGGER log_billing_insert AFTER INSERT ON ledger.job_steps REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION ledger.tg_job_steps__log_billing_insert();


--
-- Name: job_steps log_billing_truncate; Type: TRIGGER; Schema: ledger; Owner: -
--

CREATE TRIGGER log_billing_truncate AFTER TRUNCATE ON ledger.job_steps FOR EACH STATEMENT EXECUTE FUNCTION ledger.tg_job_steps__log_billing_delete();


--
-- Name: job_steps log_billing_update; Type: TRIGGER; Schema: ledger; Owner: -
--

CREATE TRIGGER log_billing_update AFTER UPDATE ON ledger.job_steps REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION ledger.tg_job_steps__log_billing_update();


--
-- Name: jsonschema_registry jsonschema_registry__bump_version; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER jsonschema_registry__bump_version AFTER INSERT OR DELETE OR UPDATE OR TRUNCATE ON public.jsonschema_registry FOR EACH STATEMENT EXECUTE FUNCTION public.tg_jsonschema_registry__bump_version();


--
-- Name: api_tokens api_tokens_client_id_fkey; Type: FK CONSTRAINT; Schema: auth; Owner: -
--

ALTER TABLE ONLY auth.api_tokens
    ADD CONSTRAINT api_tokens_client_id_fkey FOREIGN KEY (client_id) REFERENCES ledger.clients(client_id);


--
-- Name: bi_logins bi_logins_client_id_fkey; Type: FK CONSTRAINT; Schema: auth; Owner: -
--

ALTER TABLE ONLY auth.bi_logins
    ADD CONSTRAINT bi_logins_client_id_fkey FOREIGN KEY (client_id) REFERENCES ledger.clients(client_id);


--
-- Name: users users_client_id_fkey; Type: FK CONSTRAINT; Schema: auth; Owner: -
--

ALTER TABLE ONLY auth.users
    ADD CONSTRAINT users_client_id_fkey FOREIGN KEY (client_id) REFERENCES ledger.clients(client_id);


--
-- Name: client_minimums client_minimums_client_id_fkey; Type: FK CONSTRAINT; Schema: ledger; Owner: -
--

ALTER TABLE ONLY ledger.client_minimums
    ADD CONSTRAINT client_minimums_client_id_fkey FOREIGN KEY (client_id) REFERENCES ledger.clients(client_id);


--
-- Name: invoice_lines invoice_lines_client_id_period_fkey; Type: FK CONSTRAINT; Schema: ledger; Owner: -
--

ALTER TABLE ONLY ledger.invoice_lines
    ADD CONSTRAINT invoice_lines_client_id_period_fkey FOREIGN KEY (client_id, period) REFERENCES ledger.invoices(client_id, period);


--
-- Name: invoices invoices_client_id_fkey; Type: FK CONSTRAINT; Schema: ledger; Owner: -
--

ALTER TABLE ONLY ledger.invoices
    ADD CONSTRAINT invoices_client_id_fkey FOREIGN KEY (client_id) REFERENCES ledger.clients(client_id);


--
-- Name: pipeline_steps pipeline_steps_pipeline_fkey; Type: FK CONSTRAINT; Schema: ledger; Owner: -
--

ALTER TABLE ONLY ledger.pipeline_steps
    ADD CONSTRAINT pipeline_steps_pipeline_fkey FOREIGN KEY (pipeline) REFERENCES ledger.pipelines(pipeline) ON DELETE CASCADE;


--
-- Name: prices prices_client_id_fkey; Type: FK CONSTRAINT; Schema: ledger; Owner: -
--

ALTER TABLE ONLY ledger.prices
    ADD CONSTRAINT prices_client_id_fkey FOREIGN KEY (client_id) REFERENCES ledger.clients(client_id);


--
-- Name: api_tokens; Type: ROW SECURITY; Schema: auth; Owner: -
--

ALTER TABLE auth.api_tokens ENABLE ROW LEVEL SECURITY;

--
-- Name: bi_logins; Type: ROW SECURITY; Schema: auth; Owner: -
--

ALTER TABLE auth.bi_logins ENABLE ROW LEVEL SECURITY;

--
-- Name: login_failures; Type: ROW SECURITY; Schema: auth; Owner: -
--

ALTER TABLE auth.login_failures ENABLE ROW LEVEL SECURITY;

--
-- Name: secrets; Type: ROW SECURITY; Schema: auth; Owner: -
--

ALTER TABLE auth.secrets ENABLE ROW LEVEL SECURITY;

--
-- Name: api_tokens select_admin; Type: POLICY; Schema: auth; Owner: -
--

CREATE POLICY select_admin ON auth.api_tokens FOR SELECT TO admin USING (true);


--
-- Name: users; Type: ROW SECURITY; Schema: auth; Owner: -
--

ALTER TABLE auth.users ENABLE ROW LEVEL SECURITY;

--
-- Name: billing_changes all_admin; Type: POLICY; Schema: ledger; Owner: -
--

CREATE POLICY all_admin ON ledger.billing_changes TO admin USING (true) WITH CHECK (true);


--
-- Name: client_minimums all_admin; Type: POLICY; Schema: ledger; Owner: -
--

CREATE POLICY all_admin ON ledger.client_minimums TO admin USING (true) WITH CHECK (true);


--
-- Name: clients all_admin; Type: POLICY; Schema: ledger; Owner: -
--

CREATE POLICY all_admin ON ledger.clients TO admin USING (true) WITH CHECK (true);


--
-- Name: event_ids all_admin; Type: POLICY; Schema: ledger; Owner: -
--

CREATE POLICY all_admin ON ledger.event_ids TO admin USING (true) WITH CHECK (true);


--
-- Name: events all_admin; Type: POLICY; Schema: ledger; Owner: -
--

CREATE POLICY all_admin ON ledger.events TO admin USING (true) WITH CHECK (true);


--
-- Name: invoice_lines all_admin; Type: POLICY; Schema: ledger; Owner: -
--

CREATE POLICY all_admin ON ledger.invoice_lines TO admin USING (true) WITH CHECK (true);


--
-- Name: invoices all_admin; Type: POLICY; Schema: ledger; Owner: -
--

CREATE POLICY all_admin ON ledger.invoices TO admin USING (true) WITH CHECK (true);


--
-- Name: job_steps all_admin; Type: POLICY; Schema: ledger; Owner: -
--

CREATE POLICY all_admin ON ledger.job_steps TO admin USING (true) WITH CHECK (true);


--
-- Name: jobs all_admin; Type: POLICY; Schema: ledger; Owner: -
--

CREATE POLICY all_admin ON ledger.jobs TO admin USING (true) WITH CHECK (true);


--
-- Name: prices all_admin; Type: POLICY; Schema: ledger; Owner: -
--

CREATE POLICY all_admin ON ledger.prices TO admin USING (true) WITH CHECK (true);


--
-- Name: step_runs all_admin; Type: POLICY; Schema: ledger; Owner: -
--

CREATE POLICY all_admin ON ledger.step_runs TO admin USING (true) WITH CHECK (true);


--
-- Name: vault all_admin; Type: POLICY; Schema: ledger; Owner: -
--

CREATE POLICY all_admin ON ledger.vault TO admin USING (true) WITH CHECK (true);


--
-- Name: billing_changes; Type: ROW SECURITY; Schema: ledger; Owner: -
--

ALTER TABLE ledger.billing_changes ENABLE ROW LEVEL SECURITY;

--
-- Name: client_minimums; Type: ROW SECURITY; Schema: ledger; Owner: -
--

ALTER TABLE ledger.client_minimums ENABLE ROW LEVEL SECURITY;

--
-- Name: clients; Type: ROW SECURITY; Schema: ledger; Owner: -
--

ALTER TABLE ledger.clients ENABLE ROW LEVEL SECURITY;

--
-- Name: event_ids; Type: ROW SECURITY; Schema: ledger; Owner: -
--

ALTER TABLE ledger.event_ids ENABLE ROW LEVEL SECURITY;

--
-- Name: events; Type: ROW SECURITY; Schema: ledger; Owner: -
--

ALTER TABLE ledger.events ENABLE ROW LEVEL SECURITY;

--
-- Name: invoice_lines; Type: ROW SECURITY; Schema: ledger; Owner: -
--

ALTER TABLE ledger.invoice_lines ENABLE ROW LEVEL SECURITY;

--
-- Name: invoices; Type: ROW SECURITY; Schema: ledger; Owner: -
--

ALTER TABLE ledger.invoices ENABLE ROW LEVEL SECURITY;

--
-- Name: job_steps; Type: ROW SECURITY; Schema: ledger; Owner: -
--

ALTER TABLE ledger.job_steps ENABLE ROW LEVEL SECURITY;

--
-- Name: jobs; Type: ROW SECURITY; Schema: ledger; Owner: -
--

ALTER TABLE ledger.jobs ENABLE ROW LEVEL SECURITY;

--
-- Name: pipeline_steps; Type: ROW SECURITY; Schema: ledger; Owner: -
--

ALTER TABLE ledger.pipeline_steps ENABLE ROW LEVEL SECURITY;

--
-- Name: pipelines; Type: ROW SECURITY; Schema: ledger; Owner: -
--

ALTER TABLE ledger.pipelines ENABLE ROW LEVEL SECURITY;

--
-- Name: prices; Type: ROW SECURITY; Schema: ledger; Owner: -
--

ALTER TABLE ledger.prices ENABLE ROW LEVEL SECURITY;

--
-- Name: replays; Type: ROW SECURITY; Schema: ledger; Owner: -
--

ALTER TABLE ledger.replays ENABLE ROW LEVEL SECURITY;

--
-- Name: replays select_admin; Type: POLICY; Schema: ledger; Owner: -
--

CREATE POLICY select_admin ON ledger.replays FOR SELECT TO admin USING (true);


--
-- Name: pipeline_steps select_all; Type: POLICY; Schema: ledger; Owner: -
--

CREATE POLICY select_all ON ledger.pipeline_steps FOR SELECT TO client, admin, bi_reader USING (true);


--
-- Name: pipelines select_all; Type: POLICY; Schema: ledger; Owner: -
--

CREATE POLICY select_all ON ledger.pipelines FOR SELECT TO client, admin, bi_reader USING (true);


--
-- Name: billing_changes select_all_clients; Type: POLICY; Schema: ledger; Owner: -
--

CREATE POLICY select_all_clients ON ledger.billing_changes FOR SELECT TO bi_all_clients USING (true);


--
-- Name: client_minimums select_all_clients; Type: POLICY; Schema: ledger; Owner: -
--

CREATE POLICY select_all_clients ON ledger.client_minimums FOR SELECT TO bi_all_clients USING (true);


--
-- Name: clients select_all_clients; Type: POLICY; Schema: ledger; Owner: -
--

CREATE POLICY select_all_clients ON ledger.clients FOR SELECT TO bi_all_clients USING (true);


--
-- Name: event_ids select_all_clients; Type: POLICY; Schema: ledger; Owner: -
--

CREATE POLICY select_all_clients ON ledger.event_ids FOR SELECT TO bi_all_clients USING (true);


--
-- Name: events select_all_clients; Type: POLICY; Schema: ledger; Owner: -
--

CREATE POLICY select_all_clients ON ledger.events FOR SELECT TO bi_all_clients USING (true);


--
-- Name: invoice_lines select_all_clients; Type: POLICY; Schema: ledger; Owner: -
--

CREATE POLICY select_all_clients ON ledger.invoice_lines FOR SELECT TO bi_all_clients USING (true);


--
-- Name: invoices select_all_clients; Type: POLICY; Schema: ledger; Owner: -
--

CREATE POLICY select_all_clients ON ledger.invoices FOR SELECT TO bi_all_clients USING (true);


--
-- Name: job_steps select_all_clients; Type: POLICY; Schema: ledger; Owner: -
--

CREATE POLICY select_all_clients ON ledger.job_steps FOR SELECT TO bi_all_clients USING (true);


--
-- Name: jobs select_all_clients; Type: POLICY; Schema: ledger; Owner: -
--

CREATE POLICY select_all_clients ON ledger.jobs FOR SELECT TO bi_all_clients USING (true);


--
-- Name: prices select_all_clients; Type: POLICY; Schema: ledger; Owner: -
--

CREATE POLICY select_all_clients ON ledger.prices FOR SELECT TO bi_all_clients USING (true);


--
-- Name: step_runs select_all_clients; Type: POLICY; Schema: ledger; Owner: -
--

CREATE POLICY select_all_clients ON ledger.step_runs FOR SELECT TO bi_all_clients USING (true);


--
-- Name: vault select_all_clients; Type: POLICY; Schema: ledger; Owner: -
--

CREATE POLICY select_all_clients ON ledger.vault FOR SELECT TO bi_all_clients USING (true);


--
-- Name: billing_changes select_own_client; Type: POLICY; Schema: ledger; Owner: -
--

CREATE POLICY select_own_client ON ledger.billing_changes FOR SELECT TO client, bi_reader USING (((client_id IS NULL) OR (client_id = ( SELECT auth.client_id() AS client_id))));


--
-- Name: client_minimums select_own_client; Type: POLICY; Schema: ledger; Owner: -
--

CREATE POLICY select_own_client ON ledger.client_minimums FOR SELECT TO client, bi_reader USING (((client_id)::text = ( SELECT auth.client_id() AS client_id)));


--
-- Name: clients select_own_client; Type: POLICY; Schema: ledger; Owner: -
--

CREATE POLICY select_own_client ON ledger.clients FOR SELECT TO client, bi_reader USING (((client_id)::text = ( SELECT auth.client_id() AS client_id)));


--
-- Name: event_ids select_own_client; Type: POLICY; Schema: ledger; Owner: -
--

CREATE POLICY select_own_client ON ledger.event_ids FOR SELECT TO client, bi_reader USING ((client_id = ( SELECT auth.client_id() AS client_id)));


--
-- Name: events select_own_client; Type: POLICY; Schema: ledger; Owner: -
--

CREATE POLICY select_own_client ON ledger.events FOR SELECT TO client, bi_reader USING (((client_id)::text = ( SELECT auth.client_id() AS client_id)));


--
-- Name: invoice_lines select_own_client; Type: POLICY; Schema: ledger; Owner: -
--

CREATE POLICY select_own_client ON ledger.invoice_lines FOR SELECT TO client, bi_reader USING (((client_id)::text = ( SELECT auth.client_id() AS client_id)));


--
-- Name: invoices select_own_client; Type: POLICY; Schema: ledger; Owner: -
--

CREATE POLICY select_own_client ON ledger.invoices FOR SELECT TO client, bi_reader USING (((client_id)::text = ( SELECT auth.client_id() AS client_id)));


--
-- Name: job_steps select_own_client; Type: POLICY; Schema: ledger; Owner: -
--

CREATE POLICY select_own_client ON ledger.job_steps FOR SELECT TO client, bi_reader USING ((client_id = ( SELECT auth.client_id() AS client_id)));


--
-- Name: jobs select_own_client; Type: POLICY; Schema: ledger; Owner: -
--

CREATE POLICY select_own_client ON ledger.jobs FOR SELECT TO client, bi_reader USING ((client_id = ( SELECT auth.client_id() AS client_id)));


--
-- Name: prices select_own_client; Type: POLICY; Schema: ledger; Owner: -
--

CREATE POLICY select_own_client ON ledger.prices FOR SELECT TO client, bi_reader USING (((client_id IS NULL) OR ((client_id)::text = ( SELECT auth.client_id() AS client_id))));


--
-- Name: step_runs select_own_client; Type: POLICY; Schema: ledger; Owner: -
--

CREATE POLICY select_own_client ON ledger.step_runs FOR SELECT TO client, bi_reader USING ((client_id = ( SELECT auth.client_id() AS client_id)));


--
-- Name: vault select_own_client; Type: POLICY; Schema: ledger; Owner: -
--

CREATE POLICY select_own_client ON ledger.vault FOR SELECT TO client, bi_reader USING ((client_id = ( SELECT auth.client_id() AS client_id)));


--
-- Name: step_runs; Type: ROW SECURITY; Schema: ledger; Owner: -
--

ALTER TABLE ledger.step_runs ENABLE ROW LEVEL SECURITY;

--
-- Name: vault; Type: ROW SECURITY; Schema: ledger; Owner: -
--

ALTER TABLE ledger.vault ENABLE ROW LEVEL SECURITY;

--
-- PostgreSQL database dump complete
--
