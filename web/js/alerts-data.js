// The endpoints of the Alerts page (docs/notifications.md): webhooks, their messages and
// deliveries, the e-mail opt-in and usage thresholds. Kept beside data.js, in the same style.

import { get, rpc } from './api.js';

export const EVENT_TYPES = [
  { type: 'job.failed', label: 'Job failed', hint: 'a step’s latest attempt failed' },
  { type: 'job.recovered', label: 'Job recovered', hint: 'a failed job runs or completes again after a retry' },
  { type: 'job.stalled', label: 'Job stalled', hint: 'no event for longer than the pipeline’s stall timeout' },
  { type: 'job.completed', label: 'Job completed', hint: 'every step done' },
  { type: 'invoice.finalized', label: 'Invoice finalized', hint: 'an invoice was frozen' },
  { type: 'usage.threshold_crossed', label: 'Usage threshold crossed', hint: 'this month’s amount passed the threshold' },
];
export const EMAIL_EVENT_TYPES = ['job.failed', 'job.stalled'];

export async function webhooks() {
  return get('/webhooks', { order: 'created_at.desc' });
}

export async function createWebhook({ url, events, client_id }) {
  return rpc('create_webhook', { url, events, client_id: client_id || null });
}

export async function deleteWebhook(webhookId) {
  return rpc('delete_webhook', { webhook_id: webhookId });
}

export async function testWebhook(webhookId) {
  return rpc('test_webhook', { webhook_id: webhookId });
}

export async function enableWebhook(webhookId) {
  return rpc('enable_webhook', { webhook_id: webhookId });
}

export async function rotateWebhookSecret(webhookId) {
  return rpc('rotate_webhook_secret', { webhook_id: webhookId });
}

/** The latest attempts (and deliveries not yet attempted), newest first. */
export async function recentDeliveries(limit = 30) {
  return get('/webhook_deliveries', { order: 'created_at.desc,attempt.desc.nullsfirst', limit });
}

export async function redeliver(deliveryId) {
  return rpc('redeliver', { delivery_id: deliveryId });
}

export async function emailAlerts() {
  const rows = await get('/email_alerts');
  return rows[0] || null;
}

export async function setEmailAlerts(events) {
  return rpc('set_email_alerts', { events });
}

export async function usageAlerts() {
  return get('/usage_alerts', { order: 'client_id' });
}

export async function setUsageAlert({ client_id, amount, currency }) {
  return rpc('set_usage_alert', { client_id, amount, currency: currency || null });
}
