-- Limits of BI logins that the login itself cannot loosen (docs/bi.md, docs/security.md).
--
-- 1. Each BI login's limits, kept here rather than only in the role's settings: a login may
--    `set statement_timeout = 0` in its session, or even `alter role current_user reset all`,
--    so the watchdog (watchdog.end_bi_sessions_past_limits, db/bootstrap/40_bi_limits.sql) reads
--    them from this table, which the login cannot read or write. Logins that exist already get
--    the defaults; `stepledger migrate` applies them to the roles (db/policies/35_bi_limits.sql).
--    Each range check carries a comment: auth.set_bi_limits answers with it (SL308).
-- 2. auth.bi_session_ends: what the watchdog ended, when and why, for operators.

alter table auth.bi_logins
  add column statement_timeout interval not null default '5 minutes',
  add column idle_in_transaction_timeout interval not null default '30 seconds',
  add column temp_file_limit_kb bigint not null default 1048576,
  add column connection_limit integer not null default 10;

alter table auth.bi_logins
  add constraint bi_logins_statement_timeout_range
    check (statement_timeout between interval '1 second' and interval '1 day'),
  add constraint bi_logins_idle_in_transaction_timeout_range
    check (idle_in_transaction_timeout between interval '1 second' and interval '1 day'),
  add constraint bi_logins_temp_file_limit_kb_range
    check (temp_file_limit_kb between 0 and 1073741824),
  add constraint bi_logins_connection_limit_range
    check (connection_limit between 1 and 100);

comment on constraint bi_logins_statement_timeout_range on auth.bi_logins is
  'the statement timeout must be between 1 second and 1 day';
comment on constraint bi_logins_idle_in_transaction_timeout_range on auth.bi_logins is
  'the idle-in-transaction timeout must be between 1 second and 1 day';
comment on constraint bi_logins_temp_file_limit_kb_range on auth.bi_logins is
  'the temporary file limit must be between 0 (no temporary files) and 1TB';
comment on constraint bi_logins_connection_limit_range on auth.bi_logins is
  'the connection limit must be between 1 and 100';

comment on column auth.bi_logins.statement_timeout is
  'A statement running longer is cancelled (role setting, and the watchdog whatever the session sets).';
comment on column auth.bi_logins.idle_in_transaction_timeout is
  'A session idle in a transaction longer is terminated (role setting, and the watchdog).';
comment on column auth.bi_logins.temp_file_limit_kb is
  'temp_file_limit of the role, in kB: superuser-only, so the login cannot raise it.';
comment on column auth.bi_logins.connection_limit is
  'CONNECTION LIMIT of the role.';

create table auth.bi_session_ends (
  end_id bigint generated always as identity primary key,
  ended_at timestamptz not null default now(),
  rolname name not null,
  pid integer not null,
  action text not null check (action in ('cancel', 'terminate')),
  reason text not null check (reason in ('statement_timeout', 'idle_in_transaction_timeout')),
  state text,
  running_for interval not null,
  time_limit interval not null,
  application_name text,
  client_addr inet,
  query text
);
create index on auth.bi_session_ends (ended_at);
comment on table auth.bi_session_ends is
  'BI statements cancelled and sessions terminated by the watchdog, and why. Read by operators.';
alter table auth.bi_session_ends enable row level security;
