-- Drill-downs into the jobs list (docs/api.md, POST /rpc/search_jobs): from an error hotspot
-- (step, site, error code, message text) to the jobs that failed that way, and from an invoice line
-- to the jobs whose completed step it bills. Returns rows of api.jobs, so PostgREST's filters,
-- order, paging and counts work on the answer as on GET /jobs. It runs with the caller's rights:
-- row-level security on ledger.jobs, ledger.step_runs and ledger.job_steps keeps a client to its
-- own jobs. In db/views because it returns rows of the api.jobs view.

create or replace function api.search_jobs(
  error_code text default null,
  error_step text default null,
  error_source text default null,
  error_text text default null,
  failed_since timestamptz default null,
  failed_until timestamptz default null,
  billed_period text default null,
  billed_step text default null
) returns setof api.jobs
language plpgsql stable set search_path = pg_catalog, pg_temp as $$
#variable_conflict use_variable
declare
  v_period date;
  v_pattern text;
  v_by_error boolean := coalesce(error_code, error_step, error_source, error_text) is not null
                        or failed_since is not null or failed_until is not null;
begin
  if not v_by_error and billed_period is null then
    raise exception 'search_jobs needs a criterion'
      using errcode = 'SL501',
            hint = 'give error_code, error_step, error_source or error_text (failed jobs), or billed_period (billed jobs)';
  end if;
  if billed_step is not null and billed_period is null then
    raise exception 'billed_step "%" needs billed_period', billed_step
      using errcode = 'SL501', hint = 'the month of the invoice line, as YYYY-MM';
  end if;
  if length(error_text) > 200 then
    raise exception 'error_text is % characters long; at most 200', length(error_text)
      using errcode = 'SL501', hint = 'search for a shorter part of the message';
  end if;
  if failed_since is not null and failed_until is not null and failed_since > failed_until then
    raise exception 'failed_since (%) is after failed_until (%)', failed_since, failed_until
      using errcode = 'SL501';
  end if;
  if billed_period is not null then
    v_period := ledger._parse_period(billed_period);
  end if;
  -- The text is matched literally, in the code or the message: LIKE's wildcards are escaped.
  if nullif(btrim(error_text), '') is not null then
    v_pattern := '%' || replace(replace(replace(btrim(error_text), '\', '\\'), '%', '\%'), '_', '\_') || '%';
  end if;

  return query
  select j.*
    from api.jobs j
   where (not v_by_error or exists (
           select 1 from ledger.step_runs r
            where r.client_id = j.client_id and r.job_id = j.job_id and r.status = 'failed'
              and (error_code is null or r.error_code = error_code)
              and (error_step is null or r.step = error_step)
              and (error_source is null or coalesce(r.source, '') = error_source)
              and (v_pattern is null or r.error_code ilike v_pattern or r.error_message ilike v_pattern)
              and (failed_since is null or r.finished_at >= failed_since)
              and (failed_until is null or r.finished_at < failed_until)))
     and (v_period is null or exists (
           -- the billing rule: a step is billed in the UTC month its latest completed attempt
           -- completed (ledger.job_steps.billed_attempt / completed_at, contract §5)
           select 1 from ledger.job_steps js
            where js.client_id = j.client_id and js.job_id = j.job_id
              and js.billed_attempt is not null
              and js.completed_at >= ledger._month_start(v_period)
              and js.completed_at < ledger._month_start((v_period + interval '1 month')::date)
              and (billed_step is null or js.step = billed_step)));
end
$$;
comment on function api.search_jobs(text, text, text, text, timestamptz, timestamptz, text, text) is
  'Jobs (as in GET /jobs) that failed with an error code, at a step, at a site (source) or with a text in the code or message, optionally between failed_since and failed_until; or whose step (billed_step, else any) was billed in billed_period (YYYY-MM). Filter (pipeline, client_id, status, started_at …), order and page the answer like GET /jobs.';

-- Trends: jobs started per UTC day, and how many of them failed, completed or are still open.
create or replace function api.jobs_by_day(
  since date default null,
  until date default null,
  client text default null
) returns table (day date, started bigint, completed bigint, failed bigint, open bigint)
language plpgsql stable set search_path = pg_catalog, pg_temp as $$
#variable_conflict use_column
-- Default window: the last 30 UTC days. Every day of the window has a row, 0 when no job started.
declare
  w record := ledger._window(jobs_by_day.since, jobs_by_day.until, 30);
begin
  if w.until - w.since > 366 then
    raise exception 'window of % days; at most 367', w.until - w.since + 1
      using errcode = 'SL501', hint = 'ask for a year at most';
  end if;
  return query
  select d.day::date,
         count(j.job_id),
         count(j.job_id) filter (where j.status = 'completed'),
         count(j.job_id) filter (where j.status = 'failed'),
         count(j.job_id) filter (where j.status in ('running', 'stalled'))
    from generate_series(w.since::timestamp, w.until::timestamp, interval '1 day') d(day)
    left join api.jobs j
      on j.started_at >= d.day at time zone 'UTC'
     and j.started_at < (d.day + interval '1 day') at time zone 'UTC'
     and (jobs_by_day.client is null or j.client_id = jobs_by_day.client)
   group by d.day
   order by d.day;
end
$$;
comment on function api.jobs_by_day(date, date, text) is
  'Jobs started per UTC day over a window (default: the last 30 days), with how many of them completed, failed or are still open (running or stalled).';
