-- Loading files (`stepledger load`, `stepledger tail`): events go through POST /rpc/ingest_ndjson
-- like any other batch; lines that the loader could not turn into an event come here, so that
-- they too are kept in the vault as received, with the loader's reason.
--
-- Error codes raised here (SQLSTATE, asserted by tests):
--   SL611  lines is not an array of {line, text, error} objects

create or replace function api.ingest_unreadable(lines jsonb) returns jsonb
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
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
comment on function api.ingest_unreadable(jsonb) is
  'For loaders: keep lines of a file that are not events (e.g. a malformed log line) in the raw vault, rejected with the loader''s reason. Body {"lines": [{"line": 12, "text": "...", "error": "..."}]}; answers like /rpc/ingest with index = line number.';
