"""`stepledger demo`: load the BotImage demo into the running local stack."""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone

from stepledger import auth, simulate
from stepledger.client import IngestClient
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
    now = datetime.now(timezone.utc)
    events = simulate.history([c[0] for c in DEMO_CLIENTS], args.jobs, now)
    try:
        with IngestClient(settings.api_url, token["token"]) as client:
            result = client.send_all(events, batch_size=1000)
    finally:
        with connect_owner(settings) as conn:
            auth.revoke_api_token(conn, token["token_id"], "stepledger demo")
    print(f"stepledger: demo loaded: {result.accepted} events accepted, "
          f"{result.duplicates} duplicates, {len(result.rejected)} rejected")
    if result.rejected:
        print(json.dumps(result.rejected[:3], indent=2))
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
