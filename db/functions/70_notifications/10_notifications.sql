-- Notifications (docs/notifications.md, docs/adr/0008-notification-outbox.md).
--
-- Writing messages: ledger._enqueue_notification() inserts one outbox row, in the transaction of
-- the change that causes it:
--   job.failed / job.recovered / job.completed  ingest compares each job's status before and
--                                               after its batch (ledger._fold_progress)
--   job.stalled                                 ledger.scan_stalled_jobs(), run by the scheduler
--   invoice.finalized                           ledger._finalize_invoice() (60_billing.sql)
--   usage.threshold_crossed                     ledger.refresh_usage() (60_billing.sql)
-- Delivering them: the delivery worker (stepledger.notify) calls dispatch_notifications(),
-- claim_webhook_deliveries() and record_webhook_attempt() (and the e-mail pair); the retry
-- schedule, the final outcomes and the disabling of failing endpoints are decided here.
--
-- Error codes (SQLSTATE in the body's "code"):
--   SL601  URL refused (scheme, host, private address)   SL602  unknown event type / no events
--   SL603  webhook, delivery or client not found or not visible
--   SL604  not allowed for this role                      SL605  bad threshold or currency
--   SL606  endpoint disabled (redeliver)

create or replace function ledger._notification_settings() returns ledger.notification_settings
language sql stable
set search_path = pg_catalog, pg_temp
as $$
  select s from ledger.notification_settings s where s.singleton
$$;
comment on function ledger._notification_settings() is 'The delivery settings row.';

-- -- Targets (SSRF) -----------------------------------------------------------------------------

create or replace function ledger.webhook_address_blocked(p_address inet) returns boolean
language sql immutable parallel safe
set search_path = pg_catalog, pg_temp
as $$
  -- Loopback, private, shared (CGNAT), link-local (cloud metadata at 169.254.169.254 and
  -- fd00:ec2::254 included), multicast, reserved and unspecified addresses, and IPv4 addresses
  -- embedded in IPv6 (mapped, NAT64) judged as IPv4. The one rule for creation and delivery.
  select case
           when family(p_address) = 6 and (p_address << '::ffff:0:0/96' or p_address << '64:ff9b::/96')
             then ledger.webhook_address_blocked(
                    ('0.0.0.0'::inet + (host(p_address)::inet - (case when p_address << '::ffff:0:0/96'
                                                                      then '::ffff:0.0.0.0' else '64:ff9b::' end)::inet)))
           else p_address << any (array[
                  '0.0.0.0/8', '10.0.0.0/8', '100.64.0.0/10', '127.0.0.0/8', '169.254.0.0/16',
                  '172.16.0.0/12', '192.0.0.0/24', '192.0.2.0/24', '192.168.0.0/16', '198.18.0.0/15',
                  '198.51.100.0/24', '203.0.113.0/24', '224.0.0.0/4', '240.0.0.0/4',
                  '::/128', '::1/128', 'fc00::/7', 'fe80::/10', 'ff00::/8', '2001:db8::/32',
                  '100::/64']::inet[])
                or p_address = any (array['0.0.0.0', '::', '::1']::inet[])
         end
$$;
comment on function ledger.webhook_address_blocked(inet) is
  'Whether a webhook may not be sent to this address (loopback, private, link-local, metadata, reserved), unless the operator allows private targets.';

create or replace function ledger._webhook_url_problem(p_url text, p_allow_private boolean)
returns text
language plpgsql immutable
set search_path = pg_catalog, pg_temp
as $$
-- Why a URL may not be a webhook target, or null. Host names are resolved, and checked again, by
-- the delivery worker before every attempt (DNS may change); here literal addresses and names
-- that always mean this machine or the cloud's metadata service are refused.
declare
  v_parts text[];
  v_host text;
  v_address inet;
begin
  if p_url is null or length(p_url) > 2000 then
    return 'the URL is missing or longer than 2000 characters';
  end if;
  if p_url ~ '[\s<>"{}|\\^`]' then
    return 'the URL contains spaces or characters that must be percent-encoded';
  end if;
  v_parts := regexp_match(p_url, '^([A-Za-z][A-Za-z0-9+.-]*)://(?:[^/?#@]*@)?(\[[0-9A-Fa-f:.]+\]|[^/?#:\[\]]+)(?::([0-9]{1,5}))?([/?#].*)?$');
  if v_parts is null then
    return 'not an absolute http(s) URL';
  end if;
  if p_url ~ '^[^:]+://[^/?#]*@' then
    return 'credentials in the URL are not allowed';
  end if;
  if lower(v_parts[1]) not in ('https', 'http') then
    return format('scheme "%s" is not allowed (https only)', v_parts[1]);
  end if;
  if lower(v_parts[1]) = 'http' and not p_allow_private then
    return 'plain http is not allowed: use https';
  end if;
  if v_parts[3] is not null and (v_parts[3]::integer < 1 or v_parts[3]::integer > 65535) then
    return format('port %s is out of range', v_parts[3]);
  end if;
  if p_allow_private then
    return null;
  end if;
  v_host := lower(trim(both '[]' from v_parts[2]));
  v_host := rtrim(v_host, '.');
  if v_host = 'localhost' or v_host like '%.localhost' or v_host like '%.local'
     or v_host like '%.internal' or v_host in ('metadata', 'instance-data') then
    return format('host "%s" is a local or metadata name', v_host);
  end if;
  if v_host ~ '^[0-9a-f:.]+$' and (v_host ~ ':' or v_host ~ '^[0-9.]+$') then
    begin
      v_address := v_host::inet;
    exception when invalid_text_representation then
      -- 0x7f.1, 2130706433 and other spellings some resolvers accept as an address
      return format('host "%s" is not a valid address', v_host);
    end;
    if ledger.webhook_address_blocked(v_address) then
      return format('address %s is loopback, private, link-local or reserved', host(v_address));
    end if;
  elsif v_host ~ '^[0-9.x]+$' or v_host ~ '^0x' then
    return format('host "%s" is not a valid address', v_host);
  end if;
  return null;
end
$$;
comment on function ledger._webhook_url_problem(text, boolean) is 'Why a URL may not be a webhook target (scheme, credentials, local or private host), or null.';

-- -- Writing messages ---------------------------------------------------------------------------

create or replace function ledger._enqueue_notification(p_client_id text, p_event_type text,
                                                         p_data jsonb)
returns bigint
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
-- One outbox row; the delivery worker is woken at commit (pg_notify is transactional).
declare
  v_seq bigint;
begin
  insert into ledger.notification_messages (client_id, event_type, body)
  values (p_client_id, p_event_type,
          jsonb_build_object('type', p_event_type,
                             'timestamp', to_char(now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                             'data', p_data))
  returning message_seq into v_seq;
  perform pg_notify('stepledger_notifications', '');
  return v_seq;
end
$$;
comment on function ledger._enqueue_notification(text, text, jsonb) is 'Writes one message to the notification outbox (in the caller''s transaction).';

create or replace function ledger._url_encode(p_text text) returns text
language sql immutable parallel safe
set search_path = pg_catalog, pg_temp
as $$
  -- encodeURIComponent: every byte but A-Z a-z 0-9 - _ . ! ~ * ' ( ) as %XX. Most ids need no
  -- escaping: one match instead of a regular expression per character.
  select case when p_text ~ '^[A-Za-z0-9_.!~*''()-]*$' then p_text else (
  select coalesce(string_agg(case when b.ch ~ '^[A-Za-z0-9_.!~*''()-]$' then b.ch
                                  else upper(regexp_replace(encode(convert_to(b.ch, 'UTF8'), 'hex'),
                                                            '(..)', '%\1', 'g')) end,
                             '' order by b.i), '')
    from regexp_split_to_table(p_text, '') with ordinality as b(ch, i)) end
$$;
comment on function ledger._url_encode(text) is 'Percent-encodes text as JavaScript''s encodeURIComponent does.';

create or replace function ledger._job_notification_data(p_client_id text, p_job_id text,
                                                         p_status text)
returns jsonb
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
-- data of a job message: the failed step for a failure, else the step with the latest news.
-- PL/pgSQL so that the query is planned once per session: planning it cost more than running it,
-- once per message of a batch.
begin
  return (
  select jsonb_build_object(
           'client_id', j.client_id, 'job_id', j.job_id, 'pipeline', j.pipeline,
           'status', p_status, 'step', s.step, 'step_title', ps.title, 'attempt', s.latest_attempt,
           'error_code', r.error_code, 'error_message', r.error_message,
           'occurred_at', case p_status when 'failed' then coalesce(s.latest_at, j.updated_at)
                                        when 'completed' then coalesce(j.finished_at, j.updated_at)
                                        else j.updated_at end,
           'steps_done', j.steps_done, 'steps_total', j.steps_total,
           'url', (select st.public_web_url from ledger.notification_settings st)
                  || '/#/jobs/' || ledger._url_encode(j.client_id) || '/' || ledger._url_encode(j.job_id))
    from ledger.jobs j
    left join lateral (
      select js.step, js.latest_attempt, js.latest_at
        from ledger.job_steps js
       where js.client_id = j.client_id and js.job_id = j.job_id
         and (p_status <> 'failed' or js.latest_status = 'failed')
       order by (js.step = j.last_error_step and p_status = 'failed') desc, js.latest_at desc,
                js.step_index desc
       limit 1) s on true
    left join ledger.pipeline_steps ps on ps.pipeline = j.pipeline and ps.step = s.step
    left join ledger.step_runs r on r.client_id = j.client_id and r.job_id = j.job_id
                                and r.step = s.step and r.attempt = s.latest_attempt
   where j.client_id = p_client_id and j.job_id = p_job_id);
end
$$;
comment on function ledger._job_notification_data(text, text, text) is 'The data of a job.* message (docs/notifications.md).';

create or replace function ledger._enqueue_job_transitions(p_transitions jsonb) returns integer
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
-- p_transitions: [{"client_id", "job_id", "before": status or null, "after": status}], the jobs
-- whose stored status changed. The messages of each transition:
--   -> failed: job.failed;  failed -> running: job.recovered;
--   failed -> completed: job.recovered and job.completed;  other -> completed: job.completed.
-- One statement for the whole batch: the message data's query is planned once, not per message.
declare
  v_count integer;
begin
  select count(ledger._enqueue_notification(t.client_id, t.event_type,
                 ledger._job_notification_data(t.client_id, t.job_id, t.after)))
    into v_count
    from (select x.client_id, x.job_id, e.event_type, x.after
            from jsonb_to_recordset(p_transitions) as x(client_id text, job_id text, before text, after text)
           cross join lateral (values (1, 'job.recovered', x.before = 'failed' and x.after in ('running', 'completed')),
                                      (2, 'job.failed', x.after = 'failed'),
                                      (3, 'job.completed', x.after = 'completed')) as e(ord, event_type, applies)
           where e.applies and x.after is distinct from x.before
           order by x.client_id, x.job_id, e.ord) t;
  return v_count;
end
$$;
comment on function ledger._enqueue_job_transitions(jsonb) is 'Writes the job.* messages of job status transitions.';

-- Ingest calls ledger._enqueue_job_transitions itself, from the statement that writes the jobs
-- (ledger._fold_progress, 40_progress.sql). The statement triggers on ledger.jobs that did it
-- until ADR 0014 read transition tables; migration 0080 drops them, and their function goes here:
drop function if exists ledger.tg_jobs__enqueue_transitions();

create or replace function ledger.scan_stalled_jobs() returns integer
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
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
    perform ledger._enqueue_notification(j.client_id, 'job.stalled',
                                         ledger._job_notification_data(j.client_id, j.job_id, 'stalled'));
    v_count := v_count + 1;
  end loop;
  return v_count;
end
$$;
comment on function ledger.scan_stalled_jobs() is 'Writes one job.stalled per newly stalled job; returns how many.';

create or replace function ledger._enqueue_invoice_finalized(p_client_id text, p_period date)
returns bigint
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
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
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
-- After a usage refresh: each client whose amount for the current month (UTC), in the alert's
-- currency, is at or above its threshold and was not announced for this month gets one message.
declare
  v_period date := date_trunc('month', now() at time zone 'UTC')::date;
  v_count integer := 0;
  a record;
begin
  for a in
    with crossed as (
      update ledger.usage_alerts al
         set crossed_period = v_period
        from (select u.client_id, u.currency, sum(u.amount) as amount
                from ledger.usage_lines_monthly u
               where u.period = v_period
               group by u.client_id, u.currency) m
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

-- -- Delivery (the worker, as the owner) --------------------------------------------------------

create or replace function ledger.dispatch_notifications(p_limit integer default 500) returns integer
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
-- Fans undispatched messages out to the enabled endpoints that subscribe to them (created before
-- the message) and, when e-mail is configured, to the people who opted in. Idempotent.
declare
  v_settings ledger.notification_settings := ledger._notification_settings();
  v_count integer;
begin
  with batch as (
    select m.message_seq, m.client_id, m.event_type, m.created_at
      from ledger.notification_messages m
     where m.dispatched_at is null
     order by m.message_seq
     limit p_limit
       for update skip locked
  ), hooks as (
    insert into ledger.webhook_deliveries (webhook_id, client_id, message_seq)
    select w.webhook_id, w.client_id, b.message_seq
      from batch b
      join ledger.webhooks w
        on (w.client_id is null or w.client_id = b.client_id)
       and b.event_type = any (w.events)
       and w.disabled_at is null and w.created_at <= b.created_at
    on conflict do nothing
  ), mails as (
    insert into ledger.email_deliveries (user_id, client_id, message_seq, recipient)
    select u.user_id, b.client_id, b.message_seq, u.email
      from batch b
      join ledger.email_subscriptions s on b.event_type = any (s.events)
      join auth.users u on u.user_id = s.user_id and u.disabled_at is null
     where v_settings.email_enabled
       and (('admin' = any (u.roles) and u.client_id is null) or u.client_id = b.client_id)
    on conflict do nothing
  )
  update ledger.notification_messages m set dispatched_at = now()
    from batch b where m.message_seq = b.message_seq;
  get diagnostics v_count = row_count;
  return v_count;
end
$$;
comment on function ledger.dispatch_notifications(integer) is 'Delivery worker: fans new outbox messages out to endpoints and mailboxes.';

create or replace function ledger.claim_webhook_deliveries(p_limit integer default 50)
returns table (delivery_id uuid, attempt integer, webhook_id uuid, url text, secret text,
               message_id text, body text, timeout_s double precision,
               allow_private_targets boolean)
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
-- Leases due deliveries to the calling worker: attempt + 1, leased for the request timeout plus
-- a margin (a worker killed mid-delivery leaves a lease that runs out, and the delivery is due
-- again: at least once). No endpoint gets more than per_endpoint_concurrency at a time, so a
-- slow endpoint holds only its own slots.
declare
  v_settings ledger.notification_settings := ledger._notification_settings();
  v_lease interval := v_settings.request_timeout * 2 + interval '5 seconds';
begin
  return query
  with busy as (
    select d.webhook_id, count(*) as leased
      from ledger.webhook_deliveries d
     where d.state = 'pending' and d.lease_until > now()
     group by d.webhook_id
  ), due as (
    select d.delivery_id, d.webhook_id, w.failing_since is not null as failing,
           row_number() over (partition by d.webhook_id order by d.next_attempt_at, d.message_seq) as rank
      from ledger.webhook_deliveries d
      join ledger.webhooks w on w.webhook_id = d.webhook_id and w.disabled_at is null
     where d.state = 'pending' and d.next_attempt_at <= now()
       and (d.lease_until is null or d.lease_until <= now())
  ), picked as (
    -- Healthy endpoints first: however many endpoints are failing slowly (timeouts, a resolver
    -- that takes seconds), they cannot take every slot from the ones that answer.
    select d.delivery_id
      from due d
      left join busy b on b.webhook_id = d.webhook_id
     where d.rank <= v_settings.per_endpoint_concurrency - coalesce(b.leased, 0)
     order by d.failing, d.rank
     limit p_limit
  ), leased as (
    update ledger.webhook_deliveries d
       set attempts = d.attempts + 1, lease_until = now() + v_lease,
           first_attempt_at = coalesce(d.first_attempt_at, now()), last_attempt_at = now()
      from (select p.delivery_id from picked p
              join ledger.webhook_deliveries x on x.delivery_id = p.delivery_id
               for update of x skip locked) p
     where d.delivery_id = p.delivery_id
    returning d.delivery_id, d.attempts, d.webhook_id, d.message_seq
  )
  select l.delivery_id, l.attempts, l.webhook_id, w.url, w.secret, m.message_id, m.body::text,
         extract(epoch from v_settings.request_timeout)::double precision,
         v_settings.allow_private_targets
    from leased l
    join ledger.webhooks w on w.webhook_id = l.webhook_id
    join ledger.notification_messages m on m.message_seq = l.message_seq;
end
$$;
comment on function ledger.claim_webhook_deliveries(integer) is 'Delivery worker: leases due deliveries (attempt, URL, secret, message) within each endpoint''s concurrency.';

create or replace function ledger._retry_delay(p_attempt integer) returns interval
language sql volatile
set search_path = pg_catalog, pg_temp
as $$
  -- Exponential backoff with jitter: retry_first * 2^(attempt - 1), at most retry_max, times a
  -- random factor in [0.8, 1.2) (so the gaps still grow while retries of many messages spread out).
  select least(s.retry_first * power(2, least(p_attempt - 1, 30)), s.retry_max) * (0.8 + random() * 0.4)
    from ledger.notification_settings s
$$;
comment on function ledger._retry_delay(integer) is 'How long to wait before the next attempt after attempt n failed.';

create or replace function ledger.record_webhook_attempt(
  p_delivery_id uuid, p_attempt integer, p_started_at timestamptz, p_status_code integer,
  p_latency_ms numeric, p_error text, p_response_excerpt text)
returns text
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
-- Delivery worker: the result of one attempt. 2xx: succeeded. 4xx other than 408 and 429: failed
-- for good (the receiver refused this message). Otherwise (timeouts, connection errors, 5xx,
-- 408, 429): a retry after _retry_delay(), until the message has been tried for retry_for; an
-- endpoint that has been failing for retry_for since its last success is disabled, and its
-- pending deliveries are cancelled. Returns the outcome, or 'stale' when the lease was lost.
declare
  v_settings ledger.notification_settings := ledger._notification_settings();
  d ledger.webhook_deliveries;
  w ledger.webhooks;
  v_outcome text;
  v_next timestamptz;
  v_error text := left(p_error, 500);
begin
  select * into d from ledger.webhook_deliveries x where x.delivery_id = p_delivery_id for update;
  if not found or d.attempts <> p_attempt or d.state <> 'pending' then
    return 'stale';
  end if;
  select * into w from ledger.webhooks x where x.webhook_id = d.webhook_id for update;
  if p_status_code between 200 and 299 then
    v_outcome := 'succeeded';
  elsif p_status_code between 400 and 499 and p_status_code not in (408, 429) then
    v_outcome := 'failed';
  elsif now() - w.failing_since >= v_settings.retry_for then
    v_outcome := 'disabled';
  elsif now() - d.first_attempt_at >= v_settings.retry_for then
    v_outcome := 'failed';
  else
    v_outcome := 'retry';
    v_next := now() + ledger._retry_delay(p_attempt);
  end if;
  if v_error is null and p_status_code is not null and v_outcome <> 'succeeded' then
    v_error := format('HTTP %s', p_status_code);
  end if;

  insert into ledger.webhook_attempts (delivery_id, attempt, client_id, started_at, latency_ms,
                                       status_code, error, response_excerpt, outcome, next_retry_at)
  values (d.delivery_id, p_attempt, d.client_id, p_started_at, round(p_latency_ms, 1),
          p_status_code, v_error, left(p_response_excerpt, 200), v_outcome, v_next);

  update ledger.webhook_deliveries x
     set state = case v_outcome when 'retry' then 'pending' when 'disabled' then 'failed'
                                else v_outcome end,
         next_attempt_at = coalesce(v_next, x.next_attempt_at), lease_until = null,
         last_status_code = p_status_code, last_error = v_error,
         finished_at = case when v_outcome <> 'retry' then now() end
   where x.delivery_id = d.delivery_id;

  if v_outcome = 'succeeded' then
    update ledger.webhooks x set last_success_at = now(), failing_since = null
     where x.webhook_id = w.webhook_id;
  elsif p_status_code is null or p_status_code >= 500 or p_status_code in (408, 429) then
    update ledger.webhooks x set failing_since = coalesce(x.failing_since, p_started_at)
     where x.webhook_id = w.webhook_id;
  end if;
  if v_outcome = 'disabled' then
    update ledger.webhooks x
       set disabled_at = now(),
           disabled_reason = format('failing since %s (%s attempts in a row without success); last error: %s',
                                    to_char(w.failing_since at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS"Z"'),
                                    (select count(*) from ledger.webhook_attempts a
                                       join ledger.webhook_deliveries y using (delivery_id)
                                      where y.webhook_id = w.webhook_id and a.started_at >= w.failing_since),
                                    coalesce(v_error, 'none'))
     where x.webhook_id = w.webhook_id;
    update ledger.webhook_deliveries x set state = 'cancelled', finished_at = now(), lease_until = null,
                                           last_error = 'endpoint disabled'
     where x.webhook_id = w.webhook_id and x.state = 'pending';
  end if;
  return v_outcome;
end
$$;
comment on function ledger.record_webhook_attempt(uuid, integer, timestamptz, integer, numeric, text, text) is
  'Delivery worker: records an attempt and decides success, retry (backoff with jitter), final failure or disabling the endpoint.';

create or replace function ledger.next_notification_due() returns double precision
language sql stable
set search_path = pg_catalog, pg_temp
as $$
  -- Seconds until the worker has something to do (0: now), at most 60.
  select greatest(0, least(60,
           extract(epoch from least(
             (select min(greatest(d.next_attempt_at, coalesce(d.lease_until, d.next_attempt_at)))
                from ledger.webhook_deliveries d where d.state = 'pending'),
             (select min(greatest(e.next_attempt_at, coalesce(e.lease_until, e.next_attempt_at)))
                from ledger.email_deliveries e where e.state = 'pending'),
             (select now() from ledger.notification_messages m where m.dispatched_at is null limit 1),
             now() + interval '60 seconds') - now())))::double precision
$$;
comment on function ledger.next_notification_due() is 'Delivery worker: seconds until the next delivery is due.';

create or replace function ledger.claim_email_deliveries(p_limit integer default 20)
returns table (email_delivery_id uuid, attempt integer, recipient text, event_type text, body jsonb)
language sql volatile
set search_path = pg_catalog, pg_temp
as $$
  -- Leases due e-mails to the calling worker, as claim_webhook_deliveries does for webhooks.
  with picked as (
    select e.email_delivery_id
      from ledger.email_deliveries e
     where e.state = 'pending' and e.next_attempt_at <= now()
       and (e.lease_until is null or e.lease_until <= now())
     order by e.next_attempt_at
     limit p_limit
       for update skip locked
  ), leased as (
    update ledger.email_deliveries e
       set attempts = e.attempts + 1, lease_until = now() + interval '2 minutes'
      from picked p where e.email_delivery_id = p.email_delivery_id
    returning e.email_delivery_id, e.attempts, e.recipient, e.message_seq
  )
  select l.email_delivery_id, l.attempts, l.recipient, m.event_type::text, m.body
    from leased l join ledger.notification_messages m on m.message_seq = l.message_seq
$$;
comment on function ledger.claim_email_deliveries(integer) is 'Delivery worker: leases due e-mails.';

create or replace function ledger.record_email_attempt(p_email_delivery_id uuid, p_attempt integer,
                                                       p_error text)
returns text
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
-- Delivery worker: sent, or retried on the webhook schedule for retry_for, then failed.
declare
  v_settings ledger.notification_settings := ledger._notification_settings();
  e ledger.email_deliveries;
  v_outcome text;
begin
  select * into e from ledger.email_deliveries x where x.email_delivery_id = p_email_delivery_id for update;
  if not found or e.attempts <> p_attempt or e.state <> 'pending' then
    return 'stale';
  end if;
  v_outcome := case when p_error is null then 'sent'
                    when now() - e.created_at >= v_settings.retry_for then 'failed'
                    else 'retry' end;
  update ledger.email_deliveries x
     set state = case v_outcome when 'retry' then 'pending' else v_outcome end,
         lease_until = null, last_error = left(p_error, 500),
         sent_at = case when v_outcome = 'sent' then now() end,
         next_attempt_at = case when v_outcome = 'retry' then now() + ledger._retry_delay(p_attempt)
                                else x.next_attempt_at end
   where x.email_delivery_id = e.email_delivery_id;
  return v_outcome;
end
$$;
comment on function ledger.record_email_attempt(uuid, integer, text) is 'Delivery worker: records an e-mail attempt.';

-- -- HTTP surface -------------------------------------------------------------------------------

create or replace function ledger._caller_may_manage(p_client_id text) returns boolean
language sql stable
set search_path = pg_catalog, pg_temp
as $$
  -- Admins manage every endpoint; a client user those of its own client (never all-clients ones).
  select case auth.role() when 'admin' then true
                          when 'stepledger_owner' then true
                          when 'client' then p_client_id is not null and p_client_id = auth.client_id()
                          else false end
$$;
comment on function ledger._caller_may_manage(text) is 'Whether the caller may manage webhooks of this client (null: all clients).';

create or replace function ledger._new_webhook_secret() returns text
language sql volatile
set search_path = pg_catalog, pg_temp
as $$
  select 'whsec_' || encode(public.gen_random_bytes(32), 'base64')
$$;
comment on function ledger._new_webhook_secret() is 'A new signing secret: whsec_ and 32 random bytes in base64.';

create or replace function api.create_webhook(url text, events text[], client_id text default null,
                                              description text default null)
returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
-- A client user creates endpoints for its own client (client_id omitted or its own); admins for
-- one client or for all (client_id null). The secret is returned here and never again.
declare
  v_client text := coalesce(create_webhook.client_id,
                            case when auth.role() = 'client' then auth.client_id() end);
  v_problem text;
  v_unknown text;
  v_row ledger.webhooks;
begin
  if auth.role() not in ('admin', 'client', 'stepledger_owner') then
    raise exception 'role "%" may not create webhooks', auth.role() using errcode = 'SL604';
  end if;
  if not ledger._caller_may_manage(v_client) then
    raise exception 'webhooks for client "%" are not yours to create', coalesce(v_client, '(all clients)')
      using errcode = 'SL604', hint = 'a client user creates webhooks for its own client only';
  end if;
  if v_client is not null and not exists (select from ledger.clients c where c.client_id = v_client) then
    raise exception 'unknown client "%"', v_client using errcode = 'SL603';
  end if;
  if events is null or cardinality(events) = 0 then
    raise exception 'events: name at least one event type' using errcode = 'SL602',
      hint = 'job.failed, job.recovered, job.stalled, job.completed, invoice.finalized, usage.threshold_crossed';
  end if;
  select e into v_unknown from unnest(events) e
   where e is null or e not in ('job.failed', 'job.recovered', 'job.stalled', 'job.completed',
                                'invoice.finalized', 'usage.threshold_crossed')
   limit 1;
  if found then
    raise exception 'events: unknown event type "%"', coalesce(v_unknown, 'null') using errcode = 'SL602',
      hint = 'job.failed, job.recovered, job.stalled, job.completed, invoice.finalized, usage.threshold_crossed';
  end if;
  v_problem := ledger._webhook_url_problem(url, (ledger._notification_settings()).allow_private_targets);
  if v_problem is not null then
    raise exception 'url refused: %', v_problem using errcode = 'SL601',
      hint = 'an https URL of a public host';
  end if;
  if description is not null and length(description) > 200 then
    raise exception 'description: at most 200 characters' using errcode = 'SL602';
  end if;
  insert into ledger.webhooks (client_id, url, events, secret, description, created_by)
  values (v_client, url, (select array_agg(distinct e order by e) from unnest(events) e)::ledger.notification_event[],
          ledger._new_webhook_secret(), description, (ledger._actor()).actor)
  returning * into v_row;
  return jsonb_build_object('webhook_id', v_row.webhook_id, 'secret', v_row.secret,
                            'client_id', v_row.client_id, 'url', v_row.url,
                            'events', to_jsonb(v_row.events));
end
$$;
comment on function api.create_webhook(text, text[], text, text) is
  'Creates a webhook endpoint: {"url": "https://…", "events": ["job.failed", …], "client_id": "…" | null} → {"webhook_id", "secret": "whsec_…"} (the secret is shown once). Admins for one client or all (client_id null); a client user for its own client only.';

create or replace function ledger._visible_webhook(p_webhook_id uuid) returns ledger.webhooks
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
-- The endpoint if the caller may manage it; else SL603 (the same answer whether it exists or not).
declare
  w ledger.webhooks;
begin
  select * into w from ledger.webhooks x where x.webhook_id = p_webhook_id;
  if not found or not ledger._caller_may_manage(w.client_id) then
    raise exception 'webhook % not found', coalesce(p_webhook_id::text, 'null') using errcode = 'SL603';
  end if;
  return w;
end
$$;
comment on function ledger._visible_webhook(uuid) is 'The webhook the caller may manage, or error SL603.';

create or replace function api.delete_webhook(webhook_id uuid) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  w ledger.webhooks := ledger._visible_webhook(delete_webhook.webhook_id);
begin
  delete from ledger.webhooks x where x.webhook_id = w.webhook_id;
  return jsonb_build_object('webhook_id', w.webhook_id, 'deleted', true);
end
$$;
comment on function api.delete_webhook(uuid) is 'Deletes a webhook endpoint and its delivery history: {"webhook_id"}.';

create or replace function api.rotate_webhook_secret(webhook_id uuid) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  w ledger.webhooks := ledger._visible_webhook(rotate_webhook_secret.webhook_id);
  v_secret text := ledger._new_webhook_secret();
begin
  update ledger.webhooks x set secret = v_secret, secret_rotated_at = now()
   where x.webhook_id = w.webhook_id;
  return jsonb_build_object('webhook_id', w.webhook_id, 'secret', v_secret);
end
$$;
comment on function api.rotate_webhook_secret(uuid) is 'Replaces the signing secret of an endpoint: {"webhook_id"} → {"webhook_id", "secret"} (shown once). Messages not yet delivered are signed with the new one.';

create or replace function api.enable_webhook(webhook_id uuid) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  w ledger.webhooks := ledger._visible_webhook(enable_webhook.webhook_id);
begin
  update ledger.webhooks x set disabled_at = null, disabled_reason = null, failing_since = null
   where x.webhook_id = w.webhook_id;
  return jsonb_build_object('webhook_id', w.webhook_id, 'enabled', true);
end
$$;
comment on function api.enable_webhook(uuid) is 'Enables an endpoint that was disabled after failing: {"webhook_id"}. Deliveries cancelled meanwhile can be sent again with POST /rpc/redeliver.';

create or replace function api.test_webhook(webhook_id uuid) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
-- Sends a webhook.test message to this endpoint only.
declare
  w ledger.webhooks := ledger._visible_webhook(test_webhook.webhook_id);
  v_seq bigint;
  v_delivery uuid;
begin
  if w.disabled_at is not null then
    raise exception 'webhook % is disabled: %', w.webhook_id, w.disabled_reason using errcode = 'SL606',
      hint = 'enable it first (POST /rpc/enable_webhook)';
  end if;
  insert into ledger.notification_messages (client_id, event_type, body, dispatched_at)
  values (w.client_id, 'webhook.test',
          jsonb_build_object('type', 'webhook.test',
                             'timestamp', to_char(now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                             'data', jsonb_build_object('webhook_id', w.webhook_id, 'client_id', w.client_id)),
          now())
  returning message_seq into v_seq;
  insert into ledger.webhook_deliveries (webhook_id, client_id, message_seq)
  values (w.webhook_id, w.client_id, v_seq)
  returning delivery_id into v_delivery;
  perform pg_notify('stepledger_notifications', '');
  return jsonb_build_object('webhook_id', w.webhook_id, 'delivery_id', v_delivery,
                            'message_id', (select m.message_id from ledger.notification_messages m
                                            where m.message_seq = v_seq));
end
$$;
comment on function api.test_webhook(uuid) is 'Sends a webhook.test message to one endpoint now: {"webhook_id"} → {"delivery_id", "message_id"}.';

create or replace function api.redeliver(delivery_id uuid) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
-- Sends a delivery again (same webhook-id), whatever its state; retries start over.
declare
  d ledger.webhook_deliveries;
  w ledger.webhooks;
begin
  select * into d from ledger.webhook_deliveries x where x.delivery_id = redeliver.delivery_id for update;
  if not found then
    raise exception 'delivery % not found', coalesce(redeliver.delivery_id::text, 'null') using errcode = 'SL603';
  end if;
  w := ledger._visible_webhook(d.webhook_id);
  if w.disabled_at is not null then
    raise exception 'webhook % is disabled: %', w.webhook_id, w.disabled_reason using errcode = 'SL606',
      hint = 'enable it first (POST /rpc/enable_webhook)';
  end if;
  update ledger.webhook_deliveries x
     set state = 'pending', next_attempt_at = now(), lease_until = null, first_attempt_at = null,
         finished_at = null
   where x.delivery_id = d.delivery_id;
  perform pg_notify('stepledger_notifications', '');
  return jsonb_build_object('delivery_id', d.delivery_id, 'state', 'pending');
end
$$;
comment on function api.redeliver(uuid) is 'Sends a delivery again with the same webhook-id: {"delivery_id"}.';

create or replace function api.set_usage_alert(client_id text, amount numeric, currency text default null)
returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
-- Admins: the monthly usage threshold of a client (amount null removes it). A changed threshold
-- may be crossed again in the same month.
declare
  v_currency text;
begin
  if auth.role() not in ('admin', 'stepledger_owner') then
    raise exception 'role "%" may not set usage alerts', auth.role() using errcode = 'SL604';
  end if;
  select c.currency into v_currency from ledger.clients c where c.client_id = set_usage_alert.client_id;
  if not found then
    raise exception 'unknown client "%"', set_usage_alert.client_id using errcode = 'SL603';
  end if;
  if amount is null then
    delete from ledger.usage_alerts a where a.client_id = set_usage_alert.client_id;
    return jsonb_build_object('client_id', set_usage_alert.client_id, 'amount', null);
  end if;
  if amount <= 0 then
    raise exception 'amount: % is not a positive amount', amount using errcode = 'SL605';
  end if;
  v_currency := coalesce(upper(currency), v_currency);
  if v_currency !~ '^[A-Z]{3}$' then
    raise exception 'currency: "%" is not an ISO 4217 code', currency using errcode = 'SL605';
  end if;
  insert into ledger.usage_alerts as a (client_id, amount, currency, set_by)
  values (set_usage_alert.client_id, amount, v_currency, (ledger._actor()).actor)
  on conflict on constraint usage_alerts_pkey do update
     set amount = excluded.amount, currency = excluded.currency, set_at = now(),
         set_by = excluded.set_by,
         crossed_period = case when (a.amount, a.currency) = (excluded.amount, excluded.currency)
                               then a.crossed_period end;
  return jsonb_build_object('client_id', set_usage_alert.client_id, 'amount', amount,
                            'currency', v_currency);
end
$$;
comment on function api.set_usage_alert(text, numeric, text) is
  'Admins: the monthly usage threshold of a client: {"client_id", "amount", "currency"} (amount null removes it). usage.threshold_crossed is sent once per month when the month''s amount passes it.';

create or replace function ledger._caller_user_id() returns uuid
language sql stable
set search_path = pg_catalog, pg_temp
as $$
  -- The signed-in person (login tokens carry the user id as sub); null for API tokens.
  select case when auth.claims()->>'sub' ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
              then (auth.claims()->>'sub')::uuid end
$$;
comment on function ledger._caller_user_id() is 'The user id of a login token, or null.';

create or replace function api.set_email_alerts(events text[]) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
-- The caller's own e-mail opt-in: job.failed and/or job.stalled of its client (admins: of every
-- client); an empty list opts out.
declare
  v_user uuid := ledger._caller_user_id();
  v_bad text;
begin
  if auth.role() not in ('admin', 'client') or v_user is null
     or not exists (select from auth.users u where u.user_id = v_user and u.disabled_at is null) then
    raise exception 'only a signed-in person may opt in to e-mails' using errcode = 'SL604';
  end if;
  select e into v_bad from unnest(coalesce(events, '{}')) e
   where e is null or e not in ('job.failed', 'job.stalled') limit 1;
  if found then
    raise exception 'events: "%" cannot be sent by e-mail', coalesce(v_bad, 'null') using errcode = 'SL602',
      hint = 'job.failed, job.stalled';
  end if;
  if coalesce(cardinality(events), 0) = 0 then
    delete from ledger.email_subscriptions s where s.user_id = v_user;
  else
    insert into ledger.email_subscriptions as s (user_id, events)
    values (v_user, (select array_agg(distinct e order by e) from unnest(events) e)::ledger.notification_event[])
    on conflict (user_id) do update set events = excluded.events, updated_at = now();
  end if;
  return jsonb_build_object('events', coalesce((select to_jsonb(s.events) from ledger.email_subscriptions s
                                                 where s.user_id = v_user), '[]'::jsonb),
                            'email_enabled', (ledger._notification_settings()).email_enabled);
end
$$;
comment on function api.set_email_alerts(text[]) is 'The caller''s e-mail opt-in: {"events": ["job.failed", "job.stalled"]} ([] opts out). Sent only when the operator configured e-mail.';

create or replace function ledger._caller_email_alerts()
returns table (email text, events text[], email_enabled boolean)
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$
  -- The signed-in caller's own row only (people cannot read auth.users).
  select u.email, coalesce(s.events::text[], '{}'),
         (select st.email_enabled from ledger.notification_settings st)
    from auth.users u
    left join ledger.email_subscriptions s on s.user_id = u.user_id
   where u.user_id = ledger._caller_user_id() and auth.role() in ('admin', 'client')
$$;
comment on function ledger._caller_email_alerts() is 'The caller''s e-mail opt-in, for api.email_alerts.';
