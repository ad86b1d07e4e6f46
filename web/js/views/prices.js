// Admin price book: every price row (never edited in place) and a form to add an effective-dated
// price for a step, as the default or for one client. Whether a row is in force, scheduled or
// superseded is GET /prices' `state` (the billing rule, per pipeline, step, client and currency).

import { card, checkFields, empty, errorBox, loading, loadInto, pageHeader, tableHead, timeEl, toast } from '../components.js';
import { addPrice, catalog, prices } from '../data.js';
import { field, h, replace, select } from '../dom.js';
import * as fmt from '../format.js';

const PRICE_RE = /^\d{1,9}(\.\d{1,6})?$/;

function nowLocalInput() {
  const d = new Date();
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
}

export function render(main, ctx) {
  let cat = null;
  let filter = { pipeline: ctx.query.pipeline || '', client: ctx.query.client || '', all: ctx.query.all === '1' };
  const listHost = h('div', { class: 'table-host', 'aria-busy': 'true' }, loading('Loading prices…'));
  const formHost = h('div', { class: 'form-host' });

  const fPipeline = select([{ value: '', label: 'All pipelines' }], filter.pipeline, { name: 'pipeline' });
  const fClient = select([{ value: '', label: 'Defaults and all clients' }, { value: '-', label: 'Defaults only' }], filter.client, { name: 'client' });
  const fAll = h('input', { type: 'checkbox', name: 'all', checked: filter.all });
  const onFilter = () => ctx.setQuery({ pipeline: fPipeline.value, client: fClient.value, all: fAll.checked ? '1' : '' });
  for (const c of [fPipeline, fClient, fAll]) c.addEventListener('change', onFilter);

  replace(main, h('div', { class: 'page page-prices' },
    pageHeader('Price book', 'Unit prices per pipeline step. A change is a new row from a date on, so past invoices stay explainable.'),
    h('div', { class: 'grid-prices' },
      formHost,
      card({ id: 'prices-title', title: 'Prices' },
        h('form', { class: 'filters filters-inline', 'aria-label': 'Filter prices', onSubmit: (e) => e.preventDefault() },
          field('Pipeline', fPipeline), field('Applies to', fClient),
          h('div', { class: 'field field-check' }, h('label', {}, fAll, ' Show superseded prices'))),
        listHost))));

  // The catalog first (the filters and the form list its pipelines and clients), then the list.
  const start = () => loadInto(listHost, {
    fetch: catalog, signal: ctx.signal, retry: start, busy: false,
    render: (loaded) => {
      cat = loaded;
      for (const p of cat.pipelines) fPipeline.append(h('option', { value: p.pipeline, selected: p.pipeline === filter.pipeline }, p.title));
      for (const c of cat.clients) fClient.append(h('option', { value: c.client_id, selected: c.client_id === filter.client }, c.name));
      renderForm();
      return loadList();
    },
  });

  function loadList() {
    return loadInto(listHost, { fetch: prices, render: renderList, signal: ctx.signal,
      missing: 'The price book', title: 'Could not load the prices', retry: loadList });
  }

  function renderList(all) {
    const rows = all.filter((r) => (!filter.pipeline || r.pipeline === filter.pipeline)
      && (!filter.client || (filter.client === '-' ? r.client_id === null : r.client_id === filter.client || r.client_id === null))
      && (filter.all || r.state !== 'superseded'));
    if (!rows.length) {
      replace(listHost, empty('No prices yet', 'Add the first price with the form. Completed steps without a price are billed at 0 and listed as unpriced.'));
      return;
    }
    const stepOrder = (r) => cat.pipeline(r.pipeline)?.steps.find((s) => s.step === r.step)?.step_index ?? 999;
    rows.sort((a, b) => a.pipeline.localeCompare(b.pipeline) || stepOrder(a) - stepOrder(b)
      || String(a.client_id ?? '').localeCompare(String(b.client_id ?? ''))
      || a.currency.localeCompare(b.currency)
      || Date.parse(b.effective_from) - Date.parse(a.effective_from));
    replace(listHost, h('div', { class: 'table-wrap' }, h('table', { class: 'table table-prices responsive-table' },
      tableHead('Step', 'Applies to', { label: 'Unit price', class: 'num' }, 'From', 'State'),
      h('tbody', rows.map((r) => h('tr', { class: `price-${r.state.replace(' ', '-')}`, dataset: { pipeline: r.pipeline, step: r.step, client: r.client_id ?? '', currency: r.currency } },
        h('td', { 'data-label': 'Step' }, h('span', { class: 'block' }, cat.stepTitle(r.pipeline, r.step)),
          cat.pipelines.length > 1 ? h('span', { class: 'muted small' }, cat.pipeline(r.pipeline)?.title || r.pipeline) : null,
          r.note ? h('span', { class: 'muted small block' }, r.note) : null),
        h('td', { 'data-label': 'Applies to' }, r.client_id ? cat.clientName(r.client_id) : h('span', { class: 'tag' }, 'Default')),
        h('td', { class: 'num', 'data-label': 'Unit price' }, fmt.unitPrice(r.unit_price, r.currency)),
        h('td', { 'data-label': 'From' }, timeEl(r.effective_from, { format: fmt.dateTimeShort })),
        h('td', { 'data-label': 'State' }, h('span', { class: `tag tag-${r.state.replace(' ', '-')}` }, r.state))))))));
  }

  function renderForm() {
    const pipelineSel = select(cat.pipelines.map((p) => ({ value: p.pipeline, label: p.title })), cat.pipelines[0]?.pipeline, { name: 'pipeline', required: true });
    const stepSel = h('select', { name: 'step', required: true });
    const clientSel = select([{ value: '', label: 'Default (every client)' },
      ...cat.clients.map((c) => ({ value: c.client_id, label: c.name }))], '', { name: 'client_id' });
    const priceInput = h('input', { type: 'text', name: 'unit_price', inputmode: 'decimal', autocomplete: 'off', placeholder: '0.00', required: true });
    const currencyInput = h('input', { type: 'text', name: 'currency', value: 'EUR', maxlength: '3', autocomplete: 'off', required: true, class: 'input-short', spellcheck: 'false' });
    const fromInput = h('input', { type: 'datetime-local', name: 'effective_from', value: nowLocalInput(), required: true });
    const noteInput = h('input', { type: 'text', name: 'note', maxlength: '500', autocomplete: 'off', placeholder: 'e.g. 2027 contract' });
    const messages = h('div', { class: 'form-messages', 'aria-live': 'polite' });
    const submit = h('button', { type: 'submit', class: 'btn btn-primary' }, 'Add price');

    function fillSteps() {
      const p = cat.pipeline(pipelineSel.value);
      replace(stepSel, (p ? p.steps : []).map((s) => h('option', { value: s.step }, `${s.step_index}. ${s.title}`)));
    }
    pipelineSel.addEventListener('change', fillSteps);
    clientSel.addEventListener('change', () => {
      const c = cat.client(clientSel.value);
      if (c) currencyInput.value = c.currency;
    });
    fillSteps();

    const form = h('form', { class: 'form', novalidate: true, 'aria-labelledby': 'add-price-title' },
      messages,
      field('Pipeline', pipelineSel),
      field('Step', stepSel),
      field('Applies to', clientSel, { hint: 'A client’s own price beats the default.' }),
      h('div', { class: 'field-row' },
        field('Unit price', priceInput, { hint: 'Per unit, e.g. 0.35' }),
        field('Currency', currencyInput, { hint: 'ISO code' })),
      field('Effective from', fromInput, { hint: `In your time zone (${fmt.timeZone}). Applies to steps completed from then on.` }),
      field('Note (optional)', noteInput, { hint: 'Why this price: a contract, an offer.' }),
      h('div', { class: 'form-actions' }, submit));

    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      replace(messages);
      const price = priceInput.value.trim().replace(',', '.');
      const currency = currencyInput.value.trim().toUpperCase();
      const from = fromInput.value;
      if (!checkFields([
        [priceInput, !price ? 'Enter a unit price.' : !PRICE_RE.test(price) ? 'Use a number of 0 or more, with at most 6 decimals (e.g. 0.35).' : null],
        [currencyInput, /^[A-Z]{3}$/.test(currency) ? null : 'Use a three-letter currency code such as EUR.'],
        [fromInput, from && !Number.isNaN(new Date(from).getTime()) ? null : 'Choose the date and time the price starts.'],
        [stepSel, stepSel.value ? null : 'Choose a step.'],
      ])) return;
      submit.disabled = true;
      try {
        const row = await addPrice({
          pipeline: pipelineSel.value,
          step: stepSel.value,
          client_id: clientSel.value || null,
          unit_price: price,
          currency,
          effective_from: new Date(from).toISOString(),
          ...(noteInput.value.trim() ? { note: noteInput.value.trim() } : {}),
        });
        const what = `${cat.stepTitle(pipelineSel.value, stepSel.value)}: ${fmt.unitPrice(row?.unit_price ?? price, currency)}`;
        replace(messages, h('div', { class: 'alert alert-success', role: 'status' },
          h('p', `Price added — ${what} for ${clientSel.value ? cat.clientName(clientSel.value) : 'every client'}, from ${fmt.dateTime(new Date(from))}.`)));
        toast('Price added', 'success');
        priceInput.value = '';
        noteInput.value = '';
        await loadList();
      } catch (err) {
        replace(messages, errorBox(err, { title: 'The price was not added' }));
        messages.querySelector('.alert')?.scrollIntoView({ block: 'nearest' });
      } finally {
        submit.disabled = false;
      }
    });

    replace(formHost, card({ id: 'add-price-title', title: 'Add a price' },
      form));
  }

  start();
  return {
    update(query) {
      filter = { pipeline: query.pipeline || '', client: query.client || '', all: query.all === '1' };
      fPipeline.value = filter.pipeline;
      fClient.value = filter.client;
      fAll.checked = filter.all;
      if (cat) loadList();
    },
  };
}
