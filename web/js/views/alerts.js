// Alerts: webhook endpoints (create with the secret shown once, test-send, delete), recent
// deliveries with their status, the signed-in person's e-mail opt-in, and (admins) usage
// thresholds per client. Rules live in the database (docs/notifications.md); this page only asks.

import { ApiError, describeError } from '../api.js';
import { act, badge, card, checkFields, confirmDialog, empty, errorBox, loading, loadInto, pageHeader, revealOnce, tableHead, timeEl, toast } from '../components.js';
import {
  EMAIL_EVENT_TYPES, EVENT_TYPES, createWebhook, deleteWebhook, emailAlerts, enableWebhook,
  recentDeliveries, redeliver, setEmailAlerts, setUsageAlert, testWebhook, usageAlerts, webhooks,
} from '../alerts-data.js';
import { catalog } from '../data.js';
import { field, h, replace, select, setFieldError, uid } from '../dom.js';
import * as fmt from '../format.js';

const eventLabel = (type) => EVENT_TYPES.find((e) => e.type === type)?.label || type;

function deliveryBadge(state) {
  if (state === 'succeeded') return badge('completed', { label: 'Delivered' });
  if (state === 'failed') return badge('failed', { label: 'Failed' });
  if (state === 'cancelled') return badge('abandoned', { label: 'Cancelled' });
  return badge('pending', { label: 'Retrying' });
}

function checkboxGroup(legend, options, checked, name) {
  const boxes = options.map((o) => {
    const id = uid(name);
    const box = h('input', { type: 'checkbox', id, name, value: o.type, checked: checked.includes(o.type) });
    return { box, node: h('div', { class: 'check' }, box, h('label', { for: id }, o.label,
      o.hint ? h('span', { class: 'muted small block' }, o.hint) : null)) };
  });
  const node = h('fieldset', { class: 'field checks' }, h('legend', legend), boxes.map((b) => b.node));
  return { node, values: () => boxes.filter((b) => b.box.checked).map((b) => b.box.value) };
}

export function render(main, ctx) {
  const admin = ctx.isAdmin;
  let cat = null;
  let hooks = [];
  const revealHost = h('div', { class: 'reveal-host' });
  const formHost = h('div', { class: 'form-host' });
  const hooksHost = h('div', { class: 'table-host', 'aria-busy': 'true' }, loading('Loading endpoints…'));
  const deliveriesHost = h('div', { class: 'table-host' }, loading('Loading deliveries…'));
  const emailHost = h('div');
  const thresholdsHost = h('div');

  replace(main, h('div', { class: 'page page-alerts' },
    pageHeader('Alerts', 'Be told when jobs fail, stall or complete, when an invoice is finalized or usage passes its threshold: signed webhooks for systems, e-mails for people.'),
    revealHost,
    h('div', { class: 'grid-prices' },
      formHost,
      card({ id: 'hooks-title', title: 'Webhook endpoints' },
        hooksHost)),
    card({ id: 'deliveries-title', title: 'Recent deliveries',
      aside: h('button', { type: 'button', class: 'btn btn-secondary btn-small', onClick: () => loadDeliveries() }, 'Reload') },
      deliveriesHost),
    h('div', { class: 'grid-prices' }, emailHost, thresholdsHost)));

  // The catalog first (the form lists the clients), then the form and every part of the page.
  const start = () => loadInto(hooksHost, {
    fetch: catalog, signal: ctx.signal, retry: start, busy: false,
    render: (loaded) => {
      cat = loaded;
      renderForm();
      return Promise.all([loadHooks(), loadDeliveries(), loadEmail(), admin ? loadThresholds() : null]);
    },
  });

  /** Load one part of the page into its host (see loadInto). */
  function loadPart(host, what, fetch, render, retry, busy = true) {
    return loadInto(host, { fetch, render, signal: ctx.signal, missing: 'Alerts',
      title: `Could not load ${what}`, retry, busy });
  }

  // -- endpoints ----------------------------------------------------------------------------------
  function loadHooks() {
    return loadPart(hooksHost, 'the endpoints', webhooks, (rows) => { hooks = rows; renderHooks(); }, loadHooks);
  }

  function renderHooks() {
    if (!hooks.length) {
      replace(hooksHost, empty('No endpoints yet', 'Add the URL of a system that should receive events, then send it a test.'));
      return;
    }
    replace(hooksHost, h('div', { class: 'table-wrap' }, h('table', { class: 'table table-hooks responsive-table' },
      tableHead('URL', admin ? 'Client' : null, 'Events', 'Status', { hidden: 'Actions' }),
      h('tbody', hooks.map((w) => h('tr', { dataset: { webhook: w.webhook_id }, class: w.enabled ? '' : 'row-muted' },
        h('th', { scope: 'row', 'data-label': 'URL' }, h('span', { class: 'mono break' }, w.url),
          h('span', { class: 'muted small block' }, 'Created ', timeEl(w.created_at, { format: fmt.dateTimeShort }))),
        admin ? h('td', { 'data-label': 'Client' }, w.client_id ? cat.clientName(w.client_id) : h('span', { class: 'tag' }, 'All clients')) : null,
        h('td', { 'data-label': 'Events' }, w.events.map((e) => h('span', { class: 'tag' }, eventLabel(e)))),
        h('td', { 'data-label': 'Status' }, w.enabled
          ? [badge('active', { label: w.failing_since ? 'Failing' : 'Enabled' }),
            w.failing_since ? h('span', { class: 'muted small block' }, 'since ', timeEl(w.failing_since, { relative: true })) : null,
            w.last_success_at ? h('span', { class: 'muted small block' }, 'last delivered ', timeEl(w.last_success_at, { relative: true })) : null]
          : [badge('revoked', { label: 'Disabled' }), h('span', { class: 'small block' }, w.disabled_reason)]),
        h('td', { class: 'cell-actions', 'data-label': '' },
          w.enabled
            ? h('button', { type: 'button', class: 'btn btn-secondary btn-small', 'aria-label': `Send test to ${w.url}`, onClick: () => sendTest(w) }, 'Send test')
            : h('button', { type: 'button', class: 'btn btn-secondary btn-small', 'aria-label': `Enable ${w.url}`, onClick: () => enable(w) }, 'Enable'),
          h('button', { type: 'button', class: 'btn btn-danger-ghost btn-small', 'aria-label': `Delete ${w.url}`, onClick: () => remove(w) }, 'Delete'))))))));
  }

  function sendTest(w) {
    return act(async () => {
      await testWebhook(w.webhook_id);
      toast('Test message queued: see Recent deliveries', 'success');
      setTimeout(() => { if (!ctx.signal.aborted) loadDeliveries(); }, 1500);
    });
  }

  function enable(w) {
    return act(async () => {
      await enableWebhook(w.webhook_id);
      toast('Endpoint enabled', 'success');
      await loadHooks();
    });
  }

  async function remove(w) {
    const ok = await confirmDialog({
      title: 'Delete this endpoint?',
      text: `${w.url} receives nothing more, and its delivery history is deleted with it.`,
      confirmLabel: 'Delete endpoint',
      danger: true,
    });
    if (!ok) return;
    await act(async () => {
      await deleteWebhook(w.webhook_id);
      toast('Endpoint deleted', 'success');
      await Promise.all([loadHooks(), loadDeliveries()]);
    });
  }

  function renderForm() {
    const urlInput = h('input', { type: 'url', name: 'url', maxlength: '2000', autocomplete: 'off', required: true, placeholder: 'https://ops.example.com/stepledger' });
    const events = checkboxGroup('Events', EVENT_TYPES, ['job.failed', 'job.stalled'], 'event');
    const clientSel = admin
      ? select([{ value: '', label: 'Every client' }, ...cat.clients.map((c) => ({ value: c.client_id, label: c.name }))], '', { name: 'client_id' })
      : null;
    const messages = h('div', { class: 'form-messages', 'aria-live': 'polite' });
    const submit = h('button', { type: 'submit', class: 'btn btn-primary' }, 'Add endpoint');
    const form = h('form', { class: 'form', novalidate: true },
      messages,
      field('URL', urlInput, { hint: 'An https address reachable from the internet. Deliveries are signed (Standard Webhooks).' }),
      clientSel ? field('Events of', clientSel, { hint: 'One client, or every client.' }) : null,
      events.node,
      h('div', { class: 'form-actions' }, submit));
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      replace(messages);
      const url = urlInput.value.trim();
      if (!checkFields([[urlInput, url ? null : 'Enter the address that receives the events.']])) return;
      const chosen = events.values();
      if (!chosen.length) {
        replace(messages, h('div', { class: 'alert alert-error', role: 'alert' }, h('p', 'Choose at least one event.')));
        return;
      }
      submit.disabled = true;
      try {
        const answer = await createWebhook({ url, events: chosen, client_id: clientSel ? clientSel.value : ctx.session.client_id });
        reveal(answer);
        urlInput.value = '';
        await loadHooks();
      } catch (err) {
        setFieldError(urlInput, err instanceof ApiError && err.code === 'SL601' ? describeError(err).message : null);
        replace(messages, errorBox(err, { title: 'The endpoint was not added', details: false }));
      } finally {
        submit.disabled = false;
      }
    });
    replace(formHost, card({ id: 'new-hook-title', title: 'New endpoint' }, form));
  }

  function reveal(answer) {
    revealOnce(revealHost, {
      value: answer.secret, id: 'new-webhook-secret', titleId: 'secret-title', rows: '2', kind: 'secret-reveal',
      title: 'Endpoint added: its signing secret', note: 'The receiver checks each delivery’s webhook-signature with it.',
      label: 'The signing secret', copyLabel: 'Copy secret',
    });
  }

  // -- deliveries ---------------------------------------------------------------------------------
  function loadDeliveries() {
    return loadPart(deliveriesHost, 'the deliveries', recentDeliveries, renderDeliveries, loadDeliveries);
  }

  function renderDeliveries(rows) {
    if (!rows.length) {
      replace(deliveriesHost, empty('Nothing delivered yet', 'Deliveries appear here as events happen, or when you send a test.'));
      return;
    }
    const urlOf = (id) => hooks.find((w) => w.webhook_id === id)?.url || String(id).slice(0, 8);
    replace(deliveriesHost, h('div', { class: 'table-wrap' }, h('table', { class: 'table table-deliveries responsive-table' },
      tableHead('When', 'Event', 'Endpoint', 'Attempt', 'Answer', 'Status', { hidden: 'Actions' }),
      h('tbody', rows.map((d) => h('tr', { dataset: { delivery: d.delivery_id } },
        h('td', { 'data-label': 'When' }, timeEl(d.attempted_at || d.created_at, { format: fmt.dateTimeShort })),
        h('th', { scope: 'row', 'data-label': 'Event' }, d.event_type === 'webhook.test' ? 'Test' : eventLabel(d.event_type),
          h('span', { class: 'muted small block mono' }, d.message_id)),
        h('td', { 'data-label': 'Endpoint' }, h('span', { class: 'mono break small' }, urlOf(d.webhook_id))),
        h('td', { 'data-label': 'Attempt' }, d.attempt ? fmt.int(d.attempt) : '—'),
        h('td', { 'data-label': 'Answer' },
          d.status_code ? `HTTP ${d.status_code}` : (d.error || (d.attempt ? '—' : 'not sent yet')),
          d.latency_ms !== null && d.latency_ms !== undefined ? h('span', { class: 'muted small block' }, `${Math.round(d.latency_ms)} ms`) : null,
          d.status_code && d.error && !d.error.startsWith('HTTP') ? h('span', { class: 'muted small block' }, d.error) : null),
        h('td', { 'data-label': 'Status' }, deliveryBadge(d.state),
          d.next_retry_at && d.state === 'pending' ? h('span', { class: 'muted small block' }, 'next ', timeEl(d.next_retry_at, { format: fmt.time })) : null),
        h('td', { class: 'cell-actions', 'data-label': '' },
          d.state !== 'pending' ? h('button', { type: 'button', class: 'btn btn-secondary btn-small', 'aria-label': `Send again: message ${d.message_id}`, onClick: () => again(d) }, 'Send again') : null)))))));
  }

  function again(d) {
    return act(async () => {
      await redeliver(d.delivery_id);
      toast('Queued again, with the same webhook-id', 'success');
      setTimeout(() => { if (!ctx.signal.aborted) loadDeliveries(); }, 1500);
    });
  }

  // -- e-mail -------------------------------------------------------------------------------------
  function loadEmail() {
    return loadPart(emailHost, 'the e-mail settings', emailAlerts, renderEmail, loadEmail, false);
  }

  function renderEmail(mine) {
    const emailCard = (...body) => card({ id: 'email-title', title: 'E-mail alerts' }, ...body);
    if (!mine) {
      replace(emailHost, emailCard(h('p', { class: 'muted' }, 'E-mail alerts are for people who sign in with an e-mail address.')));
      return;
    }
    const choice = checkboxGroup(`E-mail ${mine.email} when`, EVENT_TYPES.filter((e) => EMAIL_EVENT_TYPES.includes(e.type)), mine.events, 'email-event');
    const submit = h('button', { type: 'submit', class: 'btn btn-primary' }, 'Save e-mail alerts');
    const form = h('form', { class: 'form', novalidate: true },
      mine.email_enabled ? null : h('div', { class: 'alert alert-info', role: 'status' },
        h('p', 'E-mail is not configured on this server yet: your choice is kept, and e-mails start once the operator sets it up.')),
      h('p', { class: 'muted small' }, admin ? 'For the jobs of every client.' : 'For your organisation’s jobs.'),
      choice.node,
      h('div', { class: 'form-actions' }, submit));
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      act(async () => {
        const answer = await setEmailAlerts(choice.values());
        toast(answer.events.length ? 'E-mail alerts saved' : 'E-mail alerts turned off', 'success');
      }, submit);
    });
    replace(emailHost, emailCard(form));
  }

  // -- usage thresholds (admins) ------------------------------------------------------------------
  function loadThresholds() {
    return loadPart(thresholdsHost, 'the usage thresholds', usageAlerts, renderThresholds, loadThresholds, false);
  }

  function renderThresholds(rows) {
    const clientSel = select(cat.clients.map((c) => ({ value: c.client_id, label: c.name })), '', { name: 'threshold_client' });
    const amount = h('input', { type: 'number', name: 'amount', min: '0.01', step: '0.01', inputmode: 'decimal', required: true });
    const currency = h('input', { type: 'text', name: 'currency', maxlength: '3', autocomplete: 'off', placeholder: 'the client’s' });
    const submit = h('button', { type: 'submit', class: 'btn btn-primary' }, 'Set threshold');
    const form = h('form', { class: 'form', novalidate: true },
      field('Client', clientSel),
      field('Monthly amount', amount, { hint: 'A usage.threshold_crossed event, once a month, when the month’s amount reaches it.' }),
      field('Currency', currency, { hint: 'Empty: the client’s currency.' }),
      h('div', { class: 'form-actions' }, submit));
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      const value = Number(amount.value);
      if (!checkFields([[amount, value > 0 ? null : 'Enter a positive amount.']])) return;
      act(async () => {
        await setUsageAlert({ client_id: clientSel.value, amount: value, currency: currency.value.trim().toUpperCase() });
        toast('Threshold saved', 'success');
        await loadThresholds();
      }, submit);
    });
    const list = rows.length
      ? h('table', { class: 'table table-thresholds responsive-table' },
        tableHead('Client', 'Threshold', 'Last crossed', { hidden: 'Actions' }),
        h('tbody', rows.map((r) => h('tr', { dataset: { client: r.client_id } },
          h('th', { scope: 'row', 'data-label': 'Client' }, cat.clientName(r.client_id)),
          h('td', { 'data-label': 'Threshold', class: 'num' }, fmt.money(r.amount, r.currency)),
          h('td', { 'data-label': 'Last crossed' }, r.crossed_period ? fmt.period(r.crossed_period) : 'not yet'),
          h('td', { class: 'cell-actions', 'data-label': '' }, h('button', {
            type: 'button', class: 'btn btn-danger-ghost btn-small', 'aria-label': `Remove the threshold of ${cat.clientName(r.client_id)}`,
            onClick: () => act(async () => {
              await setUsageAlert({ client_id: r.client_id, amount: null });
              await loadThresholds();
            }),
          }, 'Remove'))))))
      : h('p', { class: 'muted' }, 'No thresholds set.');
    replace(thresholdsHost, card({ id: 'thresholds-title', title: 'Usage thresholds' }, form, list));
  }

  start();
}
