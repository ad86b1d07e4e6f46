"""`stepledger price set|list|minimum`, `stepledger invoice`, `stepledger billing refresh|status`.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import socket
import sys
from pathlib import Path

import psycopg

from stepledger import StepledgerError
from stepledger.db import connect_owner
from stepledger.operator.billing import invoice as invoices
from stepledger.operator.billing import prices
from stepledger.operator.billing.documents import render_missing
from stepledger.operator.billing.sql import dumps, one_json
from stepledger.settings import Settings


def register(subparsers: argparse._SubParsersAction) -> None:
    price = subparsers.add_parser("price", help="the price book: set and list prices, minimums")
    price_sub = price.add_subparsers(dest="price_command", metavar="ACTION", required=True)
    p = price_sub.add_parser("set", help="add a price (a new row; earlier rows stay for history)")
    p.add_argument("pipeline", metavar="PIPELINE")
    p.add_argument("step", metavar="STEP")
    p.add_argument("unit_price", metavar="PRICE", help="price per unit, e.g. 0.05")
    p.add_argument("--client", metavar="ID", help="this client's own price (default: the default)")
    p.add_argument("--currency", metavar="C",
                   help="ISO 4217 code (default: the client's currency, EUR for defaults)")
    p.add_argument("--from", dest="effective_from", metavar="DATE",
                   help="in force from YYYY-MM-DD (UTC midnight) or an ISO 8601 instant "
                        "(default: now)")
    p.add_argument("--tier", dest="tiers", action="append", default=[], metavar="UNITS:PRICE",
                   help="graduated tier per client and month: from UNITS units on, PRICE "
                        "(repeatable, e.g. --tier 1000:0.03 --tier 10000:0.02)")
    p.add_argument("--note", help="why the price changed (kept with the row)")
    p.set_defaults(func=cmd_price_set)

    p = price_sub.add_parser("list", help="list price rows and until when each is in force")
    p.add_argument("--pipeline", metavar="PIPELINE")
    p.add_argument("--client", metavar="ID", help="defaults and this client's prices")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_price_list)

    p = price_sub.add_parser("minimum", help="set a client's monthly minimum from a month on")
    p.add_argument("client_id", metavar="CLIENT")
    p.add_argument("amount", metavar="AMOUNT", help="monthly minimum; 0 ends it")
    p.add_argument("--from", dest="month", required=True, metavar="YYYY-MM")
    p.add_argument("--currency", metavar="C", help="must be the client's currency (default)")
    p.add_argument("--note")
    p.set_defaults(func=cmd_price_minimum)

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

    billing = subparsers.add_parser("billing", help="usage materialized view: refresh, status")
    billing_sub = billing.add_subparsers(dest="billing_command", metavar="ACTION", required=True)
    p = billing_sub.add_parser("refresh", help="refresh the usage figures now")
    p.add_argument("--full", action="store_true",
                   help="plain refresh (locks readers out) instead of a concurrent one")
    p.set_defaults(func=cmd_billing_refresh)
    p = billing_sub.add_parser("status", help="when usage was last refreshed, changes since")
    p.set_defaults(func=cmd_billing_status)
    p = billing_sub.add_parser("render-pdfs",
                               help="render the PDFs of finalized invoices that have none yet "
                                    "(the stack's scheduler does it after each finalization)")
    p.set_defaults(func=cmd_billing_render_pdfs)


def _connect(action: str) -> psycopg.Connection:
    conn = connect_owner(Settings.from_env())
    # recorded_via on price rows and finalized invoices: which tool and which operator.
    conn.execute("select set_config('application_name', %s, false)",
                 [f"stepledger {action} ({getpass.getuser()}@{socket.gethostname()})"[:63]])
    return conn


def cmd_price_set(args: argparse.Namespace) -> int:
    unit_price = prices.parse_amount(args.unit_price)
    tiers = [prices.parse_tier(t) for t in args.tiers]
    effective_from = prices.parse_effective_from(args.effective_from) if args.effective_from \
        else None
    with _connect("price set") as conn:
        row = prices.set_price(conn, args.pipeline, args.step, unit_price,
                               client_id=args.client, currency=args.currency,
                               effective_from=effective_from, tiers=tiers, note=args.note)
    who = f"client {row['client_id']}" if row["client_id"] else "default"
    tiers_text = "".join(f", from {t['from_units']} units {t['unit_price']}" for t in row["tiers"])
    print(f"stepledger: price {row['price_id']}: {row['pipeline']}/{row['step']} ({who}) "
          f"{row['unit_price']} {row['currency']}{tiers_text} from {row['effective_from']}")
    return 0


def cmd_price_list(args: argparse.Namespace) -> int:
    with _connect("price list") as conn:
        rows = prices.list_prices(conn, args.pipeline, args.client)
    if args.json:
        print(dumps(rows))
        return 0
    for r in rows:
        who = r["client_id"] or "(default)"
        # A future row is scheduled, not in force; a row replaced by a later one shows until when.
        if r["status"] == "scheduled":
            until = "scheduled" + (f", until {r['until']}" if r["until"] else "")
        else:
            until = f"until {r['until']}" if r["until"] else "in force"
        tiers = " ".join(f"{t['from_units']}+:{t['unit_price']}" for t in r["tiers"])
        print(f"{r['price_id']:>6}  {r['pipeline']:<14} {r['step']:<26} {who:<14} "
              f"{r['unit_price']!s:>10} {r['currency']}  from {r['effective_from']}  {until}"
              f"{'  tiers ' + tiers if tiers else ''}")
    return 0


def cmd_price_minimum(args: argparse.Namespace) -> int:
    amount = prices.parse_amount(args.amount, "minimum")
    month = prices.parse_month(args.month)
    with _connect("price minimum") as conn:
        row = prices.set_minimum(conn, args.client_id, amount, month, currency=args.currency,
                                 note=args.note)
    print(f"stepledger: monthly minimum of {row['client_id']}: {row['monthly_minimum']} "
          f"{row['currency']} from {args.month}")
    return 0


def cmd_invoice(args: argparse.Namespace) -> int:
    prices.parse_month(args.period)
    if args.format == "pdf" and args.output is None and sys.stdout.isatty():
        raise StepledgerError("a PDF is binary: give --output FILE.pdf (or redirect stdout)")
    with _connect("invoice") as conn:
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


def cmd_billing_refresh(args: argparse.Namespace) -> int:
    with _connect("billing refresh") as conn:
        result = one_json(conn, "select ledger.refresh_usage(%s, %s)::text",
                          [f"cli: {getpass.getuser()}", not args.full])
    print(dumps(result, indent=None))
    return 0 if result and result.get("refreshed") else 4


def cmd_billing_status(args: argparse.Namespace) -> int:
    with _connect("billing status") as conn:
        result = one_json(conn, "select coalesce((select to_jsonb(f) from api.usage_freshness f),"
                                " '{}')::text", [])
    print(dumps(result, indent=None))
    return 0


def cmd_billing_render_pdfs(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    with _connect("billing render-pdfs") as conn:
        rendered = render_missing(conn, limit=None)
    print(f"stepledger: rendered {rendered} invoice PDFs")
    return 0
