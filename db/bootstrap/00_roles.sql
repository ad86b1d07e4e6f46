-- Cluster-wide roles, created by a superuser on every migrate (idempotent).
-- Passwords are not set here: the migration runner sets them from the stack's secrets.
--
--   stepledger_owner  owns every schema object; migrations run as it. RLS does not apply to it.
--   authenticator     PostgREST's login; NOINHERIT, so it has no rights until it switches role.
--   anon              unauthenticated HTTP requests: may only log in.
--   client            an end user of one client (hospital): reads that client's rows.
--   admin             staff: reads and writes everything, edits prices.
--   ingest            a pipeline's API token: may only ingest, for its client or for all.
--   bi_reader         group of BI logins: reads the reporting schema under the same policies.
--   bi_all_clients    group of BI logins bound to no client (30_auth_roles.sql).
--   bi_watchdog       the rights of the BI watchdog; nobody logs in as it (40_bi_limits.sql).
do $$
declare
  r text;
begin
  if not exists (select from pg_roles where rolname = 'stepledger_owner') then
    create role stepledger_owner login;
  end if;
  if not exists (select from pg_roles where rolname = 'authenticator') then
    create role authenticator login noinherit;
  end if;
  foreach r in array array['anon', 'client', 'admin', 'ingest', 'bi_reader', 'bi_all_clients',
                            'bi_watchdog'] loop
    if not exists (select from pg_roles where rolname = r) then
      execute format('create role %I nologin', r);
    end if;
  end loop;
end
$$;

alter role authenticator noinherit;
grant anon, client, admin, ingest to authenticator;
-- The owner creates BI logins (stepledger bi-user add) and must be able to grant bi_reader.
alter role stepledger_owner createrole;
grant bi_reader to stepledger_owner with admin option;

-- A runaway request must not hold a backend forever (PostgREST switches to these roles per request).
alter role anon set statement_timeout = '3s';
alter role client set statement_timeout = '10s';
alter role ingest set statement_timeout = '30s';
alter role admin set statement_timeout = '60s';
alter role authenticator set statement_timeout = '60s';
