-- Limits of BI logins (docs/bi.md "Limits"): kept in auth.bi_logins, applied to the login's role,
-- and enforced for the settings a session can override by the watchdog
-- (watchdog.end_bi_sessions_past_limits, db/bootstrap/40_bi_limits.sql).
-- Errors: SL308 (invalid BI login, here: an unknown login or a limit out of range).

create or replace function auth._apply_bi_limits(p_name text) returns boolean
language plpgsql volatile set search_path = pg_catalog, pg_temp as $$
-- Writes a BI login's limits from auth.bi_logins into its role: statement_timeout and
-- idle_in_transaction_session_timeout as defaults (a session may override those; the watchdog
-- holds regardless), temp_file_limit (superuser-only: the login can neither raise nor reset it)
-- and the connection limit. Run by auth.add_bi_login, auth.set_bi_limits and on every migrate, which also
-- undoes an `alter role current_user reset all` of the login. False when the role is missing.
declare
  b auth.bi_logins;
begin
  select * into b from auth.bi_logins l where l.rolname = p_name;
  if not found or not exists (select from pg_catalog.pg_roles r where r.rolname = p_name) then
    return false;
  end if;
  execute format('alter role %I set statement_timeout = %L', p_name,
                 (extract(epoch from b.statement_timeout) * 1000)::bigint || 'ms');
  execute format('alter role %I set idle_in_transaction_session_timeout = %L', p_name,
                 (extract(epoch from b.idle_in_transaction_timeout) * 1000)::bigint || 'ms');
  execute format('alter role %I set temp_file_limit = %L', p_name, b.temp_file_limit_kb || 'kB');
  execute format('alter role %I connection limit %s', p_name, b.connection_limit);
  return true;
end
$$;
comment on function auth._apply_bi_limits(text) is
  'Applies a BI login''s limits (auth.bi_logins) to its role. Owner only.';

create or replace function auth.bi_limits(p_name text) returns jsonb
language sql stable set search_path = pg_catalog, pg_temp as $$
-- A BI login's limits, as stepledger bi-user shows them; null for a name that is not a BI login.
select jsonb_build_object(
         'name', b.rolname,
         'statement_timeout', b.statement_timeout::text,
         'idle_in_transaction_timeout', b.idle_in_transaction_timeout::text,
         'temp_file_limit', pg_catalog.pg_size_pretty(b.temp_file_limit_kb * 1024),
         'connection_limit', b.connection_limit)
  from auth.bi_logins b
 where b.rolname = p_name
$$;
comment on function auth.bi_limits(text) is 'A BI login''s limits (stepledger bi-user limits). Owner only.';

create or replace function auth.set_bi_limits(
  p_name text,
  p_statement_timeout text default null,
  p_idle_in_transaction_timeout text default null,
  p_temp_file_limit text default null,
  p_connection_limit integer default null
) returns jsonb
language plpgsql volatile set search_path = pg_catalog, pg_temp as $$
-- Changes the limits of a BI login (stepledger bi-user limits, or bi-user add with limits); a
-- null argument keeps the current value. Timeouts are intervals ('5min', '30s'), the temporary
-- file limit a size ('1GB', '512MB'). Returns the login's limits as they now are.
declare
  v_statement_timeout interval;
  v_idle_timeout interval;
  v_temp_file_limit_kb bigint;
  v_constraint text;
  v_rule text;
begin
  if not exists (select from auth.bi_logins l where l.rolname = p_name) then
    raise exception '"%" is not a BI login', p_name using errcode = 'SL308';
  end if;
  begin
    v_statement_timeout := p_statement_timeout::interval;
  exception when invalid_datetime_format or datetime_field_overflow or interval_field_overflow then
    raise exception 'invalid statement timeout "%"', p_statement_timeout using errcode = 'SL308',
      hint = 'an interval such as 5min or 90s';
  end;
  begin
    v_idle_timeout := p_idle_in_transaction_timeout::interval;
  exception when invalid_datetime_format or datetime_field_overflow or interval_field_overflow then
    raise exception 'invalid idle-in-transaction timeout "%"', p_idle_in_transaction_timeout
      using errcode = 'SL308', hint = 'an interval such as 30s or 2min';
  end;
  begin
    -- A negative size stays negative (and out of range) instead of rounding to 0.
    v_temp_file_limit_kb := sign(pg_catalog.pg_size_bytes(p_temp_file_limit))
                            * ceil(abs(pg_catalog.pg_size_bytes(p_temp_file_limit)) / 1024.0);
  exception when invalid_parameter_value or numeric_value_out_of_range then
    raise exception 'invalid temporary file limit "%"', p_temp_file_limit using errcode = 'SL308',
      hint = 'a size such as 1GB or 512MB';
  end;
  begin
    update auth.bi_logins l
       set statement_timeout = coalesce(v_statement_timeout, l.statement_timeout),
           idle_in_transaction_timeout = coalesce(v_idle_timeout, l.idle_in_transaction_timeout),
           temp_file_limit_kb = coalesce(v_temp_file_limit_kb, l.temp_file_limit_kb),
           connection_limit = coalesce(p_connection_limit, l.connection_limit),
           updated_at = now()
     where l.rolname = p_name;
  exception when check_violation or numeric_value_out_of_range then
    -- The ranges are the table's check constraints (0053_bi_limits.sql); their comments say them.
    get stacked diagnostics v_constraint = constraint_name;
    select d.description into v_rule
      from pg_catalog.pg_constraint c
      join pg_catalog.pg_description d on d.objoid = c.oid and d.classoid = 'pg_catalog.pg_constraint'::regclass
     where c.conrelid = 'auth.bi_logins'::regclass and c.conname = v_constraint;
    raise exception '%', coalesce(v_rule, 'a BI limit is out of range') using errcode = 'SL308';
  end;
  perform auth._apply_bi_limits(p_name);
  return auth.bi_limits(p_name);
end
$$;
comment on function auth.set_bi_limits(text, text, text, text, integer) is
  'Changes a BI login''s limits (stepledger bi-user limits). Owner only.';
