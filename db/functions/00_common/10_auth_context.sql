-- Who is calling. PostgREST puts the verified JWT claims in request.jwt.claims for each request;
-- a BI login's claims come from auth.bi_logins. Policies wrap the helpers as
-- (select auth.client_id()) so they are evaluated once per statement, not once per row.
--
-- Error codes raised here (SQLSTATE in the body's "code", asserted by tests); each is answered
-- with HTTP 401 through PostgREST's raise-sqlstate-PGRST convention:
--   SL311  API token unknown, revoked, or not the token issued under its id
--   SL312  login token not acceptable (no expiry, no client, no session, session ended, user
--          disabled or lost the role)
--   SL313  the token's role is not one the API serves
--   SL314  a function that writes was called with GET or HEAD (405; only POST may call it)

create or replace function auth._session_claims() returns jsonb
language plpgsql stable security definer parallel safe set search_path = pg_catalog, pg_temp as $$
-- Claims of a session that did not come through PostgREST (whose login is authenticator):
-- a BI login gets claims built from auth.bi_logins and can never choose its own; a superuser
-- or the owner (operators, migrations, tests) may set request.jwt.claims itself, as they
-- could bypass row-level security anyway; any other login gets no claims. The BI login and the
-- role are looked up in separate statements: on a Citus coordinator auth.bi_logins is a
-- reference table, and a query joining it with the catalog would be sent to a worker.
declare
  v_login auth.bi_logins;
begin
  select b.* into v_login from auth.bi_logins b where b.rolname = session_user;
  if found then
    return jsonb_strip_nulls(jsonb_build_object('role', 'bi_reader', 'client_id', v_login.client_id,
                                                'sub', 'bi:' || v_login.rolname));
  end if;
  if exists (select from pg_catalog.pg_roles r
              where r.rolname = session_user and (r.rolsuper or r.rolname = 'stepledger_owner')) then
    return coalesce(nullif(current_setting('request.jwt.claims', true), ''), '{}')::jsonb;
  end if;
  return '{}'::jsonb;
end
$$;
comment on function auth._session_claims() is
  'Private: claims of a session outside PostgREST (BI login: from auth.bi_logins; superuser or owner: request.jwt.claims; else none).';

create or replace function auth.claims() returns jsonb
language sql stable parallel safe as $$
  -- PostgREST verified these claims before it switched role; only its login may pass them.
  select case when session_user = 'authenticator'
              then coalesce(nullif(current_setting('request.jwt.claims', true), ''), '{}')::jsonb
              else coalesce(auth._session_claims(), '{}'::jsonb) end
$$;
comment on function auth.claims() is 'The verified JWT claims of the current HTTP request, the claims of a BI login, or {} otherwise.';

create or replace function auth.role() returns text
language sql stable parallel safe as $$
  select coalesce(auth.claims()->>'role', current_user::text)
$$;
comment on function auth.role() is 'The API role of the caller: the JWT role claim, else the database role.';

create or replace function auth.client_id() returns text
language sql stable parallel safe as $$
  select nullif(auth.claims()->>'client_id', '')
$$;
comment on function auth.client_id() is 'The client the caller is bound to, or null when bound to none (admin, all-clients token or BI login).';

create or replace function auth.token_id() returns uuid
language sql stable parallel safe as $$
  select case when auth.claims()->>'jti' ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
              then (auth.claims()->>'jti')::uuid end
$$;
comment on function auth.token_id() is 'The id (jti) of the token that authenticated the request, when it is a UUID.';

create or replace function auth._http_error(p_status integer, p_code text, p_message text,
                                            p_hint text, p_headers json default '{}')
returns void
language plpgsql volatile set search_path = pg_catalog, pg_temp as $$
-- Ends the request with an HTTP status, headers and a body in PostgREST's error shape carrying
-- our own code: {"code", "message", "details": null, "hint"} (PostgREST turns SQLSTATE PGRST
-- into the response its message and detail describe; PostgREST >= 11.2).
begin
  raise sqlstate 'PGRST' using
    message = json_build_object('code', p_code, 'message', p_message, 'details', null,
                                'hint', p_hint)::text,
    detail = json_build_object('status', p_status, 'headers', p_headers)::text;
end
$$;
comment on function auth._http_error(integer, text, text, text, json) is 'Private: ends the HTTP request with this status, headers and stepledger error code.';

create or replace function auth._refuse(p_code text, p_message text, p_hint text default null)
returns void
language sql volatile set search_path = pg_catalog, pg_temp as $$
  -- 401 with the challenge RFC 6750 asks for.
  select auth._http_error(401, p_code, p_message, p_hint,
                          json_build_object('WWW-Authenticate', 'Bearer error="invalid_token"'))
$$;
comment on function auth._refuse(text, text, text) is 'Private: refuses the HTTP request with 401 and the given stepledger error code.';

create or replace function ledger._raise_not_found(p_code text, p_message text, p_hint text)
returns void
language sql immutable set search_path = pg_catalog, pg_temp as $$
  select auth._http_error(404, p_code, p_message, p_hint)
$$;
comment on function ledger._raise_not_found(text, text, text) is
  'Raises a PostgREST 404 whose JSON body carries a stepledger error code.';

create or replace function auth._as_uuid(p_text text) returns uuid
language sql immutable parallel safe as $$
  -- A UUID in any spelling PostgreSQL itself would accept (upper case, braces, hyphens or none)
  -- as the uuid it stands for (braces and hyphens anywhere are ignored); null for anything
  -- else, never an error. Claims are compared as uuids, so that no spelling of a user id can
  -- avoid the checks made for it.
  -- (One expression, no FROM and not strict, null in null out all the same: inlined where it is
  -- called, so pre_request does not plan it again on every request with a login token.)
  select case when lower(translate(p_text, '{}-', '')) ~ '^[0-9a-f]{32}$'
              then lower(translate(p_text, '{}-', ''))::uuid end
$$;
comment on function auth._as_uuid(text) is 'Private: the uuid a text spells in any form PostgreSQL accepts, or null.';

create or replace function auth._percent_decode(p_text text) returns text
language plpgsql immutable strict parallel safe set search_path = pg_catalog, pg_temp as $$
-- Decodes %XX escapes, as PostgREST does with the path before it looks up a function; null when
-- the result is not UTF-8. request.path holds the path as sent (/rpc/%6cogin calls login).
begin
  return convert_from(
    (select coalesce(string_agg(case when m[1] is not null then decode(m[1], 'hex')
                                     else convert_to(m[2], 'UTF8') end, ''::bytea order by n),
                     ''::bytea)
       from regexp_matches(p_text, '%([0-9A-Fa-f]{2})|([^%]+|%)', 'g') with ordinality as t(m, n)),
    'UTF8');
exception when character_not_in_repertoire or untranslatable_character then
  return null;
end
$$;
comment on function auth._percent_decode(text) is 'Private: a URL path segment with its %XX escapes decoded, or null when that is not UTF-8.';

create or replace function auth._refuse_method(p_function text) returns void
language plpgsql volatile set search_path = pg_catalog, pg_temp as $$
-- Ends the request with 405 and Allow: POST. PostgREST runs GET and HEAD in a read-only
-- transaction, where a function that writes would still do its work (a login its bcrypt) and
-- then fail with an error that tells what it tried to write.
begin
  perform auth._http_error(405, 'SL314', format('/rpc/%s changes data: call it with POST', p_function),
                           'send the arguments as a JSON body', json_build_object('Allow', 'POST'));
end
$$;
comment on function auth._refuse_method(text) is 'Private: refuses a GET or HEAD of a function that writes with 405 (Allow: POST).';

create or replace function auth.require_post(p_function text) returns void
language plpgsql volatile set search_path = pg_catalog, pg_temp as $$
-- First statement of every api function that writes: refuses to run in a read-only transaction
-- (PostgREST's GET and HEAD), before any other work. auth.pre_request already refuses those
-- requests by path; this guard holds whatever the path looked like.
begin
  if current_setting('transaction_read_only') = 'on' then
    perform auth._refuse_method(p_function);
  end if;
end
$$;
comment on function auth.require_post(text) is 'Refuses (405 SL314) a call of a function that writes in a read-only transaction, as PostgREST runs GET and HEAD.';

create or replace function auth.pre_request() returns void
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
-- Runs before every PostgREST request (db-pre-request), after PostgREST verified the signature
-- and expiry and switched to the token's role. Refuses tokens that are well signed but must not
-- be honoured. Kept to primary-key lookups: it runs on every request.
--   ingest        the token must be a live row of auth.api_tokens, issued exactly as presented
--                 (same client, same SHA-256); its last use is recorded at most once a minute.
--   client/admin  must expire; a client token must name its client; a login token (sub = a
--                 user id, sid = its session) must name a live session of that user and role,
--                 and the user must be enabled and still hold the role and client.
--   anon          nothing to check.
-- Before that, for every role: GET and HEAD of a function that writes are refused (405).
declare
  v_claims jsonb := auth.claims();
  v_role text := v_claims->>'role';
  v_jti text := v_claims->>'jti';
  v_sub text := v_claims->>'sub';
  v_function text;
  v_user_id uuid;
  v_session_id uuid;
  v_token record;
  v_login record;
  v_bearer text;
begin
  -- A function that writes (volatile) answers only POST. PostgREST looks functions up by the
  -- decoded path; api.* functions that write also call auth.require_post themselves.
  if current_setting('request.method', true) in ('GET', 'HEAD') then
    v_function := auth._percent_decode(substring(current_setting('request.path', true)
                                                 from '^/+rpc/+([^/]+)/*$'));
    if exists (select from pg_catalog.pg_proc p
                where p.pronamespace = 'api'::regnamespace and p.proname = v_function
                  and p.provolatile = 'v') then
      perform auth._refuse_method(v_function);
    end if;
  end if;

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
    if v_claims ? 'sub' and jsonb_typeof(v_claims->'sub') <> 'string' then
      perform auth._refuse('SL312', 'the token''s subject must be a string');
    end if;
    -- Tokens from POST /rpc/login carry the user's id (sub) and their session (sid); other
    -- tokens can only be signed by whoever holds the stack's secret (operator tools). A subject
    -- that spells a uuid in any form, or any sid, makes it a login token.
    v_user_id := auth._as_uuid(v_sub);
    if v_user_id is not null or v_claims ? 'sid' then
      v_session_id := auth._as_uuid(v_claims->>'sid');
      if v_user_id is null or v_session_id is null then
        perform auth._refuse('SL312', 'this login token names no user and session', 'log in again');
      end if;
      select s.user_id, s.role, s.ended_at, s.ended_reason, u.roles, u.client_id, u.disabled_at
        into v_login
        from auth.sessions s join auth.users u on u.user_id = s.user_id
       where s.session_id = v_session_id;
      if found and v_login.user_id = v_user_id and v_login.ended_at is not null then
        perform auth._refuse('SL312', 'this login was ended: ' || case v_login.ended_reason
                               when 'password_changed' then 'the password was changed'
                               when 'user_disabled' then 'the user was disabled'
                               when 'user_changed' then 'the user''s roles or client changed'
                               when 'logout_everywhere' then 'signed out everywhere'
                               when 'refresh_reused' then 'one of its tokens was refreshed twice'
                               else v_login.ended_reason end,
                             'log in again');
      end if;
      if not found or v_login.user_id <> v_user_id or v_login.role <> v_role
         or v_login.disabled_at is not null or not v_role = any(v_login.roles)
         or (v_role = 'client' and v_login.client_id is distinct from v_claims->>'client_id') then
        perform auth._refuse('SL312', 'this login is no longer valid', 'log in again');
      end if;
    end if;
    return;
  end if;

  perform auth._refuse('SL313', format('the API does not serve role "%s"', v_role));
end
$$;
comment on function auth.pre_request() is 'PostgREST db-pre-request hook: refuses GET and HEAD of functions that write, revoked or unknown API tokens, and login tokens whose session ended or that must no longer be honoured.';
