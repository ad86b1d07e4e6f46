"""Helpers of the browser tests (tests/test_web*.py): Debian's Chromium driven by Playwright, the
demo-like data they load through the real API, sign-in, and screenshots.

Nothing here fakes a component: the data go in through POST /rpc/ingest, users are made by the
database's own auth functions and sign in through POST /rpc/login.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import psycopg

from ingest_support import IngestClient
from stacks import register_catalog
from stepledger.demo import simulate
from stepledger.demo.pipeline import DEMO_PRICES
from stepledger.settings import Settings

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("STEPLEDGER_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 375, "height": 812}
ARTIFACTS = Path(os.environ.get("STEPLEDGER_ARTIFACTS") or REPO / ".artifacts") / "web"
SESSION_KEY = "stepledger.session"

CLIENTS = [
    ("lakeside", "Lakeside General Hospital", "EUR"),
    ("hillcrest", "Hillcrest Cancer Centre", "EUR"),
    ("harbourview", "Harbourview Imaging", "GBP"),
]
# Default prices of the web fixture (per unit, from 2021 on, so they supersede any older default
# another test put in the session's price book): the demo's, for the first image steps and the
# analysis steps; the other steps are unpriced.
PRICES = {step: DEMO_PRICES[step] for step in (
    "dicom-intake", "deidentification", "quality-control", "organ-segmentation",
    "lesion-detection", "lesion-segmentation", "malignancy-classification",
    "radiologist-review", "report")}


@dataclass
class WebUser:
    email: str
    password: str
    role: str
    client_id: str | None


@dataclass
class WebData:
    """What the browser tests can rely on; everything else they read back from the API."""

    users: dict[str, WebUser]
    ingest_token: str
    failed_jobs: dict[str, str]              # client_id -> a job of it that failed
    job_ids: dict[str, list[str]] = field(default_factory=dict)


def admin_http(settings: Settings, token: str) -> httpx.Client:
    return httpx.Client(base_url=settings.api_url, timeout=60.0,
                        headers={"Authorization": f"Bearer {token}"})


def load_web_data(settings: Settings, su_conn: psycopg.Connection,
                  jwt_for: Callable[..., str], jobs_per_client: int = 16) -> WebData:
    """Catalog, clients, users, prices and a fortnight of BotImage jobs, through the real paths."""
    register_catalog(su_conn, CLIENTS)

    # Users who sign in through POST /rpc/login, made by the database's own function.
    users = {"admin": WebUser("admin@web-tests.example", secrets.token_urlsafe(12), "admin", None)}
    for client_id, _, _ in CLIENTS:
        users[client_id] = WebUser(f"lab@{client_id}.example", secrets.token_urlsafe(12), "client",
                                   client_id)
    for user in users.values():
        su_conn.execute("select auth.add_user(%s, %s, %s, %s)",
                        [user.email, user.password, [user.role], user.client_id])

    # An operator token (signed with the stack's secret) sets up what an admin would.
    with admin_http(settings, jwt_for("admin", sub="web-tests")) as http:
        answer = http.post("/rpc/create_api_token", json={
            "client_id": None, "name": "web tests loader", "scope": "ingest"})
        answer.raise_for_status()
        ingest_token = answer.json()["token"]
        # Default prices are per currency: EUR for two clients, GBP for harbourview.
        for currency, factor in (("EUR", Decimal(1)), ("GBP", Decimal("0.85"))):
            for step, price in PRICES.items():
                http.post("/prices", json={
                    "pipeline": "botimage", "step": step, "client_id": None,
                    "unit_price": str((Decimal(price) * factor).quantize(Decimal("0.0001"))),
                    "currency": currency, "effective_from": "2021-01-01T00:00:00Z",
                }).raise_for_status()

    now = datetime.now(UTC)
    events = list(simulate.history([c[0] for c in CLIENTS], jobs_per_client, now, days=20, seed=11))
    # One failed job per client whose failure we know, on top of the random history.
    rng = random.Random(5)
    failed_jobs: dict[str, str] = {}
    for client_id, _, _ in CLIENTS:
        plan = simulate.JobPlan(client_id, f"{client_id}-failed-{uuid.uuid4().hex[:6]}",
                                now - timedelta(hours=3), "failed")
        events.extend(simulate.job_events(plan, rng, now))
        failed_jobs[client_id] = plan.job_id
    with IngestClient(settings.api_url, ingest_token) as client:
        result = client.send_all(events, batch_size=500)
    assert not result.rejected, result.rejected[:3]

    job_ids: dict[str, list[str]] = {}
    for event in events:
        ids = job_ids.setdefault(str(event["client_id"]), [])
        if event["job_id"] not in ids:
            ids.append(str(event["job_id"]))
    return WebData(users=users, ingest_token=ingest_token, failed_jobs=failed_jobs,
                   job_ids=job_ids)


def login_answer(settings: Settings, user: WebUser) -> dict[str, Any]:
    """POST /rpc/login through the web server, as the app does."""
    response = httpx.post(f"{settings.web_url}/api/rpc/login",
                          json={"email": user.email, "password": user.password}, timeout=30.0)
    response.raise_for_status()
    return response.json()


def session_script(answer: dict[str, Any], email: str | None) -> str:
    """An init script that stores a session the way the sign-in page does, unless one is stored."""
    stored = {"token": answer["token"], "role": answer["role"],
              "client_id": answer.get("client_id"), "email": email,
              "expires_at": answer.get("expires_at")}
    value = json.dumps(json.dumps(stored))
    key = json.dumps(SESSION_KEY)
    # Init scripts also run in about:blank, whose storage is off limits: only the app's origin.
    return (f"if (location.protocol.startsWith('http')) {{ try {{ "
            f"if (!sessionStorage.getItem({key})) sessionStorage.setItem({key}, {value}); "
            f"}} catch (e) {{}} }}")


def screenshot(page: Any, name: str, full_page: bool = False) -> Path:
    """Save a PNG of the page into the artifacts folder; returns its path."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page, animations="disabled")
    return path


AXE_SCRIPT = REPO / "node_modules" / "axe-core" / "axe.min.js"
# Rules axe leaves off by default that the app must pass too: a control's accessible name must
# contain its visible text (speech users say what they see).
AXE_EXTRA_RULES = ("label-content-name-mismatch",)


def axe_violations(page: Any, impacts: tuple[str, ...] = ("serious", "critical")) -> list[str]:
    """Run axe-core (npm package, installed by scripts/bootstrap.sh) in the page; returns one line
    per violation of the given impacts: rule, impact, and the first offending nodes."""
    if not AXE_SCRIPT.exists():
        raise AssertionError(f"{AXE_SCRIPT} is missing: run `bash scripts/bootstrap.sh --test`")
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        # Evaluated through the DevTools protocol, so the app's content security policy (which
        # allows no inline script) stays as it is for the app itself.
        page.evaluate(AXE_SCRIPT.read_text())
    result = page.evaluate("""async (extra) => {
        const rules = Object.fromEntries(extra.map((r) => [r, { enabled: true }]));
        const answer = await axe.run(document, { rules, resultTypes: ['violations'] });
        return answer.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help,
            nodes: v.nodes.slice(0, 3).map((n) => `${n.target.join(' ')} `
                + (n.failureSummary || '').replace(/\\s+/g, ' ').slice(0, 160)) }));
    }""", list(AXE_EXTRA_RULES))
    return [f"{v['id']} ({v['impact']}): {v['help']} -> {v['nodes']}" for v in result
            if v["impact"] in impacts]


def wait_until(check: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    """Poll `check` until true, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


def job_events(client_id: str, job_id: str, start: datetime,
               steps: Iterator[tuple[str, str]] | list[tuple[str, str]]) -> list[dict[str, Any]]:
    """Events of one job: (step, status) pairs, one second apart from `start`."""
    out = []
    for n, (step, status) in enumerate(steps):
        moment = start + timedelta(seconds=n)
        event: dict[str, Any] = {
            "event_id": f"{job_id}:{n}", "client_id": client_id, "job_id": job_id,
            "pipeline": "botimage", "step": step, "status": status,
            "occurred_at": moment.isoformat().replace("+00:00", "Z"), "source": f"{client_id}-node",
        }
        if status == "failed":
            event["error"] = {"code": "GPU_OOM", "message": "CUDA out of memory"}
        out.append(event)
    return out
