-- Progress and error analytics (docs/api.md), in this folder: who may read the analytics
-- materialized views (this file), their refresh (20), job counts and timelines (30), step timings
-- (40), error statistics (45) and the HTTP views (50).
--
-- Tenancy: materialized views cannot carry row-level security, so clients never read them. They
-- read the barrier views below, owned by the schema owner, which keep only the rows of the
-- clients that the caller can see in ledger.clients, under that table's own row-level security
-- (a client user sees its client, an admin all). Everything else here runs as the caller.
--
-- Error codes raised here (SQLSTATE, asserted by tests):
--   SL501  a parameter is out of range (window, cursor, limit)
--   SL503  a job id names jobs of several clients: pass client_id
--   SL504  no such job (or not visible to the caller): HTTP 404

create or replace function ledger._visible_client_ids() returns text[]
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
-- The clients whose rows the caller may see: ledger.clients as the caller sees it under its
-- row-level security. plpgsql, so it is never inlined into a view that runs as the view's owner.
begin
  return coalesce((select array_agg(c.client_id::text) from ledger.clients c), '{}');
end
$$;
comment on function ledger._visible_client_ids() is
  'Client ids visible to the caller under the row-level security of ledger.clients.';

create or replace function ledger._check_window(p_since date, p_until date) returns void
language plpgsql immutable
set search_path = pg_catalog, pg_temp
as $$
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
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
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

-- -- Access layer of the materialized views -------------------------------------------------------
-- security_barrier: caller-supplied conditions run only on rows the caller may see.

create or replace view ledger.visible_step_outcomes_daily with (security_barrier = true) as
select d.* from ledger.step_outcomes_daily d
 where d.client_id = any ((select ledger._visible_client_ids())::text[]);
comment on view ledger.visible_step_outcomes_daily is
  'ledger.step_outcomes_daily, only the clients the caller can see.';

create or replace view ledger.visible_step_outcomes_total with (security_barrier = true) as
select t.* from ledger.step_outcomes_total t
 where t.client_id = any ((select ledger._visible_client_ids())::text[]);
comment on view ledger.visible_step_outcomes_total is
  'ledger.step_outcomes_total, only the clients the caller can see.';

create or replace view ledger.visible_step_timings_daily with (security_barrier = true) as
select t.* from ledger.step_timings_daily t
 where t.client_id = any ((select ledger._visible_client_ids())::text[]);
comment on view ledger.visible_step_timings_daily is
  'ledger.step_timings_daily, only the clients the caller can see.';
