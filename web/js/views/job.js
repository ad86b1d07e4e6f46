// One job: its state, the failing step's error first, then a timeline of every step and attempt.

import { badge, card, empty, jobBadge, loading, loadInto, progressBar, timeEl } from '../components.js';
import { catalog, jobDetail } from '../data.js';
import { h, replace } from '../dom.js';
import * as fmt from '../format.js';

function seconds(a, b) {
  if (!a || !b) return null;
  return (Date.parse(b) - Date.parse(a)) / 1000;
}

export function render(main, ctx) {
  const { client, job: jobId } = ctx.params;
  const body = h('div', { class: 'job-body', 'aria-busy': 'true' }, loading('Loading the job…'));
  // Live whatever the state: a failed job may be retried, a completed one replayed.
  const live = ctx.live(() => load({ quiet: true }));
  const liveSlot = h('div', { class: 'page-actions' }, live);
  replace(main, h('div', { class: 'page page-job' },
    h('p', { class: 'breadcrumb' }, h('a', { href: backToList() }, h('span', { 'aria-hidden': 'true' }, '← '), 'All jobs')),
    h('div', { class: 'page-header' },
      h('div', { class: 'page-heading' },
        h('h1', { id: 'page-title', tabindex: '-1', class: 'mono job-title' }, jobId),
        h('p', { class: 'muted page-subtitle', id: 'job-subtitle' }, ctx.isAdmin ? client : '')),
      liveSlot),
    body));
  ctx.setTitle(`Job ${jobId}`);

  function load({ quiet = false } = {}) {
    return loadInto(body, {
      fetch: () => Promise.all([jobDetail(client, jobId), catalog()]),
      render: ([detail, cat]) => {
        if (!detail) {
          replace(body, empty('Job not found',
            'There is no job with this id that you can see. Check the link, or go back to the list of jobs.'));
          return;
        }
        const subtitle = main.querySelector('#job-subtitle');
        const pipeline = cat.pipeline(detail.job.pipeline);
        subtitle.textContent = [pipeline ? pipeline.title : detail.job.pipeline,
          ctx.isAdmin ? cat.clientName(detail.job.client_id) : null].filter(Boolean).join(' · ');
        renderDetail(detail, pipeline);
      },
      signal: ctx.signal, title: 'Could not load this job', retry: () => load(),
      busy: !quiet, keep: quiet ? '.timeline' : null,
    });
  }

  function renderDetail({ job, steps, span, failing, failingRun }, pipeline) {
    const end = span?.end || job.finished_at || job.updated_at;
    const attempts = steps.reduce((n, s) => n + s.runs.length, 0);
    const sources = [...new Set(steps.flatMap((s) => s.runs.map((r) => r.source)).filter(Boolean))];

    const summary = h('section', { class: 'card job-summary', 'aria-label': 'Summary' },
      h('div', { class: 'job-summary-top' },
        jobBadge(job),
        h('span', { class: 'job-progress-label' }, `${fmt.percent(job.progress ?? job.steps_done / job.steps_total)} done`)),
      progressBar(job.steps_done, job.steps_total, { status: job.status, name: 'Progress of this job' }),
      h('dl', { class: 'facts' },
        fact('Started', timeEl(job.started_at, { format: fmt.dateTime })),
        fact(job.finished_at ? 'Finished' : 'Last activity',
          job.finished_at ? timeEl(job.finished_at) : timeEl(job.updated_at, { relative: true })),
        fact(job.finished_at ? 'Duration' : 'Running for', fmt.duration(job.duration_s)),
        fact('Steps run', `${fmt.int(steps.filter((s) => s.runs.length).length)} · ${fmt.int(attempts)} ${attempts === 1 ? 'attempt' : 'attempts'}`),
        sources.length ? fact(sources.length > 1 ? 'Sites' : 'Site', sources.join(', ')) : null));

    const alerts = [];
    if (failing && failingRun) {
      alerts.push(h('section', { class: 'alert alert-error failure', role: 'region', 'aria-labelledby': 'failure-title' },
        h('h2', { id: 'failure-title', class: 'alert-title' },
          `Failed at step ${failing.step_index} of ${job.steps_total}: ${failing.title}`),
        h('p', { class: 'failure-error' },
          failingRun.error_code ? h('code', { class: 'error-code' }, failingRun.error_code) : null,
          ' ', failingRun.error_message || job.last_error || 'No error message was sent.'),
        h('p', { class: 'muted small' },
          `Attempt ${failingRun.attempt}`,
          failingRun.finished_at ? [' · ', timeEl(failingRun.finished_at, { format: fmt.dateTimeFull })] : null,
          failingRun.source ? ` · ${failingRun.source}` : null,
          job.retry_expected ? ' · retryable: a new attempt is expected' : null),
        h('p', h('a', { href: `#step-${failing.step}`, class: 'small', onClick: (e) => {
          e.preventDefault();
          const target = document.getElementById(`step-${failing.step}`);
          if (target) { target.scrollIntoView({ block: 'center' }); target.focus(); }
        } }, 'Show this step in the timeline'))));
    } else if (job.status === 'stalled') {
      const timeout = pipeline?.stall_timeout_s;
      alerts.push(h('section', { class: 'alert alert-warning', role: 'region', 'aria-label': 'Stalled' },
        h('h2', { class: 'alert-title' }, 'No news from this job'),
        h('p', `The last event arrived ${fmt.relative(job.updated_at)}.`,
          timeout ? ` A job counts as stalled after ${fmt.duration(timeout)} without an event.` : '')));
    }

    const spanStart = Date.parse(span?.start || job.started_at);
    const spanEnd = Math.max(Date.parse(end), spanStart + 1000);
    const timeline = h('ol', { class: 'timeline', 'aria-label': 'Steps' },
      steps.map((s) => stepItem(s, spanStart, spanEnd, s === failing)));

    replace(body, ...alerts, summary,
      card({ id: 'timeline-title', title: 'Step timeline',
        aside: h('span', { class: 'muted small' }, `${job.steps_done} of ${job.steps_total} steps done`) },
        timeline));
  }

  function stepItem(s, spanStart, spanEnd, isFailing) {
    const span = spanEnd - spanStart;
    const last = s.runs[s.runs.length - 1];
    const dur = last ? (last.duration_s ?? (last.state === 'running' ? seconds(last.started_at, new Date().toISOString()) : null)) : null;
    const bars = h('div', { class: 'gantt', 'aria-hidden': 'true' }, s.runs.filter((r) => r.started_at).map((r) => {
      const a = Date.parse(r.started_at);
      const b = r.ended_at ? Date.parse(r.ended_at) : (r.state === 'running' ? spanEnd : a);
      const left = Math.max(0, Math.min(100, ((a - spanStart) / span) * 100));
      const width = Math.max(0.8, Math.min(100 - left, ((b - a) / span) * 100));
      return h('span', { class: `gantt-bar gantt-${r.state}`, style: { left: `${left}%`, width: `${width}%` } });
    }));
    const showRuns = s.runs.length > 1 || s.state === 'failed';
    return h('li', {
      class: ['timeline-step', `step-${s.state}`, isFailing && 'step-failing'],
      id: `step-${s.step}`, tabindex: '-1',
    },
    h('div', { class: 'step-marker', 'aria-hidden': 'true' }, String(s.step_index)),
    h('div', { class: 'step-main' },
      h('div', { class: 'step-head' },
        h('span', { class: 'step-title' }, h('span', { class: 'visually-hidden' }, `Step ${s.step_index}: `), s.title,
          ' ', h('code', { class: 'step-key', title: 'Step key, as the pipeline sends it' }, s.step)),
        badge(s.state)),
      h('div', { class: 'step-meta muted small' },
        last ? [timeEl(last.started_at || last.finished_at, { format: fmt.time }),
          dur !== null ? ` · ${fmt.duration(dur)}` : '',
          s.runs.length > 1 ? ` · ${s.runs.length} attempts` : '',
          last.units !== null && last.units !== undefined && last.status === 'completed' ? ` · ${fmt.int(last.units)} ${Number(last.units) === 1 ? 'unit' : 'units'}` : '']
          : s.state === 'not_run' ? 'Not run: the job ended before this step' : 'Not started yet'),
      s.runs.length ? bars : null,
      showRuns ? h('ul', { class: 'attempts' }, s.runs.map((r) => h('li', { class: `attempt attempt-${r.state}` },
        h('span', { class: 'attempt-head' }, `Attempt ${r.attempt}`, ' ', badge(r.state)),
        h('span', { class: 'muted small' }, ' ', timeEl(r.started_at, { format: fmt.time }),
          r.duration_s !== null && r.duration_s !== undefined ? ` · ${fmt.duration(r.duration_s)}` : '',
          r.source ? ` · ${r.source}` : ''),
        r.error_code || r.error_message
          ? h('p', { class: 'attempt-error' }, r.error_code ? h('code', { class: 'error-code' }, r.error_code) : null,
            ' ', r.error_message || '')
          : null))) : null));
  }

  load();
}

/** The jobs list as the user left it (filters, page), else the plain list. */
function backToList() {
  try {
    const last = sessionStorage.getItem('stepledger.lastJobs');
    if (last && last.startsWith('#/jobs')) return last;
  } catch {
    // storage unavailable: the plain list
  }
  return '#/jobs';
}

function fact(label, value) {
  return h('div', { class: 'fact' }, h('dt', label), h('dd', value));
}
