// Admin API tokens for pipelines: create (the token is shown once), list, revoke.

import { ApiError, describeError } from '../api.js';
import { badge, confirmDialog, empty, errorBox, loading, pageHeader, timeEl, toast, unavailable } from '../components.js';
import { apiTokens, catalog, createApiToken, revokeApiToken } from '../data.js';
import { field, h, replace, select, setFieldError } from '../dom.js';
import * as fmt from '../format.js';

const ALL_CLIENTS = '*';

export function render(main, ctx) {
  let cat = null;
  const listHost = h('div', { class: 'table-host', 'aria-busy': 'true' }, loading('Loading tokens…'));
  const formHost = h('div', { class: 'form-host' });
  const revealHost = h('div', { class: 'reveal-host' });

  replace(main, h('div', { class: 'page page-tokens' },
    pageHeader('API tokens', 'Pipelines send their events with an API token. Each token writes for one client, or for every client.'),
    revealHost,
    h('div', { class: 'grid-prices' },
      formHost,
      h('section', { class: 'card', 'aria-labelledby': 'tokens-title' },
        h('div', { class: 'card-header' }, h('h2', { id: 'tokens-title' }, 'Tokens')),
        listHost))));

  async function start() {
    try {
      cat = await catalog();
      renderForm();
      await loadList();
    } catch (err) {
      if (!ctx.signal.aborted) replace(listHost, errorBox(err, { retry: start }));
    }
  }

  async function loadList() {
    listHost.setAttribute('aria-busy', 'true');
    try {
      const rows = await apiTokens();
      if (ctx.signal.aborted) return;
      renderList(rows);
    } catch (err) {
      if (ctx.signal.aborted) return;
      replace(listHost, err instanceof ApiError && err.missingEndpoint
        ? unavailable('API token management') : errorBox(err, { title: 'Could not load the tokens', retry: loadList }));
    } finally {
      listHost.setAttribute('aria-busy', 'false');
    }
  }

  function renderList(rows) {
    if (!rows.length) {
      replace(listHost, empty('No API tokens yet', 'Create one with the form, then give it to the pipeline that sends events.'));
      return;
    }
    replace(listHost, h('div', { class: 'table-wrap' }, h('table', { class: 'table table-tokens responsive-table' },
      h('thead', h('tr',
        h('th', { scope: 'col' }, 'Name'),
        h('th', { scope: 'col' }, 'Writes for'),
        h('th', { scope: 'col' }, 'Created'),
        h('th', { scope: 'col' }, 'Last used'),
        h('th', { scope: 'col' }, 'Status'),
        h('th', { scope: 'col' }, h('span', { class: 'visually-hidden' }, 'Actions')))),
      h('tbody', rows.map((t) => {
        const active = t.active ?? !t.revoked_at;
        return h('tr', { dataset: { token: t.token_id }, class: active ? '' : 'row-muted' },
          h('th', { scope: 'row', 'data-label': 'Name' }, t.name, h('span', { class: 'muted small block mono' }, String(t.token_id).slice(0, 8))),
          h('td', { 'data-label': 'Writes for' }, t.client_id ? cat.clientName(t.client_id) : h('span', { class: 'tag' }, 'All clients')),
          h('td', { 'data-label': 'Created' }, timeEl(t.created_at, { format: fmt.dateTimeShort }), t.created_by ? h('span', { class: 'muted small block' }, t.created_by) : null),
          h('td', { 'data-label': 'Last used' }, t.last_used_at ? timeEl(t.last_used_at, { relative: true }) : h('span', { class: 'muted' }, 'Never')),
          h('td', { 'data-label': 'Status' }, active ? badge('active') : [badge('revoked'), h('span', { class: 'muted small block' }, timeEl(t.revoked_at))]),
          h('td', { class: 'cell-actions', 'data-label': '' }, active
            ? h('button', { type: 'button', class: 'btn btn-danger-ghost btn-small', 'aria-label': `Revoke token ${t.name}`, onClick: () => revoke(t) }, 'Revoke')
            : null));
      })))));
  }

  async function revoke(t) {
    const ok = await confirmDialog({
      title: 'Revoke this token?',
      text: `“${t.name}” stops working at once: a pipeline still using it will have its events refused.`,
      confirmLabel: 'Revoke token',
      danger: true,
    });
    if (!ok) return;
    try {
      await revokeApiToken(t.token_id);
      toast(`Token “${t.name}” revoked`, 'success');
      await loadList();
    } catch (err) {
      toast(describeError(err).message, 'error');
    }
  }

  function renderForm() {
    const nameInput = h('input', { type: 'text', name: 'name', maxlength: '200', autocomplete: 'off', required: true, placeholder: 'e.g. St Mary GPU node 1' });
    // No default: a token for every client is a deliberate choice, never what an untouched form sends.
    const clientSel = select([{ value: '', label: 'Choose a client…' },
      ...cat.clients.map((c) => ({ value: c.client_id, label: c.name })),
      { value: ALL_CLIENTS, label: 'Every client (writes for all of them)' }], '', { name: 'client_id', required: true });
    const messages = h('div', { class: 'form-messages', 'aria-live': 'polite' });
    const submit = h('button', { type: 'submit', class: 'btn btn-primary' }, 'Create token');
    const form = h('form', { class: 'form', novalidate: true },
      messages,
      field('Name', nameInput, { hint: 'Who uses it: a site, a host or a service.' }),
      field('Writes for', clientSel, { hint: 'A token for one client can only send that client’s events.' }),
      h('p', { class: 'muted small' }, 'Scope: ingest (send events). The token does not expire; revoke it when it is no longer used.'),
      h('div', { class: 'form-actions' }, submit));
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      replace(messages);
      const name = nameInput.value.trim();
      const problems = [
        [nameInput, name ? null : 'Give the token a name.'],
        [clientSel, clientSel.value ? null : 'Choose the client this token writes for, or every client.'],
      ];
      for (const [control, message] of problems) setFieldError(control, message);
      const first = problems.find(([, m]) => m);
      if (first) { first[0].focus(); return; }
      submit.disabled = true;
      try {
        const answer = await createApiToken({ client_id: clientSel.value === ALL_CLIENTS ? null : clientSel.value, name });
        clientSel.value = '';
        reveal(answer, name);
        nameInput.value = '';
        await loadList();
      } catch (err) {
        const d = describeError(err);
        replace(messages, h('div', { class: 'alert alert-error', role: 'alert' },
          h('p', { class: 'alert-title' }, 'The token was not created'), h('p', d.message),
          d.hint ? h('p', { class: 'muted' }, `Hint: ${d.hint}`) : null));
      } finally {
        submit.disabled = false;
      }
    });
    replace(formHost, h('section', { class: 'card', 'aria-labelledby': 'new-token-title' },
      h('div', { class: 'card-header' }, h('h2', { id: 'new-token-title' }, 'New token')), form));
  }

  function reveal(answer, name) {
    const area = h('textarea', { class: 'token-value mono', readonly: true, rows: '4', id: 'new-token-value', spellcheck: 'false' });
    area.value = answer.token;
    const copyBtn = h('button', { type: 'button', class: 'btn btn-primary btn-small', onClick: async () => {
      try {
        await navigator.clipboard.writeText(answer.token);
        copyBtn.textContent = 'Copied';
      } catch {
        area.select();
        copyBtn.textContent = 'Press Ctrl+C to copy';
      }
    } }, 'Copy token');
    replace(revealHost, h('section', { class: 'alert alert-success token-reveal', role: 'region', 'aria-labelledby': 'reveal-title' },
      h('h2', { id: 'reveal-title', class: 'alert-title', tabindex: '-1' }, `Token “${name}” created`),
      h('p', h('strong', 'Copy it now: it is shown only this once.'), ' The server keeps only a fingerprint of it.'),
      h('label', { for: 'new-token-value', class: 'visually-hidden' }, 'The new token'),
      area,
      h('div', { class: 'form-actions' }, copyBtn,
        h('button', { type: 'button', class: 'btn btn-secondary btn-small', onClick: () => replace(revealHost) }, 'Done, I stored it'))));
    revealHost.querySelector('#reveal-title').focus();
  }

  start();
}
