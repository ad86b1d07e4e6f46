// Admin overview: every client with its jobs per state and its revenue, both for the current
// billing month (UTC), so failures and revenue speak of the same jobs; one revenue card per currency.

import { ApiError } from '../api.js';
import { card, empty, loading, loadInto, pageHeader, tableHead } from '../components.js';
import { freshUsage } from '../billing-parts.js';
import { catalog, jobCounts, usage } from '../data.js';
import { h, replace } from '../dom.js';
import * as fmt from '../format.js';

/** Run async fn over items with at most `limit` at a time. */
async function mapLimit(items, limit, fn) {
  const out = new Array(items.length);
  let next = 0;
  async function worker() {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i], i);
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

export function render(main, ctx) {
  const period = fmt.currentPeriod();
  const live = ctx.live(() => load({ quiet: true }));
  const totalsHost = h('div', { class: 'stat-grid' });
  const tableHost = h('div', { class: 'table-host', 'aria-busy': 'true' }, loading('Loading clients…'));
  replace(main, h('div', { class: 'page page-clients' },
    pageHeader('Overview', `All clients · jobs started and revenue in ${fmt.period(period)} (UTC)`, live),
    totalsHost,
    tableHost));

  function load({ quiet = false } = {}) {
    return loadInto(tableHost, {
      fetch: () => overview(quiet),
      render: ([cat, counts, revenue]) => {
        renderTotals(cat, counts, revenue);
        renderTable(cat, counts, revenue);
      },
      signal: ctx.signal, title: 'Could not load the clients', retry: () => load(),
      busy: !quiet, keep: quiet ? 'table' : null,
    });
  }

  /** The catalog, each client's job counts and the month's revenue per client (null: no usage endpoint). */
  async function overview(quiet) {
    const cat = await catalog({ refresh: !quiet });
    const [counts, revenue] = await Promise.all([
      mapLimit(cat.clients, 4, (c) => jobCounts({ client: c.client_id, month: period })),
      freshUsage({ admin: true }).then(() => usage({ periods: [period] })).then((rows) => {
        const byClient = new Map();
        for (const r of rows) {
          const cur = byClient.get(r.client_id) || { amount: 0, currency: r.currency, steps: 0 };
          cur.amount += Number(r.amount || 0);
          cur.steps += Number(r.completed_steps || 0);
          byClient.set(r.client_id, cur);
        }
        return byClient;
      }).catch((err) => {
        if (err instanceof ApiError && err.missingEndpoint) return null;
        throw err;
      }),
    ]);
    return [cat, counts, revenue];
  }

  function renderTotals(cat, counts, revenue) {
    const sum = (key) => counts.reduce((n, c) => n + (c[key] || 0), 0);
    const money = new Map();
    if (revenue) {
      for (const v of revenue.values()) money.set(v.currency, (money.get(v.currency) || 0) + v.amount);
    }
    // Currencies of the clients too, so a currency without usage yet shows 0 rather than nothing.
    for (const c of cat.clients) if (c.currency && !money.has(c.currency)) money.set(c.currency, 0);
    const stat = (label, value, tone, href, key) => h('a', { class: `stat stat-${tone}`, href, dataset: { stat: key } },
      h('span', { class: 'stat-value' }, value),
      h('span', { class: 'stat-label' }, label));
    const month = fmt.periodShort(period);
    const jobs = (status) => `#/jobs?month=${period}${status ? `&status=${status}` : ''}`;
    replace(totalsHost,
      stat(`Jobs started in ${month}`, fmt.int(sum('total')), 'neutral', jobs(''), 'total'),
      stat(`Running, started in ${month}`, fmt.int(sum('running')), 'running', jobs('running'), 'running'),
      stat(`Failed, started in ${month}`, fmt.int(sum('failed')), 'failed', jobs('failed'), 'failed'),
      stat(`Stalled, started in ${month}`, fmt.int(sum('stalled')), 'stalled', jobs('stalled'), 'stalled'),
      ...(revenue
        ? [...money.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([cur, amt]) => stat(
          `Revenue ${month} · ${cur}`, fmt.money(amt, cur), 'neutral', `#/billing?period=${period}`, `revenue-${cur}`))
        : [stat(`Revenue ${month}`, '—', 'neutral', '#/billing', 'revenue')]));
  }

  function renderTable(cat, counts, revenue) {
    if (!cat.clients.length) {
      replace(tableHost, empty('No clients yet', 'Add one with: stepledger client add ID --name NAME'));
      return;
    }
    const rows = cat.clients.map((c, i) => ({ client: c, counts: counts[i], revenue: revenue ? revenue.get(c.client_id) : undefined }));
    rows.sort((a, b) => (b.counts.failed + b.counts.stalled) - (a.counts.failed + a.counts.stalled)
      || b.counts.total - a.counts.total);
    const q = (id, extra = '') => `#/jobs?client=${encodeURIComponent(id)}&month=${period}${extra}`;
    replace(tableHost, card({ id: 'clients-title', title: 'Clients' },
      h('div', { class: 'table-wrap' }, h('table', { class: 'table table-clients responsive-table' },
        tableHead(
          'Client',
          { label: `Jobs ${fmt.periodShort(period)}`, class: 'num' },
          { label: 'Running', class: 'num' },
          { label: 'Failed', class: 'num' },
          { label: 'Stalled', class: 'num' },
          { label: `Revenue ${fmt.periodShort(period)}`, class: 'num' }),
        h('tbody', rows.map(({ client, counts: c, revenue: r }) => h('tr', { dataset: { client: client.client_id } },
          h('th', { scope: 'row', 'data-label': 'Client' },
            h('a', { href: q(client.client_id) }, client.name),
            h('span', { class: 'muted small block mono' }, client.client_id)),
          h('td', { class: 'num', 'data-label': 'Jobs' }, fmt.int(c.total)),
          h('td', { class: 'num', 'data-label': 'Running' }, fmt.int(c.running)),
          h('td', { class: 'num', 'data-label': 'Failed' }, c.failed
            ? h('a', { href: q(client.client_id, '&status=failed'), class: 'num-alert' }, h('span', { 'aria-hidden': 'true' }, '✕ '), fmt.int(c.failed))
            : '0'),
          h('td', { class: 'num', 'data-label': 'Stalled' }, c.stalled
            ? h('a', { href: q(client.client_id, '&status=stalled'), class: 'num-warn' }, h('span', { 'aria-hidden': 'true' }, '◷ '), fmt.int(c.stalled))
            : '0'),
          h('td', { class: 'num', 'data-label': 'Revenue' }, revenue === null ? '—'
            : h('a', { href: `#/billing?period=${period}&client=${encodeURIComponent(client.client_id)}` },
              fmt.money(r ? r.amount : 0, r ? r.currency : client.currency))))))))));
  }

  load();
}
