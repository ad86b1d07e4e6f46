"""`stepledger demo`: load the BotImage demo into the running local stack."""

from __future__ import annotations

import argparse

from stepledger.demo.pipeline import load_demo
from stepledger.settings import Settings


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("demo", help="load the BotImage demo (pipeline, clients, jobs, "
                                           "logins) into the stack")
    p.add_argument("--jobs", type=int, default=40, help="jobs per client (default 40)")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    summary, tracker, logins = load_demo(settings, args.jobs)
    stats = tracker.stats
    print(f"stepledger: demo loaded: {sum(summary.jobs.values())} jobs, {stats.accepted} events "
          f"accepted, {stats.duplicates} duplicates, {stats.rejected} rejected")
    print()
    print(f"  web app      {settings.web_url}/")
    print(f"  API          {settings.api_url}/jobs  "
          f"(through the web server: {settings.web_url}/api/jobs)")
    print(f"  OpenAPI      {settings.api_url}/")
    print(f"  database     psql {settings.dsn('stepledger_owner')}")
    print()
    print("  demo logins (POST /rpc/login, or the web app):")
    for email, role, client_id, password in logins:
        print(f"    {email:<32} {password}  {role}{' of ' + client_id if client_id else ''}")
    return 0
