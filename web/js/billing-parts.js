// Pieces shared by the client's usage page and the admin's billing page: the invoice of one
// period (POST /rpc/invoice) and the monthly totals chart (GET /usage).

import { columns } from './charts.js';
import { badge, download, empty, errorBox, loadFailure, loading, tableHead, timeEl, toCsv } from './components.js';
import { invoice as fetchInvoice, refreshUsage, usageCsv, usageFreshness } from './data.js';
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
    name: fmt.period(p),
    value: totals.get(p),
    text: fmt.money(totals.get(p), currency),
    short: fmt.money(totals.get(p), currency, { precision: 'compact' }),
    selected: p === selected,
  }));
  return columns(items, { label: `Amount per month (${currency || 'no usage'})`, onSelect });
}

/** Usage over time per pipeline: completed steps per month, one chart per pipeline with usage. */
export function pipelineUsageCharts(cat, rows, periods) {
  const byPipeline = new Map();
  for (const r of rows) {
    if (!byPipeline.has(r.pipeline)) byPipeline.set(r.pipeline, new Map(periods.map((p) => [p, 0])));
    const months = byPipeline.get(r.pipeline);
    if (months.has(r.period)) months.set(r.period, months.get(r.period) + Number(r.completed_steps || 0));
  }
  if (!byPipeline.size) return null;
  return [...byPipeline.entries()].map(([pipeline, months]) => {
    const title = cat.pipeline(pipeline)?.title || pipeline;
    const items = [...periods].reverse().map((p) => ({
      key: p, label: fmt.periodShort(p), name: fmt.period(p), value: months.get(p),
      text: `${fmt.int(months.get(p))} completed steps`, short: fmt.int(months.get(p)),
    }));
    return h('div', { class: 'pipeline-usage', dataset: { pipeline } },
      h('h3', { class: 'chart-title' }, title),
      columns(items, { label: `Completed steps per month · ${title}`, values: 'none' }));
  });
}

/** What an invoice line is about: a step (usage), a monthly minimum, or an adjustment. */
function lineTitle(cat, line) {
  const p = line.pipeline ? cat.pipeline(line.pipeline) : null;
  // With one pipeline in the catalog, naming it on every line says nothing.
  const pipelineTitle = cat.pipelines.length > 1 ? (p ? p.title : line.pipeline || '') : '';
  if (line.kind === 'minimum') {
    return { step: line.description || 'Monthly minimum', pipeline: 'Top-up to the agreed monthly minimum' };
  }
  if (line.kind === 'adjustment') {
    const what = line.step ? cat.stepTitle(line.pipeline, line.step) : (line.description || 'Adjustment');
    return { step: what, pipeline: `Adjustment for ${fmt.period(line.for_period)}${pipelineTitle ? ` · ${pipelineTitle}` : ''}` };
  }
  return { step: line.step ? cat.stepTitle(line.pipeline, line.step) : (line.description || '—'), pipeline: pipelineTitle };
}

/** The jobs list showing the jobs an invoice line bills. */
export function billedJobsHref(clientId, period, line) {
  const q = new URLSearchParams({ client: clientId, billed_period: period, billed_step: line.step });
  if (line.pipeline) q.set('pipeline', line.pipeline);
  return `#/jobs?${q.toString()}`;
}

/** "Monthly figures as of 14:05" from GET /usage_freshness (GET /usage is a materialized
 * view), and whether changes wait to be counted. */
export function freshnessNote(freshness) {
  if (!freshness || !freshness.refreshed_at) return null;
  const waiting = Number(freshness.pending_changes) > 0;
  return h('p', { class: 'muted small freshness' }, 'Monthly figures as of ',
    timeEl(freshness.refreshed_at, { format: fmt.dateTimeFull }),
    waiting ? '. Recent steps are still being counted; the invoice is always up to date.' : '.');
}

/** Admins: bring GET /usage up to date first when changes wait and the figures are over a
 * minute old (the refresh runs concurrently; a second one at the same time does nothing). */
export async function freshUsage({ admin }) {
  let freshness = await usageFreshness().catch(() => null);
  if (admin && freshness && Number(freshness.pending_changes) > 0 && Number(freshness.age_s) > 60) {
    try {
      await refreshUsage();
      freshness = await usageFreshness();
    } catch {
      // the figures stay as they are; the note says how old they are
    }
  }
  return freshness;
}

/** Usage rows in the order of the pipeline's steps. */
export function byStepOrder(cat, rows) {
  const index = (r) => cat.pipeline(r.pipeline)?.steps.find((s) => s.step === r.step)?.step_index ?? 999;
  return [...rows].sort((a, b) => String(a.pipeline).localeCompare(String(b.pipeline)) || index(a) - index(b));
}

/** CSV of an invoice's lines, in the invoice's order (the pipeline's), with the titles people
 * read beside the keys, priced as true/false. */
export function invoiceCsv(inv, cat) {
  const rows = (inv.lines || []).map((l) => ({
    ...l,
    kind: l.kind || 'usage',
    currency: l.currency || inv.currency,
    period: inv.period,
    pipeline_title: l.pipeline ? cat.pipeline(l.pipeline)?.title || l.pipeline : '',
    step_title: l.step ? cat.stepTitle(l.pipeline, l.step) : '',
    priced: typeof l.priced === 'boolean' ? String(l.priced) : '',
  }));
  return toCsv(['period', 'kind', 'pipeline', 'pipeline_title', 'step', 'step_title', 'description',
    'completed_steps', 'units', 'unit_price', 'priced', 'amount', 'currency'], rows);
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
    replace(host, loadFailure(err, { missing: 'Invoicing', title: 'Could not load the invoice' }));
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
      onClick: () => download(csvName, invoiceCsv(inv, cat)) }, 'Download invoice CSV'),
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
    ? h('div', { class: 'table-wrap' }, h('table', { class: 'table table-invoice responsive-table compact-rows' },
      h('caption', { class: 'visually-hidden' }, `Invoice lines of ${clientName} for ${fmt.period(period)}`),
      tableHead('Step', { label: 'Units', class: 'num' }, { label: 'Unit price', class: 'num' }, { label: 'Amount', class: 'num' }),
      h('tbody', lines.map((l) => {
        const t = lineTitle(cat, l);
        const usageLine = !l.kind || l.kind === 'usage';
        const unpriced = usageLine && (l.priced === false || l.unit_price === null || l.unit_price === undefined);
        return h('tr', { dataset: { step: l.step || '', kind: l.kind || 'usage' } },
          h('td', { 'data-label': 'Step' }, h('span', { class: 'block' }, usageLine && l.step
            // the jobs this line bills: their step completed in this month (POST /rpc/search_jobs)
            ? h('a', { href: billedJobsHref(clientId, period, l), class: 'line-jobs' }, t.step)
            : t.step),
            t.pipeline ? h('span', { class: 'muted small' }, t.pipeline) : null),
          h('td', { class: 'num', 'data-label': 'Units' }, l.units === null || l.units === undefined ? '—' : fmt.int(l.units)),
          h('td', { class: 'num', 'data-label': 'Unit price' }, unpriced
            ? h('span', { class: 'tag tag-warn', title: 'No price was in force: billed at 0' }, 'No price')
            : l.unit_price === null || l.unit_price === undefined ? '—' : fmt.unitPrice(l.unit_price, l.currency || currency)),
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
      : h('p', { class: 'muted small' }, `Invoice ${inv.invoice_no || ''}, finalized `, timeEl(inv.finalized_at), '.'),
    Number(inv.unpriced_steps) > 0
      ? h('p', { class: 'muted small' }, h('span', { class: 'tag tag-warn' }, 'No price'),
        ` ${fmt.int(inv.unpriced_steps)} completed steps had no price in force and are billed at 0.`)
      : null,
    h('div', { class: 'invoice-messages' }),
    body,
    actions));
  return inv;
}
