"""`stepledger price set|list|minimum`: the price book and monthly minimums (docs/billing.md)."""

from __future__ import annotations

import argparse

from stepledger.commands import add_group
from stepledger.db import connect_operator, dumps
from stepledger.operator.billing import prices


def register(subparsers: argparse._SubParsersAction) -> None:
    price_sub = add_group(subparsers, "price", "the price book: set and list prices, minimums")
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


def cmd_price_set(args: argparse.Namespace) -> int:
    unit_price = prices.parse_amount(args.unit_price)
    tiers = [prices.parse_tier(t) for t in args.tiers]
    effective_from = prices.parse_effective_from(args.effective_from) if args.effective_from \
        else None
    with connect_operator("price set") as conn:
        row = prices.set_price(conn, args.pipeline, args.step, unit_price,
                               client_id=args.client, currency=args.currency,
                               effective_from=effective_from, tiers=tiers, note=args.note)
    who = f"client {row['client_id']}" if row["client_id"] else "default"
    tiers_text = "".join(f", from {t['from_units']} units {t['unit_price']}" for t in row["tiers"])
    print(f"stepledger: price {row['price_id']}: {row['pipeline']}/{row['step']} ({who}) "
          f"{row['unit_price']} {row['currency']}{tiers_text} from {row['effective_from']}")
    return 0


def cmd_price_list(args: argparse.Namespace) -> int:
    with connect_operator("price list") as conn:
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
    with connect_operator("price minimum") as conn:
        month = prices.parse_month(conn, args.month)
        row = prices.set_minimum(conn, args.client_id, amount, month, currency=args.currency,
                                 note=args.note)
    print(f"stepledger: monthly minimum of {row['client_id']}: {row['monthly_minimum']} "
          f"{row['currency']} from {args.month}")
    return 0


