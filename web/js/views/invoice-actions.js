// Invoice actions of the billing (admin) and usage (client) pages: download the PDF of a
// finalized invoice, and, for admins, finalize the invoice of a month that is over. The PDF is
// rendered on the server from the same template as `stepledger invoice --format html|pdf`.

import { ApiError, describeError, request, rpc } from '../api.js';
import { confirmDialog, download, toast } from '../components.js';
import { h } from '../dom.js';
import * as fmt from '../format.js';

/** Adds the actions to the card that showInvoice rendered in host. */
export function addInvoiceActions(host, inv, { clientId, clientName, period, admin, onFinalized }) {
  const actions = host.querySelector('.card-actions');
  if (!actions || !inv) return;
  if (inv.status === 'finalized') {
    actions.prepend(pdfButton(inv, clientId, period));
    if (inv.issued_on) {
      actions.before(h('p', { class: 'muted small invoice-dates' },
        `Issued ${fmt.date(inv.issued_on)} · due ${fmt.date(inv.due_on)} (${inv.payment_terms_days} days).`));
    }
  } else if (admin && period < fmt.currentPeriod()) {
    actions.prepend(finalizeButton(clientId, clientName, period, onFinalized));
  }
}

function pdfButton(inv, clientId, period) {
  return h('button', { type: 'button', class: 'btn btn-primary btn-small', onClick: async (e) => {
    const btn = e.currentTarget;
    btn.disabled = true;
    try {
      const { data } = await request('/rpc/invoice_pdf', { params: { client_id: clientId, period }, accept: 'application/pdf' });
      download(`${inv.invoice_no || `invoice-${clientId}-${period}`}.pdf`, data);
    } catch (err) {
      toast(err instanceof ApiError && err.status === 404
        ? 'The PDF is being prepared: try again in a few seconds.'
        : describeError(err).message, 'error');
    } finally {
      btn.disabled = false;
    }
  } }, 'Download PDF');
}

function finalizeButton(clientId, clientName, period, onFinalized) {
  return h('button', { type: 'button', class: 'btn btn-primary btn-small', onClick: async (e) => {
    const btn = e.currentTarget;
    const ok = await confirmDialog({
      title: `Finalize the invoice of ${clientName} for ${fmt.period(period)}?`,
      text: 'It gets its number, issue and due dates, and never changes again: events that arrive later for this month become adjustment lines on the next invoice.',
      confirmLabel: 'Finalize invoice',
    });
    if (!ok) return;
    btn.disabled = true;
    try {
      const inv = await rpc('finalize_invoice', { client_id: clientId, period });
      toast(`Invoice ${inv.invoice_no} finalized`, 'success');
      if (onFinalized) onFinalized(inv);
    } catch (err) {
      toast(describeError(err).message, 'error');
      btn.disabled = false;
    }
  } }, 'Finalize invoice');
}
