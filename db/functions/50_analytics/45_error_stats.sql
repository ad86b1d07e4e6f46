-- Error statistics: outcomes of finished attempts per client, pipeline, step, site and error
-- code, from the materialized roll-ups (10_access.sql). Error codes: 10_access.sql.

create or replace function ledger._outcomes(p_since date, p_until date, p_pipeline text, p_client_id text)
returns table (client_id text, pipeline text, step text, source text, error_code text,
               completed bigint, failed bigint, skipped bigint, retryable bigint,
               first_at timestamptz, last_at timestamptz, sample_message text)
language plpgsql stable set search_path = pg_catalog, pg_temp as $$
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
language plpgsql stable set search_path = pg_catalog, pg_temp as $$
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
language plpgsql stable set search_path = pg_catalog, pg_temp as $$
#variable_conflict use_column
-- Failures and failure rate per UTC day and step (default: the last 30 days).
declare
  w record := ledger._window(error_stats_by_day.since, error_stats_by_day.until, 30);
begin
  return query
  with cells as (
    select d.day, d.pipeline::text as pipeline, d.step::text as step, d.error_code,
           sum(d.completed)::bigint as completed, sum(d.failed)::bigint as failed,
           max(d.last_at) as last_at
      from ledger.visible_step_outcomes_daily d
     where d.day between w.since and w.until
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
language plpgsql stable set search_path = pg_catalog, pg_temp as $$
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
language plpgsql stable set search_path = pg_catalog, pg_temp as $$
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
