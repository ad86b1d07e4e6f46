"""`stepledger demo`: load the BotImage demo into the running local stack."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from decimal import Decimal

import psycopg

from stepledger.commands.pipeline_demo import DEMO_CLIENTS, run_demo_history, setup_catalog
from stepledger.db import call, connect_owner
from stepledger.operator import access as auth
from stepledger.operator.billing.prices import set_price
from stepledger.settings import Settings

# The demo's default price list (per unit, from 2020 on) so that invoices and the web app's
# billing pages show amounts: per image for the steps that count images, per job for the others.
# Default prices are per currency: the GBP list is for the GBP client.
DEMO_PRICES = {
    "dicom-intake": "0.02", "integrity-check": "0.10", "deidentification": "0.01",
    "metadata-extraction": "0.10", "series-selection": "0.10", "format-conversion": "0.40",
    "quality-control": "0.015", "intensity-normalization": "0.30", "resampling": "0.80",
    "artifact-removal": "0.60", "organ-segmentation": "4.50", "lesion-detection": "6.00",
    "lesion-segmentation": "3.20", "feature-extraction": "1.20",
    "malignancy-classification": "5.00", "uncertainty-estimation": "1.50",
    "prior-comparison": "2.00", "risk-scoring": "0.50", "radiologist-review": "25.00",
    "report": "1.50",
}
DEMO_PRICE_CURRENCIES = {"EUR": Decimal("1"), "GBP": Decimal("0.85")}


def _add_demo_prices(conn: psycopg.Connection) -> None:
    """The demo price list, once: the price book is append-only, so a second run adds nothing."""
    if call(conn, "select exists (select from ledger.prices where pipeline = 'botimage')", []):
        return
    start = datetime(2020, 1, 1, tzinfo=UTC)
    for step, price in DEMO_PRICES.items():
        for currency, factor in DEMO_PRICE_CURRENCIES.items():
            amount = (Decimal(price) * factor).quantize(Decimal("0.0001"))
            set_price(conn, "botimage", step, amount, currency=currency, effective_from=start,
                      note="demo price list")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("demo", help="load the BotImage demo (pipeline, clients, jobs, "
                                           "logins) into the stack")
    p.add_argument("--jobs", type=int, default=40, help="jobs per client (default 40)")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    setup_catalog(settings)
    with connect_owner(settings) as conn:
        _add_demo_prices(conn)
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
    with connect_owner(settings) as conn:
        # Count the demo's steps in usage and error statistics now, not at the scheduler's turn.
        call(conn, "select ledger.refresh_usage('stepledger demo')", [])
        call(conn, "select ledger.refresh_analytics()", [])
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
    for (email, role, client_id), password in zip(logins, passwords, strict=True):
        print(f"    {email:<32} {password}  {role}{' of ' + client_id if client_id else ''}")
    return 0
