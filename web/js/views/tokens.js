// Admin API tokens for pipelines: create (the token is shown once), list, revoke.

import { act, badge, card, checkFields, confirmDialog, empty, errorBox, loading, loadInto, pageHeader, revealOnce, tableHead, timeEl, toast } from '../components.js';
import { apiTokens, catalog, createApiToken, revokeApiToken } from '../data.js';
import { field, h, replace, select } from '../dom.js';
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
      card({ id: 'tokens-title', title: 'Tokens' },
        listHost))));

  // The catalog first (the form lists the clients), then the form and the list.
  const start = () => loadInto(listHost, {
    fetch: catalog, signal: ctx.signal, retry: start, busy: false,
    render: (loaded) => { cat = loaded; renderForm(); return loadList(); },
  });

  function loadList() {
    return loadInto(listHost, { fetch: apiTokens, render: renderList, signal: ctx.signal,
      missing: 'API token management', title: 'Could not load the tokens', retry: loadList });
  }

  function renderList(rows) {
    if (!rows.length) {
      replace(listHost, empty('No API tokens yet', 'Create one with the form, then give it to the pipeline that sends events.'));
      return;
    }
    replace(listHost, h('div', { class: 'table-wrap' }, h('table', { class: 'table table-tokens responsive-table' },
      tableHead('Name', 'Writes for', 'Created', 'Last used', 'Status', { hidden: 'Actions' }),
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
    await act(async () => {
      await revokeApiToken(t.token_id);
      toast(`Token “${t.name}” revoked`, 'success');
      await loadList();
    });
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
      if (!checkFields([
        [nameInput, name ? null : 'Give the token a name.'],
        [clientSel, clientSel.value ? null : 'Choose the client this token writes for, or every client.'],
      ])) return;
      submit.disabled = true;
      try {
        const answer = await createApiToken({ client_id: clientSel.value === ALL_CLIENTS ? null : clientSel.value, name });
        clientSel.value = '';
        reveal(answer, name);
        nameInput.value = '';
        await loadList();
      } catch (err) {
        replace(messages, errorBox(err, { title: 'The token was not created', details: false }));
      } finally {
        submit.disabled = false;
      }
    });
    replace(formHost, card({ id: 'new-token-title', title: 'New token' }, form));
  }

  function reveal(answer, name) {
    revealOnce(revealHost, {
      value: answer.token, id: 'new-token-value', titleId: 'reveal-title', rows: '4',
      title: `Token “${name}” created`, note: 'The server keeps only a fingerprint of it.',
      label: 'The new token', copyLabel: 'Copy token',
    });
  }

  start();
}
