-- The job-state rules of contract §6 that are computed when read, in one place: the API, the
-- BI views and the analytics counts all call these, so "stalled" and "progress" mean the same
-- everywhere. Plain SQL, so the planner inlines them into each query.

create or replace function ledger.job_status(p_status text, p_updated_at timestamptz,
                                             p_stall_timeout interval)
returns text
language sql stable parallel safe as $$
  -- stalled: running with no event for longer than the pipeline's stall timeout
  select case when p_status = 'running' and now() - p_updated_at > p_stall_timeout
              then 'stalled' else p_status end
$$;
comment on function ledger.job_status(text, timestamptz, interval) is
  'A job''s status as read: the stored status, or stalled when running with no event for longer than the stall timeout.';

create or replace function ledger.job_progress(p_steps_done integer, p_steps_total integer)
returns numeric
language sql immutable parallel safe as $$
  select round(least(1, p_steps_done::numeric / nullif(p_steps_total, 0)), 4)
$$;
comment on function ledger.job_progress(integer, integer) is
  'steps_done / steps_total, from 0 to 1, to 4 decimals.';

-- ---- live updates: the job_changes cursor ------------------------------------------------------
-- A poller's cursor stands for a transaction id (the xmin of its snapshot; ledger.jobs.changed_xid
-- is compared with it). Transaction ids count every transaction of every client, so the cursor
-- a caller sees is sealed: a random nonce, the id masked with a keyed hash of the nonce, and a
-- keyed tag, so it tells nothing (two cursors taken a second apart differ whether or not anything
-- happened) and cannot be forged. The key is derived from the stack's JWT secret.
--
-- Error codes raised here (SQLSTATE, asserted by tests):
--   SL501  not a cursor (or a max_jobs out of range)

create or replace function ledger._job_cursor_key() returns bytea
language sql stable security definer set search_path = pg_catalog, pg_temp as $$
  select public.hmac(convert_to('stepledger job_changes cursor', 'UTF8'),
                     convert_to(s.value, 'UTF8'), 'sha256')
    from auth.secrets s where s.name = 'jwt_secret'
$$;
comment on function ledger._job_cursor_key() is 'Private: the key that seals job_changes cursors, derived from the JWT secret.';

create or replace function ledger._seal_job_cursor(p_xid bigint) returns text
language plpgsql volatile set search_path = pg_catalog, pg_temp as $$
-- nonce (8 bytes) || xid xor HMAC(key, 'm' || nonce) (8 bytes) || HMAC(key, 't' || both)[1..16],
-- in base64url: 43 characters.
declare
  v_key bytea := ledger._job_cursor_key();
  v_nonce bytea := public.gen_random_bytes(8);
  v_sealed bytea;
begin
  if v_key is null then
    raise exception 'the JWT secret is not installed' using errcode = 'SL305', hint = 'run stepledger migrate';
  end if;
  v_sealed := v_nonce || int8send(p_xid # ('x' || encode(substr(public.hmac('\x6d'::bytea || v_nonce, v_key, 'sha256'), 1, 8), 'hex'))::bit(64)::bigint);
  v_sealed := v_sealed || substr(public.hmac('\x74'::bytea || v_sealed, v_key, 'sha256'), 1, 16);
  return rtrim(translate(encode(v_sealed, 'base64'), '+/', '-_'), '=');
end
$$;
comment on function ledger._seal_job_cursor(bigint) is 'Private: a transaction id as an opaque, unforgeable job_changes cursor.';

create or replace function ledger._open_job_cursor(p_cursor text) returns bigint
language plpgsql stable set search_path = pg_catalog, pg_temp as $$
-- The transaction id a cursor of ledger._seal_job_cursor stands for; SL501 for anything else.
declare
  v_key bytea := ledger._job_cursor_key();
  v_sealed bytea;
begin
  if p_cursor ~ '^[A-Za-z0-9_-]{43}$' then
    v_sealed := decode(translate(p_cursor, '-_', '+/') || '=', 'base64');
    if substr(public.hmac('\x74'::bytea || substr(v_sealed, 1, 16), v_key, 'sha256'), 1, 16) = substr(v_sealed, 17, 16) then
      return ('x' || encode(substr(v_sealed, 9, 8), 'hex'))::bit(64)::bigint
             # ('x' || encode(substr(public.hmac('\x6d'::bytea || substr(v_sealed, 1, 8), v_key, 'sha256'), 1, 8), 'hex'))::bit(64)::bigint;
    end if;
  end if;
  raise exception 'this is not a cursor of job_changes: %', left(p_cursor, 60)
    using errcode = 'SL501', hint = 'use the cursor a previous call returned, or call without since for a new one';
end
$$;
comment on function ledger._open_job_cursor(text) is 'Private: the transaction id behind a job_changes cursor; SL501 when it is not one.';

drop function if exists api.job_changes(bigint, integer);
create or replace function api.job_changes(since text default null, max_jobs integer default 500)
returns jsonb
language plpgsql stable set search_path = pg_catalog, pg_temp as $$
#variable_conflict use_column
-- Live updates by polling. Without `since`: only a cursor. With the cursor of the previous call:
-- the jobs (as in GET /jobs) changed since then and the next cursor. The cursor stands for the
-- xmin of this call's snapshot, so a batch still being written now is reported by the next call.
-- When more than max_jobs changed, `resync` is true and no jobs are listed: reload the list.
declare
  v_xmin bigint := pg_snapshot_xmin(pg_current_snapshot())::text::bigint;
  v_since bigint;
  v_jobs jsonb;
  v_count integer;
begin
  if max_jobs is null or max_jobs not between 1 and 10000 then
    raise exception 'max_jobs must be between 1 and 10000, not %', max_jobs using errcode = 'SL501';
  end if;
  if job_changes.since is null then
    return jsonb_build_object('cursor', ledger._seal_job_cursor(v_xmin), 'as_of', now(),
                              'resync', false, 'jobs', '[]'::jsonb);
  end if;
  v_since := ledger._open_job_cursor(job_changes.since);
  -- ledger.jobs under the caller's row-level security: only jobs the caller may see
  select count(*), coalesce(jsonb_agg(to_jsonb(c) - 'changed_xid' order by c.changed_xid, c.client_id, c.job_id), '[]')
    into v_count, v_jobs
    from (select a.*, j.changed_xid
            from ledger.jobs j
            join api.jobs a on a.client_id = j.client_id and a.job_id = j.job_id
           where j.changed_xid >= v_since
           order by j.changed_xid, j.client_id, j.job_id
           limit max_jobs + 1) c;
  if v_count > max_jobs then
    return jsonb_build_object('cursor', ledger._seal_job_cursor(v_xmin), 'as_of', now(),
                              'resync', true, 'jobs', '[]'::jsonb);
  end if;
  return jsonb_build_object('cursor', ledger._seal_job_cursor(v_xmin), 'as_of', now(),
                            'resync', false, 'jobs', v_jobs);
end
$$;
comment on function api.job_changes(text, integer) is
  'Live updates: call without `since` for a cursor, then with the last cursor to get the jobs changed since (as in GET /jobs) and the next cursor. Cursors are opaque. `resync: true` means more than max_jobs changed: reload the list.';
