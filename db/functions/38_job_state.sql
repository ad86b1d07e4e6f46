-- The job-state rules of contract §6 that are computed when read, in one place: the API, the
-- BI views and the analytics counts all call these, so "stalled" and "progress" mean the same
-- everywhere. Plain SQL, so the planner inlines them into each query.

create or replace function ledger.job_status(p_status text, p_updated_at timestamptz,
                                             p_stall_timeout interval)
returns text
language sql stable parallel safe
as $$
  -- stalled: running with no event for longer than the pipeline's stall timeout
  select case when p_status = 'running' and now() - p_updated_at > p_stall_timeout
              then 'stalled' else p_status end
$$;
comment on function ledger.job_status(text, timestamptz, interval) is
  'A job''s status as read: the stored status, or stalled when running with no event for longer than the stall timeout.';

create or replace function ledger.job_progress(p_steps_done integer, p_steps_total integer)
returns numeric
language sql immutable parallel safe
as $$
  select round(least(1, p_steps_done::numeric / nullif(p_steps_total, 0)), 4)
$$;
comment on function ledger.job_progress(integer, integer) is
  'steps_done / steps_total, from 0 to 1, to 4 decimals.';
