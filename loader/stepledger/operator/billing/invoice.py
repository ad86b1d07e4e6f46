"""Invoices: fetch the database's invoice document, finalize a period, render json, csv, html or
pdf. The PDF is the HTML view printed by WeasyPrint: one template for both."""

from __future__ import annotations

import csv
import io
from decimal import Decimal
from pathlib import Path
from typing import Any

import jinja2
import psycopg

from stepledger import StepledgerError
from stepledger.db import call_json, dumps

FORMATS = ("json", "csv", "html", "pdf")
TEMPLATES = Path(__file__).with_name("templates")
CSV_COLUMNS = ("client_id", "period", "status", "currency", "line_no", "kind", "for_period",
               "pipeline", "step", "units", "unit_price", "amount", "completed_steps", "priced",
               "description")
# The contract's keys first, then the rest in a stable order.
_KEY_ORDER = ("client_id", "period", "status", "currency", "invoice_no", "lines", "usage_amount",
              "minimum_amount", "adjustments_amount", "total", "unpriced_steps", "number",
              "issued_on", "due_on", "payment_terms_days", "client_name", "source",
              "generated_at", "finalized_at", "finalized_by")
_LINE_ORDER = ("line_no", "kind", "pipeline", "step", "units", "unit_price", "amount",
               "completed_steps", "priced", "for_period", "basis", "description")


def fetch(conn: psycopg.Connection, client_id: str, period: str) -> dict[str, Any]:
    """The invoice of a client for a period (YYYY-MM): the finalized one, else the draft."""
    invoice = call_json(conn, "select ledger._invoice_for_caller(%s, %s)::text",
                        [client_id, period])
    assert isinstance(invoice, dict)
    return invoice


def finalize(conn: psycopg.Connection, client_id: str, period: str) -> dict[str, Any]:
    """Freeze the invoice of a finished period; returns the finalized invoice."""
    invoice = call_json(conn, "select ledger._finalize_invoice(%s, %s)::text", [client_id, period])
    assert isinstance(invoice, dict)
    return invoice


def client_name(conn: psycopg.Connection, client_id: str) -> str:
    row = conn.execute("select name from ledger.clients where client_id = %s",
                       [client_id]).fetchone()
    return str(row[0]) if row else client_id


def _ordered(document: dict[str, Any], order: tuple[str, ...]) -> dict[str, Any]:
    keys = [k for k in order if k in document] + sorted(k for k in document if k not in order)
    return {k: document[k] for k in keys}


def render_json(invoice: dict[str, Any]) -> str:
    document = _ordered(invoice, _KEY_ORDER)
    document["lines"] = [_ordered(line, _LINE_ORDER) for line in invoice.get("lines", [])]
    return dumps(document) + "\n"


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def render_csv(invoice: dict[str, Any]) -> str:
    """One row per line, then subtotal and total rows (kind usage_amount, ..., total)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    head = {k: invoice.get(k) for k in ("client_id", "period", "status", "currency")}
    for line in invoice.get("lines", []):
        writer.writerow([_cell({**line, **head}.get(c)) for c in CSV_COLUMNS])
    for kind in ("usage_amount", "minimum_amount", "adjustments_amount", "total"):
        row = {**head, "kind": kind, "amount": invoice.get(kind)}
        writer.writerow([_cell(row.get(c)) for c in CSV_COLUMNS])
    return out.getvalue()


def _money(value: Any) -> str:
    if value is None:
        return ""
    amount = Decimal(str(value))
    return f"{amount:,.2f}"


def _number(value: Any) -> str:
    if value is None:
        return ""
    return format(Decimal(str(value)).normalize(), "f")


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES),
                             autoescape=jinja2.select_autoescape(["html", "j2"]),
                             undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True)
    env.filters["money"] = _money
    env.filters["number"] = _number
    return env


def render_html(invoice: dict[str, Any], name: str | None = None) -> str:
    lines = invoice.get("lines", [])
    template = _environment().get_template("invoice.html.j2")
    return template.render(
        invoice=invoice, client_name=name or invoice.get("client_name") or invoice["client_id"],
        usage=[ln for ln in lines if ln["kind"] == "usage"],
        minimum=[ln for ln in lines if ln["kind"] == "minimum"],
        adjustments=[ln for ln in lines if ln["kind"] == "adjustment"])


def render_pdf(invoice: dict[str, Any], name: str | None = None) -> bytes:
    """The HTML view printed to PDF (A4)."""
    import weasyprint  # imported on use: it loads Pango, which the other formats do not need

    return bytes(weasyprint.HTML(string=render_html(invoice, name), base_url=str(TEMPLATES))
                 .write_pdf())


def render(invoice: dict[str, Any], fmt: str, name: str | None = None) -> str:
    """A text format (json, csv, html); render_pdf gives the PDF's bytes."""
    if fmt == "json":
        return render_json(invoice)
    if fmt == "csv":
        return render_csv(invoice)
    if fmt == "html":
        return render_html(invoice, name)
    raise StepledgerError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
