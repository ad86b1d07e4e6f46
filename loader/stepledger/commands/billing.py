"""`stepledger billing refresh|status|render-pdfs`: the usage figures and invoice PDFs."""

from __future__ import annotations

import argparse
import getpass
import logging

from stepledger.commands import add_group
from stepledger.db import call_json, connect_operator, dumps
from stepledger.operator.billing.documents import render_missing


def register(subparsers: argparse._SubParsersAction) -> None:
    billing_sub = add_group(subparsers, "billing", "usage lines: refresh, status")
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


def cmd_billing_refresh(args: argparse.Namespace) -> int:
    with connect_operator("billing refresh") as conn:
        result = call_json(conn, "select ledger.refresh_usage(%s, %s)::text",
                          [f"cli: {getpass.getuser()}", not args.full])
    print(dumps(result, indent=None))
    return 0 if result and result.get("refreshed") else 4


def cmd_billing_status(args: argparse.Namespace) -> int:
    with connect_operator("billing status") as conn:
        result = call_json(conn, "select coalesce((select to_jsonb(f) from api.usage_freshness f),"
                                " '{}')::text", [])
    print(dumps(result, indent=None))
    return 0


def cmd_billing_render_pdfs(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    with connect_operator("billing render-pdfs") as conn:
        rendered = render_missing(conn, limit=None)
    print(f"stepledger: rendered {rendered} invoice PDFs")
    return 0
