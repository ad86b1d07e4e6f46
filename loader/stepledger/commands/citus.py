"""`stepledger citus-plan`: how far the schema is distributed on a Citus coordinator."""

from __future__ import annotations

import argparse
import json

from stepledger.settings import Settings
from stepledger.stack import citus


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "citus-plan",
        help="on a Citus coordinator: each tenant and catalog table, its target, and what Citus "
             "answers when asked to distribute it (tried and rolled back)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_citus_plan)


def cmd_citus_plan(args: argparse.Namespace) -> int:
    report = citus.plan(Settings.from_env())
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    for entry in report:
        print(f"{entry['table']:<24} {entry['target']:<25} now {entry['now']:<25} "
              f"{entry['answer']}")
    return 0
