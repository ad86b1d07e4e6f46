-- Writing messages into the outbox (the outbox's design and error codes: 10_targets.sql).

create or replace function ledger._notification_body(p_event_type text, p_data jsonb)
returns jsonb
language sql stable parallel safe as $$
  -- The body of an outbox message: its type, when it was written, and its data.
  select jsonb_build_object('type', p_event_type,
                            'timestamp', to_char(now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                            'data', p_data)
$$;
comment on function ledger._notification_body(text, jsonb) is 'The body of an outbox message: {type, timestamp, data}.';

create or replace function ledger._enqueue_notification(p_client_id text, p_event_type text,
                                                         p_data jsonb)
returns bigint
language plpgsql volatile set search_path = pg_catalog, pg_temp as $$
-- One outbox row; the delivery worker is woken at commit (pg_notify is transactional).
declare
  v_seq bigint;
begin
  insert into ledger.notification_messages (client_id, event_type, body)
  values (p_client_id, p_event_type, ledger._notification_body(p_event_type, p_data))
  returning message_seq into v_seq;
  perform pg_notify('stepledger_notifications', '');
  return v_seq;
end
$$;
comment on function ledger._enqueue_notification(text, text, jsonb) is 'Writes one message to the notification outbox (in the caller''s transaction).';

create or replace function ledger._url_encode(p_text text) returns text
language plpgsql immutable parallel safe set search_path = pg_catalog, pg_temp as $$
-- encodeURIComponent: every byte but A-Z a-z 0-9 - _ . ! ~ * ' ( ) as %XX. Most ids need no
-- escaping: one match instead of a regular expression per character. (PL/pgSQL: a SQL function
-- with a subquery is not inlined, and was planned again for every statement that called it.)
begin
  if p_text ~ '^[A-Za-z0-9_.!~*''()-]*$' then
    return p_text;
  end if;
  return (select coalesce(string_agg(case when b.ch ~ '^[A-Za-z0-9_.!~*''()-]$' then b.ch
                                          else upper(regexp_replace(encode(convert_to(b.ch, 'UTF8'), 'hex'),
                                                                    '(..)', '%\1', 'g')) end,
                                     '' order by b.i), '')
            from regexp_split_to_table(p_text, '') with ordinality as b(ch, i));
end
$$;
comment on function ledger._url_encode(text) is 'Percent-encodes text as JavaScript''s encodeURIComponent does.';

drop function if exists ledger._job_notification_data(text, text, text);
create or replace function ledger._job_notification_data(p_client_id text, p_jobs jsonb)
returns table (client_id text, job_id text, data jsonb)
language plpgsql stable set search_path = pg_catalog, pg_temp
-- One statement for every job of a batch, planned once per session (ingest's plans: see
-- ledger._fold_client_progress, whose settings it shares).
set plan_cache_mode = force_generic_plan
as $$
-- The data of a job.* message for each of p_jobs, [{client_id, job_id, status}]: the failed
-- step for a failure, else the step with the latest news. p_client_id: the client of all of
-- them, or null. Each job, its step and its step run are probed by key (LATERAL subqueries with
-- a LIMIT, which are not flattened into a join: a nested loop, whatever the table sizes when the
-- plan was made), and every one names p_client_id: on a Citus coordinator, where ingest folds
-- one client at a time, that makes the statement a router query (ADR 0012), which Citus refuses
-- for a LATERAL subquery joined to a table without it.
begin
  return query
  with x as materialized (
    select * from jsonb_to_recordset(p_jobs) as x(client_id text, job_id text, status text)
  )
  select j.client_id, j.job_id, jsonb_build_object(
           'client_id', j.client_id, 'job_id', j.job_id, 'pipeline', j.pipeline,
           'status', x.status, 'step', s.step, 'step_title', ps.title, 'attempt', s.latest_attempt,
           'error_code', r.error_code, 'error_message', r.error_message,
           'occurred_at', case x.status when 'failed' then coalesce(s.latest_at, j.updated_at)
                                        when 'completed' then coalesce(j.finished_at, j.updated_at)
                                        else j.updated_at end,
           'steps_done', j.steps_done, 'steps_total', j.steps_total,
           'url', (select st.public_web_url from ledger.notification_settings st)
                  || '/#/jobs/' || ledger._url_encode(j.client_id) || '/' || ledger._url_encode(j.job_id))
    from x
   cross join lateral (
      select j.* from ledger.jobs j
       where (j.client_id = p_client_id or p_client_id is null)
         and j.client_id = x.client_id and j.job_id = x.job_id
       limit 1) j
    left join lateral (
      select js.step, js.latest_attempt, js.latest_at
        from ledger.job_steps js
       where (js.client_id = p_client_id or p_client_id is null)
         and js.client_id = j.client_id and js.job_id = j.job_id
         and (x.status <> 'failed' or js.latest_status = 'failed')
       order by (js.step = j.last_error_step and x.status = 'failed') desc, js.latest_at desc,
                js.step_index desc
       limit 1) s on true
    left join ledger.pipeline_steps ps on ps.pipeline = j.pipeline and ps.step = s.step
    left join lateral (
      select r.error_code, r.error_message from ledger.step_runs r
       where (r.client_id = p_client_id or p_client_id is null)
         and r.client_id = j.client_id and r.job_id = j.job_id and r.step = s.step
         and r.attempt = s.latest_attempt
       limit 1) r on true;
end
$$;
comment on function ledger._job_notification_data(text, jsonb) is
  'The data of the job.* messages (docs/notifications.md) of jobs [{client_id, job_id, status}] of client p_client_id (or of any when it is null).';

drop function if exists ledger._enqueue_job_transitions(jsonb);
create or replace function ledger._enqueue_job_transitions(p_client_id text, p_transitions jsonb)
returns integer
language plpgsql volatile set search_path = pg_catalog, pg_temp as $$
-- p_transitions: [{"client_id", "job_id", "before": status or null, "after": status}], the jobs
-- whose stored status changed, of client p_client_id (or of any when it is null). The messages of
-- each transition:
--   -> failed: job.failed;  failed -> running: job.recovered;
--   failed -> completed: job.recovered and job.completed;  other -> completed: job.completed.
-- The messages' data are read in one statement, then written in one: on a Citus cluster the jobs
-- are on the workers and the outbox on the coordinator.
declare
  v_messages jsonb;
  v_count integer;
begin
  with transitions as (
    select x.client_id, x.job_id, x.before, x.after
      from jsonb_to_recordset(p_transitions) as x(client_id text, job_id text, before text, after text)
     where x.after is distinct from x.before
  )
  select jsonb_agg(jsonb_build_object('client_id', t.client_id, 'event_type', e.event_type,
                                      'data', d.data)
                   order by t.client_id, t.job_id, e.ord)
    into v_messages
    from transitions t
    join ledger._job_notification_data(p_client_id,
           (select jsonb_agg(jsonb_build_object('client_id', t2.client_id, 'job_id', t2.job_id,
                                                'status', t2.after))
              from transitions t2)) d
      on d.client_id = t.client_id and d.job_id = t.job_id
   cross join lateral (values (1, 'job.recovered', t.before = 'failed' and t.after in ('running', 'completed')),
                              (2, 'job.failed', t.after = 'failed'),
                              (3, 'job.completed', t.after = 'completed')) as e(ord, event_type, applies)
   where e.applies;
  insert into ledger.notification_messages (client_id, event_type, body)
  select m.message->>'client_id', m.message->>'event_type',
         ledger._notification_body(m.message->>'event_type', m.message->'data')
    from jsonb_array_elements(v_messages) with ordinality as m(message, n)
   order by m.n;
  get diagnostics v_count = row_count;
  if v_count > 0 then
    perform pg_notify('stepledger_notifications', '');
  end if;
  return v_count;
end
$$;
comment on function ledger._enqueue_job_transitions(text, jsonb) is
  'Writes the job.* messages of job status transitions (of one client, or of any when p_client_id is null).';

-- Ingest calls ledger._enqueue_job_transitions itself, from the statement that writes the jobs
-- (ledger._fold_progress, 40_progress.sql). The statement triggers on ledger.jobs that did it
-- until ADR 0014 read transition tables; migration 0080 drops them, and their function goes here:
drop function if exists ledger.tg_jobs__enqueue_transitions();

create or replace function ledger.scan_stalled_jobs() returns integer
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
-- One job.stalled per stall: a running job whose last event is older than its pipeline's stall
-- timeout (ledger.job_status), announced once per (job, last activity). The scheduler runs it.
declare
  v_count integer := 0;
  j record;
begin
  for j in
    with found as (
      insert into ledger.job_stall_notices (client_id, job_id, stalled_after)
      select jb.client_id, jb.job_id, jb.updated_at
        from ledger.jobs jb
        join ledger.pipelines p on p.pipeline = jb.pipeline
       where jb.status = 'running'
         and ledger.job_status(jb.status, jb.updated_at, p.stall_timeout) = 'stalled'
      on conflict do nothing
      returning client_id, job_id)
    select f.client_id, f.job_id from found f order by 1, 2
  loop
    perform ledger._enqueue_notification(j.client_id, 'job.stalled', d.data)
       from ledger._job_notification_data(j.client_id, jsonb_build_array(jsonb_build_object(
              'client_id', j.client_id, 'job_id', j.job_id, 'status', 'stalled'))) d;
    v_count := v_count + 1;
  end loop;
  return v_count;
end
$$;
comment on function ledger.scan_stalled_jobs() is 'Writes one job.stalled per newly stalled job; returns how many.';

create or replace function ledger._enqueue_invoice_finalized(p_client_id text, p_period date)
returns bigint
language plpgsql volatile set search_path = pg_catalog, pg_temp as $$
-- The invoice is read first, the message written after: on a Citus cluster a statement over
-- ledger.invoices runs on a worker, where the outbox (on the coordinator) cannot be written.
declare
  v_data jsonb;
begin
  select jsonb_build_object('client_id', i.client_id, 'period', to_char(i.period, 'YYYY-MM'),
                            'invoice_no', i.invoice_no, 'total', i.total, 'currency', i.currency,
                            'finalized_at', i.finalized_at)
    into v_data
    from ledger.invoices i
   where i.client_id = p_client_id and i.period = p_period;
  if v_data is null then
    return null;
  end if;
  return ledger._enqueue_notification(p_client_id, 'invoice.finalized', v_data);
end
$$;
comment on function ledger._enqueue_invoice_finalized(text, date) is 'Writes the invoice.finalized message of a finalized invoice.';

create or replace function ledger._enqueue_usage_crossings() returns integer
language plpgsql volatile set search_path = pg_catalog, pg_temp as $$
-- After a usage refresh: each client whose amount for the current month (UTC), in the alert's
-- currency, is at or above its threshold and was not announced for this month gets one message.
declare
  v_period date := date_trunc('month', now() at time zone 'UTC')::date;
  v_count integer := 0;
  v_amounts jsonb;
  a record;
begin
  -- The month's amounts first, in a statement of their own: on a Citus cluster the usage lines
  -- are distributed and the alerts are not, and one statement may not join the two.
  select coalesce(jsonb_agg(jsonb_build_object('client_id', u.client_id, 'currency', u.currency,
                                               'amount', u.amount)), '[]')
    into v_amounts
    from (select u.client_id, u.currency, sum(u.amount) as amount
            from ledger.usage_lines_monthly u
           where u.period = v_period
           group by u.client_id, u.currency) u;
  for a in
    with crossed as (
      update ledger.usage_alerts al
         set crossed_period = v_period
        from jsonb_to_recordset(v_amounts) as m(client_id text, currency text, amount numeric)
       where m.client_id = al.client_id and m.currency = al.currency and m.amount >= al.amount
         and al.crossed_period is distinct from v_period
      returning al.client_id, al.amount as threshold, al.currency, m.amount)
    select * from crossed order by client_id
  loop
    perform ledger._enqueue_notification(a.client_id, 'usage.threshold_crossed',
              jsonb_build_object('client_id', a.client_id, 'period', to_char(v_period, 'YYYY-MM'),
                                 'amount', a.amount, 'threshold', a.threshold,
                                 'currency', a.currency));
    v_count := v_count + 1;
  end loop;
  return v_count;
end
$$;
comment on function ledger._enqueue_usage_crossings() is 'Writes usage.threshold_crossed for clients whose month passed their threshold (once per month).';
