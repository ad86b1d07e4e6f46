-- Auth: users and logins, API tokens for pipelines, BI logins, and JWT signing in the database.
-- Tables are in db/migrations/0010_auth.sql; grants and policies in db/policies/60_auth.sql.
-- docs/security.md explains the model.
--
-- Error codes (SQLSTATE, asserted by tests; HTTP status as PostgREST answers them):
--   SL301  wrong email or password; also unknown and disabled users (401, same body for all)
--   SL302  the user does not hold the role asked for (403)
--   SL303  too many failed logins for this email: locked for a while (429, Retry-After)
--   SL304  invalid user: email, password, roles or client
--   SL305  the JWT secret is not installed (run stepledger migrate)
--   SL306  invalid API token request: name, scope or client
--   SL307  unknown API token id
--   SL308  invalid BI login: name, password verifier, client, or a clash with another role
--   SL309  the caller may not do this (e.g. refresh a token that did not come from a login)
--   SL315  a login token was refreshed a second time: its whole session is ended (401)
-- (SL311-SL314 are raised by auth.pre_request, db/functions/00_common/10_auth_context.sql.)

-- ---- signing -----------------------------------------------------------------------------------

create or replace function auth._b64url(p_data bytea) returns text
language sql immutable strict parallel safe as $$
  -- base64url without padding or line breaks (RFC 7515 §2)
  select translate(encode(p_data, 'base64'), E'+/=\n', '-_')
$$;
comment on function auth._b64url(bytea) is 'Private: base64url encoding without padding, as JWTs use it.';

create or replace function auth.install_jwt_secret(p_secret text) returns void
language plpgsql volatile set search_path = pg_catalog, pg_temp as $$
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
comment on function auth.install_jwt_secret(text) is 'Stores the JWT signing secret (called by stepledger migrate). Owner only.';

create or replace function auth._sign_jwt(p_claims jsonb) returns text
language plpgsql stable set search_path = pg_catalog, pg_temp as $$
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
comment on function auth._sign_jwt(jsonb) is 'Private: signs claims as an HS256 JWT with the stack''s secret.';

-- ---- users -------------------------------------------------------------------------------------

create or replace function auth._hash_password(p_password text) returns text
language plpgsql volatile set search_path = pg_catalog, pg_temp as $$
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
comment on function auth._hash_password(text) is 'Private: checks a new password and returns its bcrypt hash.';

create or replace function auth.add_user(p_email text, p_password text, p_roles text[],
                                         p_client_id text default null)
returns jsonb
language plpgsql volatile set search_path = pg_catalog, pg_temp as $$
-- Adds a user, or updates an existing one (same email): sets the password, the client when one is
-- given, adds the roles and enables it. Operator function (stepledger user add, the demo).
-- Setting the password it already has keeps its hash, so that its sessions go on; a new password
-- ends them (auth.tg_users__end_sessions).
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
       set password_hash = case when public.crypt(p_password, u.password_hash) = u.password_hash
                                then u.password_hash else v_hash end,
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
$$;
comment on function auth.add_user(text, text, text[], text) is 'Adds a user or updates one (password, client, more roles). Operator function.';

create or replace function auth.set_user_disabled(p_email text, p_disabled boolean) returns jsonb
language plpgsql volatile set search_path = pg_catalog, pg_temp as $$
-- Disables (or enables) a user. A disabled user cannot log in, and disabling ends its sessions
-- (auth.tg_users__end_sessions): the tokens it held are refused at once, and enabling the user
-- again revives none of them.
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
comment on function auth.set_user_disabled(text, boolean) is 'Disables or enables a user; a disabled user''s tokens stop working at once. Operator function.';

-- ---- login -------------------------------------------------------------------------------------

create or replace function auth._end_sessions(p_user_id uuid, p_reason text) returns integer
language plpgsql volatile set search_path = pg_catalog, pg_temp as $$
-- Ends every live session of a user: auth.pre_request refuses their tokens from now on.
-- PL/pgSQL, not SQL: Citus plans no statement with a SQL function's parameters (ADR 0012).
declare
  v_ended integer;
begin
  update auth.sessions s set ended_at = now(), ended_reason = p_reason
   where s.user_id = p_user_id and s.ended_at is null;
  get diagnostics v_ended = row_count;
  return v_ended;
end
$$;
comment on function auth._end_sessions(uuid, text) is 'Private: ends every live session of a user (the reason is kept), so that all its tokens are refused.';

create or replace function auth.tg_users__end_sessions() returns trigger
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
-- A new password, disabling the user, taking a role from it or moving it to another client
-- ends every session it has, whichever way the row was changed (stepledger user add / disable,
-- or SQL): giving the role or the client back later revives none of them.
begin
  perform auth._end_sessions(new.user_id,
                             case when new.disabled_at is not null then 'user_disabled'
                                  when old.password_hash is distinct from new.password_hash
                                    then 'password_changed'
                                  else 'user_changed' end);
  return null;
end
$$;
comment on function auth.tg_users__end_sessions() is 'Trigger: a password change, disabling a user, or taking a role or its client from it ends its sessions.';

create or replace trigger end_sessions
  after update of password_hash, disabled_at, roles, client_id on auth.users
  for each row
  when (old.password_hash is distinct from new.password_hash
        or (new.disabled_at is not null and old.disabled_at is null)
        or not old.roles <@ new.roles
        or old.client_id is distinct from new.client_id)
  execute function auth.tg_users__end_sessions();

create or replace function auth._session_token(p_session_id uuid) returns jsonb
language plpgsql volatile set search_path = pg_catalog, pg_temp as $$
-- The login token of a session's newest token id (refresh_jti): 30 minutes, refreshable for
-- 12 hours after the password was given (auth_time). Returns the contract's login response.
declare
  v_session record;
  v_now timestamptz := now();
  v_exp timestamptz := now() + interval '30 minutes';
  v_client text;
begin
  select s.session_id, s.role, s.auth_time, s.refresh_jti, u.user_id, u.email, u.client_id
    into v_session
    from auth.sessions s join auth.users u on u.user_id = s.user_id
   where s.session_id = p_session_id;
  v_client := case when v_session.role = 'client' then v_session.client_id end;
  return jsonb_build_object(
    'token', auth._sign_jwt(jsonb_strip_nulls(jsonb_build_object(
               'role', v_session.role,
               'client_id', v_client,
               'sub', v_session.user_id,
               'sid', v_session.session_id,
               'email', v_session.email,
               'iat', floor(extract(epoch from v_now))::bigint,
               'exp', floor(extract(epoch from v_exp))::bigint,
               'auth_time', floor(extract(epoch from v_session.auth_time))::bigint,
               'jti', v_session.refresh_jti))),
    'role', v_session.role,
    'client_id', v_client,
    'expires_at', to_char(v_exp at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'));
end
$$;
comment on function auth._session_token(uuid) is 'Private: signs a 30-minute login token for a session''s newest token id.';

create or replace function api.login(email text, password text, role text default null)
returns jsonb
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
-- POST /rpc/login. Answers without raising, so that a failure is recorded (the transaction
-- commits) while the HTTP status says what happened:
--   200  {token, role, client_id, expires_at}
--   401  SL301: wrong email or password; unknown and disabled users get the same answer, after
--        the same bcrypt work (a dummy hash), so neither the body nor the timing tells them apart
--   403  SL302: right password, but the user does not hold the role asked for
--   429  SL303: 5 failures within 15 minutes lock the email for 15 minutes (known or not)
--   405  SL314: GET or HEAD, before any credential work (nothing is checked or recorded)
-- A success opens a session (auth.sessions) that every token of this login names.
declare
  v_email text := lower(btrim(coalesce(login.email, '')));
  v_key bytea := sha256(convert_to(v_email, 'UTF8'));
  v_locked_until timestamptz;
  v_user auth.users;
  v_hash text;
  v_computed text;
  v_role text;
  v_wait integer;
  v_session_id uuid;
begin
  perform auth.require_post('login');
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
  -- Forget sessions whose every token has expired (refreshable 12 hours, then 30 minutes).
  delete from auth.sessions s where s.auth_time < now() - interval '13 hours';
  insert into auth.sessions (user_id, role, auth_time, refresh_jti)
  values (v_user.user_id, v_role, now(), gen_random_uuid())
  returning session_id into v_session_id;
  return auth._session_token(v_session_id);
end
$$;
comment on function api.login(text, text, text) is
  'Log in with email and password. Returns a signed token (30 minutes), its role, client_id and expires_at. Wrong email or password: 401; 5 failures in 15 minutes lock the email for 15 minutes (429). A user with several roles gets the client role unless role is given.';

create or replace function auth._caller_session() returns auth.sessions
language plpgsql stable set search_path = pg_catalog, pg_temp as $$
-- The session of the caller's login token, or raises SL309 for any other token.
-- auth.pre_request has already refused tokens whose session ended or whose user changed.
declare
  v_claims jsonb := auth.claims();
  v_session auth.sessions;
begin
  select * into v_session from auth.sessions s
   where s.session_id = auth._as_uuid(v_claims->>'sid')
     and s.user_id = auth._as_uuid(v_claims->>'sub')
     and s.role = v_claims->>'role';
  if not found then
    raise exception 'only tokens from /rpc/login can do this' using errcode = 'SL309',
      hint = 'log in with POST /rpc/login';
  end if;
  return v_session;
end
$$;
comment on function auth._caller_session() is 'Private: the session of the caller''s login token (SL309 for other tokens).';

create or replace function api.refresh_token() returns jsonb
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
-- POST /rpc/refresh_token: a fresh login token for the caller's own login token (same session,
-- user, role and client), up to 12 hours after the password was given. Rotation: only the
-- session's newest token may refresh, once. An older token presented again means two parties
-- hold the session (a stolen token): the whole session ends, the newest token with it, and the
-- answer (401 SL315) is returned rather than raised so that the ending is committed.
declare
  v_claims jsonb := auth.claims();
  v_session auth.sessions;
begin
  perform auth.require_post('refresh_token');
  v_session := auth._caller_session();
  -- Serialises refreshes of one session: of two at once, the second sees the first's new id.
  select * into v_session from auth.sessions s where s.session_id = v_session.session_id for update;
  if v_session.ended_at is not null then
    perform auth._refuse('SL312', 'this login was ended', 'log in again');
  end if;
  if v_session.refresh_jti is distinct from auth._as_uuid(v_claims->>'jti') then
    update auth.sessions s set ended_at = now(), ended_reason = 'refresh_reused'
     where s.session_id = v_session.session_id;
    perform set_config('response.status', '401', true);
    perform set_config('response.headers',
                       json_build_array(json_build_object('WWW-Authenticate',
                                                          'Bearer error="invalid_token"'))::text, true);
    return jsonb_build_object('code', 'SL315',
                              'message', 'this token was already refreshed: the session is ended',
                              'details', null, 'hint', 'log in again');
  end if;
  if v_session.auth_time < now() - interval '12 hours' then
    raise exception 'this login is more than 12 hours old' using errcode = 'SL309', hint = 'log in again';
  end if;
  update auth.sessions s set refresh_jti = gen_random_uuid(), refreshed_at = now()
   where s.session_id = v_session.session_id;
  return auth._session_token(v_session.session_id);
end
$$;
comment on function api.refresh_token() is
  'A new 30-minute token for the caller''s login (same user, role and client), up to 12 hours after logging in with a password. Each token refreshes once; refreshing an already refreshed token ends the whole login (401 SL315).';

create or replace function api.logout_everywhere() returns jsonb
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
-- POST /rpc/logout_everywhere: ends every session of the caller's user, this one included;
-- every token of them is refused from the next request on.
declare
  v_session auth.sessions;
begin
  perform auth.require_post('logout_everywhere');
  v_session := auth._caller_session();
  return jsonb_build_object('sessions_ended', auth._end_sessions(v_session.user_id, 'logout_everywhere'));
end
$$;
comment on function api.logout_everywhere() is
  'Sign out everywhere: ends every login of the caller''s user (every browser and tab, this one included). Their tokens are refused from the next request on; log in again with a password.';

-- ---- API tokens --------------------------------------------------------------------------------

create or replace function auth.create_api_token(p_client_id text, p_name text, p_scope text,
                                                 p_created_by text)
returns jsonb
language plpgsql volatile set search_path = pg_catalog, pg_temp as $$
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
comment on function auth.create_api_token(text, text, text, text) is 'Issues an ingest API token for one client or (null) every client. Operator function behind stepledger token create.';

create or replace function auth.revoke_api_token(p_token_id uuid, p_revoked_by text) returns jsonb
language plpgsql volatile set search_path = pg_catalog, pg_temp as $$
-- Revokes an API token; revoking it again changes nothing. auth.pre_request refuses it from the
-- next request on.
declare
  v_row auth.api_tokens;
  -- Values, not calls, inside coalesce: Citus allows no volatile or stable call there in an
  -- UPDATE of its tables (ADR 0012).
  v_now timestamptz := now();
  v_by text := coalesce(p_revoked_by, current_user::text);
begin
  update auth.api_tokens t
     set revoked_at = coalesce(t.revoked_at, v_now),
         revoked_by = coalesce(t.revoked_by, v_by)
   where t.token_id = p_token_id
  returning * into v_row;
  if not found then
    raise exception 'unknown API token %', p_token_id using errcode = 'SL307';
  end if;
  return jsonb_build_object('token_id', v_row.token_id, 'revoked_at', v_row.revoked_at);
end
$$;
comment on function auth.revoke_api_token(uuid, text) is 'Revokes an API token at once. Operator function behind stepledger token revoke.';

create or replace function auth._api_token_admin(p_function text, p_verb text) returns text
language plpgsql volatile set search_path = pg_catalog, pg_temp as $$
-- The guard of POST /rpc/create_api_token and /rpc/revoke_api_token: POST only, admins only
-- (SL309). Returns who acts, as auth.api_tokens records it: 'admin ' and the login's email.
begin
  perform auth.require_post(p_function);
  if auth.role() <> 'admin' then
    raise exception 'only admins % API tokens', p_verb using errcode = 'SL309';
  end if;
  return 'admin ' || coalesce(auth.claims()->>'email', auth.claims()->>'sub', 'token');
end
$$;
comment on function auth._api_token_admin(text, text) is 'Private: refuses all but an admin''s POST to the API token endpoints; returns the admin as recorded.';

create or replace function api.create_api_token(client_id text, name text, scope text default 'ingest')
returns jsonb
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
-- POST /rpc/create_api_token (admin).
begin
  return auth.create_api_token(create_api_token.client_id, create_api_token.name, create_api_token.scope,
                               auth._api_token_admin('create_api_token', 'create'));
end
$$;
comment on function api.create_api_token(text, text, text) is
  'Admin: create an API token for pipelines (scope ingest) bound to one client, or to every client when client_id is null. The token is shown only in this answer; the database keeps its SHA-256.';

create or replace function api.revoke_api_token(token_id uuid) returns jsonb
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
-- POST /rpc/revoke_api_token (admin).
begin
  return auth.revoke_api_token(revoke_api_token.token_id, auth._api_token_admin('revoke_api_token', 'revoke'));
end
$$;
comment on function api.revoke_api_token(uuid) is 'Admin: revoke an API token. It is refused from its next request on.';

-- ---- BI logins ---------------------------------------------------------------------------------

create or replace function auth.add_bi_login(p_name text, p_client_id text, p_password_verifier text)
returns jsonb
language plpgsql volatile set search_path = pg_catalog, pg_temp as $$
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
    execute format('create role %I login password %L', p_name, p_password_verifier);
    insert into auth.bi_logins (rolname, client_id) values (p_name, p_client_id);
  else
    execute format('alter role %I with login password %L', p_name, p_password_verifier);
    execute format('revoke bi_reader, bi_all_clients from %I', p_name);
    update auth.bi_logins b set client_id = p_client_id, updated_at = now() where b.rolname = p_name;
  end if;
  execute format('grant %I to %I', case when p_client_id is null then 'bi_all_clients' else 'bi_reader' end, p_name);
  -- Defaults for BI tools: reporting first, read-only transactions; then the login's limits
  -- (auth.bi_logins: timeouts, temporary files, connections; db/functions/60_auth/20_bi_limits.sql).
  execute format('alter role %I set search_path = reporting', p_name);
  execute format('alter role %I set default_transaction_read_only = on', p_name);
  -- The binding where every Citus node sees it: policies there read it through
  -- auth.caller_client_id() ('' for a login bound to no client; ADR 0012).
  execute format('alter role %I set stepledger.client_id = %L', p_name, coalesce(p_client_id, ''));
  perform auth._apply_bi_limits(p_name);
  return jsonb_build_object('name', p_name, 'client_id', p_client_id, 'created', v_created);
end
$$;
comment on function auth.add_bi_login(text, text, text) is 'Creates or re-binds a BI database login (stepledger bi-user add). Owner only.';

create or replace function auth.drop_bi_login(p_name text) returns jsonb
language plpgsql volatile set search_path = pg_catalog, pg_temp as $$
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
comment on function auth.drop_bi_login(text) is 'Drops a BI database login (stepledger bi-user remove). Owner only.';
