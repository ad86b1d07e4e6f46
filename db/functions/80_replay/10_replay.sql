-- Replay (`stepledger replay`, POST /rpc/replay): reprocess vault rows through today's validation
-- and catalog, e.g. after a missing step was registered. Each selected row goes through
-- ledger._ingest_batch, the code path of every ingest, under the claims of its original sender
-- (an ingest token stays bound to the client it wrote for), so:
--   - a rejected event that is valid now is accepted, with a new vault row of channel 'replay';
--   - an event whose event_id is already accepted is a duplicate: nothing is counted twice;
--   - the original row is never changed except for its `replays` array, which records each replay.
--
-- Error codes raised here (SQLSTATE, asserted by tests):
--   SL601  caller may not replay              SL602  unknown outcome filter
--   SL603  since is not before until          SL604  unknown replay run
--   SL605  max_rows out of range

create or replace function ledger._replay_filter(p_outcome text) returns text
language sql immutable parallel safe as $$
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
$$;
comment on function ledger._replay_filter(text) is 'SQL predicate on vault rows (alias v) for a replay''s outcome filter.';

create or replace function ledger._replay(
  p_outcome text,
  p_since timestamptz,
  p_until timestamptz,
  p_client_id text,
  p_replay_id uuid,
  p_max_rows integer,
  p_dry_run boolean
) returns jsonb
language plpgsql volatile set search_path = pg_catalog, pg_temp as $$
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
  -- now() as a value in the statements below: Citus sends a multi-shard query's now() to the
  -- workers, where it is the start of the worker's own transaction, not of this one (the time
  -- ingest stored in the replay rows' received_at).
  v_now timestamptz := now();
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
  -- The entry is built in `fresh`: Citus allows no stable function over columns in an UPDATE.
  with fresh as (
    select w.position - v_offset as i, w.vault_id, w.outcome, w.errors, w.event_id,
           jsonb_build_array(jsonb_build_object(
             'replay_id', v_replay_id, 'replayed_at', v_now, 'outcome', w.outcome,
             'errors', w.errors, 'vault_id', w.vault_id, 'code_version', v_code_version)) as entry
      from ledger.vault w
     where w.received_at = v_now and w.channel = 'replay' and w.token_id = v_replay_id
       and w.position > v_offset and w.position <= v_offset + v_n
  ),
  recorded as (
    update ledger.vault v
       set replays = v.replays || f.entry
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

  execute format('select exists (select 1 from ledger.vault v where %s and v.payload is not null '
                 'and not v.replays @> jsonb_build_array(jsonb_build_object(''replay_id'', $1)))',
                 v_where)
    into v_more using v_replay_id::text;

  return jsonb_build_object('replay_id', v_replay_id, 'replayed', v_counts.replayed,
                            'accepted', v_counts.accepted, 'duplicates', v_counts.duplicates,
                            'rejected', v_counts.rejected, 'rejections', v_counts.rejections,
                            'more', v_more);
end
$$;
comment on function ledger._replay(text, timestamptz, timestamptz, text, uuid, integer, boolean) is
  'Replays a chunk of vault rows through the ingest path and records the outcome on each row.';

create or replace function api.replay(
  outcome text default 'rejected',
  since timestamptz default null,
  "until" timestamptz default null,
  client_id text default null,
  replay_id uuid default null,
  max_rows integer default 1000,
  dry_run boolean default false
) returns jsonb
language sql volatile security definer set search_path = pg_catalog, pg_temp as $$
  select ledger._replay($1, $2, $3, $4, $5, $6, $7)
$$;
comment on function api.replay(text, timestamptz, timestamptz, text, uuid, integer, boolean) is
  'Admin: reprocess vault rows (by current outcome, arrival time range [since, until) and client) through today''s validation and catalog. Rejected events that are valid now are accepted; events already accepted count as duplicates, never twice. Each vault row records its replays. Replays at most max_rows rows per call: call again with the returned replay_id while "more" is true. dry_run only counts the matching rows.';
