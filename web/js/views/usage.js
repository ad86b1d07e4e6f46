// Usage and invoices of the signed-in client: amount per month and the invoice of one month.

import { ApiError } from '../api.js';
import { freshnessNote, freshUsage, monthlyChart, pipelineUsageCharts, showInvoice } from '../billing-parts.js';
import { card, errorBox, loadFailure, loading, pageHeader } from '../components.js';
import { catalog, usage } from '../data.js';
import { field, h, replace, select } from '../dom.js';
import * as fmt from '../format.js';
import { addInvoiceActions } from './invoice-actions.js';

const MONTHS = 12;

export function render(main, ctx) {
  const periods = fmt.recentPeriods(MONTHS);
  let period = periods.includes(ctx.query.period) ? ctx.query.period : periods[0];
  const clientId = ctx.session.client_id;
  let cat = null;
  let usageRows = null;
  let freshness = null;

  const periodSel = select(periods.map((p) => ({ value: p, label: fmt.period(p) })), period, { name: 'period' });
  periodSel.addEventListener('change', () => ctx.setQuery({ period: periodSel.value }));
  const chartHost = h('div', { class: 'chart-host' }, loading('Loading usage…'));
  const invoiceHost = h('div', { class: 'invoice-host' });
  const trendHost = h('div', { class: 'trend-host' });

  replace(main, h('div', { class: 'page page-usage' },
    pageHeader('Usage & invoices', 'What your completed steps cost, month by month (months in UTC).'),
    card({ id: 'months-title', title: 'Amount per month',
      aside: h('form', { class: 'inline-form', onSubmit: (e) => e.preventDefault() }, field('Month', periodSel)) },
      chartHost),
    card({ id: 'pipeline-usage-title', title: 'Usage per pipeline',
      aside: h('span', { class: 'muted small' }, 'completed steps per month') },
      trendHost),
    invoiceHost));

  async function loadChart() {
    try {
      cat = cat || await catalog();
      freshness = await freshUsage({ admin: false });
      usageRows = await usage({ client: clientId, periods });
      if (ctx.signal.aborted) return;
      replace(chartHost, monthlyChart(usageRows, periods, period, (p) => ctx.setQuery({ period: p })),
        freshnessNote(freshness));
      replace(trendHost, pipelineUsageCharts(cat, usageRows, periods)
        || h('p', { class: 'muted' }, 'No completed steps in the last 12 months.'));
    } catch (err) {
      if (ctx.signal.aborted) return;
      replace(chartHost, loadFailure(err, { missing: 'Usage', title: 'Could not load the usage' }));
    }
  }

  async function loadInvoice() {
    cat = cat || await catalog().catch(() => null);
    if (!cat) {
      replace(invoiceHost, errorBox(new ApiError(0, null, 'Cannot reach the server.')));
      return;
    }
    const inv = await showInvoice(invoiceHost, { cat, clientId, period, signal: ctx.signal });
    addInvoiceActions(invoiceHost, inv, { clientId, clientName: cat.clientName(clientId), period, admin: false });
  }

  loadChart().then(loadInvoice);

  return {
    update(query) {
      period = periods.includes(query.period) ? query.period : periods[0];
      periodSel.value = period;
      if (usageRows) {
        replace(chartHost, monthlyChart(usageRows, periods, period, (p) => ctx.setQuery({ period: p })),
          freshnessNote(freshness));
      }
      loadInvoice();
    },
  };
}
