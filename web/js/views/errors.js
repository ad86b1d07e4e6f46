// Admin error hotspots: failures by step and by site, and the top error codes.

import { ApiError } from '../api.js';
import { barList, columns } from '../charts.js';
import { card, empty, loading, loadInto, pageHeader, queryFilters, tableHead, timeEl, toast } from '../components.js';
import { analyticsFreshness, catalog, errorCodes, errorsByDay, errorStats, errorsBySource, jobsByDay, refreshAnalytics } from '../data.js';
import { field, h, replace, select } from '../dom.js';
import * as fmt from '../format.js';

const MAX_AGE_S = 600;
const WINDOWS = [
  { value: '7', label: 'Last 7 days' },
  { value: '30', label: 'Last 30 days' },
  { value: '90', label: 'Last 90 days' },
  { value: 'all', label: 'All time' },
];

function utcDaysAgo(days) {
  const now = new Date();
  const d = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate() - days));
  return d.toISOString().slice(0, 10);
}

export function render(main, ctx) {
  let state = read(ctx.query);
  let cat = null;

  function read(query) {
    return {
      window: WINDOWS.some((w) => w.value === query.window) ? query.window : '30',
      client: query.client || '',
    };
  }

  const windowSel = select(WINDOWS, state.window, { name: 'window' });
  const clientSel = select([{ value: '', label: 'All clients' }], state.client, { name: 'client' });
  const freshness = h('p', { class: 'muted small freshness' });
  const refreshBtn = h('button', { type: 'button', class: 'btn btn-secondary btn-small', onClick: refreshNow }, 'Refresh statistics');
  const content = h('div', { class: 'errors-content', 'aria-busy': 'true' }, loading('Loading error statistics…'));

  replace(main, h('div', { class: 'page page-errors' },
    pageHeader('Error hotspots', 'Where steps fail: by step, by site and by error code.'),
    h('form', { class: 'filters filters-inline', 'aria-label': 'Error statistics window', onSubmit: (e) => e.preventDefault() },
      field('Period', windowSel), field('Client', clientSel),
      h('div', { class: 'filters-actions' }, refreshBtn)),
    freshness,
    content));

  async function refreshNow() {
    refreshBtn.disabled = true;
    try {
      await refreshAnalytics(0);
      toast('Statistics refreshed');
      await load();
    } catch (err) {
      toast(err instanceof ApiError ? err.message : 'Could not refresh', 'error');
    } finally {
      refreshBtn.disabled = false;
    }
  }

  // Statistics come from materialized views: refresh them first when they were never computed or
  // are more than ten minutes old (admins may; the refresh runs concurrently with reads).
  async function ensureFresh() {
    try {
      const rows = await analyticsFreshness();
      const oldest = rows.length ? Math.max(...rows.map((r) => Number(r.age_s) || 0)) : Infinity;
      if (oldest > MAX_AGE_S) {
        replace(content, loading('Updating the statistics…'));
        await refreshAnalytics(MAX_AGE_S);
      }
    } catch (err) {
      if (err instanceof ApiError && (err.missingEndpoint || err.status === 403)) return;
      throw err;
    }
  }

  function load() {
    return loadInto(content, { fetch: statistics, render: (parts) => renderAll(...parts), signal: ctx.signal,
      missing: 'Error statistics', title: 'Could not load the error statistics', retry: load });
  }

  async function statistics() {
    if (!cat) {
      cat = await catalog();
      for (const c of cat.clients) clientSel.append(h('option', { value: c.client_id, selected: c.client_id === state.client }, c.name));
    }
    await ensureFresh();
    const args = {
      since: state.window === 'all' ? null : utcDaysAgo(Number(state.window) - 1),
      until: null,
      client: state.client || null,
    };
    // Trends: per UTC day over the window (all time: the last 90 days).
    const days = { ...args, since: args.since || utcDaysAgo(89) };
    const [steps, sites, codes, failuresByDay, startedByDay] = await Promise.all([
      errorStats(args), errorsBySource(args), errorCodes(args), errorsByDay(days), jobsByDay(days)]);
    return [steps, sites, codes, trends(failuresByDay, startedByDay, days.since)];
  }

  /** The jobs list filtered to the failures behind a bar or a row (POST /rpc/search_jobs). */
  function drill(extra) {
    const q = new URLSearchParams({ status: '', ...extra });
    if (state.window !== 'all') q.set('failed_since', `${utcDaysAgo(Number(state.window) - 1)}T00:00:00Z`);
    if (state.client) q.set('client', state.client);
    for (const [k, v] of [...q.entries()]) if (!v) q.delete(k);
    return `#/jobs?${q.toString()}`;
  }

  /** Failures per day and jobs started per day, one column per UTC day. */
  function trends(failuresByDay, startedByDay, since) {
    const failures = new Map();
    for (const r of failuresByDay) failures.set(r.day, (failures.get(r.day) || 0) + Number(r.failures || 0));
    const dayName = (day) => fmt.date(`${day}T12:00:00Z`);
    const dayShort = (day) => String(Number(day.slice(8, 10)));
    const every = Math.max(1, Math.ceil(startedByDay.length / 10));
    const failureItems = startedByDay.map((r) => ({
      key: r.day, label: dayShort(r.day), name: dayName(r.day), value: failures.get(r.day) || 0,
      text: `${fmt.int(failures.get(r.day) || 0)} failed attempts`, tone: 'failed',
    }));
    const jobItems = startedByDay.map((r) => ({
      key: r.day, label: dayShort(r.day), name: dayName(r.day), value: Number(r.started),
      text: `${fmt.int(r.started)} jobs started, ${fmt.int(r.failed)} failed`,
    }));
    return h('div', { class: 'grid-2' },
      card({ id: 'failures-day-title', title: 'Failures per day',
        aside: h('span', { class: 'muted small' }, `since ${fmt.date(`${since}T12:00:00Z`)} (UTC days)`) },
        columns(failureItems, { label: 'Failed attempts per day', values: 'none', labelEvery: every })),
      card({ id: 'jobs-day-title', title: 'Jobs per day',
        aside: h('span', { class: 'muted small' }, 'jobs started each UTC day') },
        columns(jobItems, { label: 'Jobs started per day', values: 'none', labelEvery: every })));
  }

  function renderAll(steps, sites, codes, trendCharts) {
    const refreshed = steps.find((s) => s.refreshed_at)?.refreshed_at;
    replace(freshness, refreshed ? ['Statistics as of ', timeEl(refreshed, { format: fmt.dateTimeFull })] : '');
    const failing = steps.filter((s) => Number(s.failures) > 0)
      .sort((a, b) => b.failures - a.failures || a.step_index - b.step_index);
    const totalFailures = steps.reduce((n, s) => n + Number(s.failures || 0), 0);
    const totalAttempts = steps.reduce((n, s) => n + Number(s.attempts || 0), 0);
    if (!totalFailures) {
      replace(content, empty('No failures in this period', totalAttempts
        ? `${fmt.int(totalAttempts)} step attempts finished, none failed.` : 'No step finished in this period.'), trendCharts);
      return;
    }

    const byStep = barList(failing.map((s) => ({
      label: cat.stepTitle(s.pipeline, s.step),
      value: Number(s.failures),
      note: `${fmt.percent(s.failure_rate)} of ${fmt.int(s.attempts)} attempts · mostly ${s.top_error_code || '—'}`,
      tone: Number(s.failure_rate) >= 0.05 ? 'failed' : 'warn',
      href: drill({ pipeline: s.pipeline, error_step: s.step }),
    })), { label: 'Failures by step', valueText: (v) => `${fmt.int(v)} failures` });

    const siteRows = sites.filter((s) => Number(s.failures) > 0).sort((a, b) => b.failures - a.failures);
    const bySite = barList(siteRows.map((s) => ({
      label: `${s.source || 'unknown site'} · ${cat.clientName(s.client_id)}`,
      value: Number(s.failures),
      note: `${fmt.percent(s.failure_rate)} of ${fmt.int(s.attempts)} attempts · mostly ${s.top_error_code || '—'}`
        + (s.top_error_step ? ` at ${cat.anyStepTitle(s.top_error_step)}` : ''),
      tone: Number(s.failure_rate) >= 0.05 ? 'failed' : 'warn',
      href: drill({ client: s.client_id, error_source: s.source || '' }),
    })), { label: 'Failures by site', valueText: (v) => `${fmt.int(v)} failures` });

    const topCodes = [...codes].sort((a, b) => b.failures - a.failures).slice(0, 15);
    // Two pipelines (even of one title) can have a step of the same title: then each row names
    // its pipeline by key, so that no two links read the same and go to different jobs.
    const manyPipelines = new Set(topCodes.map((c) => c.pipeline)).size > 1;
    const stepName = (c) => {
      const title = cat.stepTitle(c.pipeline, c.step);
      return manyPipelines ? `${title} (${c.pipeline})` : title;
    };
    const codesTable = h('div', { class: 'table-wrap' }, h('table', { class: 'table table-codes responsive-table' },
      tableHead(
        'Error code',
        'Step',
        { label: 'Failures', class: 'num' },
        { label: 'Clients', class: 'num' },
        'Last seen',
        'Latest message'),
      h('tbody', topCodes.map((c) => h('tr',
        h('td', { 'data-label': 'Error code' }, c.error_code
          ? h('a', { href: drill({ pipeline: c.pipeline, error_step: c.step, error_code: c.error_code }), 'aria-label': `Jobs that failed with ${c.error_code} at ${stepName(c)}` },
            h('code', { class: 'error-code' }, c.error_code))
          : '—'),
        h('td', { 'data-label': 'Step' }, stepName(c)),
        h('td', { class: 'num', 'data-label': 'Failures' }, fmt.int(c.failures),
          c.share !== null && c.share !== undefined ? h('span', { class: 'muted small block' }, `${fmt.percent(c.share)} of the step’s`) : null),
        h('td', { class: 'num', 'data-label': 'Clients' }, fmt.int(c.clients)),
        h('td', { 'data-label': 'Last seen' }, timeEl(c.last_at, { relative: true })),
        h('td', { class: 'cell-message', 'data-label': 'Latest message' }, c.sample_message || '—'))))));

    replace(content,
      h('div', { class: 'stat-grid' },
        h('div', { class: 'stat stat-failed' }, h('span', { class: 'stat-value' }, fmt.int(totalFailures)), h('span', { class: 'stat-label' }, 'Failed attempts')),
        h('div', { class: 'stat stat-neutral' }, h('span', { class: 'stat-value' }, fmt.percent(totalAttempts ? totalFailures / totalAttempts : 0)), h('span', { class: 'stat-label' }, 'Failure rate')),
        h('div', { class: 'stat stat-neutral' }, h('span', { class: 'stat-value' }, fmt.int(codes.length)), h('span', { class: 'stat-label' }, 'Distinct error codes'))),
      h('div', { class: 'grid-2' },
        card({ id: 'by-step-title', title: 'By step' }, byStep),
        card({ id: 'by-site-title', title: 'By site' },
          siteRows.length ? bySite : empty('No failures by site', ''))),
      card({ id: 'codes-title', title: 'Top error codes' }, codesTable),
      trendCharts);
  }

  load();
  return queryFilters(ctx, { window: windowSel, client: clientSel }, (query) => (state = read(query)), load);
}
