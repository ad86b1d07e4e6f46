-- Usage: charges and usage lines, the change log, the usage lines table and its refresh (billing rules and error codes: 10_common.sql).

-- ---------------------------------------------------------------------------------------------
-- Charges and usage lines (contract §5)
-- ---------------------------------------------------------------------------------------------

create or replace function ledger._charges_from_events(p_client_id text, p_from date, p_to date)
returns table (client_id text, job_id text, pipeline text, step text, units numeric,
               completed_at timestamptz)
language plpgsql stable set search_path = pg_catalog, pg_temp
set plan_cache_mode = force_custom_plan
as $$
-- The billed completions recomputed from the accepted raw events alone, as a log parser would:
-- per attempt the terminal event with the latest occurred_at decides (ties broken as the ingest
-- trigger breaks them: later batch, then vault id);
-- the billed attempt is the latest one that completed. The reference that job_steps must match,
-- and the baseline of the benchmark. A function of its own (not inlined) so that the planner
-- drops it entirely from the job_steps path, which clients use without access to raw events.
begin
  return query
  select b.client_id::text, b.job_id, b.pipeline::text, b.step::text, b.units, b.occurred_at
    from (
      select distinct on (t.client_id, t.job_id, t.step) t.*
        from (
          select distinct on (e.client_id, e.job_id, e.step, e.attempt)
                 e.client_id, e.job_id, e.pipeline, e.step, e.attempt, e.status, e.units,
                 e.occurred_at
            from ledger.events e
           where e.status <> 'started'
             and (p_client_id is null or e.client_id = p_client_id)
             and (p_from is null or exists (
                   select from ledger.events c
                    where c.client_id = e.client_id and c.job_id = e.job_id and c.step = e.step
                      and c.status = 'completed'
                      and c.occurred_at >= ledger._month_start(p_from)
                      and (p_to is null or c.occurred_at < ledger._month_start(p_to))))
           order by e.client_id, e.job_id, e.step, e.attempt,
                    e.occurred_at desc, e.received_at desc, e.vault_id desc
        ) t
       where t.status = 'completed'
       order by t.client_id, t.job_id, t.step, t.attempt desc
    ) b
   where (p_from is null or b.occurred_at >= ledger._month_start(p_from))
     and (p_to is null or b.occurred_at < ledger._month_start(p_to));
end
$$;
comment on function ledger._charges_from_events(text, date, date) is
  'Billed completions recomputed from the raw accepted events (reference and benchmark baseline).';

create or replace function ledger._usage_lines_of(p_client_id text, p_from date, p_to date,
                                                  p_source text)
returns table (client_id text, period date, pipeline text, step text, unit_price numeric,
               priced boolean, currency text, completed_steps bigint, units numeric,
               amount numeric, first_completed_at timestamptz, last_completed_at timestamptz)
language plpgsql stable
-- Planned on every call with its arguments, so the filters reach the indexes.
set plan_cache_mode = force_custom_plan
as $$
-- Usage lines of one client (or all, when null) for periods in [p_from, p_to) (all when null).
-- p_source 'job_steps': charges from ledger.job_steps, as maintained at ingest (the product);
-- p_source 'events': recomputed from the accepted raw events (the reference, and the baseline
-- the benchmark compares with). Runs with the caller's rights: row-level security applies.
-- PL/pgSQL, not an inlined SQL function: Citus refuses a statement whose Citus tables appear
-- only once the planner has inlined a SQL function (ADR 0012).
begin
  return query
  with charges as (
    select js.client_id, js.job_id, js.pipeline, js.step,
           coalesce(js.billed_units, 0) as units, js.completed_at
      from ledger.job_steps js
     where p_source = 'job_steps'
       and js.completed_at is not null
       and (p_client_id is null or js.client_id = p_client_id)
       and (p_from is null or js.completed_at >= ledger._month_start(p_from))
       and (p_to is null or js.completed_at < ledger._month_start(p_to))
    union all
    select f.client_id, f.job_id, f.pipeline, f.step, f.units, f.completed_at
      from ledger._charges_from_events(p_client_id, p_from, p_to) f
     where p_source = 'events'
  ),
  -- Each price row is in force from its effective_from until the next row of the same
  -- (client or default, pipeline, step, currency); of two rows with the same effective_from the
  -- later recorded one wins.
  price_rows as (
    select p.price_id, p.client_id, p.pipeline, p.step, p.currency, p.unit_price, p.tiers,
           p.effective_from,
           lead(p.effective_from) over (partition by p.client_id, p.pipeline, p.step, p.currency
                                        order by p.effective_from, p.price_id) as until
      from ledger.prices p
  ),
  priced as (
    -- A client's own price beats the default; a charge with neither is unpriced (billed at 0).
    select ch.client_id, ch.job_id, ch.pipeline, ch.step, ch.units, ch.completed_at,
           ledger._month(ch.completed_at) as period, cl.currency,
           coalesce(cp.price_id, dp.price_id) as price_id,
           coalesce(cp.unit_price, dp.unit_price) as base_price,
           coalesce(cp.tiers, dp.tiers) <> '[]'::jsonb as tiered
      from charges ch
      join ledger.clients cl on cl.client_id = ch.client_id
      left join price_rows cp
             on cp.client_id = ch.client_id and cp.pipeline = ch.pipeline and cp.step = ch.step
            and cp.currency = cl.currency
            and cp.effective_from <= ch.completed_at
            and (cp.until is null or ch.completed_at < cp.until)
      left join price_rows dp
             on dp.client_id is null and dp.pipeline = ch.pipeline and dp.step = ch.step
            and dp.currency = cl.currency
            and dp.effective_from <= ch.completed_at
            and (dp.until is null or ch.completed_at < dp.until)
  ),
  -- Graduated tiers count units per client, month, pipeline and step, in order of completion
  -- (then job id). Only months where some charge has a tiered price need that running total.
  tiered_months as (
    select distinct p.client_id, p.period, p.pipeline, p.step from priced p where p.tiered
  ),
  flat as (
    select p.client_id, p.period, p.pipeline, p.step, p.currency, p.completed_at,
           p.price_id is not null as priced, coalesce(p.base_price, 0) as unit_price,
           p.units as band_units, true as home
      from priced p
     where not exists (select from tiered_months t
                        where t.client_id = p.client_id and t.period = p.period
                          and t.pipeline = p.pipeline and t.step = p.step)
  ),
  running as (
    select p.*,
           sum(p.units) over (partition by p.client_id, p.period, p.pipeline, p.step
                              order by p.completed_at, p.job_id collate "C"
                              rows between unbounded preceding and current row) as cum_after
      from priced p
     where exists (select from tiered_months t
                    where t.client_id = p.client_id and t.period = p.period
                      and t.pipeline = p.pipeline and t.step = p.step)
  ),
  bands as (
    -- [lower, upper) bands of each tiered price: the base price below the first tier.
    select pr.price_id, 0::numeric as lower, (pr.tiers->0->>'from_units')::numeric as upper,
           pr.unit_price
      from price_rows pr
     where pr.tiers <> '[]'::jsonb
    union all
    select pr.price_id, (t.tier->>'from_units')::numeric,
           (pr.tiers->(t.i::integer)->>'from_units')::numeric, (t.tier->>'unit_price')::numeric
      from price_rows pr
      cross join lateral jsonb_array_elements(pr.tiers) with ordinality as t(tier, i)
  ),
  split as (
    -- A charge's units [cum_after - units, cum_after) fall into one or more bands; it counts as
    -- a completed step in the band where its first unit falls.
    select r.client_id, r.period, r.pipeline, r.step, r.currency, r.completed_at,
           r.price_id is not null as priced,
           coalesce(b.unit_price, r.base_price, 0) as unit_price,
           case when b.price_id is null then r.units
                else least(r.cum_after, coalesce(b.upper, r.cum_after))
                     - greatest(r.cum_after - r.units, b.lower) end as band_units,
           b.price_id is null
             or (b.lower <= r.cum_after - r.units
                 and (b.upper is null or r.cum_after - r.units < b.upper)) as home
      from running r
      left join bands b
             on b.price_id = r.price_id
            and (b.lower < r.cum_after or b.lower <= r.cum_after - r.units)
            and (b.upper is null or b.upper > r.cum_after - r.units)
  )
  select s.client_id, s.period, s.pipeline, s.step, s.unit_price, s.priced, s.currency,
         count(*) filter (where s.home) as completed_steps,
         sum(s.band_units) as units,
         round(sum(s.band_units * s.unit_price), 2) as amount,
         min(s.completed_at) as first_completed_at,
         max(s.completed_at) as last_completed_at
    from (select * from flat union all select * from split) s
   group by s.client_id, s.period, s.pipeline, s.step, s.unit_price, s.priced, s.currency;
end
$$;
comment on function ledger._usage_lines_of(text, date, date, text) is
  'Usage lines per client, month, pipeline, step and unit price (contract §5), from job_steps or recomputed from the raw events.';

create or replace function ledger._usage_lines(p_client_id text, p_from date, p_to date)
returns table (client_id text, period date, pipeline text, step text, unit_price numeric,
               priced boolean, currency text, completed_steps bigint, units numeric,
               amount numeric, first_completed_at timestamptz, last_completed_at timestamptz)
language plpgsql stable as $$
-- The live usage lines: what ledger.usage_lines_monthly holds once refreshed.
begin
  return query select * from ledger._usage_lines_of(p_client_id, p_from, p_to, 'job_steps');
end
$$;
comment on function ledger._usage_lines(text, date, date) is
  'Live usage lines of one client (null: all) for periods [p_from, p_to); the query of ledger.usage_lines_monthly.';

-- ---------------------------------------------------------------------------------------------
-- Freshness of the usage lines
-- ---------------------------------------------------------------------------------------------

create or replace view ledger.usage_last_refresh with (security_invoker = true) as
-- The last usage refresh (no row before the first): when it ran, and the snapshot it started
-- from (the changes it saw are in the usage lines).
select r.refresh_id, r.started_at, r.finished_at, r.duration_ms, r.snapshot
  from ledger.billing_refreshes r
 order by r.refresh_id desc
 limit 1;
comment on view ledger.usage_last_refresh is
  'The last usage refresh: when it ran and the snapshot whose changes the usage lines hold.';

-- The freshness rule no longer compares the change log with the last refresh's snapshot
-- (ledger.usage_unseen_months says why).
drop function if exists ledger._usage_refresh_snapshot();

create or replace view ledger.usage_unseen_months with (security_invoker = true) as
-- Per client ('' is every client), the months of the change rows (as the caller sees them) that
-- no refresh has absorbed yet: their lines are stale. A refresh deletes the rows its snapshot
-- saw in the transaction that rewrites their lines, so a row still here is one the last refresh
-- did not see. On a Citus cluster the rows of a client and its lines are on the same worker,
-- deleted and rewritten in one transaction there, so a reader never sees the old lines of its
-- client without their rows (the refresh commits on the coordinator before the workers: a rule
-- comparing the rows with the coordinator's refresh snapshot would, for an instant). Set-based,
-- so that a view reads it once per statement, and never in a function called per line (which
-- could not read a distributed table on a shard, ADR 0012).
select ch.client_id, range_agg(daterange(ch.period_from, ch.period_to, '[]')) as months
  from ledger.billing_changes ch
 group by ch.client_id;
comment on view ledger.usage_unseen_months is
  'Months of each client ('''' = every client) with usage changes that no usage refresh has absorbed yet.';

create or replace function ledger._usage_month_stale(p_period date, p_refreshed_at timestamptz,
                                                     p_client_unseen datemultirange,
                                                     p_all_unseen datemultirange)
returns boolean
language sql immutable parallel safe as $$
  -- The usage lines of a client's month are stale before the first refresh, and when the month
  -- is among the client's or every client's unseen months (ledger.usage_unseen_months). Values
  -- only, no table: a view applies it per line, also on a Citus worker.
  select p_refreshed_at is null
      or coalesce(p_client_unseen @> p_period, false)
      or coalesce(p_all_unseen @> p_period, false)
$$;
comment on function ledger._usage_month_stale(date, timestamptz, datemultirange, datemultirange) is
  'Whether the usage lines of a month are stale, given the last refresh and the unseen months.';

create or replace function ledger._usage_fresh(p_client_id text, p_period date) returns boolean
language plpgsql stable as $$
-- True when the usage lines (as the caller sees them) hold every change to this client's usage
-- in this period (ledger._usage_month_stale), for one client and month on the coordinator
-- (invoices). Each read a statement of its own: on a Citus cluster each is planned apart (the
-- client's months on its worker).
declare
  v_refreshed_at timestamptz;
  v_client_unseen datemultirange;
  v_all_unseen datemultirange;
begin
  select r.finished_at into v_refreshed_at from ledger.usage_last_refresh r;
  select u.months into v_client_unseen from ledger.usage_unseen_months u
   where u.client_id = p_client_id;
  select u.months into v_all_unseen from ledger.usage_unseen_months u where u.client_id = '';
  return not ledger._usage_month_stale(p_period, v_refreshed_at, v_client_unseen, v_all_unseen);
end
$$;
comment on function ledger._usage_fresh(text, date) is
  'Whether ledger.usage_lines_monthly is current for one client and period.';

create or replace function ledger._usage_changes_pending() returns bigint
language plpgsql stable set search_path = pg_catalog, pg_temp as $$
-- The change rows of ledger.billing_changes (as the caller sees them) that no usage refresh has
-- absorbed yet (null before the first refresh): what GET /usage_freshness counts.
begin
  if not exists (select 1 from ledger.usage_last_refresh) then
    return null;
  end if;
  return (select count(*) from ledger.billing_changes ch);
end
$$;
comment on function ledger._usage_changes_pending() is
  'How many changes of the caller''s clients the last usage refresh has not seen.';

-- ---------------------------------------------------------------------------------------------
-- Change log: what the usage lines have not seen yet
-- ---------------------------------------------------------------------------------------------

-- Ingest writes the change log itself, in the statement that upserts ledger.job_steps
-- (ledger._fold_progress, 40_progress.sql): the month a billed completion joined and the month it
-- left. The statement triggers that did it until ADR 0014 read transition tables; migration 0080
-- drops them, and their functions go here:
drop function if exists ledger.tg_job_steps__log_billing_insert();
drop function if exists ledger.tg_job_steps__log_billing_update();

create or replace function ledger.tg_job_steps__log_billing_delete() returns trigger
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
-- A deleted step (a rebuild) leaves its month (a row trigger: it sees its own row only);
-- TRUNCATE marks everything.
begin
  if tg_op = 'TRUNCATE' then
    insert into ledger.billing_changes (client_id, period_from, period_to, reason, xid)
    values ('', '-infinity', 'infinity', 'rebuild', ledger._change_log_xid());
  elsif old.completed_at is not null then
    insert into ledger.billing_changes (client_id, period_from, period_to, reason, xid)
    values (old.client_id, ledger._month(old.completed_at), ledger._month(old.completed_at), 'rebuild',
            ledger._change_log_xid());
  end if;
  return null;
end
$$;
comment on function ledger.tg_job_steps__log_billing_delete() is 'Logs the months of deleted billed completions.';

create or replace trigger log_billing_delete
  after delete on ledger.job_steps
  for each row execute function ledger.tg_job_steps__log_billing_delete();

create or replace trigger log_billing_truncate
  after truncate on ledger.job_steps
  for each statement execute function ledger.tg_job_steps__log_billing_delete();

-- ---------------------------------------------------------------------------------------------
-- Refreshing the usage lines
-- ---------------------------------------------------------------------------------------------

create or replace function ledger.refresh_usage(p_requested_by text default null,
                                                p_concurrently boolean default true)
returns jsonb
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
set work_mem = '64MB'
-- Planned with each client and range: on a Citus cluster every statement is then a router query
-- on the client's worker, and on a single node the ranges reach the indexes.
set plan_cache_mode = force_custom_plan
as $$
-- Rewrites the usage lines of the client-months named in ledger.billing_changes, and only those
-- (ADR 0016): the work follows what changed, not history. Records the snapshot it started from;
-- change-log rows that snapshot saw are absorbed. Readers keep the old lines of a month until the
-- new ones commit, and ingest is never blocked (it only appends to the change log), so every
-- refresh is concurrent; p_concurrently is kept for the callers of earlier versions. Only
-- one refresh runs at a time: a second caller returns at once with refreshed = false.
declare
  v_started timestamptz := clock_timestamp();
  v_snapshot pg_snapshot;
  v_months record;
  v_lines ledger.usage_lines_monthly[];
  v_deleted bigint;
  v_removed bigint := 0;
  v_written bigint := 0;
  v_month_ranges bigint := 0;
  v_absorbed bigint;
  v_rows bigint;
  v_id bigint;
  v_finished timestamptz;
begin
  if not pg_try_advisory_xact_lock(hashtext('stepledger.refresh_usage')) then
    return jsonb_build_object('refreshed', false, 'reason', 'another refresh is running');
  end if;
  -- Taken before the statements below, whose own snapshots are at least as recent: every change
  -- visible here is in the lines written.
  v_snapshot := pg_current_snapshot();
  for v_months in
    select * from ledger._changed_ranges('ledger.billing_changes', 'period_from', 'period_to',
                                         v_snapshot)
  loop
    delete from ledger.usage_lines_monthly u
     where (v_months.client_id = '' or u.client_id = v_months.client_id)
       and u.period >= v_months.range_from and u.period < v_months.range_until;
    get diagnostics v_deleted = row_count;
    -- Computed first, then written: on a Citus cluster the lines' query runs on the client's
    -- worker and the insert routes each line to its shard.
    v_lines := array(
      select row(l.*)::ledger.usage_lines_monthly
        from ledger._usage_lines(nullif(v_months.client_id, ''),
                                 case when isfinite(v_months.range_from) then v_months.range_from end,
                                 case when isfinite(v_months.range_until)
                                      -- the month after the range's last month
                                      then (v_months.range_until - 1 + interval '1 month')::date
                                 end) l);
    insert into ledger.usage_lines_monthly select * from unnest(v_lines);
    v_removed := v_removed + v_deleted;
    v_written := v_written + coalesce(cardinality(v_lines), 0);
    v_month_ranges := v_month_ranges + 1;
  end loop;
  delete from ledger.billing_changes ch where pg_visible_in_snapshot(ch.xid, v_snapshot);
  get diagnostics v_absorbed = row_count;
  -- How many lines the table holds, kept by difference rather than counted.
  select coalesce((select r.line_rows from ledger.billing_refreshes r
                    order by r.refresh_id desc limit 1), 0) + v_written - v_removed
    into v_rows;
  v_finished := clock_timestamp();
  insert into ledger.billing_refreshes (started_at, finished_at, snapshot, duration_ms, line_rows,
                                        changes_absorbed, concurrent, requested_by)
  values (v_started, v_finished, v_snapshot,
          round(extract(epoch from v_finished - v_started) * 1000, 1), v_rows, v_absorbed,
          true, coalesce(p_requested_by, (ledger._actor()).actor))
  returning refresh_id into v_id;
  delete from ledger.billing_refreshes r where r.refresh_id < v_id - 1000;
  -- Notifications outbox: usage thresholds (also when nothing changed here: an alert may be new).
  perform ledger._enqueue_usage_crossings();
  return jsonb_build_object('refreshed', true, 'refresh_id', v_id, 'started_at', v_started,
                            'finished_at', v_finished,
                            'duration_ms', round(extract(epoch from v_finished - v_started) * 1000, 1),
                            'line_rows', v_rows, 'changes_absorbed', v_absorbed,
                            'month_ranges', v_month_ranges, 'lines_written', v_written,
                            'lines_removed', v_removed, 'concurrently', true);
end
$$;
comment on function ledger.refresh_usage(text, boolean) is
  'Rewrites the usage lines of the client-months in the billing change log and records the refresh; the scheduler (every few seconds), pg_cron and POST /rpc/refresh_usage call it.';

create or replace function api.refresh_usage() returns jsonb
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
-- Admins: refresh the usage figures now instead of waiting for the schedule.
begin
  if auth.role() not in ('admin', 'stepledger_owner') then
    raise exception 'role "%" may not refresh usage', auth.role() using errcode = 'SL406';
  end if;
  return ledger.refresh_usage('api: ' || (ledger._actor()).actor);
end
$$;
comment on function api.refresh_usage() is
  'Admins: refresh the usage lines now (GET /usage shows refreshed_at and stale). Returns refreshed = false when a refresh is already running.';
