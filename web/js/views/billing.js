// Admin billing: per client and per step for one month (GET /usage), and any client's invoice.

import { byStepOrder, freshnessNote, freshUsage, pipelineUsageCharts, showInvoice } from '../billing-parts.js';
import { act, card, download, empty, errorBox, loadFailure, loading, pageHeader, queryFilters, tableHead, toast } from '../components.js';
import { catalog, refreshUsage, usage, usageCsv } from '../data.js';
import { field, h, replace, select } from '../dom.js';
import * as fmt from '../format.js';
import { addInvoiceActions } from './invoice-actions.js';

export function render(main, ctx) {
  const periods = fmt.recentPeriods(12);
  let state = read(ctx.query);
  let cat = null;

  function read(query) {
    return {
      period: periods.includes(query.period) ? query.period : periods[0],
      client: query.client || '',
    };
  }

  const periodSel = select(periods.map((p) => ({ value: p, label: fmt.period(p) })), state.period, { name: 'period' });
  const clientSel = select([{ value: '', label: 'All clients' }], state.client, { name: 'client' });
  const csvBtn = h('button', { type: 'button', class: 'btn btn-secondary', onClick: downloadCsv }, 'Download CSV');
  const refreshBtn = h('button', { type: 'button', class: 'btn btn-ghost', onClick: refreshNow }, 'Refresh figures');
  const tableHost = h('div', { class: 'table-host' }, loading('Loading billing…'));
  const invoiceHost = h('div', { class: 'invoice-host' });
  const trendHost = h('div', { class: 'trend-host' });

  replace(main, h('div', { class: 'page page-billing' },
    pageHeader('Billing', 'Completed steps and amounts per client and step, by month (UTC).'),
    h('form', { class: 'filters filters-inline', 'aria-label': 'Billing period', onSubmit: (e) => e.preventDefault() },
      field('Month', periodSel), field('Client', clientSel), h('div', { class: 'filters-actions' }, refreshBtn, csvBtn)),
    tableHost,
    invoiceHost,
    trendHost));

  async function downloadCsv() {
    csvBtn.disabled = true;
    try {
      const blob = await usageCsv({ client: state.client || null, periods: [state.period] });
      download(`stepledger-usage-${state.client || 'all'}-${state.period}.csv`, blob);
    } catch (err) {
      replace(invoiceHost, errorBox(err, { title: 'Could not download the CSV' }));
    } finally {
      csvBtn.disabled = false;
    }
  }

  function refreshNow() {
    return act(async () => {
      await refreshUsage();
      toast('Figures refreshed', 'success');
      await load();
    }, refreshBtn);
  }

  async function load() {
    replace(tableHost, loading('Loading billing…'));
    replace(invoiceHost);
    replace(trendHost);
    try {
      if (!cat) {
        cat = await catalog();
        for (const c of cat.clients) clientSel.append(h('option', { value: c.client_id, selected: c.client_id === state.client }, c.name));
      }
      if (state.client) {
        // One client: its invoice is the per-step breakdown, always current.
        replace(tableHost);
        const inv = await showInvoice(invoiceHost, { cat, clientId: state.client, period: state.period, signal: ctx.signal });
        addInvoiceActions(invoiceHost, inv, {
          clientId: state.client, clientName: cat.clientName(state.client), period: state.period, admin: true, onFinalized: load,
        });
        return;
      }
      const freshness = await freshUsage({ admin: true });
      const [rows, year] = await Promise.all([usage({ periods: [state.period] }), usage({ periods })]);
      if (ctx.signal.aborted) return;
      renderTable(rows, freshness);
      const charts = pipelineUsageCharts(cat, year, periods);
      replace(trendHost, charts ? card({ id: 'pipeline-usage-title', title: 'Usage per pipeline',
        aside: h('span', { class: 'muted small' }, 'completed steps per month, every client') },
        charts) : null);
    } catch (err) {
      if (ctx.signal.aborted) return;
      replace(tableHost, loadFailure(err, { missing: 'Usage', title: 'Could not load billing', retry: load }));
    }
  }

  function renderTable(rows, freshness) {
    if (!rows.length) {
      replace(tableHost, empty(`Nothing billed in ${fmt.period(state.period)}`,
        'Steps are billed when they complete; no completed steps fall in this month.'),
      freshnessNote(freshness));
      return;
    }
    const byClient = new Map();
    const several = cat.pipelines.length > 1;
    for (const r of byStepOrder(cat, rows)) {
      if (!byClient.has(r.client_id)) byClient.set(r.client_id, []);
      byClient.get(r.client_id).push(r);
    }
    const ordered = [...byClient.entries()].sort(([a], [b]) => cat.clientName(a).localeCompare(cat.clientName(b)));
    const sections = ordered.map(([clientId, lines]) => {
      const total = lines.reduce((n, l) => n + Number(l.amount || 0), 0);
      const currency = lines[0].currency;
      const steps = lines.reduce((n, l) => n + Number(l.completed_steps || 0), 0);
      return h('tbody', { class: 'client-group', dataset: { client: clientId } },
        h('tr', { class: 'group-row' },
          h('th', { scope: 'rowgroup' },
            h('a', { href: `#/billing?period=${state.period}&client=${encodeURIComponent(clientId)}` }, cat.clientName(clientId))),
          h('td', { class: 'num', 'data-label': 'Completed steps' }, fmt.int(steps)),
          h('td', { class: 'num', 'data-label': 'Units' }, ''),
          h('td', { class: 'num group-total', 'data-label': 'Amount' }, fmt.money(total, currency))),
        lines.map((l) => h('tr', { class: 'line-row', dataset: { step: l.step } },
          h('td', { 'data-label': 'Step' }, cat.stepTitle(l.pipeline, l.step),
            several ? h('span', { class: 'muted small block' }, cat.pipeline(l.pipeline)?.title || l.pipeline) : null,
            Number(l.unpriced_steps) > 0 ? [' ', h('span', { class: 'tag tag-warn', title: 'No price in force: billed at 0' }, 'No price')] : null),
          h('td', { class: 'num', 'data-label': 'Completed steps' }, fmt.int(l.completed_steps)),
          h('td', { class: 'num', 'data-label': 'Units' }, fmt.int(l.units)),
          h('td', { class: 'num', 'data-label': 'Amount' }, fmt.money(l.amount, l.currency)))));
    });
    replace(tableHost, card({ id: 'billing-table-title', title: `Per client and step · ${fmt.period(state.period)}` },
      freshnessNote(freshness),
      h('div', { class: 'table-wrap' }, h('table', { class: 'table table-billing responsive-table compact-rows' },
        tableHead('Step', { label: 'Completed steps', class: 'num' }, { label: 'Units', class: 'num' }, { label: 'Amount', class: 'num' }),
        sections))));
  }

  load();
  return queryFilters(ctx, { period: periodSel, client: clientSel }, (query) => (state = read(query)), load);
}
