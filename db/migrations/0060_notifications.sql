-- Notifications (docs/notifications.md, docs/adr/0008-notification-outbox.md): signed webhooks and
-- e-mail alerts. Functions are in db/functions/55_notifications.sql, views in
-- db/views/70_notifications.sql, row-level security and grants in db/policies/70_notifications.sql.
--
-- The outbox (ledger.notification_messages) is written in the same transaction as the change that
-- causes a message (ingest, finalize, the usage refresh, the stall scan), and holds one row per
-- message whatever the number of endpoints: the delivery worker fans each message out to the
-- endpoints and mailboxes that want it (ledger.webhook_deliveries, ledger.email_deliveries), so the
-- cost of ingest does not grow with the number of endpoints.

-- Event types. webhook.test is sent only by POST /rpc/test_webhook, to one endpoint.
create domain ledger.notification_event as text
  check (value in ('job.failed', 'job.recovered', 'job.stalled', 'job.completed',
                   'invoice.finalized', 'usage.threshold_crossed', 'webhook.test'));
comment on domain ledger.notification_event is 'A notification event type (docs/notifications.md).';

-- Operator settings of delivery, one row. The retry schedule: the n-th retry waits
-- retry_first * 2^(n-1), at most retry_max, times a random factor in [0.8, 1.2); a message is
-- retried for retry_for, and an endpoint that has failed for retry_for without a success is
-- disabled. allow_private_targets, email_enabled and public_web_url are written by `stepledger up`
-- from STEPLEDGER_WEBHOOK_ALLOW_PRIVATE, STEPLEDGER_SMTP_URL and the stack's web URL.
create table ledger.notification_settings (
  singleton boolean primary key default true check (singleton),
  retry_first interval not null default '10 seconds' check (retry_first > interval '0'),
  retry_max interval not null default '2 hours' check (retry_max >= retry_first),
  retry_for interval not null default '24 hours' check (retry_for > interval '0'),
  request_timeout interval not null default '10 seconds'
    check (request_timeout between interval '0.1 seconds' and interval '60 seconds'),
  per_endpoint_concurrency integer not null default 2 check (per_endpoint_concurrency between 1 and 50),
  allow_private_targets boolean not null default false,
  email_enabled boolean not null default false,
  public_web_url text check (public_web_url ~ '^https?://'),
  updated_at timestamptz not null default now()
);
insert into ledger.notification_settings default values;
comment on table ledger.notification_settings is 'Delivery settings of notifications (one row): retry schedule, timeouts, operator switches.';

-- Webhook endpoints. client_id null: every client's events (admins only). The secret is kept in
-- clear because signing needs it; only the owner (the delivery worker) reads the column.
create table ledger.webhooks (
  webhook_id uuid primary key default gen_random_uuid(),
  client_id ledger.slug references ledger.clients,
  url text not null check (length(url) <= 2000),
  events ledger.notification_event[] not null
    check (cardinality(events) between 1 and 6 and not 'webhook.test' = any(events)),
  secret text not null check (secret ~ '^whsec_[A-Za-z0-9+/]{43}=$'),
  description text check (length(description) <= 200),
  created_at timestamptz not null default now(),
  created_by text not null,
  secret_rotated_at timestamptz,
  last_success_at timestamptz,
  failing_since timestamptz,          -- first failure since the last success
  disabled_at timestamptz,
  disabled_reason text
);
create index webhooks_client on ledger.webhooks (client_id);
comment on table ledger.webhooks is 'Webhook endpoints: URL, subscribed events, signing secret (owner only), health.';

-- The outbox: one row per message, written with the change that causes it.
create table ledger.notification_messages (
  message_seq bigint generated always as identity primary key,
  message_id text not null default ('msg_' || replace(gen_random_uuid()::text, '-', '')),
  client_id ledger.slug,              -- null only for a test message of an all-clients endpoint
  event_type ledger.notification_event not null,
  body jsonb not null,                -- {"type", "timestamp", "data"}: sent as is, signed
  created_at timestamptz not null default now(),
  dispatched_at timestamptz           -- when the worker fanned it out to endpoints and mailboxes
);
create index notification_messages_undispatched on ledger.notification_messages (message_seq)
  where dispatched_at is null;
create index notification_messages_client on ledger.notification_messages (client_id, created_at desc);
comment on table ledger.notification_messages is 'The notification outbox: one row per message, written in the transaction that caused it.';

-- One row per (message, endpoint): its state and retry schedule. client_id is the endpoint's
-- client (null for an all-clients endpoint), which decides who sees it.
create table ledger.webhook_deliveries (
  delivery_id uuid primary key default gen_random_uuid(),
  webhook_id uuid not null references ledger.webhooks on delete cascade,
  client_id ledger.slug,
  message_seq bigint not null references ledger.notification_messages,
  state text not null default 'pending' check (state in ('pending', 'succeeded', 'failed', 'cancelled')),
  attempts integer not null default 0 check (attempts >= 0),
  next_attempt_at timestamptz not null default now(),
  lease_until timestamptz,            -- a worker is sending it until then; after, it is due again
  first_attempt_at timestamptz,
  last_attempt_at timestamptz,
  last_status_code integer,
  last_error text,
  finished_at timestamptz,
  created_at timestamptz not null default now(),
  unique (webhook_id, message_seq)
);
create index webhook_deliveries_due on ledger.webhook_deliveries (next_attempt_at)
  where state = 'pending';
create index webhook_deliveries_client on ledger.webhook_deliveries (client_id, created_at desc);
create index webhook_deliveries_message on ledger.webhook_deliveries (message_seq);
comment on table ledger.webhook_deliveries is 'Delivery of one message to one endpoint: state, attempts, next retry.';

-- Every attempt of a delivery.
create table ledger.webhook_attempts (
  delivery_id uuid not null references ledger.webhook_deliveries on delete cascade,
  attempt integer not null check (attempt >= 1),
  client_id ledger.slug,              -- the endpoint's client, as on the delivery
  started_at timestamptz not null,
  latency_ms numeric,
  status_code integer,
  error text check (length(error) <= 500),
  response_excerpt text check (length(response_excerpt) <= 200),
  outcome text not null check (outcome in ('succeeded', 'retry', 'failed', 'disabled')),
  next_retry_at timestamptz,
  primary key (delivery_id, attempt)
);
create index webhook_attempts_client on ledger.webhook_attempts (client_id, started_at desc);
comment on table ledger.webhook_attempts is 'Each HTTP attempt of a webhook delivery: status code, latency, error, response excerpt.';

-- E-mail opt-in of people (job.failed, job.stalled): a client user's own client, an admin's every
-- client.
create table ledger.email_subscriptions (
  user_id uuid primary key references auth.users on delete cascade,
  events ledger.notification_event[] not null
    check (events <@ array['job.failed', 'job.stalled']::ledger.notification_event[]),
  updated_at timestamptz not null default now()
);
comment on table ledger.email_subscriptions is 'Who wants an e-mail on job.failed / job.stalled.';

create table ledger.email_deliveries (
  email_delivery_id uuid primary key default gen_random_uuid(),
  user_id uuid not null references auth.users on delete cascade,
  client_id ledger.slug,              -- the message's client
  message_seq bigint not null references ledger.notification_messages,
  recipient text not null,
  state text not null default 'pending' check (state in ('pending', 'sent', 'failed')),
  attempts integer not null default 0,
  next_attempt_at timestamptz not null default now(),
  lease_until timestamptz,
  last_error text check (length(last_error) <= 500),
  sent_at timestamptz,
  created_at timestamptz not null default now(),
  unique (user_id, message_seq)
);
create index email_deliveries_due on ledger.email_deliveries (next_attempt_at) where state = 'pending';
create index email_deliveries_client on ledger.email_deliveries (client_id, created_at desc);
comment on table ledger.email_deliveries is 'E-mails of notifications to people who opted in: state and retries.';

-- Usage thresholds per client (admins): one usage.threshold_crossed per client and month.
create table ledger.usage_alerts (
  client_id ledger.slug primary key references ledger.clients,
  amount numeric not null check (amount > 0),
  currency text not null check (currency ~ '^[A-Z]{3}$'),
  set_at timestamptz not null default now(),
  set_by text not null,
  crossed_period date                 -- the month whose amount last crossed it (one message per month)
);
comment on table ledger.usage_alerts is 'Per-client monthly usage threshold: a message when the month''s amount passes it.';

-- Stalls already announced: one row per (job, stall), a stall being known by the job's last
-- activity (updated_at) when it was found.
create table ledger.job_stall_notices (
  client_id ledger.slug not null,
  job_id text not null,
  stalled_after timestamptz not null,
  noticed_at timestamptz not null default now(),
  primary key (client_id, job_id, stalled_after)
);
comment on table ledger.job_stall_notices is 'Stalls announced by job.stalled: one per job and stall.';

-- The stall scan reads running jobs by last activity.
create index jobs_running_updated on ledger.jobs (updated_at) where status = 'running';
