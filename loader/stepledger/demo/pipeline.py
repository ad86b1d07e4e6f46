"""The BotImage demo: its clients, its price list, its logins, and two weeks of jobs reported
through the SDK by the mock pipeline (`stepledger demo`, `stepledger demo-pipeline --setup`)."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from decimal import Decimal

import psycopg

from stepledger import StepledgerError
from stepledger.db import call, connect_owner
from stepledger.demo.mock_pipeline import RunSummary, VirtualClock, run_history
from stepledger.operator import access, catalog
from stepledger.operator.billing.prices import set_price
from stepledger.sdk import Tracker
from stepledger.settings import Settings

DEMO_CLIENTS = [
    ("st-mary", "St Mary's Hospital", "EUR"),
    ("riverside", "Riverside Oncology Centre", "EUR"),
    ("northgate", "Northgate Imaging", "GBP"),
]

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


def add_demo_prices(conn: psycopg.Connection) -> None:
    """The demo price list, once: the price book is append-only, so a second run adds nothing."""
    if call(conn, "select exists (select from ledger.prices where pipeline = 'botimage')", []):
        return
    start = datetime(2020, 1, 1, tzinfo=UTC)
    for step, price in DEMO_PRICES.items():
        for currency, factor in DEMO_PRICE_CURRENCIES.items():
            amount = (Decimal(price) * factor).quantize(Decimal("0.0001"))
            set_price(conn, "botimage", step, amount, currency=currency, effective_from=start,
                      note="demo price list")


def setup_catalog(settings: Settings) -> None:
    """Register schemas/pipelines/*.json and the demo clients (as the database owner)."""
    with connect_owner(settings) as conn:
        for path in sorted((settings.repo_root / "schemas" / "pipelines").glob("*.json")):
            catalog.register_pipeline(conn, catalog.read_definition(path))
        for client_id, name, currency in DEMO_CLIENTS:
            call(conn, "select ledger.add_client(%s, %s, %s)", [client_id, name, currency])


def run_demo_history(url: str, token: str, clients: list[str], jobs: int,
                     seed: int = 7) -> tuple[RunSummary, Tracker]:
    """The demo's history through the SDK; ids are deterministic, so a second run adds nothing."""
    with tempfile.TemporaryDirectory(prefix="stepledger-demo-spool-") as spool:
        # The clock is set to each job's start before the job runs.
        tracker = Tracker(url, token, pipeline="botimage", spool_dir=spool, fsync=False,
                          batch_size=1000, clock=VirtualClock(datetime.now(UTC)),
                          deterministic_ids=True)
        try:
            summary = run_history(tracker, clients, jobs, seed=seed)
        finally:
            if not tracker.close(timeout_s=120):
                raise StepledgerError("the API did not take the demo events in time")
    return summary, tracker


def load_demo(settings: Settings, jobs: int) -> tuple[RunSummary, Tracker,
                                                     list[tuple[str, str, str | None, str]]]:
    """The whole demo into the running stack: the catalog, the price list, logins (email, role,
    client, password: new passwords each run), and `jobs` jobs per client through the SDK."""
    setup_catalog(settings)
    with connect_owner(settings) as conn:
        add_demo_prices(conn)
        logins = [("admin@botimage.example", "admin", None)]
        logins += [(f"staff@{c[0]}.example", "client", c[0]) for c in DEMO_CLIENTS]
        passwords = [access.generate_password(16) for _ in logins]
        for (email, role, client_id), password in zip(logins, passwords, strict=True):
            access.add_user(conn, email, password, [role], client_id)
        token = access.create_api_token(conn, None, "stepledger demo loader", "stepledger demo")
    try:
        # The mock BotImage pipeline reports two weeks of jobs through the SDK (mock_pipeline.py),
        # with a real, revocable ingest token.
        summary, tracker = run_demo_history(settings.api_url, token["token"],
                                            [c[0] for c in DEMO_CLIENTS], jobs)
    finally:
        with connect_owner(settings) as conn:
            access.revoke_api_token(conn, token["token_id"], "stepledger demo")
    with connect_owner(settings) as conn:
        # Count the demo's steps in usage and error statistics now, not at the scheduler's turn.
        call(conn, "select ledger.refresh_usage('stepledger demo')", [])
        call(conn, "select ledger.refresh_analytics()", [])
    accounts = [(*login, password) for login, password in zip(logins, passwords, strict=True)]
    return summary, tracker, accounts
