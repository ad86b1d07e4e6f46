// Reusable pieces of the interface: status badges, progress bars, loading, empty and error
// states, loading a part of a page, paging, toasts, actions, form checks, confirmation dialogs,
// secrets shown once and file downloads.

import { ApiError, describeError } from './api.js';
import { h, replace, setFieldError } from './dom.js';
import * as fmt from './format.js';

// Every status carries an icon and a word, never colour alone.
export const STATUS = {
  running: { label: 'Running', icon: '▶' },
  completed: { label: 'Completed', icon: '✓' },
  failed: { label: 'Failed', icon: '✕' },
  stalled: { label: 'Stalled', icon: '◷' },
  started: { label: 'Running', icon: '▶' },
  skipped: { label: 'Skipped', icon: '↷' },
  pending: { label: 'Pending', icon: '○' },
  not_run: { label: 'Not run', icon: '–' },
  abandoned: { label: 'Abandoned', icon: '–' },
  draft: { label: 'Draft', icon: '✎' },
  finalized: { label: 'Finalized', icon: '▣' },
  active: { label: 'Active', icon: '●' },
  revoked: { label: 'Revoked', icon: '⊘' },
};

export function badge(status, { label } = {}) {
  const key = STATUS[status] ? status : 'pending';
  const info = STATUS[key] || { label: status, icon: '•' };
  return h('span', { class: `badge badge-${key === 'started' ? 'running' : key}` },
    h('span', { class: 'badge-icon', 'aria-hidden': 'true' }, info.icon),
    h('span', { class: 'badge-label' }, label || info.label));
}

/** A job's status badge: a failure the pipeline marked retryable reads "Failed · retry expected"
 * (api.jobs.retry_expected); the status itself stays failed. */
export function jobBadge(job) {
  return job.status === 'failed' && job.retry_expected
    ? badge('failed', { label: 'Failed · retry expected' })
    : badge(job.status);
}

/** A progress bar; `name` is its accessible name (e.g. "Progress of job X"). */
export function progressBar(done, total, { status, label, name = 'Progress' } = {}) {
  const pct = total > 0 ? Math.max(0, Math.min(1, done / total)) : 0;
  const text = label || `${done} of ${total} steps`;
  return h('div', { class: `progress progress-${status || 'running'}` },
    h('div', {
      class: 'progress-track', role: 'progressbar', 'aria-label': name,
      'aria-valuemin': '0', 'aria-valuemax': String(total),
      'aria-valuenow': String(done), 'aria-valuetext': `${text} (${Math.round(pct * 100)}%)`,
    }, h('div', { class: 'progress-fill', style: { width: `${(pct * 100).toFixed(1)}%` } })),
    h('span', { class: 'progress-text' }, text));
}

/** <time> with the user's local rendering and the full timestamp on hover. */
export function timeEl(value, { relative = false, format = fmt.dateTime } = {}) {
  if (!value) return h('span', { class: 'muted' }, '—');
  return h('time', { datetime: fmt.iso(value), title: fmt.dateTimeFull(value) },
    relative ? fmt.relative(value) : format(value));
}

export function loading(text = 'Loading…') {
  return h('div', { class: 'state state-loading', role: 'status' },
    h('span', { class: 'spinner', 'aria-hidden': 'true' }), h('span', text));
}

export function empty(title, text, action) {
  return h('div', { class: 'state state-empty' },
    h('div', { class: 'state-icon', 'aria-hidden': 'true' }, '○'),
    h('p', { class: 'state-title' }, title),
    text ? h('p', { class: 'muted' }, text) : null,
    action || null);
}

/** A readable error box: the message, PostgREST's hint and (unless `details` is false) its
 * details when they help. */
export function errorBox(err, { title = 'Could not load this', retry, details = true } = {}) {
  const d = describeError(err);
  return h('div', { class: 'alert alert-error', role: 'alert' },
    h('p', { class: 'alert-title' }, title),
    h('p', d.message),
    d.hint ? h('p', { class: 'muted' }, `Hint: ${d.hint}`) : null,
    details && d.details ? h('p', { class: 'muted small' }, d.details) : null,
    retry ? h('button', { type: 'button', class: 'btn btn-secondary', onClick: retry }, 'Try again') : null);
}

export function unavailable(what) {
  return h('div', { class: 'alert alert-info', role: 'status' },
    h('p', { class: 'alert-title' }, `${what} is not available on this server yet`),
    h('p', 'The server does not offer this part of the API. Ask your administrator to update stepledger.'));
}

/** What a part of a page shows when it could not be loaded: "not available on this server" when
 * the server has no such endpoint (`missing` names the part), else an error box with a retry. */
export function loadFailure(err, { missing, title, retry } = {}) {
  return missing && err instanceof ApiError && err.missingEndpoint
    ? unavailable(missing) : errorBox(err, { title, retry });
}

/** Load a part of a page into `host`: render(await fetch()) unless the page was left meanwhile
 * (`signal`), else loadFailure(). The host is aria-busy while it loads, unless `busy` is false.
 * A live refresh passes `keep`, the selector of what the host shows once loaded: when it fails
 * while the host shows that, it stays, and the error goes back to the caller (the live indicator). */
export async function loadInto(host, { fetch, render, signal, missing, title, retry, busy = true, keep }) {
  if (busy) host.setAttribute('aria-busy', 'true');
  try {
    const result = await fetch();
    if (!signal.aborted) render(result);
  } catch (err) {
    if (signal.aborted) return;
    if (keep && host.querySelector(keep)) throw err;
    replace(host, loadFailure(err, { missing, title, retry }));
  } finally {
    if (busy) host.setAttribute('aria-busy', 'false');
  }
}

/** Run what the user asked for: `button` (if any) is disabled meanwhile, and a failure is shown
 * as an error toast. */
export async function act(action, button = null) {
  if (button) button.disabled = true;
  try {
    await action();
  } catch (err) {
    toast(describeError(err).message, 'error');
  } finally {
    if (button) button.disabled = false;
  }
}

/** Check a form: each [control, message] pair marks its control (a null message: fine) and the
 * first wrong control gets the focus. True when every control is fine. */
export function checkFields(problems) {
  for (const [control, message] of problems) setFieldError(control, message);
  const first = problems.find(([, message]) => message);
  if (first) first[0].focus();
  return !first;
}

/** A table's <thead>: one column heading each, given as its label, as { label, class } (e.g.
 * class 'num' for figures) or as { hidden } for a heading only screen readers need (a column of
 * buttons); null leaves the column out. */
export function tableHead(...columns) {
  return h('thead', h('tr', columns.map((c) => {
    if (c === null || c === undefined) return null;
    if (typeof c !== 'object') return h('th', { scope: 'col' }, c);
    if (c.hidden) return h('th', { scope: 'col' }, h('span', { class: 'visually-hidden' }, c.hidden));
    return h('th', { scope: 'col', class: c.class }, c.label);
  })));
}

/** "Showing 1–25 of 120" with previous/next buttons. */
export function pager({ offset, limit, total, shown, onPage }) {
  const from = shown ? offset + 1 : 0;
  const to = offset + shown;
  const hasPrev = offset > 0;
  const hasNext = total === null ? shown === limit : to < total;
  const text = total === null ? `Showing ${from}–${to}` : `Showing ${fmt.int(from)}–${fmt.int(to)} of ${fmt.int(total)}`;
  return h('nav', { class: 'pager', 'aria-label': 'Pages' },
    h('span', { class: 'pager-text', 'aria-live': 'polite' }, text),
    h('div', { class: 'pager-buttons' },
      h('button', { type: 'button', class: 'btn btn-secondary', disabled: !hasPrev,
        onClick: () => onPage(Math.max(0, offset - limit)) }, h('span', { 'aria-hidden': 'true' }, '‹ '), 'Previous'),
      h('button', { type: 'button', class: 'btn btn-secondary', disabled: !hasNext,
        onClick: () => onPage(offset + limit) }, 'Next', h('span', { 'aria-hidden': 'true' }, ' ›'))));
}

/** A short message that fades out; announced to screen readers. */
export function toast(message, kind = 'info') {
  const host = document.getElementById('toasts');
  if (!host) return;
  const node = h('div', { class: `toast toast-${kind}`, role: kind === 'error' ? 'alert' : 'status' }, message);
  host.append(node);
  setTimeout(() => node.classList.add('toast-out'), 4000);
  setTimeout(() => node.remove(), 4600);
}

/** A modal confirmation (native <dialog>): resolves true when confirmed. */
export function confirmDialog({ title, text, confirmLabel = 'Confirm', danger = false }) {
  return new Promise((resolve) => {
    const dialog = h('dialog', { class: 'dialog', 'aria-labelledby': 'dialog-title' },
      h('form', { method: 'dialog' },
        h('h2', { id: 'dialog-title' }, title),
        h('p', text),
        h('div', { class: 'form-actions' },
          h('button', { value: 'cancel', class: 'btn btn-secondary' }, 'Cancel'),
          h('button', { value: 'confirm', class: `btn ${danger ? 'btn-danger' : 'btn-primary'}` }, confirmLabel))));
    document.body.append(dialog);
    dialog.addEventListener('close', () => {
      resolve(dialog.returnValue === 'confirm');
      dialog.remove();
    });
    dialog.showModal();
    dialog.querySelector('button[value="cancel"]').focus();
  });
}

/** A secret shown once in `host` (a new API token, a signing secret), with a copy button and a
 * "Done" button that removes it; the heading takes the focus. */
export function revealOnce(host, { value, id, titleId, rows, title, note, label, copyLabel, kind = '' }) {
  const area = h('textarea', { class: 'token-value mono', readonly: true, rows, id, spellcheck: 'false' });
  area.value = value;
  const copyBtn = h('button', { type: 'button', class: 'btn btn-primary btn-small', onClick: async () => {
    try {
      await navigator.clipboard.writeText(value);
      copyBtn.textContent = 'Copied';
    } catch {
      area.select();
      copyBtn.textContent = 'Press Ctrl+C to copy';
    }
  } }, copyLabel);
  replace(host, h('section', { class: `alert alert-success token-reveal${kind ? ` ${kind}` : ''}`, role: 'region', 'aria-labelledby': titleId },
    h('h2', { id: titleId, class: 'alert-title', tabindex: '-1' }, title),
    h('p', h('strong', 'Copy it now: it is shown only this once.'), ` ${note}`),
    h('label', { for: id, class: 'visually-hidden' }, label),
    area,
    h('div', { class: 'form-actions' }, copyBtn,
      h('button', { type: 'button', class: 'btn btn-secondary btn-small', onClick: () => replace(host) }, 'Done, I stored it'))));
  host.querySelector(`#${titleId}`).focus();
}

/** Offer a Blob or string as a file download. */
export function download(filename, content, type = 'text/csv;charset=utf-8') {
  const blob = content instanceof Blob ? content : new Blob([content], { type });
  const url = URL.createObjectURL(blob);
  const a = h('a', { href: url, download: filename, hidden: true });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

/** RFC 4180 CSV from rows of objects. */
export function toCsv(columns, rows) {
  const cell = (v) => {
    if (v === null || v === undefined) return '';
    const text = String(v);
    return /[",\r\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
  };
  const lines = [columns.map(cell).join(',')];
  for (const row of rows) lines.push(columns.map((c) => cell(row[c])).join(','));
  return `${lines.join('\r\n')}\r\n`;
}

/** A card: a <section> named by its <h2> (`id`, `title`), with `aside` (a note, a button, a small
 * form) beside the title, then the body. */
/** Filters that live in the URL query: changing a control ({ key: select }) sets the query, and
 * the view's `update` (called by the router with the new query) reads it with read(query), shows
 * it in the controls and loads again. Returns that view object. */
export function queryFilters(ctx, controls, read, load) {
  const entries = Object.entries(controls);
  const onChange = () => ctx.setQuery(Object.fromEntries(entries.map(([key, control]) => [key, control.value])));
  for (const [, control] of entries) control.addEventListener('change', onChange);
  return {
    update(query) {
      const state = read(query);
      for (const [key, control] of entries) control.value = state[key];
      load();
    },
  };
}

export function card({ id, title, aside = null }, ...body) {
  return h('section', { class: 'card', 'aria-labelledby': id },
    h('div', { class: 'card-header' }, h('h2', { id }, title), aside),
    ...body);
}

/** Page heading with an optional trailing area (actions, live indicator). */
export function pageHeader(title, subtitle, ...aside) {
  return h('div', { class: 'page-header' },
    h('div', { class: 'page-heading' },
      h('h1', { id: 'page-title', tabindex: '-1' }, title),
      subtitle ? h('p', { class: 'muted page-subtitle' }, subtitle) : null),
    aside.length ? h('div', { class: 'page-actions' }, aside) : null);
}

/** A small "Live · updated 14:05:10" indicator. */
export function liveIndicator() {
  const text = h('span', { class: 'live-text' }, 'Live');
  const node = h('span', { class: 'live', title: 'This page refreshes by itself' },
    h('span', { class: 'live-dot', 'aria-hidden': 'true' }), text);
  return {
    node,
    update(when, ok = true) {
      node.classList.toggle('live-stale', !ok);
      text.textContent = ok ? `Live · updated ${fmt.time(when)}` : 'Reconnecting…';
    },
  };
}
