"""`stepledger demo`: load the BotImage demo into the running local stack."""

from __future__ import annotations

import argparse

from stepledger import auth
from stepledger.commands.pipeline_demo import run_demo_history
from stepledger.config import Settings
from stepledger.db import call, connect_owner

DEMO_CLIENTS = [
    ("st-mary", "St Mary's Hospital", "EUR"),
    ("riverside", "Riverside Oncology Centre", "EUR"),
    ("northgate", "Northgate Imaging", "GBP"),
]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("demo", help="load the BotImage demo (pipeline, clients, jobs) into the stack")
    p.add_argument("--jobs", type=int, default=40, help="jobs per client (default 40)")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    with connect_owner(settings) as conn:
        for path in sorted((settings.repo_root / "schemas" / "pipelines").glob("*.json")):
            call(conn, "select ledger.register_pipeline(%s::jsonb)", [path.read_text()])
        for client_id, name, currency in DEMO_CLIENTS:
            call(conn, "select ledger.add_client(%s, %s, %s)", [client_id, name, currency])
        logins = [("admin@botimage.example", "admin", None)]
        logins += [(f"staff@{c[0]}.example", "client", c[0]) for c in DEMO_CLIENTS]
        passwords = [auth.generate_password(16) for _ in logins]
        for (email, role, client_id), password in zip(logins, passwords, strict=True):
            auth.add_user(conn, email, password, [role], client_id)
        token = auth.create_api_token(conn, None, "stepledger demo loader", "stepledger demo")
    try:
        # The mock BotImage pipeline reports two weeks of jobs through the SDK (pipeline_demo.py),
        # with a real, revocable ingest token.
        summary, tracker = run_demo_history(settings.api_url, token["token"],
                                            [c[0] for c in DEMO_CLIENTS], args.jobs)
    finally:
        with connect_owner(settings) as conn:
            auth.revoke_api_token(conn, token["token_id"], "stepledger demo")
    stats = tracker.stats
    print(f"stepledger: demo loaded: {sum(summary.jobs.values())} jobs, {stats.accepted} events "
          f"accepted, {stats.duplicates} duplicates, {stats.rejected} rejected")
    print()
    print(f"  web app      {settings.web_url}/")
    print(f"  API          {settings.api_url}/jobs  (through the web server: {settings.web_url}/api/jobs)")
    print(f"  OpenAPI      {settings.api_url}/")
    print(f"  database     psql {settings.dsn('stepledger_owner')}")
    print()
    print("  demo logins (POST /rpc/login, or the web app):")
    for (email, role, client_id), password in zip(logins, passwords, strict=True):
        print(f"    {email:<32} {password}  {role}{' of ' + client_id if client_id else ''}")
    return 0
