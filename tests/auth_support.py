"""Helpers of the auth and isolation tests: two tenants with real data, users, tokens, polling.

Every name is unique per call, so these tests share the session stack with the others safely.
"""

from __future__ import annotations

import json
import random
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg

from stacks import cli_env as cli_env  # for the tests that import it from here
from stacks import register_catalog
from stepledger.demo import simulate
from stepledger.settings import Settings

PASSWORD = "correct horse battery staple"


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def add_client(conn: psycopg.Connection, client_id: str) -> str:
    """Add a client named Hospital <id>; returns the id."""
    register_catalog(conn, [(client_id, f"Hospital {client_id}")], pipelines=())
    return client_id


def register_botimage(conn: psycopg.Connection, *client_ids: str) -> None:
    """BotImage and these clients (each named Hospital <id>)."""
    register_catalog(conn, [(c, f"Hospital {c}") for c in client_ids])


def add_user(conn: psycopg.Connection, email: str, roles: list[str],
             client_id: str | None = None, password: str = PASSWORD) -> str:
    row = conn.execute("select auth.add_user(%s, %s, %s, %s)",
                       [email, password, roles, client_id]).fetchone()
    assert row is not None
    return str(row[0]["user_id"])


def job_events(client_id: str, job_id: str, outcome: str = "completed",
               seed: int = 1) -> list[dict[str, object]]:
    now = datetime.now(UTC)
    plan = simulate.JobPlan(client_id, job_id, now - timedelta(hours=3), outcome)
    return list(simulate.job_events(plan, random.Random(seed), now))


def ingest(client: httpx.Client, events: list[dict[str, object]]) -> httpx.Response:
    """POST /rpc/ingest as text, as the gateway forwards it (and as PostgREST needs it when
    reached directly)."""
    return client.post("/rpc/ingest", content=json.dumps(events),
                       headers={"Content-Type": "text/plain; charset=utf-8"})


def login(client: httpx.Client, email: str, password: str = PASSWORD,
          role: str | None = None) -> httpx.Response:
    body: dict[str, Any] = {"email": email, "password": password}
    if role is not None:
        body["role"] = role
    return client.post("/rpc/login", json=body)


def wait_until(condition: Callable[[], bool], timeout: float = 20.0,
               interval: float = 0.2) -> bool:
    """Poll `condition` until it holds or the deadline passes; returns the last answer."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


@dataclass
class Tenants:
    """Two clients with jobs, one job id they both use, and a user of each."""

    a: str
    b: str
    jobs_a: list[str]
    jobs_b: list[str]
    shared_job: str
    user_a: str
    user_b: str
    admin_user: str
    extra: dict[str, Any] = field(default_factory=dict)


def make_tenants(su_conn: psycopg.Connection, admin: httpx.Client) -> Tenants:
    a, b = unique("iso-a"), unique("iso-b")
    register_botimage(su_conn, a, b)
    shared = unique("shared-job")
    jobs_a = [f"{a}-job-{n}" for n in range(3)] + [shared]
    jobs_b = [f"{b}-job-{n}" for n in range(2)] + [shared]
    events: list[dict[str, object]] = []
    for n, job in enumerate(jobs_a):
        events += job_events(a, job, "completed" if n % 2 == 0 else "failed", seed=n)
    for n, job in enumerate(jobs_b):
        events += job_events(b, job, "completed", seed=100 + n)
    response = ingest(admin, events)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["rejected"] == [] and body["accepted"] == len(events), body
    user_a, user_b = f"staff@{a}.example", f"staff@{b}.example"
    add_user(su_conn, user_a, ["client"], a)
    add_user(su_conn, user_b, ["client"], b)
    admin_user = f"admin@{a}.example"
    add_user(su_conn, admin_user, ["admin"])
    return Tenants(a, b, jobs_a, jobs_b, shared, user_a, user_b, admin_user)


def prepared_tenants(su_conn: psycopg.Connection, settings: Settings) -> Tenants:
    """make_tenants, plus login tokens of both client users and an admin (extra["a"], ["b"],
    ["admin"]) and an ingest token bound to client a (extra["ingest_a"])."""
    with httpx.Client(base_url=settings.postgrest_url, timeout=60.0) as pgrst:
        email = f"iso-admin-{unique('x')}@example.org"
        add_user(su_conn, email, ["admin"])
        admin_token = login(pgrst, email).json()["token"]
        pgrst.headers["Authorization"] = f"Bearer {admin_token}"
        made = make_tenants(su_conn, pgrst)
        for key, user in (("a", made.user_a), ("b", made.user_b), ("admin", made.admin_user)):
            response = login(pgrst, user)
            assert response.status_code == 200, response.text
            made.extra[key] = response.json()["token"]
        token = pgrst.post("/rpc/create_api_token",
                           json={"client_id": made.a, "name": "iso scanner", "scope": "ingest"})
        assert token.status_code == 200, token.text
        made.extra["ingest_a"] = token.json()["token"]
    return made
