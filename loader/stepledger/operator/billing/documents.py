"""The PDF of each finalized invoice, rendered once and kept in ledger.invoice_documents, where
the invoice's client downloads it (GET /invoice_documents, row-level security). The stack's
scheduler renders new ones when a finalization notifies it; `stepledger invoice --finalize`
renders its own at once."""

from __future__ import annotations

import hashlib
import logging

import psycopg

from stepledger.db import loads
from stepledger.operator.billing.invoice import render_pdf

log = logging.getLogger("stepledger.billing.documents")
# WeasyPrint logs every rendering step at INFO; keep its warnings (missing fonts, bad CSS).
logging.getLogger("weasyprint").setLevel(logging.WARNING)
logging.getLogger("fontTools").setLevel(logging.WARNING)


def render_missing(conn: psycopg.Connection, limit: int | None = 50,
                   client_id: str | None = None, period: str | None = None) -> int:
    """Render and store the PDFs of finalized invoices that have none yet (at most `limit`, None:
    until none is missing, those finalized meanwhile included; only one client's or period's
    when given); returns how many.

    Run as the schema owner. Each invoice is claimed with FOR UPDATE SKIP LOCKED in its own
    transaction, so two renderers never render the same one twice."""
    done = 0
    while limit is None or done < limit:
        with conn.transaction():
            row = conn.execute(
                """
                select i.client_id, to_char(i.period, 'YYYY-MM')
                  from ledger.invoices i
                 where not exists (select from ledger.invoice_documents d
                                    where d.client_id = i.client_id and d.period = i.period)
                   and (%(client)s::text is null or i.client_id = %(client)s)
                   and (%(period)s::text is null or i.period = to_date(%(period)s, 'YYYY-MM'))
                 order by i.finalized_at
                 limit 1
                   for update of i skip locked""",
                {"client": client_id, "period": period}).fetchone()
            if row is None:
                break
            invoice_client, invoice_period = row
            document = loads(conn.execute("select ledger._invoice_json(%s, %s::date)::text",
                                          [invoice_client, f"{invoice_period}-01"]).fetchone()[0])
            pdf = render_pdf(document)
            conn.execute(
                """
                insert into ledger.invoice_documents (client_id, period, document, sha256,
                                                      rendered_by)
                values (%s, %s::date, %s, %s, current_setting('application_name'))
                on conflict do nothing""",
                [invoice_client, f"{invoice_period}-01", pdf, hashlib.sha256(pdf).hexdigest()])
            log.info("rendered the PDF of invoice %s (%s, %d bytes)",
                     document.get("invoice_no"), invoice_period, len(pdf))
            done += 1
    return done
