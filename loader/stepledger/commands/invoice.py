"""`stepledger invoice CLIENT YYYY-MM`: a client's invoice for a month, shown or finalized."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from stepledger import StepledgerError
from stepledger.db import connect_operator
from stepledger.operator.billing import invoice as invoices
from stepledger.operator.billing import prices
from stepledger.operator.billing.documents import render_missing


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("invoice", help="show (or finalize) a client's invoice for a month",
                              description="Show a client's invoice for a month (the draft until "
                                          "the month is finalized) as JSON, CSV, HTML or PDF; "
                                          "the PDF prints the HTML view.")
    p.add_argument("client_id", metavar="CLIENT")
    p.add_argument("period", metavar="PERIOD", help="calendar month YYYY-MM (UTC)")
    p.add_argument("--format", choices=invoices.FORMATS, default="json")
    p.add_argument("--output", "-o", type=Path, metavar="FILE", help="write here, not stdout")
    p.add_argument("--finalize", action="store_true",
                   help="freeze the invoice of a finished period (irreversible)")
    p.set_defaults(func=cmd_invoice)


def cmd_invoice(args: argparse.Namespace) -> int:
    if args.format == "pdf" and args.output is None and sys.stdout.isatty():
        raise StepledgerError("a PDF is binary: give --output FILE.pdf (or redirect stdout)")
    with connect_operator("invoice") as conn:
        prices.parse_month(conn, args.period)
        if args.finalize:
            document = invoices.finalize(conn, args.client_id, args.period)
            # The PDF the client downloads, rendered now rather than by the scheduler.
            render_missing(conn, client_id=args.client_id, period=args.period)
        else:
            document = invoices.fetch(conn, args.client_id, args.period)
        name = invoices.client_name(conn, args.client_id)
    content: str | bytes = (invoices.render_pdf(document, name) if args.format == "pdf"
                            else invoices.render(document, args.format, name))
    if args.output is not None:
        try:
            if isinstance(content, bytes):
                args.output.write_bytes(content)
            else:
                args.output.write_text(content)
        except OSError as exc:
            raise StepledgerError(f"{args.output}: {exc.strerror}") from None
        number = f" {document['invoice_no']}" if document.get("invoice_no") else ""
        print(f"stepledger: {document['status']} invoice{number} of {args.client_id} for "
              f"{args.period}: {document['total']} {document['currency']} written to "
              f"{args.output}", file=sys.stderr)
    elif isinstance(content, bytes):
        sys.stdout.buffer.write(content)
    else:
        sys.stdout.write(content)
    return 0


