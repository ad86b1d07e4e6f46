-- Login sessions: every POST /rpc/login opens one, and every login token names its session
-- (claim `sid`). auth.pre_request refuses a token whose session was ended, so that a password
-- change, disabling the user, or POST /rpc/logout_everywhere ends every token the user holds at
-- once, and re-enabling the user revives none of them. Refresh tokens rotate: only the session's
-- newest token may refresh (refresh_jti); presenting an older one again ends the whole session.
-- Functions are in db/functions/50_auth.sql and 00_auth_context.sql; docs/security.md explains.

create table auth.sessions (
  session_id uuid primary key default gen_random_uuid(),
  user_id uuid not null references auth.users (user_id) on delete cascade,
  role text not null check (role in ('admin', 'client')),
  -- when the password was given: refresh is allowed for 12 hours after it
  auth_time timestamptz not null,
  -- the id (jti) of the session's newest token, the only one that may still be refreshed
  refresh_jti uuid not null,
  created_at timestamptz not null default now(),
  refreshed_at timestamptz,
  ended_at timestamptz,
  ended_reason text check (ended_reason in ('password_changed', 'user_disabled', 'user_changed',
                                            'logout_everywhere', 'refresh_reused')),
  check ((ended_at is null) = (ended_reason is null))
);
-- Ending every live session of a user (password change, disable, sign-out everywhere).
create index sessions_live_by_user on auth.sessions (user_id) where ended_at is null;
-- Forgetting sessions whose tokens have all expired (at login).
create index on auth.sessions (auth_time);
comment on table auth.sessions is
  'Login sessions: one per password login; a token whose session ended is refused at once. Refresh rotates the session''s only refreshable token id.';

alter table auth.sessions enable row level security;

-- Login tokens are now signed per session (auth._session_token, db/functions/50_auth.sql).
drop function if exists auth._login_token(uuid, text, timestamptz);
