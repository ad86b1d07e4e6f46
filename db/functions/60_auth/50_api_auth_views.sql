-- The admin's view of API tokens (never their hashes). security_invoker: only roles with the
-- column grants and a policy on auth.api_tokens (admin) see rows.

create or replace view api.api_tokens with (security_invoker = true) as
select t.token_id,
       t.client_id,
       t.name,
       t.scope,
       t.created_at,
       t.created_by,
       t.revoked_at,
       t.revoked_by,
       t.last_used_at,
       t.revoked_at is null as active
  from auth.api_tokens t;

comment on view api.api_tokens is 'Admin: API tokens of pipelines (never the token itself), with their client, scope, revocation and last use.';
comment on column api.api_tokens.client_id is 'The client the token may write for; null: every client.';
comment on column api.api_tokens.last_used_at is 'Last request made with the token (recorded at most once a minute, on write requests).';
comment on column api.api_tokens.active is 'false once revoked.';
