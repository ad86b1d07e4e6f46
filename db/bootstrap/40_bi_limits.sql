-- Limits of BI logins that the login itself cannot loosen (docs/bi.md "Limits", ADR 0006).
-- Run by a superuser on every migrate (idempotent): everything here needs one.
--
-- statement_timeout and idle_in_transaction_session_timeout are user-settable: a role default is
-- only a default, which `set` overrides. So a watchdog, run by the stack's scheduler every few
-- seconds, cancels BI statements and terminates idle BI transactions past the login's limits
-- (auth.bi_logins). It needs to see other roles' sessions and to signal them: a dedicated role
-- holds exactly that, nobody logs in as it or is a member of it, and the one function below runs
-- with its rights and touches BI logins' sessions only (bi_watchdog, created in 00_roles.sql).

grant pg_signal_backend, pg_read_all_stats to bi_watchdog;

-- temp_file_limit is superuser-only (PGC_SUSET): a login cannot set it, nor reset its own role's
-- value. The owner may set it on BI logins (auth._apply_bi_limits) through this grant alone.
grant set on parameter temp_file_limit to stepledger_owner;

create schema if not exists watchdog;
comment on schema watchdog is 'The BI watchdog: ends BI statements and idle transactions past their limits.';
revoke all on schema watchdog from public;
grant usage on schema watchdog to stepledger_owner;

create or replace function watchdog.end_bi_sessions_past_limits() returns jsonb
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
-- Cancels the statement of every BI session active for longer than its login's
-- statement_timeout, and terminates the session when the statement still runs CANCEL_GRACE
-- after that cancel: a backend blocked sending rows to a client that stopped reading ignores a
-- cancel (statement_timeout's too). Terminates every BI session idle in a
-- transaction for longer than its login's idle_in_transaction_timeout. Only sessions whose
-- login is in auth.bi_logins are looked at; never a superuser's. Each one ended is recorded in
-- auth.bi_session_ends and in the server log. Returns null when nothing was ended, else
-- {"cancelled": n, "terminated": n}.
declare
  cancel_grace constant interval := '10 seconds';
  v_cancelled_at timestamptz;
  r record;
  v_action text;
  v_still boolean;
  v_done boolean;
  v_cancelled integer := 0;
  v_terminated integer := 0;
  v_logins jsonb;
begin
  -- The logins first, on their own: on a Citus coordinator auth.bi_logins is a reference table,
  -- and a query joining it with the catalog's views would be sent to a worker (ADR 0012).
  select coalesce(jsonb_agg(jsonb_build_object(
           'rolname', b.rolname, 'statement_timeout', b.statement_timeout,
           'idle_in_transaction_timeout', b.idle_in_transaction_timeout)), '[]')
    into v_logins from auth.bi_logins b;
  for r in
    select a.pid, a.usename, a.state, a.query_start, a.state_change, a.application_name,
           a.client_addr, left(a.query, 1000) as query,
           case when a.state = 'active' then 'statement_timeout'
                else 'idle_in_transaction_timeout' end as reason,
           case when a.state = 'active' then now() - a.query_start
                else now() - a.state_change end as running_for,
           case when a.state = 'active' then b.statement_timeout
                else b.idle_in_transaction_timeout end as time_limit
      from pg_catalog.pg_stat_activity a
      join jsonb_to_recordset(v_logins)
             as b(rolname name, statement_timeout interval, idle_in_transaction_timeout interval)
        on b.rolname = a.usename
      join pg_catalog.pg_roles l on l.oid = a.usesysid and not l.rolsuper
     where a.backend_type = 'client backend'
       and a.pid <> pg_catalog.pg_backend_pid()
       and ((a.state = 'active' and a.query_start < now() - b.statement_timeout)
         or (a.state in ('idle in transaction', 'idle in transaction (aborted)')
             and a.state_change < now() - b.idle_in_transaction_timeout))
  loop
    v_action := 'terminate';
    if r.reason = 'statement_timeout' then
      -- This statement's cancel, if one was sent (a later process with the same pid started its
      -- statement after it).
      select max(e.ended_at) into v_cancelled_at
        from auth.bi_session_ends e
       where e.pid = r.pid and e.action = 'cancel' and e.ended_at >= r.query_start;
      if v_cancelled_at is null then
        v_action := 'cancel';
      elsif v_cancelled_at > now() - cancel_grace then
        continue;  -- cancelled a moment ago: give it time to stop
      end if;
    end if;
    -- The session may have moved on since the snapshot above: end it only if it is still in
    -- the same statement or the same idle spell.
    perform pg_catalog.pg_stat_clear_snapshot();
    select exists (select from pg_catalog.pg_stat_get_activity(r.pid) s
                    where s.state = r.state
                      and s.query_start is not distinct from r.query_start
                      and s.state_change is not distinct from r.state_change)
      into v_still;
    if not v_still then
      continue;
    end if;
    v_done := case v_action when 'cancel' then pg_catalog.pg_cancel_backend(r.pid)
                            else pg_catalog.pg_terminate_backend(r.pid) end;
    if not v_done then
      continue;
    end if;
    insert into auth.bi_session_ends (rolname, pid, action, reason, state, running_for, time_limit,
                                      application_name, client_addr, query)
    values (r.usename, r.pid, v_action, r.reason, r.state, r.running_for, r.time_limit,
            r.application_name, r.client_addr, r.query);
    raise log 'BI watchdog: % of BI login % (pid %): % for % (limit %)',
      v_action, r.usename, r.pid, r.state, r.running_for, r.time_limit;
    if v_action = 'cancel' then
      v_cancelled := v_cancelled + 1;
    else
      v_terminated := v_terminated + 1;
    end if;
  end loop;
  if v_cancelled + v_terminated = 0 then
    return null;
  end if;
  return jsonb_build_object('cancelled', v_cancelled, 'terminated', v_terminated);
end
$$;
alter function watchdog.end_bi_sessions_past_limits() owner to bi_watchdog;
comment on function watchdog.end_bi_sessions_past_limits() is
  'Cancels BI statements and terminates idle BI transactions past their login''s limits; run by the scheduler.';
revoke execute on function watchdog.end_bi_sessions_past_limits() from public;
grant execute on function watchdog.end_bi_sessions_past_limits() to stepledger_owner;
