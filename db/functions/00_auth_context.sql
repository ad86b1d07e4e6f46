-- Who is calling: PostgREST puts the verified JWT claims in request.jwt.claims for each request.
-- Policies wrap these as (select auth.client_id()) so they are evaluated once per statement.

create or replace function auth.claims() returns jsonb
language sql stable parallel safe
as $$
  select coalesce(nullif(current_setting('request.jwt.claims', true), ''), '{}')::jsonb
$$;
comment on function auth.claims() is 'The verified JWT claims of the current HTTP request, or {} outside one.';

create or replace function auth.role() returns text
language sql stable parallel safe
as $$
  select coalesce(auth.claims()->>'role', current_user::text)
$$;
comment on function auth.role() is 'The API role of the caller: the JWT role claim, else the database role.';

create or replace function auth.client_id() returns text
language sql stable parallel safe
as $$
  select nullif(auth.claims()->>'client_id', '')
$$;
comment on function auth.client_id() is 'The client the caller is bound to, or null when bound to none (admin, all-clients token).';

create or replace function auth.token_id() returns uuid
language sql stable parallel safe
as $$
  select case when auth.claims()->>'jti' ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
              then (auth.claims()->>'jti')::uuid end
$$;
comment on function auth.token_id() is 'The id (jti) of the token that authenticated the request, when it is a UUID.';

create or replace function auth.pre_request() returns void
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
-- Runs before every PostgREST request (db-pre-request), after PostgREST verified the signature
-- and expiry. Refuses tokens that are well signed but must still not be honoured.
declare
  v_claims jsonb := auth.claims();
  v_role text := v_claims->>'role';
begin
  if v_role = 'client' and nullif(v_claims->>'client_id', '') is null then
    raise exception 'a client token must name its client' using errcode = 'PT401';
  end if;
  if v_role in ('client', 'admin') and not v_claims ? 'exp' then
    raise exception 'login tokens must expire' using errcode = 'PT401';
  end if;
end
$$;
comment on function auth.pre_request() is 'PostgREST db-pre-request hook: refuses well-signed tokens that must not be honoured.';
