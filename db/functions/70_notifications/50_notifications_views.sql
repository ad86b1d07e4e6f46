-- Notifications (docs/notifications.md): endpoints, messages and deliveries as their callers may
-- see them. security_invoker: the row-level security of the ledger tables decides (a client user
-- sees its own client's endpoints, messages and deliveries; admins everything).

create or replace view api.webhooks with (security_invoker = true) as
select w.webhook_id,
       w.client_id,
       w.url,
       w.events::text[] as events,
       w.description,
       w.disabled_at is null as enabled,
       w.disabled_at,
       w.disabled_reason,
       w.failing_since,
       w.last_success_at,
       w.created_at,
       w.created_by,
       w.secret_rotated_at
  from ledger.webhooks w;

comment on view api.webhooks is 'Webhook endpoints the caller may see (never their secret). Create with POST /rpc/create_webhook, delete with POST /rpc/delete_webhook.';
comment on column api.webhooks.client_id is 'The client whose events the endpoint receives; null: every client (admins).';
comment on column api.webhooks.enabled is 'false once disabled after failing for a day (disabled_reason says why); POST /rpc/enable_webhook enables it again.';
comment on column api.webhooks.failing_since is 'First failed attempt since the last success; null when healthy.';

create or replace view api.webhook_messages with (security_invoker = true) as
select m.message_id,
       m.client_id,
       m.event_type::text as event_type,
       m.body,
       m.created_at,
       m.dispatched_at
  from ledger.notification_messages m;

comment on view api.webhook_messages is 'Notification messages of the caller''s client (admins: all): the body sent, signed, to each subscribed endpoint.';
comment on column api.webhook_messages.message_id is 'The webhook-id header of every delivery of this message, retries included.';

create or replace view api.webhook_deliveries with (security_invoker = true) as
select d.delivery_id,
       d.webhook_id,
       d.client_id,
       m.message_id,
       m.event_type::text as event_type,
       d.state,
       a.attempt,
       a.started_at as attempted_at,
       a.status_code,
       a.latency_ms,
       a.error,
       a.response_excerpt,
       a.outcome,
       case when a.attempt is null or a.attempt = d.attempts then
         case when d.state = 'pending' then d.next_attempt_at end
       else a.next_retry_at end as next_retry_at,
       d.attempts,
       d.created_at
  from ledger.webhook_deliveries d
  join ledger.notification_messages m on m.message_seq = d.message_seq
  left join ledger.webhook_attempts a on a.delivery_id = d.delivery_id;

comment on view api.webhook_deliveries is 'Each delivery attempt of a message to an endpoint (a delivery not yet attempted: one row with attempt null): status code, latency, error, next retry. Admins see all, a client user its own endpoints''. POST /rpc/redeliver sends a delivery again.';
comment on column api.webhook_deliveries.state is 'pending (will be tried, again), succeeded, failed (final: a 4xx other than 408/429, or retried for a day), cancelled (the endpoint was disabled).';
comment on column api.webhook_deliveries.response_excerpt is 'The first 200 characters of the response body, nothing more is kept.';
comment on column api.webhook_deliveries.next_retry_at is 'When this delivery is tried again, if it is.';

create or replace view api.usage_alerts with (security_invoker = true) as
select a.client_id, a.amount, a.currency, a.set_at, a.set_by,
       to_char(a.crossed_period, 'YYYY-MM') as crossed_period
  from ledger.usage_alerts a;

comment on view api.usage_alerts is 'Monthly usage thresholds per client (admins set them with POST /rpc/set_usage_alert); crossed_period: the month it was last passed.';

create or replace view api.email_alerts with (security_invoker = true) as
select a.email, a.events, a.email_enabled
  from ledger._caller_email_alerts() a;

comment on view api.email_alerts is 'The caller''s e-mail opt-in (POST /rpc/set_email_alerts changes it); email_enabled: whether the operator configured e-mail.';
