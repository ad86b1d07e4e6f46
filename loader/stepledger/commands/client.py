"""`stepledger client add|update|list`: clients, the billed organisations."""

from __future__ import annotations

import argparse

from stepledger import StepledgerError
from stepledger.commands import add_group, print_rows
from stepledger.db import connect_owner
from stepledger.operator import catalog


def register(subparsers: argparse._SubParsersAction) -> None:
    client_sub = add_group(subparsers, "client", "manage clients (billed organisations)")
    p = client_sub.add_parser("add", help="add a new client (an existing id is refused)")
    p.add_argument("client_id", metavar="ID", help="slug events carry in client_id, e.g. st-mary")
    p.add_argument("--name", required=True, help="display name")
    p.add_argument("--currency", default="EUR", help="ISO 4217 code (default EUR)")
    p.add_argument("--payment-terms", type=int, metavar="DAYS",
                   help="days from an invoice's issue date to its due date (default 30)")
    p.set_defaults(func=cmd_client_add)
    p = client_sub.add_parser(
        "update", help="change a client's name, currency or payment terms",
        description="Change an existing client. The currency can change only while nothing is "
                    "billed in the old one (no own prices, minimums, open or finalized invoices).")
    p.add_argument("client_id", metavar="ID")
    p.add_argument("--name", help="new display name")
    p.add_argument("--currency", help="new ISO 4217 code")
    p.add_argument("--payment-terms", type=int, metavar="DAYS",
                   help="days from an invoice's issue date to its due date")
    p.set_defaults(func=cmd_client_update)
    p = client_sub.add_parser("list", help="list clients")
    p.set_defaults(func=cmd_client_list)


def _client_line(row: dict[str, object]) -> str:
    return (f"{row['client_id']} ({row['name']}, {row['currency']}, "
            f"payment terms {row['payment_terms_days']} days)")


def cmd_client_add(args: argparse.Namespace) -> int:
    return _change_client(args, "create", " added")


def cmd_client_update(args: argparse.Namespace) -> int:
    if args.name is None and args.currency is None and args.payment_terms is None:
        raise StepledgerError("nothing to change: give --name, --currency or --payment-terms")
    return _change_client(args, "update", "")


def _change_client(args: argparse.Namespace, change: str, done: str) -> int:
    with connect_owner() as conn:
        row = catalog.change_client(conn, change, args.client_id, args.name, args.currency,
                                    args.payment_terms)
    print(f"stepledger: client {_client_line(row)}{done}")
    return 0


def cmd_client_list(args: argparse.Namespace) -> int:
    return print_rows(catalog.clients, lambda client_id, currency, terms, name:
                      f"{client_id:<24} {currency}  {terms:>3} days  {name}")


