-- Grants and policies of the auth area (issue 3). Every auth table has row-level security on
-- (0010_auth.sql); only the ones below have a policy, and only admins have one. The others
-- (secrets, users, sessions, login failures, BI logins) are read by the owner's security definer
-- functions alone.

-- API tokens: admins list them through api.api_tokens, never the hash column.
drop policy if exists select_admin on auth.api_tokens;
create policy select_admin on auth.api_tokens for select to admin using (true);
grant select (token_id, client_id, name, scope, created_at, created_by, revoked_at, revoked_by,
              last_used_at)
  on auth.api_tokens to admin;
grant select on api.api_tokens to admin;

-- Log in: anyone; a signed-in user may log in again (e.g. as another of its roles).
grant execute on function api.login(text, text, text) to anon, client, admin;
grant execute on function api.refresh_token(), api.logout_everywhere() to client, admin;
grant execute on function api.create_api_token(text, text, text), api.revoke_api_token(uuid) to admin;
-- Their guard, auth._api_token_admin, runs as the owner inside them (security definer): it has no grant.
