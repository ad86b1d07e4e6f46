"""`stepledger analytics refresh`: recompute error statistics and step timings."""

from __future__ import annotations

import argparse
import time

from stepledger import StepledgerError
from stepledger.commands import add_group
from stepledger.db import call, connect_owner
from stepledger.settings import Settings


def register(subparsers: argparse._SubParsersAction) -> None:
    sub = add_group(subparsers, "analytics", "error statistics and step timings")
    p = sub.add_parser("refresh", help="refresh the analytics views (concurrently: reads go on)")
    p.add_argument("--max-age", type=float, default=0, metavar="SECONDS",
                   help="leave views refreshed less than SECONDS ago alone (default 0)")
    p.add_argument("--every", type=float, default=None, metavar="SECONDS",
                   help="keep refreshing every SECONDS until interrupted (for a service)")
    p.set_defaults(func=cmd_refresh)


def refresh_once(settings: Settings, max_age_s: float) -> dict[str, object]:
    with connect_owner(settings) as conn:
        result = call(conn, "select ledger.refresh_analytics(make_interval(secs => %s))",
                      [max_age_s])
    if not isinstance(result, dict):
        raise StepledgerError("refresh_analytics returned no result")
    return result


def cmd_refresh(args: argparse.Namespace) -> int:
    if args.max_age < 0 or (args.every is not None and args.every <= 0):
        raise StepledgerError("--max-age must be >= 0 and --every > 0")
    settings = Settings.from_env()
    while True:
        result = refresh_once(settings, args.max_age)
        views = result.get("refreshed") or []
        done = ", ".join(f"{v['view']} ({v['rows']} rows, {v['duration_ms']} ms)"  # type: ignore[index]
                         for v in views)  # type: ignore[union-attr]
        reason = result.get("skipped")
        print(f"stepledger: analytics refreshed: {done or 'nothing'}"
              + (f" ({reason})" if reason else ""), flush=True)
        if args.every is None:
            return 0
        time.sleep(args.every)

