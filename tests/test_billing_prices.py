"""The price book over HTTP: GET /prices, POST /prices, POST /client_minimums."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
import psycopg
import pytest

from billing_support import add_price, make_client, make_pipeline
from stepledger.db import loads

D = Decimal


@pytest.fixture
def book(su_conn: psycopg.Connection) -> dict[str, str]:
    pipeline = make_pipeline(su_conn, ["a", "b"])
    mine, other = make_client(su_conn), make_client(su_conn, currency="GBP")
    add_price(su_conn, pipeline, "a", "1", "2025-01-01T00:00:00Z")
    add_price(su_conn, pipeline, "a", "0.9", "2025-01-01T00:00:00Z", client_id=mine)
    add_price(su_conn, pipeline, "a", "0.7", "2025-01-01T00:00:00Z", client_id=other)
    return {"pipeline": pipeline, "mine": mine, "other": other}


def _post(client: httpx.Client, path: str, body: dict[str, Any]) -> httpx.Response:
    return client.post(path, json=body, headers={"Prefer": "return=representation"})


def test_admins_add_prices_and_the_database_records_who_and_when(
        api: Callable[..., httpx.Client], jwt_for: Callable[..., str],
        book: dict[str, str]) -> None:
    admin = api(jwt_for("admin", email="pricing@botimage.example"))
    response = _post(admin, "/prices", {
        "pipeline": book["pipeline"], "step": "b", "unit_price": 0.125,
        "effective_from": "2025-03-15T12:00:00Z", "tiers": [{"from_units": 100, "unit_price": 0.1}],
        "note": "spring list"})
    assert response.status_code == 201, response.text
    (row,) = loads(response.text)
    assert (row["pipeline"], row["step"], row["client_id"], row["unit_price"], row["currency"]) \
        == (book["pipeline"], "b", None, D("0.125"), "EUR")
    assert row["effective_from"] == "2025-03-15T12:00:00+00:00"
    assert row["tiers"] == [{"from_units": 100, "unit_price": D("0.1")}]
    assert row["recorded_by"] == "pricing@botimage.example"
    assert row["recorded_role"] == "admin"
    # a client's own price takes the client's currency when none is given
    response = _post(admin, "/prices", {"pipeline": book["pipeline"], "step": "b",
                                        "client_id": book["other"], "unit_price": 2})
    assert response.status_code == 201, response.text
    assert loads(response.text)[0]["currency"] == "GBP"


def test_a_client_sees_default_prices_and_its_own_only(
        api: Callable[..., httpx.Client], jwt_for: Callable[..., str],
        book: dict[str, str]) -> None:
    params = {"pipeline": f"eq.{book['pipeline']}", "select": "client_id,unit_price",
              "order": "unit_price"}
    seen = api(jwt_for("client", book["mine"])).get("/prices", params=params)
    assert seen.status_code == 200
    assert [(r["client_id"], r["unit_price"]) for r in seen.json()] == \
        [(book["mine"], 0.9), (None, 1)]
    # the other client's price exists: an admin sees all three rows
    everything = api(jwt_for("admin")).get("/prices", params=params)
    assert [(r["client_id"], r["unit_price"]) for r in everything.json()] == \
        [(book["other"], 0.7), (book["mine"], 0.9), (None, 1)]


def test_only_admins_write_prices(
        api: Callable[..., httpx.Client], jwt_for: Callable[..., str],
        book: dict[str, str], su_conn: psycopg.Connection) -> None:
    body = {"pipeline": book["pipeline"], "step": "a", "unit_price": 0}
    for token in (jwt_for("client", book["mine"]), jwt_for("ingest", book["mine"]), None):
        response = _post(api(token), "/prices", body)
        assert response.status_code in (401, 403), response.text
    admin = api(jwt_for("admin"))
    # The price book is append-only: no PATCH, no DELETE, not even for admins.
    patched = admin.patch("/prices", params={"pipeline": f"eq.{book['pipeline']}"},
                          json={"unit_price": 0})
    assert patched.status_code in (401, 403), patched.text
    deleted = admin.delete("/prices", params={"pipeline": f"eq.{book['pipeline']}"})
    assert deleted.status_code in (401, 403), deleted.text
    prices = su_conn.execute("select unit_price from ledger.prices where pipeline = %s "
                             "order by price_id", [book["pipeline"]]).fetchall()
    assert prices == [(D(1),), (D("0.9"),), (D("0.7"),)]


@pytest.mark.parametrize(("change", "code"), [
    ({"step": "nope"}, "SL401"),
    ({"pipeline": "no-such-pipeline"}, "SL401"),
    ({"unit_price": -1}, "SL402"),
    ({"currency": "euro"}, "SL402"),
    ({"tiers": [{"from_units": 0, "unit_price": 1}]}, "SL402"),
    ({"tiers": [{"from_units": 10, "unit_price": 1}, {"from_units": 5, "unit_price": 1}]},
     "SL402"),
    ({"tiers": [{"from_units": 10, "unit_price": -1}]}, "SL402"),
    ({"tiers": [{"from_units": 10, "price": 1}]}, "SL402"),
    ({"tiers": {"from_units": 10}}, "SL402"),
    ({"client_id": "no-such-client"}, "SL404"),
    ({"client_id": "mine", "currency": "GBP"}, "SL403"),
    ({"unit_price": None}, "SL402"),
    ({"unit_price": "cheap"}, "22P02"),
    ({"pipeline": "Bad Pipeline!"}, "23514"),
    ({"note": "x" * 501}, "23514"),
    ({"effective_from": "soon"}, "22007"),
])
def test_bad_prices_are_refused_with_a_code(
        api: Callable[..., httpx.Client], jwt_for: Callable[..., str], book: dict[str, str],
        change: dict[str, Any], code: str) -> None:
    body: dict[str, Any] = {"pipeline": book["pipeline"], "step": "a", "unit_price": 1}
    body.update(change)
    if body.get("client_id") == "mine":
        body["client_id"] = book["mine"]
    response = _post(api(jwt_for("admin")), "/prices", body)
    assert response.status_code == 400, response.text
    assert response.json()["code"] == code, response.text


def test_monthly_minimums_over_http(
        api: Callable[..., httpx.Client], jwt_for: Callable[..., str],
        book: dict[str, str]) -> None:
    admin = api(jwt_for("admin"))
    response = _post(admin, "/client_minimums", {"client_id": book["mine"],
                                                 "monthly_minimum": 250,
                                                 "effective_from": "2025-02-01"})
    assert response.status_code == 201, response.text
    assert loads(response.text)[0]["currency"] == "EUR"
    bad = _post(admin, "/client_minimums", {"client_id": book["mine"], "monthly_minimum": 1,
                                            "effective_from": "2025-02-15"})
    assert bad.json()["code"] == "SL411"
    bad = _post(admin, "/client_minimums", {"client_id": book["mine"], "monthly_minimum": -1,
                                            "effective_from": "2025-02-01"})
    assert bad.json()["code"] == "SL411"
    bad = _post(admin, "/client_minimums", {"client_id": book["mine"], "monthly_minimum": 1,
                                            "currency": "GBP", "effective_from": "2025-02-01"})
    assert bad.json()["code"] == "SL403"
    refused = _post(api(jwt_for("client", book["mine"])), "/client_minimums",
                    {"client_id": book["mine"], "monthly_minimum": 0,
                     "effective_from": "2025-03-01"})
    assert refused.status_code == 403
    # visible to the client itself, not to another client; admins see it
    params = {"client_id": f"eq.{book['mine']}", "select": "monthly_minimum"}
    assert api(jwt_for("client", book["mine"])).get("/client_minimums", params=params).json() \
        == [{"monthly_minimum": 250}]
    assert api(jwt_for("client", book["other"])).get("/client_minimums", params=params).json() \
        == []
    assert api(jwt_for("admin")).get("/client_minimums", params=params).json() == \
        [{"monthly_minimum": 250}]


@pytest.mark.parametrize(("change", "code"), [
    ({"client_id": "Bad Client!"}, "23514"),
    ({"client_id": None}, "SL404"),
    ({"client_id": "no-such-client"}, "SL404"),
    ({"currency": "GBP"}, "SL403"),
    ({"monthly_minimum": None}, "SL411"),
    ({"monthly_minimum": "lots"}, "22P02"),
    ({"effective_from": None}, "SL411"),
    ({"effective_from": "2025-02-15"}, "SL411"),
    ({"note": "x" * 501}, "23514"),
])
def test_bad_minimums_are_refused_with_a_code(
        api: Callable[..., httpx.Client], jwt_for: Callable[..., str], book: dict[str, str],
        change: dict[str, Any], code: str) -> None:
    body: dict[str, Any] = {"client_id": book["mine"], "monthly_minimum": 1,
                            "effective_from": "2025-02-01"}
    body.update(change)
    response = _post(api(jwt_for("admin")), "/client_minimums", body)
    assert response.status_code == 400, response.text
    assert response.json()["code"] == code, response.text
    if change.get("client_id") == "Bad Client!":
        # the slug rule's own message, as when the column was the domain
        assert response.json()["message"] == \
            'value for domain ledger.slug violates check constraint "slug_format"'


@pytest.mark.parametrize("role", ["admin", "client", "ingest", "bi_reader", "anon"])
def test_the_price_book_is_written_by_the_owners_functions_alone(
        db: psycopg.Connection, as_user: Callable[..., Any], book: dict[str, str],
        role: str) -> None:
    """No role inserts into the price book or the minimums, not even an admin (POST goes through
    the views' triggers), and no role calls the owner's functions that write them."""
    statements = [
        ("insert into ledger.prices (pipeline, step, unit_price) values (%s, 'a', 0)",
         [book["pipeline"]]),
        ("insert into ledger.client_minimums (client_id, monthly_minimum, effective_from) "
         "values (%s, 0, '2025-03-01')", [book["mine"]]),
        ("select ledger.add_price(%s, 'a', 0)", [book["pipeline"]]),
        ("select ledger.add_client_minimum(%s, 0, '2025-03-01')", [book["mine"]]),
    ]
    client = book["mine"] if role in ("client", "ingest") else None
    for statement, params in statements:
        with pytest.raises(psycopg.errors.InsufficientPrivilege), db.transaction(), \
                as_user(db, role, client):
            db.execute(statement, params)


def test_a_posted_price_is_attributed_and_logged_once(
        db: psycopg.Connection, as_user: Callable[..., Any], book: dict[str, str]) -> None:
    """POST /prices as PostgREST runs it (the admin's role and claims): one row recorded as the
    admin's, one change-log row in the transaction."""
    with as_user(db, "admin", email="pricing@botimage.example"):
        recorded = db.execute(
            "insert into api.prices (pipeline, step, client_id, unit_price, effective_from) "
            "values (%s, 'b', %s, 0.5, '2025-04-01') "
            "returning price_id, recorded_by, recorded_role, currency, state",
            [book["pipeline"], book["other"]]).fetchone()
    assert recorded is not None and recorded[1:] == \
        ("pricing@botimage.example", "admin", "GBP", "in force")
    assert db.execute("select count(*) from ledger.prices where price_id = %s",
                      [recorded[0]]).fetchone() == (1,)
    assert db.execute(
        "select count(*) from ledger.billing_changes where client_id = %s and reason = 'price' "
        "   and xid = pg_current_xact_id()", [book["other"]]).fetchone() == (1,)
