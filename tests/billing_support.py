"""Helpers for the billing tests: isolated pipelines and clients, events, prices, invoices.

Every test works on its own pipeline and clients (unique ids), so the shared session database
can hold all of them at once: default prices are per pipeline, so they never leak between tests.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

import psycopg

from stepledger.api_client import IngestClient, IngestResult
from stepledger.db import dumps, loads


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def make_pipeline(conn: psycopg.Connection, steps: Sequence[str] = ("ingest", "analyse", "report"),
                  prefix: str = "bp") -> str:
    name = uid(prefix)
    definition = {"pipeline": name, "title": f"Billing test {name}",
                  "steps": [{"key": s, "title": s.title()} for s in steps]}
    conn.execute("select ledger.register_pipeline(%s::jsonb)", [json.dumps(definition)])
    return name


def make_client(conn: psycopg.Connection, currency: str = "EUR", prefix: str = "bc") -> str:
    client_id = uid(prefix)
    conn.execute("select ledger.add_client(%s, %s, %s)",
                 [client_id, f"Client {client_id}", currency])
    return client_id


def priced_pipeline(conn: psycopg.Connection, prices: Mapping[str, str | None],
                    since: str = "2025-01-01T00:00:00Z") -> tuple[str, str]:
    """A fresh pipeline whose steps are the keys of `prices`, each at that default unit price
    from `since` (None: no price), and a fresh client in EUR; returns (pipeline, client)."""
    pipeline = make_pipeline(conn, list(prices))
    client = make_client(conn)
    for step, unit_price in prices.items():
        if unit_price is not None:
            add_price(conn, pipeline, step, unit_price, since)
    return pipeline, client


def event(client_id: str, job_id: str, pipeline: str, step: str, status: str, at: str,
          attempt: int = 1, units: Decimal | int | str | None = None,
          event_id: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event_id": event_id or uid("e"), "client_id": client_id, "job_id": job_id,
        "pipeline": pipeline, "step": step, "status": status, "occurred_at": at,
        "attempt": attempt,
    }
    if units is not None:
        body["units"] = units
    if status == "failed":
        body["error"] = {"code": "E_TEST", "message": "failed in a test", "retryable": True}
    return body


def ingest(api_url: str, token: str, events: Sequence[dict[str, Any]],
           expect_rejected: int = 0) -> IngestResult:
    text = dumps(list(events), indent=None)
    with IngestClient(api_url, token) as client:
        response = client.http.post("/rpc/ingest", content=text,
                                    headers={"Content-Type": "text/plain; charset=utf-8"})
    assert response.status_code == 200, response.text
    body = response.json()
    result = IngestResult(body["accepted"], body["duplicates"], list(body["rejected"]))
    assert len(result.rejected) == expect_rejected, result.rejected
    return result


def add_price(conn: psycopg.Connection, pipeline: str, step: str, unit_price: str | Decimal,
              effective_from: str, client_id: str | None = None, currency: str | None = None,
              tiers: Sequence[tuple[str | Decimal, str | Decimal]] = ()) -> int:
    row = conn.execute(
        "select ledger.add_price(%s, %s, %s, %s, %s, %s, %s::jsonb)",
        [pipeline, step, Decimal(str(unit_price)), client_id, currency, effective_from,
         dumps([{"from_units": Decimal(str(f)), "unit_price": Decimal(str(p))} for f, p in tiers],
               indent=None)]).fetchone()
    assert row is not None
    return int(row[0])


def set_minimum(conn: psycopg.Connection, client_id: str, monthly_minimum: str | int | Decimal,
                effective_from: str | date) -> None:
    conn.execute("select ledger.add_client_minimum(%s, %s, %s)",
                 [client_id, Decimal(str(monthly_minimum)), effective_from])


def invoice(conn: psycopg.Connection, client_id: str, period: str) -> dict[str, Any]:
    row = conn.execute("select ledger._invoice_for_caller(%s, %s)::text",
                       [client_id, period]).fetchone()
    assert row is not None
    return loads(row[0])  # type: ignore[no-any-return]


def finalize(conn: psycopg.Connection, client_id: str, period: str) -> dict[str, Any]:
    row = conn.execute("select ledger._finalize_invoice(%s, %s)::text",
                       [client_id, period]).fetchone()
    assert row is not None
    return loads(row[0])  # type: ignore[no-any-return]


def refresh(conn: psycopg.Connection, timeout: float = 60.0) -> dict[str, Any]:
    """Refresh the usage view; when another refresh (the scheduler's) runs, wait for it."""
    deadline = time.monotonic() + timeout
    while True:
        row = conn.execute("select ledger.refresh_usage('test')::text").fetchone()
        assert row is not None
        result: dict[str, Any] = loads(row[0])
        if result["refreshed"]:
            return result
        assert time.monotonic() < deadline, "the usage view could not be refreshed in time"
        time.sleep(0.05)


def usage_rows(conn: psycopg.Connection, client_id: str) -> list[dict[str, Any]]:
    row = conn.execute("select coalesce(jsonb_agg(to_jsonb(u) order by u.period, u.pipeline, "
                       "u.step), '[]')::text from api.usage u where u.client_id = %s",
                       [client_id]).fetchone()
    assert row is not None
    return loads(row[0])  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Books:
    """The helpers above bound to one superuser connection and one admin token, as the billing
    tests use them (the `books` fixture of conftest.py)."""

    conn: psycopg.Connection
    api_url: str
    token: str

    def make_pipeline(self, steps: Sequence[str] = ("ingest", "analyse", "report"),
                      prefix: str = "bp") -> str:
        return make_pipeline(self.conn, steps, prefix)

    def make_client(self, currency: str = "EUR", prefix: str = "bc") -> str:
        return make_client(self.conn, currency, prefix)

    def priced_pipeline(self, prices: Mapping[str, str | None],
                        since: str = "2025-01-01T00:00:00Z") -> tuple[str, str]:
        return priced_pipeline(self.conn, prices, since)

    def add_price(self, pipeline: str, step: str, unit_price: str | Decimal, effective_from: str,
                  client_id: str | None = None, currency: str | None = None,
                  tiers: Sequence[tuple[str | Decimal, str | Decimal]] = ()) -> int:
        return add_price(self.conn, pipeline, step, unit_price, effective_from, client_id,
                         currency, tiers)

    def set_minimum(self, client_id: str, monthly_minimum: str | int | Decimal,
                    effective_from: str | date) -> None:
        set_minimum(self.conn, client_id, monthly_minimum, effective_from)

    def ingest(self, events: Sequence[dict[str, Any]], expect_rejected: int = 0) -> IngestResult:
        return ingest(self.api_url, self.token, events, expect_rejected)

    def invoice(self, client_id: str, period: str) -> dict[str, Any]:
        return invoice(self.conn, client_id, period)

    def finalize(self, client_id: str, period: str) -> dict[str, Any]:
        return finalize(self.conn, client_id, period)

    def refresh(self) -> dict[str, Any]:
        return refresh(self.conn)

    def usage_rows(self, client_id: str) -> list[dict[str, Any]]:
        return usage_rows(self.conn, client_id)
