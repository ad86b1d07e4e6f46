-- Progress and error analytics (docs/api.md), in this folder: who may read the analytics
-- roll-ups (this file), their refresh (20), job counts and timelines (30), step timings
-- (40), error statistics (45) and the HTTP views (50).
--
-- Tenancy: the roll-up tables carry row-level security by client_id (02_row_security.sql), and
-- the ledger.visible_* views below read them with the caller's rights.
--
-- Error codes raised here (SQLSTATE, asserted by tests):
--   SL501  a parameter is out of range (window, cursor, limit)
--   SL503  a job id names jobs of several clients: pass client_id
--   SL504  no such job (or not visible to the caller): HTTP 404

create or replace function ledger._check_window(p_since date, p_until date) returns void
language plpgsql immutable set search_path = pg_catalog, pg_temp as $$
-- A window of UTC days is [since, until], both included; either end may be open (null).
begin
  if p_since is not null and p_until is not null and p_since > p_until then
    raise exception 'window starts (%) after it ends (%)', p_since, p_until
      using errcode = 'SL501', hint = 'since and until are UTC dates, both included';
  end if;
end
$$;
comment on function ledger._check_window(date, date) is 'Validates a window of UTC days.';

create or replace function ledger._window(p_since date, p_until date, p_days integer,
                                          out since date, out until date)
language plpgsql stable set search_path = pg_catalog, pg_temp as $$
-- A window of UTC days as the API's reports take it: until defaults to today (UTC), since to
-- p_days days before until (both included); checked like ledger._check_window.
begin
  until := coalesce(p_until, (now() at time zone 'UTC')::date);
  since := coalesce(p_since, until - (p_days - 1));
  perform ledger._check_window(since, until);
end
$$;
comment on function ledger._window(date, date, integer) is
  'A window of UTC days with the reports'' defaults: until today, since p_days days before (both included).';

-- -- Access layer of the roll-ups ----------------------------------------------------------------
-- With the caller's rights: the tables' row-level security keeps the caller's clients (on a Citus
-- cluster, on the workers that hold them).

create or replace view ledger.visible_step_outcomes_daily with (security_barrier = true, security_invoker = true) as
select d.* from ledger.step_outcomes_daily d;
comment on view ledger.visible_step_outcomes_daily is
  'ledger.step_outcomes_daily, only the clients the caller can see.';

create or replace view ledger.visible_step_outcomes_total with (security_barrier = true, security_invoker = true) as
select t.* from ledger.step_outcomes_total t;
comment on view ledger.visible_step_outcomes_total is
  'ledger.step_outcomes_total, only the clients the caller can see.';

create or replace view ledger.visible_step_timings_daily with (security_barrier = true, security_invoker = true) as
select t.* from ledger.step_timings_daily t;
comment on view ledger.visible_step_timings_daily is
  'ledger.step_timings_daily, only the clients the caller can see.';
