// Pieces shared by the client's usage page and the admin's billing page: the invoice of one
// period (POST /rpc/invoice) and the monthly totals chart (GET /usage).

import { ApiError } from './api.js';
import { columns } from './charts.js';
import { badge, download, empty, errorBox, loading, toCsv, unavailable } from './components.js';
import { invoice as fetchInvoice, usageCsv } from './data.js';
import { h, replace } from './dom.js';
import * as fmt from './format.js';

/** Monthly totals per period from /usage rows: one column per period, oldest first. */
export function monthlyChart(rows, periods, selected, onSelect) {
  const totals = new Map(periods.map((p) => [p, 0]));
  let currency = null;
  for (const r of rows) {
    if (totals.has(r.period)) totals.set(r.period, totals.get(r.period) + Number(r.amount || 0));
    currency = currency || r.currency;
  }
  const items = [...periods].reverse().map((p) => ({
    key: p,
    label: fmt.periodShort(p),
    value: totals.get(p),
    text: fmt.money(totals.get(p), currency),
    short: compactMoney(totals.get(p)),
    selected: p === selected,
  }));
  return columns(items, { label: `Amount per month (${currency || 'no usage'})`, onSelect });
}

function compactMoney(n) {
  return new Intl.NumberFormat(undefined, { notation: 'compact', maximumFractionDigits: 1 }).format(n);
}

function lineTitle(cat, line) {
  const p = cat.pipeline(line.pipeline);
  const stepTitle = cat.stepTitle(line.pipeline, line.step);
  return { step: stepTitle, pipeline: p ? p.title : line.pipeline };
}

/** CSV of an invoice's lines. */
export function invoiceCsv(inv) {
  const rows = (inv.lines || []).map((l) => ({ ...l, currency: l.currency || inv.currency }));
  return toCsv(['pipeline', 'step', 'completed_steps', 'units', 'unit_price', 'amount', 'currency'], rows);
}

/**
 * Load and show the invoice of (client, period) into host.
 * Returns the invoice (or null) so callers can react to it.
 */
export async function showInvoice(host, { cat, clientId, period, signal, heading = 'h2' }) {
  replace(host, loading('Loading the invoice…'));
  let inv;
  try {
    inv = await fetchInvoice(clientId, period);
  } catch (err) {
    if (signal && signal.aborted) return null;
    if (err instanceof ApiError && err.missingEndpoint) replace(host, unavailable('Invoicing'));
    else replace(host, errorBox(err, { title: 'Could not load the invoice' }));
    return null;
  }
  if (signal && signal.aborted) return null;
  const currency = inv.currency;
  const lines = inv.lines || [];
  const clientName = cat.clientName(clientId);
  const title = h(heading, { id: 'invoice-title' }, `Invoice · ${fmt.period(period)}`);
  const csvName = `stepledger-invoice-${clientId}-${period}.csv`;
  const actions = h('div', { class: 'card-actions' },
    h('button', { type: 'button', class: 'btn btn-secondary btn-small', disabled: !lines.length,
      onClick: () => download(csvName, invoiceCsv(inv)) }, 'Download invoice CSV'),
    h('button', { type: 'button', class: 'btn btn-ghost btn-small', onClick: async (e) => {
      const btn = e.currentTarget;
      btn.disabled = true;
      try {
        download(`stepledger-usage-${clientId}-${period}.csv`, await usageCsv({ client: clientId, periods: [period] }));
      } catch (err) {
        replace(host.querySelector('.invoice-messages'), errorBox(err, { title: 'Could not download the usage' }));
      } finally {
        btn.disabled = false;
      }
    } }, 'Usage CSV'));

  const body = lines.length
    ? h('div', { class: 'table-wrap' }, h('table', { class: 'table table-invoice responsive-table' },
      h('caption', { class: 'visually-hidden' }, `Invoice lines of ${clientName} for ${fmt.period(period)}`),
      h('thead', h('tr',
        h('th', { scope: 'col' }, 'Step'),
        h('th', { scope: 'col', class: 'num' }, 'Units'),
        h('th', { scope: 'col', class: 'num' }, 'Unit price'),
        h('th', { scope: 'col', class: 'num' }, 'Amount'))),
      h('tbody', lines.map((l) => {
        const t = lineTitle(cat, l);
        const unpriced = l.unit_price === null || l.unit_price === undefined || l.unpriced === true;
        return h('tr', { dataset: { step: l.step } },
          h('td', { 'data-label': 'Step' }, h('span', { class: 'block' }, t.step),
            h('span', { class: 'muted small' }, l.adjustment || l.kind === 'adjustment' ? `${t.pipeline} · adjustment` : t.pipeline)),
          h('td', { class: 'num', 'data-label': 'Units' }, fmt.int(l.units)),
          h('td', { class: 'num', 'data-label': 'Unit price' }, unpriced
            ? h('span', { class: 'tag tag-warn' }, 'No price')
            : fmt.unitPrice(l.unit_price, l.currency || currency)),
          h('td', { class: 'num', 'data-label': 'Amount' }, fmt.money(l.amount, l.currency || currency)));
      })),
      h('tfoot', h('tr',
        h('th', { scope: 'row', colspan: '3' }, 'Total'),
        h('td', { class: 'num invoice-total', 'data-label': 'Total' }, fmt.money(inv.total, currency))))))
    : empty(`Nothing billed for ${fmt.period(period)}`, 'Completed steps are billed in the month they complete (UTC).');

  replace(host, h('section', { class: 'card invoice', 'aria-labelledby': 'invoice-title', dataset: { period, client: clientId } },
    h('div', { class: 'card-header' },
      h('div', {}, title, h('p', { class: 'muted small' }, `${clientName} · ${currency || ''}`)),
      h('div', { class: 'invoice-status' }, badge(inv.status === 'finalized' ? 'finalized' : 'draft'),
        h('span', { class: 'invoice-amount', 'aria-label': 'Total' }, fmt.money(inv.total, currency)))),
    inv.status !== 'finalized'
      ? h('p', { class: 'muted small' }, 'A draft: it changes while steps complete and prices change, until the month is finalized.')
      : null,
    h('div', { class: 'invoice-messages' }),
    body,
    actions));
  return inv;
}
