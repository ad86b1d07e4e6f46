-- Delivery, by the worker as the owner: fan-out, leases, attempts, retries (the outbox's design and error codes: 10_targets.sql).

create or replace function ledger.dispatch_notifications(p_limit integer default 500) returns integer
language plpgsql volatile set search_path = pg_catalog, pg_temp as $$
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
language plpgsql volatile set search_path = pg_catalog, pg_temp as $$
-- Leases due deliveries to the calling worker: attempt + 1, leased for the request timeout plus
-- a margin (a worker killed mid-delivery leaves a lease that runs out, and the delivery is due
-- again: at least once). No endpoint gets more than per_endpoint_concurrency at a time, so a
-- slow endpoint holds only its own slots.
declare
  v_settings ledger.notification_settings := ledger._notification_settings();
  v_lease interval := v_settings.request_timeout * 2 + interval '5 seconds';
  -- now() as a value: Citus (the outbox tables are Citus local tables on a coordinator) refuses
  -- a non-immutable function inside CASE or COALESCE of an UPDATE; now() is the same all along.
  v_now timestamptz := now();
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
           first_attempt_at = coalesce(d.first_attempt_at, v_now), last_attempt_at = v_now
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
language sql volatile set search_path = pg_catalog, pg_temp as $$
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
language plpgsql volatile set search_path = pg_catalog, pg_temp as $$
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
  v_now timestamptz := now();  -- a value in CASE and COALESCE (claim_webhook_deliveries says why)
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
         finished_at = case when v_outcome <> 'retry' then v_now end
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
language sql stable set search_path = pg_catalog, pg_temp as $$
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
language plpgsql volatile set search_path = pg_catalog, pg_temp as $$
#variable_conflict use_column
-- Leases due e-mails to the calling worker, as claim_webhook_deliveries does for webhooks. In
-- PL/pgSQL: on a Citus coordinator a SQL function's parameters make the statement unplannable.
begin
  return query
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
    from leased l join ledger.notification_messages m on m.message_seq = l.message_seq;
end
$$;
comment on function ledger.claim_email_deliveries(integer) is 'Delivery worker: leases due e-mails.';

create or replace function ledger.record_email_attempt(p_email_delivery_id uuid, p_attempt integer,
                                                       p_error text)
returns text
language plpgsql volatile set search_path = pg_catalog, pg_temp as $$
-- Delivery worker: sent, or retried on the webhook schedule for retry_for, then failed.
declare
  v_settings ledger.notification_settings := ledger._notification_settings();
  e ledger.email_deliveries;
  v_outcome text;
  -- values in CASE (claim_webhook_deliveries says why; timestamptz + interval is not immutable)
  v_now timestamptz := now();
  v_retry_at timestamptz;
begin
  select * into e from ledger.email_deliveries x where x.email_delivery_id = p_email_delivery_id for update;
  if not found or e.attempts <> p_attempt or e.state <> 'pending' then
    return 'stale';
  end if;
  v_outcome := case when p_error is null then 'sent'
                    when now() - e.created_at >= v_settings.retry_for then 'failed'
                    else 'retry' end;
  if v_outcome = 'retry' then
    v_retry_at := v_now + ledger._retry_delay(p_attempt);
  end if;
  update ledger.email_deliveries x
     set state = case v_outcome when 'retry' then 'pending' else v_outcome end,
         lease_until = null, last_error = left(p_error, 500),
         sent_at = case when v_outcome = 'sent' then v_now end,
         next_attempt_at = case when v_outcome = 'retry' then v_retry_at
                                else x.next_attempt_at end
   where x.email_delivery_id = e.email_delivery_id;
  return v_outcome;
end
$$;
comment on function ledger.record_email_attempt(uuid, integer, text) is 'Delivery worker: records an e-mail attempt.';
