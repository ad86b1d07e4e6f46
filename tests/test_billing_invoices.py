"""Invoices: drafts, finalization, immutability, adjustments, and POST /rpc/invoice."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
import psycopg
import pytest

from billing_support import Books, event, uid
from stepledger.db import loads
from stepledger.settings import Settings

D = Decimal


def without_clock(document: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in document.items() if k != "generated_at"}


def kinds(document: dict[str, Any]) -> list[tuple[str, str, str | None, Decimal, Decimal]]:
    return [(ln["kind"], ln["for_period"], ln["step"], D(str(ln["units"] or 0)),
             D(str(ln["amount"]))) for ln in document["lines"]]


@pytest.fixture
def billed(books: Books) -> dict[str, str]:
    """A client with January usage of step a (3 units at 2.00) and b (1 unit at 10.00)."""
    pipeline, client = books.priced_pipeline({"a": "2", "b": "10"}, "2024-12-01T00:00:00Z")
    job = uid("job")
    books.ingest([
        event(client, job, pipeline, "a", "completed", "2025-01-10T00:00:00Z", units=3),
        event(client, job, pipeline, "b", "completed", "2025-01-10T01:00:00Z", units=1),
    ])
    return {"pipeline": pipeline, "client": client, "job": job}


def test_a_finalized_invoice_never_changes_and_late_events_become_adjustments(
        books: Books, billed: dict[str, str]
) -> None:
    client, pipeline, job = billed["client"], billed["pipeline"], billed["job"]
    frozen = books.finalize(client, "2025-01")
    assert frozen["status"] == "finalized"
    # Numbered within the client: its first invoice; due after the client's payment terms.
    assert (frozen["invoice_no"], frozen["number"]) == (f"{client}-0001", 1)
    assert frozen["due_on"] > frozen["issued_on"]
    assert frozen["total"] == D("16.00")
    assert without_clock(books.invoice(client, "2025-01")) == without_clock(frozen)

    # Late: another January completion, and a retry of a that completes again in January.
    books.ingest([
        event(client, uid("job"), pipeline, "b", "completed", "2025-01-20T00:00:00Z", units=2),
        event(client, job, pipeline, "a", "completed", "2025-01-21T00:00:00Z", attempt=2,
              units=5),
        event(client, uid("job"), pipeline, "a", "completed", "2025-02-02T00:00:00Z", units=1),
    ])
    assert without_clock(books.invoice(client, "2025-01")) == without_clock(frozen)
    february = books.invoice(client, "2025-02")
    assert february["status"] == "draft"
    assert kinds(february) == [
        ("usage", "2025-02", "a", D(1), D("2.00")),
        ("adjustment", "2025-01", "a", D(2), D("4.00")),   # 5 units now instead of 3
        ("adjustment", "2025-01", "b", D(2), D("20.00")),  # the late job
    ]
    assert (february["usage_amount"], february["adjustments_amount"], february["total"]) == \
        (D("2.00"), D("24.00"), D("26.00"))
    # Adjustments reach the next open invoice only, not March.
    assert books.invoice(client, "2025-03")["lines"] == []

    # Once February is finalized with them, they are settled: March has no adjustment ...
    books.finalize(client, "2025-02")
    assert books.invoice(client, "2025-03")["lines"] == []
    # ... until January changes again: then March is January's next open invoice.
    books.ingest([
        event(client, uid("job"), pipeline, "a", "completed", "2025-01-25T00:00:00Z", units=1)])
    assert kinds(books.invoice(client, "2025-03")) == [
        ("adjustment", "2025-01", "a", D(1), D("2.00"))]
    assert without_clock(books.invoice(client, "2025-01")) == without_clock(frozen)


def test_a_retry_that_completes_next_month_credits_the_finalized_month(
        books: Books, billed: dict[str, str]
) -> None:
    client, pipeline, job = billed["client"], billed["pipeline"], billed["job"]
    books.finalize(client, "2025-01")
    books.ingest([
        event(client, job, pipeline, "b", "completed", "2025-02-03T00:00:00Z", attempt=2,
              units=3)])
    february = books.invoice(client, "2025-02")
    assert kinds(february) == [
        ("usage", "2025-02", "b", D(3), D("30.00")),
        ("adjustment", "2025-01", "b", D(-1), D("-10.00")),
    ]
    assert february["total"] == D("20.00")


def test_a_backdated_price_after_finalization_becomes_an_adjustment(
        books: Books, billed: dict[str, str]) -> None:
    client, pipeline = billed["client"], billed["pipeline"]
    frozen = books.finalize(client, "2025-01")
    books.add_price(pipeline, "a", "3", "2025-01-01T00:00:00Z", client_id=client)
    assert without_clock(books.invoice(client, "2025-01")) == without_clock(frozen)
    # The frozen line at 2.00 is taken back and the line at 3.00 billed: explainable per price.
    assert kinds(books.invoice(client, "2025-02")) == [
        ("adjustment", "2025-01", "a", D(3), D("9.00")),
        ("adjustment", "2025-01", "a", D(-3), D("-6.00")),
    ]


def test_the_minimum_top_up_is_adjusted_too(
        books: Books, billed: dict[str, str]
) -> None:
    client, pipeline = billed["client"], billed["pipeline"]
    books.set_minimum(client, 20, "2025-01-01")
    frozen = books.finalize(client, "2025-01")
    assert [(ln["kind"], ln["amount"]) for ln in frozen["lines"]][-1] == ("minimum", D("4.00"))
    assert frozen["total"] == D("20.00")
    books.ingest([
        event(client, uid("job"), pipeline, "a", "completed", "2025-01-30T00:00:00Z", units=1)])
    adjustments = [(ln["basis"], ln["step"], ln["amount"])
                   for ln in books.invoice(client, "2025-02")["lines"]
                   if ln["kind"] == "adjustment"]
    # January now owes 18.00 of usage: 2.00 more usage, 2.00 less top-up.
    assert sorted(adjustments, key=str) == sorted(
        [("usage", "a", D("2.00")), ("minimum", None, D("-2.00"))], key=str)


def test_finalized_invoices_and_prices_are_immutable(
        su_conn: psycopg.Connection, billed: dict[str, str], books: Books) -> None:
    client = billed["client"]
    books.set_minimum(client, 1, "2025-01-01")
    books.finalize(client, "2025-01")
    statements = [
        ("update ledger.invoices set total = 0 where client_id = %s", [client]),
        ("delete from ledger.invoices where client_id = %s", [client]),
        ("update ledger.invoice_lines set amount = 0 where client_id = %s", [client]),
        ("delete from ledger.invoice_lines where client_id = %s", [client]),
        ("truncate ledger.invoice_lines", []),
        ("truncate ledger.invoices cascade", []),
        ("update ledger.prices set unit_price = 0 where pipeline = %s", [billed["pipeline"]]),
        ("delete from ledger.prices where pipeline = %s", [billed["pipeline"]]),
        ("truncate ledger.prices", []),
        ("update ledger.client_minimums set monthly_minimum = 0 where client_id = %s", [client]),
        ("delete from ledger.client_minimums where client_id = %s", [client]),
    ]
    # Even the superuser and the owner are refused: only a new row changes anything.
    for role in ("postgres", "stepledger_owner"):
        for statement, params in statements:
            with pytest.raises(psycopg.Error) as failure, su_conn.transaction():
                su_conn.execute(f"set local role {role}")
                su_conn.execute(statement, params)
            assert failure.value.sqlstate == "SL409", statement
    total = su_conn.execute("select total from ledger.invoices where client_id = %s",
                            [client]).fetchone()
    assert total == (D("16.00"),)


def test_finalize_refuses_bad_requests(
        su_conn: psycopg.Connection, billed: dict[str, str], books: Books) -> None:
    client = billed["client"]

    def code(client_id: str, period: str) -> str | None:
        with pytest.raises(psycopg.Error) as failure:
            books.finalize(client_id, period)
        return failure.value.sqlstate

    current = su_conn.execute("select to_char(now() at time zone 'UTC', 'YYYY-MM')").fetchone()
    assert current is not None
    assert code(client, current[0]) == "SL407"   # the month has not ended
    assert code(client, "2025-13") == "SL405"
    assert code(client, "january") == "SL405"
    assert code("no-such-client", "2025-01") == "SL404"
    books.finalize(client, "2025-01")
    assert code(client, "2025-01") == "SL408"
    assert su_conn.execute("select count(*) from ledger.invoices where client_id = %s",
                           [client]).fetchone() == (1,)


def test_concurrent_finalizations_of_a_period_freeze_it_once(
        settings: Settings, su_conn: psycopg.Connection, billed: dict[str, str]) -> None:
    client = billed["client"]
    outcomes: list[str] = []
    barrier = threading.Barrier(4)

    def worker() -> None:
        with psycopg.connect(settings.dsn("stepledger_owner"), autocommit=True) as conn:
            barrier.wait()
            try:
                conn.execute("select ledger._finalize_invoice(%s, '2025-01')", [client])
                outcomes.append("finalized")
            except psycopg.Error as exc:
                outcomes.append(exc.sqlstate or "?")

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(outcomes) == ["SL408", "SL408", "SL408", "finalized"]
    assert su_conn.execute("select count(*) from ledger.invoice_lines where client_id = %s",
                           [client]).fetchone() == (2,)


def test_a_clients_currency_is_fixed_once_an_invoice_is_finalized(
        su_conn: psycopg.Connection, billed: dict[str, str], books: Books) -> None:
    client, pipeline = billed["client"], billed["pipeline"]
    other = books.make_client()
    # Before any finalized invoice the currency may change; prices are then chosen in it.
    su_conn.execute("select ledger.add_client(%s, 'Renamed', 'GBP')", [other])
    books.add_price(pipeline, "a", "1", "2024-12-01T00:00:00Z", client_id=other)
    assert su_conn.execute("select currency from ledger.prices where client_id = %s",
                           [other]).fetchone() == ("GBP",)
    books.finalize(client, "2025-01")
    with pytest.raises(psycopg.Error) as failure:
        su_conn.execute("select ledger.add_client(%s, 'Renamed', 'GBP')", [client])
    assert failure.value.sqlstate == "SL410"
    su_conn.execute("select ledger.add_client(%s, 'Renamed', 'EUR')", [client])  # same: fine


# -- HTTP: POST /rpc/invoice and /rpc/finalize_invoice ------------------------------------------
def _post(api: Callable[..., httpx.Client], token: str, path: str,
          body: dict[str, str]) -> httpx.Response:
    return api(token).post(path, json=body)


def test_rpc_invoice_has_the_contract_shape(
        api: Callable[..., httpx.Client], jwt_for: Callable[..., str],
        billed: dict[str, str]) -> None:
    client = billed["client"]
    response = _post(api, jwt_for("client", client), "/rpc/invoice",
                     {"client_id": client, "period": "2025-01"})
    assert response.status_code == 200, response.text
    document = json.loads(response.text, parse_float=Decimal)
    assert {"lines", "total", "currency", "status"} <= set(document)
    assert document["status"] == "draft"
    assert document["currency"] == "EUR"
    assert document["total"] == D("16.00")
    for line in document["lines"]:
        assert {"pipeline", "step", "units", "unit_price", "amount"} <= set(line)
    assert [(ln["step"], ln["units"], ln["unit_price"], ln["amount"])
            for ln in document["lines"]] == [("a", 3, 2, D("6.00")), ("b", 1, 10, D("10.00"))]


def test_a_client_sees_only_its_own_invoices(
        books: Books, api: Callable[..., httpx.Client],
        jwt_for: Callable[..., str], billed: dict[str, str]) -> None:
    client = billed["client"]
    stranger = books.make_client()
    body = {"client_id": client, "period": "2025-01"}
    refused = _post(api, jwt_for("client", stranger), "/rpc/invoice", body)
    assert refused.status_code == 400
    assert refused.json()["code"] == "SL406"
    # the same invoice, as an admin: visible
    seen = _post(api, jwt_for("admin"), "/rpc/invoice", body)
    assert seen.status_code == 200
    assert loads(seen.text)["total"] == D("16.00")
    # a client asking for a client that does not exist learns nothing more
    missing = _post(api, jwt_for("client", stranger), "/rpc/invoice",
                    {"client_id": "no-such-client", "period": "2025-01"})
    assert missing.json()["code"] == "SL406"
    assert _post(api, jwt_for("admin"), "/rpc/invoice",
                 {"client_id": "no-such-client", "period": "2025-01"}).json()["code"] == "SL404"
    assert _post(api, jwt_for("admin"), "/rpc/invoice",
                 {"client_id": client, "period": "2025-1"}).json()["code"] == "SL405"
    # ingest tokens and anonymous callers may not read invoices at all
    for token in (jwt_for("ingest", client), None):
        response = api(token).post("/rpc/invoice", json=body)
        assert response.status_code in (401, 403), response.text


def test_only_admins_finalize_over_http(
        api: Callable[..., httpx.Client], jwt_for: Callable[..., str],
        api_token: Callable[..., str], billed: dict[str, str]) -> None:
    client = billed["client"]
    body = {"client_id": client, "period": "2025-01"}
    for token in (jwt_for("client", client), api_token(client)):
        response = _post(api, token, "/rpc/finalize_invoice", body)
        assert response.status_code in (401, 403), response.text
        assert response.json()["code"] == "42501"
    response = _post(api, jwt_for("admin", email="finance@botimage.example"),
                     "/rpc/finalize_invoice", body)
    assert response.status_code == 200, response.text
    document = loads(response.text)
    assert (document["status"], document["total"]) == ("finalized", D("16.00"))
    assert document["finalized_by"] == "finance@botimage.example"
    again = _post(api, jwt_for("admin"), "/rpc/finalize_invoice", body)
    assert again.json()["code"] == "SL408"
    listed = api(jwt_for("client", client)).get("/invoices", params={"client_id": f"eq.{client}"})
    assert [(r["period"], r["status"]) for r in listed.json()] == [("2025-01", "finalized")]
    lines = api(jwt_for("client", client)).get(
        "/invoice_lines", params={"client_id": f"eq.{client}", "order": "line_no"})
    assert [r["step"] for r in lines.json()] == ["a", "b"]
