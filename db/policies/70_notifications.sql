-- Notifications: row-level security, then grants (docs/notifications.md). Re-applied on every
-- migrate.
--
-- Who may do what:
--   client     reads its own client's endpoints (never the secret), messages, deliveries and usage
--              threshold; creates, tests, rotates and deletes its own client's endpoints; its own
--              e-mail opt-in
--   admin      everything above for every client and for all-clients endpoints; usage thresholds
--   ingest, bi_reader, anon: nothing here
--   the owner (the delivery worker and the scheduler) reads secrets and writes deliveries
-- Every write goes through the security-definer functions of db/functions/70_notifications/,
-- which check the caller; tables are read through the security-invoker views of
-- db/functions/70_notifications/50_notifications_views.sql under the policies of 20_row_security.sql (select_own_client for
-- client, all_admin for admin: every table here with a client_id gets them), where the policy
-- key is the endpoint's client for deliveries and attempts.

-- Tables without client_id: owner only.
alter table ledger.notification_settings enable row level security;
alter table ledger.email_subscriptions enable row level security;

-- -- Tables -------------------------------------------------------------------------------------
revoke all on ledger.notification_settings, ledger.webhooks, ledger.notification_messages,
              ledger.webhook_deliveries, ledger.webhook_attempts, ledger.email_subscriptions,
              ledger.email_deliveries, ledger.usage_alerts, ledger.job_stall_notices
  from public, anon, client, admin, ingest, bi_reader;
revoke all on sequence ledger.notification_messages_message_seq_seq
  from public, anon, client, admin, ingest, bi_reader;

grant select (webhook_id, client_id, url, events, description, created_at, created_by,
              secret_rotated_at, last_success_at, failing_since, disabled_at, disabled_reason)
  on ledger.webhooks to client, admin;
grant select on ledger.notification_messages, ledger.webhook_deliveries, ledger.webhook_attempts,
                ledger.usage_alerts
  to client, admin;

-- -- HTTP surface -------------------------------------------------------------------------------
revoke all on api.webhooks, api.webhook_messages, api.webhook_deliveries, api.usage_alerts,
              api.email_alerts
  from public, anon, client, admin, ingest, bi_reader;
grant select on api.webhooks, api.webhook_messages, api.webhook_deliveries, api.usage_alerts,
                api.email_alerts
  to client, admin;

-- -- Functions: exactly what each role calls (nothing for PUBLIC: 00_privileges.sql) ------------
grant execute on function ledger._caller_email_alerts() to client, admin;
grant execute on function
  api.create_webhook(text, text[], text, text), api.delete_webhook(uuid),
  api.rotate_webhook_secret(uuid), api.enable_webhook(uuid), api.test_webhook(uuid),
  api.redeliver(uuid), api.set_email_alerts(text[])
  to client, admin;
grant execute on function api.set_usage_alert(text, numeric, text) to admin;
