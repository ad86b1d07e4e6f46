// Jobs: counts per state, filters, a page of jobs with progress bars, live refresh.
// Clients see their own jobs (row-level security); admins see every client's and can filter by client.

import { empty, errorBox, jobBadge, loading, pageHeader, pager, progressBar, tableHead, timeEl } from '../components.js';
import { catalog, DRILL_KEYS, jobCounts, JOB_SORTS, listJobs } from '../data.js';
import { field, h, replace, select } from '../dom.js';
import * as fmt from '../format.js';

const PAGE_SIZE = 25;
const STATUS_OPTIONS = [
  { value: '', label: 'All jobs' },
  { value: 'open', label: 'Not completed' },
  { value: 'failed', label: 'Failed only' },
  { value: 'running', label: 'Running' },
  { value: 'stalled', label: 'Stalled' },
  { value: 'completed', label: 'Completed' },
];
const SORT_OPTIONS = [
  { value: 'activity', label: 'Last activity' },
  { value: 'started', label: 'Started, newest first' },
  { value: 'duration', label: 'Duration, longest first' },
  { value: 'retries', label: 'Retries, most first' },
];
const COUNT_CHIPS = [
  { status: '', key: 'total', label: 'All' },
  { status: 'running', key: 'running', label: 'Running' },
  { status: 'stalled', key: 'stalled', label: 'Stalled' },
  { status: 'failed', key: 'failed', label: 'Failed' },
  { status: 'completed', key: 'completed', label: 'Completed' },
];

export function jobHref(clientId, jobId) {
  return `#/jobs/${encodeURIComponent(clientId)}/${encodeURIComponent(jobId)}`;
}

function readFilters(query) {
  return {
    status: query.status || '',
    pipeline: query.pipeline || '',
    client: query.client || '',
    from: query.from || '',
    to: query.to || '',
    q: query.q || '',
    month: /^\d{4}-\d{2}$/.test(query.month || '') ? query.month : '',
    sort: JOB_SORTS[query.sort] ? query.sort : '',
    ...Object.fromEntries(DRILL_KEYS.map((k) => [k, query[k] || ''])),
    page: Math.max(1, Number.parseInt(query.page, 10) || 1),
  };
}

export function render(main, ctx) {
  let filters = readFilters(ctx.query);
  let cat = null;
  let loadSeq = 0;
  let lastCounts = null;

  const live = ctx.live(() => load({ quiet: true }));
  const subtitle = ctx.isAdmin ? 'Every client’s jobs, most recently active first.' : 'Your analysis jobs, most recently active first.';
  const countsHost = h('div', { class: 'counts', role: 'group', 'aria-label': 'Jobs per state' });
  const announcer = h('p', { class: 'visually-hidden', 'aria-live': 'polite' });
  const listHost = h('div', { class: 'list-host', 'aria-busy': 'true' }, loading('Loading jobs…'));

  // -- filter form --
  const statusSel = select(STATUS_OPTIONS, filters.status, { name: 'status' });
  const pipelineSel = select([{ value: '', label: 'All pipelines' }], filters.pipeline, { name: 'pipeline' });
  const clientSel = ctx.isAdmin ? select([{ value: '', label: 'All clients' }], filters.client, { name: 'client' }) : null;
  const fromInput = h('input', { type: 'date', name: 'from', value: filters.from });
  const toInput = h('input', { type: 'date', name: 'to', value: filters.to });
  const search = h('input', {
    type: 'search', name: 'q', value: filters.q, placeholder: 'The first characters', autocomplete: 'off',
    spellcheck: 'false',
  });
  const errorSearch = h('input', {
    type: 'search', name: 'error_text', value: filters.error_text, placeholder: 'e.g. GPU_OOM or out of memory',
    autocomplete: 'off', spellcheck: 'false', maxlength: '200',
  });
  const sortSel = select(SORT_OPTIONS, filters.sort || 'activity', { name: 'sort' });
  const clearBtn = h('button', { type: 'button', class: 'btn btn-ghost', onClick: () => apply({}, true) }, 'Clear filters');
  const form = h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter jobs' },
    field('Status', statusSel),
    field('Pipeline', pipelineSel),
    clientSel ? field('Client', clientSel) : null,
    field('Started from', fromInput),
    field('Started until', toInput),
    field('Job ID starts with', search),
    field('Error code or message', errorSearch),
    field('Sort by', sortSel),
    h('div', { class: 'filters-actions' }, clearBtn));
  form.addEventListener('submit', (e) => { e.preventDefault(); apply(formValues()); });
  for (const control of [statusSel, pipelineSel, clientSel, fromInput, toInput, sortSel].filter(Boolean)) {
    control.addEventListener('change', () => apply(formValues()));
  }
  let searchTimer = null;
  for (const input of [search, errorSearch]) {
    input.addEventListener('input', () => {
      clearTimeout(searchTimer);
      searchTimer = setTimeout(() => apply(formValues()), 350);
    });
  }
  ctx.onCleanup(() => clearTimeout(searchTimer));

  function formValues() {
    return {
      status: statusSel.value, pipeline: pipelineSel.value, client: clientSel ? clientSel.value : '',
      from: fromInput.value, to: toInput.value, q: search.value.trim(),
      // the month comes from a link (the overview); a date typed in the form replaces it
      month: fromInput.value || toInput.value ? '' : filters.month,
      sort: sortSel.value === 'activity' ? '' : sortSel.value,
      // drill-downs come from links (error hotspots, invoice lines) and stay until cleared
      ...Object.fromEntries(DRILL_KEYS.filter((k) => k !== 'error_text' && filters[k]).map((k) => [k, filters[k]])),
      error_text: errorSearch.value.trim(),
    };
  }

  function apply(next, resetForm = false) {
    const query = { ...next };
    delete query.page;
    if (next.page && next.page > 1) query.page = String(next.page);
    if (resetForm) {
      statusSel.value = ''; pipelineSel.value = ''; if (clientSel) clientSel.value = '';
      fromInput.value = ''; toInput.value = ''; search.value = ''; errorSearch.value = '';
      sortSel.value = 'activity';
    }
    ctx.setQuery(query);
  }

  const filtersDetails = h('details', { class: 'filters-panel', open: window.matchMedia('(min-width: 760px)').matches },
    h('summary', 'Filters'), form);

  const monthNote = h('p', { class: 'muted small month-note' });
  const drillNote = h('div', { class: 'drill-note', role: 'status' });
  replace(main, h('div', { class: 'page page-jobs' },
    pageHeader('Jobs', subtitle, live),
    monthNote,
    drillNote,
    countsHost,
    filtersDetails,
    announcer,
    listHost));

  // -- data --
  async function load({ quiet = false } = {}) {
    const seq = ++loadSeq;
    try {
      sessionStorage.setItem('stepledger.lastJobs', window.location.hash);
    } catch {
      // the back link then goes to the plain list
    }
    if (!quiet) {
      listHost.setAttribute('aria-busy', 'true');
      if (!listHost.querySelector('table')) replace(listHost, loading('Loading jobs…'));
      else listHost.classList.add('is-refreshing');
    }
    try {
      if (!cat) {
        cat = await catalog();
        fillSelects();
      }
      const offset = (filters.page - 1) * PAGE_SIZE;
      // Row-level security keeps a client to its own jobs; naming its client as well lets a
      // Citus cluster read them from the one worker that holds them, not from every shard.
      const scoped = ctx.isAdmin ? filters : { ...filters, client: ctx.session.client_id };
      const [page, counts] = await Promise.all([
        listJobs(scoped, { offset, limit: PAGE_SIZE }),
        jobCounts(scoped),
      ]);
      if (seq !== loadSeq || ctx.signal.aborted) return;
      replace(monthNote, filters.month ? `Jobs started in ${fmt.period(filters.month)} (UTC).` : '');
      renderDrill();
      renderCounts(counts);
      renderList(page, offset);
    } catch (err) {
      if (seq !== loadSeq || ctx.signal.aborted) return;
      if (quiet && listHost.querySelector('table')) throw err; // keep the last good list; live shows it
      replace(listHost, errorBox(err, { title: 'Could not load the jobs', retry: () => load() }));
    } finally {
      if (seq === loadSeq) {
        listHost.setAttribute('aria-busy', 'false');
        listHost.classList.remove('is-refreshing');
      }
    }
  }

  function fillSelects() {
    for (const p of cat.pipelines) {
      pipelineSel.append(h('option', { value: p.pipeline, selected: p.pipeline === filters.pipeline }, p.title));
    }
    if (clientSel) {
      for (const c of cat.clients) {
        clientSel.append(h('option', { value: c.client_id, selected: c.client_id === filters.client }, c.name));
      }
    }
  }

  /** What a drill-down shows, in words, with a way back to the whole list. */
  function renderDrill() {
    const parts = [];
    const stepTitle = (step) => (cat ? cat.anyStepTitle(step) : step);
    if (filters.error_code) parts.push(['failed with ', h('code', { class: 'error-code' }, filters.error_code)]);
    if (filters.error_step) parts.push(`failed at ${stepTitle(filters.error_step)}`);
    if (filters.error_source) parts.push(`failed at site ${filters.error_source}`);
    if (filters.failed_since || filters.failed_until) {
      parts.push(`failure ${filters.failed_since ? `from ${fmt.date(filters.failed_since)}` : ''}${filters.failed_until ? ` until ${fmt.date(filters.failed_until)}` : ''}`.trim());
    }
    if (filters.billed_period) {
      parts.push(`${filters.billed_step ? stepTitle(filters.billed_step) : 'a step'} billed in ${fmt.period(filters.billed_period)}`);
    }
    if (!parts.length) { replace(drillNote); return; }
    const clear = Object.fromEntries(Object.entries(formValues()).filter(([k]) => !DRILL_KEYS.includes(k) || k === 'error_text'));
    replace(drillNote, h('p', { class: 'alert alert-info drill-text' },
      h('span', 'Jobs that '), parts.flatMap((p, i) => (i ? [' · ', p] : [p])), ' ',
      h('button', { type: 'button', class: 'btn btn-ghost btn-small', onClick: () => apply(clear) }, 'Show all jobs')));
  }

  function renderCounts(counts) {
    const active = ['', 'running', 'stalled', 'failed', 'completed'].includes(filters.status) ? filters.status : null;
    replace(countsHost, COUNT_CHIPS.map((chip) => h('button', {
      type: 'button',
      class: ['count-chip', chip.status && `count-${chip.status}`],
      'aria-pressed': String(active === chip.status),
      onClick: () => apply({ ...formValues(), status: chip.status }),
    },
    h('span', { class: 'count-value', dataset: { state: chip.key } }, fmt.int(counts[chip.key] ?? 0)),
    h('span', { class: 'count-label' }, chip.label))));
    const summary = `${fmt.int(counts.running)} running, ${fmt.int(counts.stalled)} stalled, ${fmt.int(counts.failed)} failed, ${fmt.int(counts.completed)} completed`;
    if (lastCounts !== null && lastCounts !== summary) announcer.textContent = `Jobs updated: ${summary}.`;
    lastCounts = summary;
  }

  function renderList({ rows, total }, offset) {
    if (!rows.length) {
      const filtered = Object.entries(filters).some(([k, v]) => k !== 'page' && v);
      replace(listHost, filtered
        ? empty('No jobs match these filters', 'Try a wider date range or clear the filters.',
          h('button', { type: 'button', class: 'btn btn-secondary', onClick: () => apply({}, true) }, 'Clear filters'))
        : empty('No jobs yet', 'Jobs appear here as soon as a pipeline sends its first event.'));
      return;
    }
    const table = h('table', { class: 'table table-jobs responsive-table' },
      h('caption', { class: 'visually-hidden' }, 'Jobs'),
      tableHead(
        'Job',
        ctx.isAdmin ? 'Client' : null,
        'Status',
        { label: 'Progress', class: 'col-progress' },
        'Started',
        { label: 'Duration', class: 'num' },
        { label: 'Retries', class: 'num' },
        'Last activity'),
      h('tbody', rows.map((job) => jobRow(job))));
    replace(listHost, table, pager({
      offset, limit: PAGE_SIZE, total, shown: rows.length,
      onPage: (nextOffset) => apply({ ...formValues(), page: Math.floor(nextOffset / PAGE_SIZE) + 1 }),
    }));
  }

  function jobRow(job) {
    const pipelineTitle = cat?.pipeline(job.pipeline)?.title || job.pipeline;
    const problem = job.status === 'failed' && job.last_error
      ? h('p', { class: 'row-problem' }, h('span', { class: 'visually-hidden' }, 'Error: '),
        job.last_error_step ? `${cat?.stepTitle(job.pipeline, job.last_error_step) || job.last_error_step}: ` : '',
        job.last_error)
      : job.status === 'stalled'
        ? h('p', { class: 'row-problem row-problem-warn' }, `No event since ${fmt.relative(job.updated_at)}`)
        : null;
    return h('tr', { class: `job-row job-${job.status}`, dataset: { job: job.job_id, client: job.client_id } },
      h('td', { class: 'cell-job', 'data-label': 'Job' },
        h('a', { href: jobHref(job.client_id, job.job_id), class: 'job-link mono' }, job.job_id),
        cat && cat.pipelines.length > 1 ? h('span', { class: 'muted small block' }, pipelineTitle) : null,
        problem),
      ctx.isAdmin ? h('td', { 'data-label': 'Client' }, cat?.clientName(job.client_id) || job.client_id) : null,
      h('td', { 'data-label': 'Status' }, jobBadge(job)),
      h('td', { class: 'col-progress', 'data-label': 'Progress' },
        progressBar(job.steps_done, job.steps_total, { status: job.status, name: `Progress of job ${job.job_id}` })),
      h('td', { 'data-label': 'Started' }, timeEl(job.started_at, { format: fmt.dateTimeShort })),
      h('td', { class: 'num cell-duration', 'data-label': 'Duration' }, fmt.duration(job.duration_s)),
      h('td', { class: 'num cell-retries', 'data-label': 'Retries' }, fmt.int(job.retries ?? 0)),
      h('td', { 'data-label': 'Last activity' }, timeEl(job.updated_at, { relative: true })));
  }

  load();

  return {
    update(query) {
      filters = readFilters(query);
      statusSel.value = filters.status;
      pipelineSel.value = filters.pipeline;
      if (clientSel) clientSel.value = filters.client;
      fromInput.value = filters.from;
      toInput.value = filters.to;
      if (document.activeElement !== search) search.value = filters.q;
      if (document.activeElement !== errorSearch) errorSearch.value = filters.error_text;
      sortSel.value = filters.sort || 'activity';
      load();
    },
  };
}
