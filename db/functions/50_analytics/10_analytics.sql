-- Progress and error analytics (docs/api.md): counts per state, job timelines, step timings,
-- error statistics, live-update cursors, and the refresh of the analytics materialized views.
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

-- -- Refresh ---------------------------------------------------------------------------------------

create or replace function ledger.refresh_analytics(p_max_age interval default interval '0')
returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
-- Refreshes the analytics materialized views concurrently (readers are never blocked), daily
-- outcomes before their all-time roll-up, and records each one's freshness. Views refreshed less
-- than p_max_age ago are left alone; when another refresh is running this one returns at once.
-- Called by `stepledger analytics refresh` (cron), by admins through POST /rpc/refresh_analytics.
declare
  v_view text;
  v_started timestamptz;
  v_rows bigint;
  v_done jsonb := '[]';
begin
  if not pg_try_advisory_xact_lock(hashtext('stepledger.refresh_analytics')) then
    return jsonb_build_object('refreshed', v_done, 'skipped', 'another refresh is running');
  end if;
  foreach v_view in array array['step_outcomes_daily', 'step_outcomes_total', 'step_timings_daily'] loop
    if exists (select from ledger.analytics_refreshes r
                where r.view_name = v_view and r.refreshed_at > clock_timestamp() - p_max_age) then
      continue;
    end if;
    v_started := clock_timestamp();
    execute format('refresh materialized view concurrently ledger.%I', v_view);
    execute format('select count(*) from ledger.%I', v_view) into v_rows;
    insert into ledger.analytics_refreshes as r (view_name, refreshed_at, duration_ms, row_count)
    values (v_view, v_started,
            round(extract(epoch from clock_timestamp() - v_started)::numeric * 1000, 1), v_rows)
    on conflict (view_name) do update
       set refreshed_at = excluded.refreshed_at, duration_ms = excluded.duration_ms,
           row_count = excluded.row_count;
    v_done := v_done || jsonb_build_object('view', v_view, 'rows', v_rows,
      'duration_ms', round(extract(epoch from clock_timestamp() - v_started)::numeric * 1000, 1));
  end loop;
  return jsonb_build_object('refreshed', v_done, 'skipped', null);
end
$$;
comment on function ledger.refresh_analytics(interval) is
  'Refreshes the analytics materialized views concurrently, skipping those younger than the given age.';

create or replace function ledger._analytics_refresh_costs()
returns table (view_name text, duration_ms numeric, row_count bigint)
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$
  -- How long each refresh took and how many rows the view holds: figures of every client's
  -- activity together, so admins only (clients read null in api.analytics_freshness).
  select r.view_name, r.duration_ms, r.row_count
    from ledger.analytics_refreshes r
   where auth.role() = 'admin'
$$;
comment on function ledger._analytics_refresh_costs() is
  'Private: duration and row count of each analytics refresh, for admins only (they count every client''s activity).';

create or replace function api.refresh_analytics(max_age_s integer default 0) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
-- Admins: refresh error statistics and step timings now (or when older than max_age_s seconds).
begin
  if max_age_s is null or max_age_s < 0 then
    raise exception 'max_age_s must be 0 or more, not %', max_age_s using errcode = 'SL501';
  end if;
  return ledger.refresh_analytics(make_interval(secs => max_age_s));
end
$$;
comment on function api.refresh_analytics(integer) is
  'Admins: refresh the error statistics and step timings now, or only those older than max_age_s seconds. Returns what was refreshed and how long it took.';

-- -- Jobs: counts per state, changes, timeline -----------------------------------------------------

create or replace function api.job_counts(
  pipeline text default null,
  since timestamptz default null,
  until timestamptz default null,
  job_prefix text default null,
  client text default null
) returns jsonb
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
-- Jobs per state (running, completed, failed, stalled) among the caller's visible jobs, with the
-- same filters as the job list: pipeline, started in [since, until), job id prefix, client.
declare
  v_result jsonb;
begin
  if job_counts.since is not null and job_counts.until is not null
     and job_counts.since > job_counts.until then
    raise exception 'since (%) is after until (%)', job_counts.since, job_counts.until
      using errcode = 'SL501';
  end if;
  if job_counts.pipeline is null and job_counts.since is null and job_counts.until is null
     and job_counts.job_prefix is null then
    -- No filter but the client: count states from the index on (client_id, status, updated_at)
    -- alone, then look up the pipelines of the running jobs only, to tell the stalled ones.
    select jsonb_build_object(
             'running', c.running - st.stalled, 'completed', c.completed, 'failed', c.failed,
             'stalled', st.stalled, 'total', c.total, 'as_of', now())
      into v_result
      from (select count(*) filter (where j.status = 'running') as running,
                   count(*) filter (where j.status = 'completed') as completed,
                   count(*) filter (where j.status = 'failed') as failed,
                   count(*) as total
              from ledger.jobs j
             where job_counts.client is null or j.client_id = job_counts.client) c,
           (select count(*) as stalled
              from ledger.jobs j
              join ledger.pipelines p on p.pipeline = j.pipeline
             where j.status = 'running'
               and ledger.job_status(j.status, j.updated_at, p.stall_timeout) = 'stalled'
               and (job_counts.client is null or j.client_id = job_counts.client)) st;
    return v_result;
  end if;
  select jsonb_build_object(
           'running', count(*) filter (where s.status = 'running'),
           'completed', count(*) filter (where s.status = 'completed'),
           'failed', count(*) filter (where s.status = 'failed'),
           'stalled', count(*) filter (where s.status = 'stalled'),
           'total', count(*),
           'as_of', now())
    into v_result
    from ledger.jobs j
    join ledger.pipelines p on p.pipeline = j.pipeline
   cross join lateral (select ledger.job_status(j.status, j.updated_at, p.stall_timeout) as status) s
   where (job_counts.client is null or j.client_id = job_counts.client)
     and (job_counts.pipeline is null or j.pipeline = job_counts.pipeline)
     and (job_counts.since is null or j.started_at >= job_counts.since)
     and (job_counts.until is null or j.started_at < job_counts.until)
     and (job_counts.job_prefix is null or starts_with(j.job_id, job_counts.job_prefix));
  return v_result;
end
$$;
comment on function api.job_counts(text, timestamptz, timestamptz, text, text) is
  'Jobs per state (running, completed, failed, stalled, total) among your jobs, filtered like GET /jobs: pipeline, started in [since, until), job id prefix, client (admins).';

-- api.job_changes (live updates) is in 38_job_state.sql, with its opaque cursor.

create or replace function api.job_timeline(job_id text, client_id text default null)
returns jsonb
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
-- A Gantt-ready timeline of one job in one request: the job, then every step of its pipeline
-- version in order (steps not reached yet are `pending`, or `not_run` once the job has failed or
-- completed) with each attempt as a bar: start, end,
-- state, duration and the queue time before it. Bars of running attempts have no end yet: draw
-- them to `as_of`.
declare
  v_job record;
  v_matches integer;
  v_steps jsonb;
  v_span_start timestamptz;
  v_span_end timestamptz;
begin
  select count(*) into v_matches
    from api.jobs j
   where j.job_id = job_timeline.job_id
     and (job_timeline.client_id is null or j.client_id = job_timeline.client_id);
  if v_matches = 0 then
    perform ledger._raise_not_found('SL504', format('job "%s" not found', job_timeline.job_id),
      'check the job id (and client_id); you only see the jobs of your own client');
  elsif v_matches > 1 then
    raise exception 'job id "%" exists for % clients', job_timeline.job_id, v_matches
      using errcode = 'SL503', hint = 'pass client_id';
  end if;
  select j.* into v_job
    from api.jobs j
   where j.job_id = job_timeline.job_id
     and (job_timeline.client_id is null or j.client_id = job_timeline.client_id);

  with runs as (
    select r.*,
           max(r.finished_at) over (order by r.started_at nulls last, r.step_index, r.attempt
                                    rows between unbounded preceding and 1 preceding) as ready_at
      from api.step_runs r
     where r.client_id = v_job.client_id and r.job_id = v_job.job_id
  ),
  bars as (
    select r.step, r.attempt, r.started_at, r.ended_at, r.state,
           jsonb_build_object(
             'attempt', r.attempt, 'status', r.status, 'state', r.state,
             'started_at', r.started_at, 'ended_at', r.ended_at, 'finished_at', r.finished_at,
             'duration_s', r.duration_s,
             'queue_s', case when r.started_at is not null and r.ready_at is not null
                             then round(greatest(0, extract(epoch from r.started_at - r.ready_at)), 3) end,
             'units', r.units, 'error_code', r.error_code, 'error_message', r.error_message,
             'error_retryable', r.error_retryable, 'source', r.source) as bar
      from runs r
  ),
  steps as (
    select ps.step, ps.step_index, ps.title,
           coalesce(jsonb_agg(b.bar order by b.attempt) filter (where b.attempt is not null), '[]') as bars,
           count(b.attempt) as attempts,
           (array_agg(b.state order by b.attempt desc) filter (where b.attempt is not null))[1] as state,
           min(b.started_at) as started_at,
           (array_agg(b.ended_at order by b.attempt desc) filter (where b.attempt is not null))[1] as ended_at
      from ledger.pipeline_steps ps
      left join bars b on b.step = ps.step
     where ps.pipeline = v_job.pipeline
       and (ps.added_in_version <= v_job.pipeline_version or b.step is not null)
     group by ps.step, ps.step_index, ps.title
  )
  select jsonb_agg(jsonb_build_object(
           'step', s.step, 'step_index', s.step_index, 'title', s.title,
           -- a step without attempts: pending while the job may still reach it, not_run once
           -- the job failed or completed without it
           'state', coalesce(s.state, case when v_job.status in ('failed', 'completed')
                                           then 'not_run' else 'pending' end),
           'attempts', s.attempts,
           'started_at', s.started_at, 'ended_at', s.ended_at, 'runs', s.bars)
         order by s.step_index),
         min(s.started_at),
         max(s.ended_at)
    into v_steps, v_span_start, v_span_end
    from steps s;

  return to_jsonb(v_job) || jsonb_build_object(
    'as_of', now(),
    'span', jsonb_build_object(
      'start', coalesce(v_span_start, v_job.started_at),
      'end', case when v_job.status in ('completed', 'failed') then greatest(v_job.finished_at, v_span_end)
                  when v_job.status = 'stalled' then greatest(v_job.updated_at, v_span_end)
                  else greatest(now(), v_span_end) end),
    'steps', coalesce(v_steps, '[]'::jsonb));
end
$$;
comment on function api.job_timeline(text, text) is
  'Gantt-ready timeline of one job: the job as in GET /jobs, its span, and every step of its pipeline with each attempt (start, end, state, duration, queue time, error). 404 when you cannot see the job.';

-- -- Step timings --------------------------------------------------------------------------------

create or replace function api.step_durations(
  since date default null,
  until date default null,
  client text default null
) returns table (
  pipeline text, step text, step_index integer, attempts bigint, completed bigint,
  p50_s numeric, p95_s numeric, max_s numeric, mean_s numeric,
  queue_p50_s numeric, queue_p95_s numeric, queue_max_s numeric,
  window_start date, window_end date, refreshed_at timestamptz
)
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
-- Duration of completed attempts and queue time before attempts, per (pipeline, step), over the
-- attempts that started in a window of UTC days (default: the last 7 days, today included).
-- Exact percentiles (linear interpolation) over the caller's visible clients.
declare
  v_today date := (now() at time zone 'UTC')::date;
  v_since date := coalesce(step_durations.since, coalesce(step_durations.until, v_today) - 6);
  v_until date := coalesce(step_durations.until, v_today);
begin
  perform ledger._check_window(v_since, v_until);
  return query
  with cells as (
    select t.pipeline, t.step, t.attempts, t.completed, t.durations_s, t.queues_s
      from ledger.visible_step_timings_daily t
     where t.day between v_since and v_until
       and (step_durations.client is null or t.client_id = step_durations.client)
  ),
  counts as (
    select c.pipeline, c.step, sum(c.attempts)::bigint as attempts, sum(c.completed)::bigint as completed
      from cells c group by c.pipeline, c.step
  ),
  durations as (
    select c.pipeline, c.step,
           percentile_cont(0.5) within group (order by d) as p50,
           percentile_cont(0.95) within group (order by d) as p95,
           max(d) as mx, avg(d) as mean
      from cells c cross join unnest(c.durations_s) d
     group by c.pipeline, c.step
  ),
  queues as (
    select c.pipeline, c.step,
           percentile_cont(0.5) within group (order by q) as p50,
           percentile_cont(0.95) within group (order by q) as p95,
           max(q) as mx
      from cells c cross join unnest(c.queues_s) q
     group by c.pipeline, c.step
  )
  select n.pipeline, n.step, ps.step_index, n.attempts, n.completed,
         round(d.p50::numeric, 3), round(d.p95::numeric, 3), round(d.mx::numeric, 3),
         round(d.mean::numeric, 3),
         round(q.p50::numeric, 3), round(q.p95::numeric, 3), round(q.mx::numeric, 3),
         v_since, v_until,
         (select r.refreshed_at from ledger.analytics_refreshes r where r.view_name = 'step_timings_daily')
    from counts n
    left join durations d on d.pipeline = n.pipeline and d.step = n.step
    left join queues q on q.pipeline = n.pipeline and q.step = n.step
    left join ledger.pipeline_steps ps on ps.pipeline = n.pipeline and ps.step = n.step
   order by n.pipeline, ps.step_index, n.step;
end
$$;
comment on function api.step_durations(date, date, text) is
  'Step timings per pipeline and step over a window of UTC days (default: last 7): p50, p95, max and mean duration of completed attempts, p50, p95 and max queue time before attempts. As of refreshed_at.';

-- -- Error statistics ------------------------------------------------------------------------------

create or replace function ledger._outcomes(p_since date, p_until date, p_pipeline text, p_client_id text)
returns table (client_id text, pipeline text, step text, source text, error_code text,
               completed bigint, failed bigint, skipped bigint, retryable bigint,
               first_at timestamptz, last_at timestamptz, sample_message text)
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
-- Outcomes of finished attempts per client, pipeline, step, site and error code over a window of
-- UTC days, for the caller's visible clients: from the all-time roll-up when the window is open
-- at both ends, else summed from the daily cells.
begin
  perform ledger._check_window(p_since, p_until);
  if p_since is null and p_until is null then
    return query
    select t.client_id::text, t.pipeline::text, t.step::text, t.source, t.error_code, t.completed,
           t.failed, t.skipped, t.retryable, t.first_at, t.last_at, t.sample_message
      from ledger.visible_step_outcomes_total t
     where (p_pipeline is null or t.pipeline = p_pipeline)
       and (p_client_id is null or t.client_id = p_client_id);
  else
    return query
    select d.client_id::text, d.pipeline::text, d.step::text, d.source, d.error_code,
           sum(d.completed)::bigint, sum(d.failed)::bigint, sum(d.skipped)::bigint,
           sum(d.retryable)::bigint, min(d.first_at), max(d.last_at),
           (array_agg(d.sample_message order by d.last_at desc)
              filter (where d.sample_message is not null))[1]
      from ledger.visible_step_outcomes_daily d
     where (p_since is null or d.day >= p_since)
       and (p_until is null or d.day <= p_until)
       and (p_pipeline is null or d.pipeline = p_pipeline)
       and (p_client_id is null or d.client_id = p_client_id)
     group by d.client_id, d.pipeline, d.step, d.source, d.error_code;
  end if;
end
$$;
comment on function ledger._outcomes(date, date, text, text) is
  'Finished attempts per client, pipeline, step, site and error code over a window, for the caller''s clients.';

create or replace function api.error_stats_window(
  since date default null,
  until date default null,
  client text default null
) returns table (
  pipeline text, step text, failures bigint, attempts bigint, failure_rate numeric,
  top_error_code text, step_index integer, top_error_message text, top_error_failures bigint,
  retryable_failures bigint, skipped bigint, last_failure_at timestamptz, refreshed_at timestamptz
)
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
-- GET /error_stats over a window of UTC days (both ends included, either may be open), for one
-- pipeline or client if asked. Attempts are finished attempts (completed or failed).
begin
  return query
  with o as (
    select * from ledger._outcomes(error_stats_window.since, error_stats_window.until,
                                   null, error_stats_window.client)
  ),
  per_step as (
    select o.pipeline, o.step, sum(o.failed)::bigint as failures,
           sum(o.completed + o.failed)::bigint as attempts,
           sum(o.retryable)::bigint as retryable, sum(o.skipped)::bigint as skipped,
           max(o.last_at) filter (where o.failed > 0) as last_failure_at
      from o group by o.pipeline, o.step
  ),
  per_code as (
    select o.pipeline, o.step, o.error_code, sum(o.failed)::bigint as failures, max(o.last_at) as last_at,
           (array_agg(o.sample_message order by o.last_at desc)
              filter (where o.sample_message is not null))[1] as sample_message
      from o where o.failed > 0
     group by o.pipeline, o.step, o.error_code
  ),
  top as (
    select distinct on (c.pipeline, c.step) c.*
      from per_code c
     order by c.pipeline, c.step, c.failures desc, c.last_at desc, c.error_code
  )
  select s.pipeline, s.step, s.failures, s.attempts,
         round(s.failures::numeric / nullif(s.attempts, 0), 4),
         t.error_code, ps.step_index, t.sample_message, t.failures, s.retryable, s.skipped,
         s.last_failure_at,
         (select r.refreshed_at from ledger.analytics_refreshes r
           where r.view_name = case when error_stats_window.since is null
                                     and error_stats_window.until is null
                                    then 'step_outcomes_total' else 'step_outcomes_daily' end)
    from per_step s
    left join top t on t.pipeline = s.pipeline and t.step = s.step
    left join ledger.pipeline_steps ps on ps.pipeline = s.pipeline and ps.step = s.step
   order by s.pipeline, ps.step_index, s.step;
end
$$;
comment on function api.error_stats_window(date, date, text) is
  'Error statistics per pipeline and step, as GET /error_stats, over a window of UTC days (since, until, both included) and optionally one pipeline or client.';

create or replace function api.error_stats_by_day(
  since date default null,
  until date default null,
  client text default null
) returns table (
  day date, pipeline text, step text, failures bigint, attempts bigint, failure_rate numeric,
  top_error_code text, step_index integer
)
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
-- Failures and failure rate per UTC day and step (default: the last 30 days).
declare
  v_today date := (now() at time zone 'UTC')::date;
  v_since date := coalesce(error_stats_by_day.since, coalesce(error_stats_by_day.until, v_today) - 29);
  v_until date := coalesce(error_stats_by_day.until, v_today);
begin
  perform ledger._check_window(v_since, v_until);
  return query
  with cells as (
    select d.day, d.pipeline::text as pipeline, d.step::text as step, d.error_code,
           sum(d.completed)::bigint as completed, sum(d.failed)::bigint as failed,
           max(d.last_at) as last_at
      from ledger.visible_step_outcomes_daily d
     where d.day between v_since and v_until
       and (error_stats_by_day.client is null or d.client_id = error_stats_by_day.client)
     group by d.day, d.pipeline, d.step, d.error_code
  ),
  per_step as (
    select c.day, c.pipeline, c.step, sum(c.failed)::bigint as failures,
           sum(c.completed + c.failed)::bigint as attempts
      from cells c group by c.day, c.pipeline, c.step
  ),
  top as (
    select distinct on (c.day, c.pipeline, c.step) c.day, c.pipeline, c.step, c.error_code
      from cells c where c.failed > 0
     order by c.day, c.pipeline, c.step, c.failed desc, c.last_at desc, c.error_code
  )
  select s.day, s.pipeline, s.step, s.failures, s.attempts,
         round(s.failures::numeric / nullif(s.attempts, 0), 4), t.error_code, ps.step_index
    from per_step s
    left join top t on t.day = s.day and t.pipeline = s.pipeline and t.step = s.step
    left join ledger.pipeline_steps ps on ps.pipeline = s.pipeline and ps.step = s.step
   order by s.day, s.pipeline, ps.step_index, s.step;
end
$$;
comment on function api.error_stats_by_day(date, date, text) is
  'Failures, attempts, failure rate and top error code per UTC day and step over a window (default: the last 30 days).';

create or replace function api.error_stats_by_source(
  since date default null,
  until date default null,
  pipeline text default null,
  client text default null
) returns table (
  client_id text, source text, failures bigint, attempts bigint, failure_rate numeric,
  top_error_code text, top_error_step text, last_failure_at timestamptz
)
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
-- Failures per site (the events' `source`; '' when they named none), with the code and step that
-- failed most there. A site belongs to its client.
begin
  return query
  with o as (
    select * from ledger._outcomes(error_stats_by_source.since, error_stats_by_source.until,
                                   error_stats_by_source.pipeline, error_stats_by_source.client)
  ),
  per_source as (
    select o.client_id, o.source, sum(o.failed)::bigint as failures,
           sum(o.completed + o.failed)::bigint as attempts,
           max(o.last_at) filter (where o.failed > 0) as last_failure_at
      from o group by o.client_id, o.source
  ),
  top as (
    select distinct on (x.client_id, x.source) x.client_id, x.source, x.error_code, x.step
      from (select o.client_id, o.source, o.error_code, o.step, sum(o.failed) as failed,
                   max(o.last_at) as last_at
              from o where o.failed > 0
             group by o.client_id, o.source, o.error_code, o.step) x
     order by x.client_id, x.source, x.failed desc, x.last_at desc, x.error_code, x.step
  )
  select s.client_id, s.source, s.failures, s.attempts,
         round(s.failures::numeric / nullif(s.attempts, 0), 4), t.error_code, t.step,
         s.last_failure_at
    from per_source s
    left join top t on t.client_id = s.client_id and t.source = s.source
   order by s.failures desc, s.client_id, s.source;
end
$$;
comment on function api.error_stats_by_source(date, date, text, text) is
  'Failures, attempts and failure rate per site (client and event source), with the error code and step that failed most there.';

create or replace function api.error_codes(
  since date default null,
  until date default null,
  client text default null
) returns table (
  pipeline text, step text, error_code text, failures bigint, share numeric,
  retryable bigint, clients bigint, sources bigint, first_at timestamptz, last_at timestamptz,
  sample_message text
)
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
-- Every error code per pipeline and step, most frequent first, with its share of the step's
-- failures, how many clients and sites saw it, and the latest message as a sample.
begin
  return query
  with o as (
    select * from ledger._outcomes(error_codes.since, error_codes.until,
                                   null, error_codes.client)
     where failed > 0
  ),
  per_code as (
    select o.pipeline, o.step, o.error_code, sum(o.failed)::bigint as failures,
           sum(o.retryable)::bigint as retryable, count(distinct o.client_id) as clients,
           count(distinct (o.client_id, o.source)) as sources,
           min(o.first_at) as first_at, max(o.last_at) as last_at,
           (array_agg(o.sample_message order by o.last_at desc)
              filter (where o.sample_message is not null))[1] as sample_message
      from o group by o.pipeline, o.step, o.error_code
  )
  select c.pipeline, c.step, c.error_code, c.failures,
         round(c.failures::numeric / sum(c.failures) over (partition by c.pipeline, c.step), 4),
         c.retryable, c.clients, c.sources, c.first_at, c.last_at, c.sample_message
    from per_code c
   order by c.failures desc, c.pipeline, c.step, c.error_code;
end
$$;
comment on function api.error_codes(date, date, text) is
  'Error codes per pipeline and step, most frequent first: failures, share of the step''s failures, retryable failures, clients and sites affected, first and last seen, a sample message.';
