-- Tenancy and auth (issue 3): users who log in, API tokens for pipelines, BI logins, and the
-- secret that signs login tokens. Functions are in db/functions/50_auth.sql, grants and policies
-- in db/policies/10_privileges.sql, 20_row_security.sql and 30_auth.sql.
--
-- Every table here has row-level security enabled. Only admins read users and tokens (through
-- api.api_tokens); the other tables have no policy at all, so only their owner reads them.

-- The HS256 secret PostgREST verifies tokens with, written by the migration runner on every
-- migrate (from the stack's secret, or STEPLEDGER_JWT_SECRET in docker-compose). Login tokens are
-- signed in the database with it, by security definer functions; nobody else may read it.
create table auth.secrets (
  name text primary key check (name in ('jwt_secret')),
  value text not null check (length(value) >= 32),
  updated_at timestamptz not null default now()
);
comment on table auth.secrets is 'Server-side secrets (the JWT signing key). Readable by the owner only.';

-- People who log in through POST /rpc/login. A user belongs to one client or to none, and holds
-- one or more API roles: a member of staff can be both an admin and a user of one client.
create table auth.users (
  user_id uuid primary key default gen_random_uuid(),
  email text not null unique
    check (email = lower(email) and length(email) <= 254 and email ~ '^[^@\s]+@[^@\s]+\.[^@\s]+$'),
  password_hash text not null check (password_hash ~ '^\$2[abxy]\$[0-9]{2}\$.{53}$'),
  client_id ledger.slug references ledger.clients (client_id),
  roles text[] not null
    check (cardinality(roles) >= 1 and roles <@ array['admin', 'client']::text[]),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  last_login_at timestamptz,
  disabled_at timestamptz,
  -- a client user reads one client's rows: it must name that client
  check (not 'client' = any(roles) or client_id is not null)
);
create index on auth.users (client_id);
comment on table auth.users is 'People who log in: bcrypt password hash, their client (or none) and API roles.';

-- API tokens for pipelines. The token itself is a JWT (role ingest, jti = token_id) returned once
-- by create_api_token; only its SHA-256 is kept. auth.pre_request() refuses a token that is
-- unknown, revoked, or not the one issued under its id.
create table auth.api_tokens (
  token_id uuid primary key,
  client_id ledger.slug references ledger.clients (client_id),  -- null: may write for every client
  name text not null check (length(name) between 1 and 200),
  scope text not null default 'ingest' check (scope in ('ingest')),
  token_hash bytea not null unique check (length(token_hash) = 32),
  created_at timestamptz not null default now(),
  created_by text not null,
  revoked_at timestamptz,
  revoked_by text,
  last_used_at timestamptz
);
create index on auth.api_tokens (client_id);
comment on table auth.api_tokens is 'API tokens of pipelines: scope, client binding, revocation and last use. The token is stored only as its SHA-256.';

-- Failed logins per email (as a SHA-256 of the lower-cased address, known or not, so that a
-- lockout says nothing about which addresses exist).
create table auth.login_failures (
  email_hash bytea primary key check (length(email_hash) = 32),
  failures integer not null check (failures >= 1),
  first_failed_at timestamptz not null,
  last_failed_at timestamptz not null,
  locked_until timestamptz
);
create index on auth.login_failures (last_failed_at);
comment on table auth.login_failures is 'Recent failed logins per email hash; enough of them lock the email for a while.';

-- Database logins for BI tools (stepledger bi-user add) and the client each is bound to.
-- auth.claims() builds a BI session's claims from this table, never from settings the session
-- could change itself.
create table auth.bi_logins (
  rolname name primary key,
  client_id ledger.slug references ledger.clients (client_id),  -- null: every client
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create index on auth.bi_logins (client_id);
comment on table auth.bi_logins is 'BI database logins and the client each reads (null: every client).';

alter table auth.secrets enable row level security;
alter table auth.users enable row level security;
alter table auth.api_tokens enable row level security;
alter table auth.login_failures enable row level security;
alter table auth.bi_logins enable row level security;
