-- Periodic work, written once: what runs and how often. Both schedulers read this list: the
-- local stack's `stepledger scheduler` (loader/stepledger/stack/scheduler.py) and, where the pg_cron
-- extension is installed, the database itself (below). Loaded last among the functions: the
-- first population below calls functions of every feature.

create or replace function ledger.scheduled_tasks()
returns table (task text, command text, every interval)
language sql immutable parallel safe set search_path = pg_catalog, pg_temp as $$
  values
    -- Usage figures (GET /usage and invoices; docs/billing.md) and error statistics and step
    -- timings (docs/api.md): each run rewrites only the client-months and client-days whose
    -- change log rows it finds (ADR 0016), so a run with nothing to do is a few index probes and
    -- they can run often enough that derived data is at most a few seconds behind ingest. A run
    -- that rewrote nothing answers no row (the scheduler logs it only at debug level).
    ('refresh_usage', $c$select r::text from ledger.refresh_usage('scheduler') r
                        where (r->>'month_ranges')::integer > 0$c$, interval '2 seconds'),
    ('refresh_analytics', $c$select r::text from ledger.refresh_analytics() r
                            where (r->>'clients')::integer > 0$c$, interval '2 seconds'),
    -- Monthly partitions of the vault and the events, ahead of time.
    ('ensure_partitions', $c$select ledger.ensure_partitions()::text$c$, interval '1 hour'),
    -- BI statements and idle BI transactions past their login's limits, which a BI session can
    -- override for itself (db/bootstrap/40_bi_limits.sql, docs/bi.md): at most 5 s late.
    ('bi_watchdog', $c$select watchdog.end_bi_sessions_past_limits()::text$c$,
     interval '5 seconds'),
    -- One job.stalled per stall (docs/notifications.md).
    ('scan_stalled_jobs', $c$select ledger.scan_stalled_jobs()::text$c$, interval '15 seconds')
$$;
comment on function ledger.scheduled_tasks() is
  'The periodic work of the database (task, SQL command, interval): what `stepledger scheduler` and pg_cron run.';

-- What changed before this migrate (a new database's first population, a rebuild a migration
-- asked for) is computed now rather than at the scheduler's first run.
do $$
begin
  if exists (select 1 from ledger.billing_changes) then
    perform ledger.refresh_usage('migrate');
  end if;
  if exists (select 1 from ledger.analytics_changes) then
    perform ledger.refresh_analytics();
  end if;
end
$$;

create or replace function ledger._cron_schedule(p_every interval, p_seconds_supported boolean)
returns text
language sql immutable parallel safe set search_path = pg_catalog, pg_temp as $$
  -- pg_cron's schedule for an interval: whole minutes or hours as cron expressions; below a
  -- minute "N seconds" where pg_cron has it (1.5 and later), else every minute (the closest).
  select case
           when extract(epoch from p_every) < 60 then
             case when p_seconds_supported then extract(epoch from p_every)::integer || ' seconds'
                  else '* * * * *' end
           when extract(epoch from p_every) < 3600 then
             format('*/%s * * * *', greatest(1, extract(epoch from p_every)::integer / 60))
           else format('0 */%s * * *', greatest(1, extract(epoch from p_every)::integer / 3600))
         end
$$;
comment on function ledger._cron_schedule(interval, boolean) is
  'The pg_cron schedule of an interval of ledger.scheduled_tasks() (seconds only where pg_cron supports them).';

-- With pg_cron (shared_preload_libraries and the extension in this database), the database runs
-- the same list itself; the local stack's scheduler does the same without it.
do $$
declare
  v_seconds_supported boolean;
begin
  if not exists (select from pg_extension where extname = 'pg_cron')
     or not has_schema_privilege('cron', 'usage') then
    return;
  end if;
  v_seconds_supported := (select string_to_array(extversion, '.')::integer[] >= array[1, 5]
                            from pg_extension where extname = 'pg_cron');
  perform cron.schedule('stepledger-' || replace(t.task, '_', '-'),
                        ledger._cron_schedule(t.every, v_seconds_supported), t.command)
     from ledger.scheduled_tasks() t;
end
$$;
