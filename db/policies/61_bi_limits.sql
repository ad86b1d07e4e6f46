-- Grants of the BI limits (db/functions/60_auth/20_bi_limits.sql, db/bootstrap/40_bi_limits.sql).
-- Every migrate, even one with nothing new, applies the limits to every BI login
-- (stepledger.schema.migrate): logins made before the limits existed get them, and a login that
-- reset its own role's defaults gets them back.

-- The watchdog function runs as bi_watchdog: it reads the logins' time limits (not their
-- clients), records what it ended and looks up the cancels it sent. Nothing else of the auth
-- schema.
grant usage on schema auth to bi_watchdog;
grant select (rolname, statement_timeout, idle_in_transaction_timeout) on auth.bi_logins
  to bi_watchdog;
drop policy if exists select_watchdog on auth.bi_logins;
create policy select_watchdog on auth.bi_logins for select to bi_watchdog using (true);
grant insert, select (pid, action, ended_at) on auth.bi_session_ends to bi_watchdog;
drop policy if exists insert_watchdog on auth.bi_session_ends;
create policy insert_watchdog on auth.bi_session_ends for insert to bi_watchdog with check (true);
drop policy if exists select_watchdog on auth.bi_session_ends;
create policy select_watchdog on auth.bi_session_ends for select to bi_watchdog using (true);
