"""GET /usage, the usage lines and their freshness, the reports, and the scheduler."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import httpx
import psycopg
import pytest

from billing_support import Books, event, uid
from stepledger.settings import Settings
from stepledger.stack import scheduler

D = Decimal
USAGE_CONTRACT = ["client_id", "period", "pipeline", "step", "completed_steps", "units", "amount",
                  "currency"]


@pytest.fixture
def two_clients(books: Books) -> dict[str, str]:
    """Clients x and y with January usage; x has a monthly minimum of 100."""
    pipeline = books.make_pipeline(["a", "b"])
    x, y = books.make_client(), books.make_client()
    books.add_price(pipeline, "a", "2", "2024-12-01T00:00:00Z")
    books.set_minimum(x, 100, "2025-01-01")
    for client, units in ((x, 3), (y, 5)):
        books.ingest([
            event(client, uid("job"), pipeline, "a", "completed", "2025-01-10T00:00:00Z",
                  units=units),
            event(client, uid("job"), pipeline, "b", "completed", "2025-01-11T00:00:00Z",
                  units=1),
        ])
    books.refresh()
    return {"pipeline": pipeline, "x": x, "y": y}


def test_usage_has_the_contract_columns(
        api: Callable[..., httpx.Client], jwt_for: Callable[..., str],
        two_clients: dict[str, str]) -> None:
    admin = api(jwt_for("admin"))
    rows = admin.get("/usage", params={"client_id": f"eq.{two_clients['x']}",
                                       "order": "step"}).json()
    assert [list(r)[:8] for r in rows] == [USAGE_CONTRACT, USAGE_CONTRACT]
    assert [(r["period"], r["step"], r["completed_steps"], r["units"], r["amount"],
             r["currency"]) for r in rows] == [("2025-01", "a", 1, 3, 6.0, "EUR"),
                                               ("2025-01", "b", 1, 1, 0, "EUR")]
    assert rows[1]["unpriced_steps"] == 1
    csv = admin.get("/usage", params={"client_id": f"eq.{two_clients['x']}"},
                    headers={"Accept": "text/csv"})
    assert csv.status_code == 200
    assert csv.text.splitlines()[0].split(",")[:8] == USAGE_CONTRACT


def test_a_client_reads_only_its_own_usage(
        api: Callable[..., httpx.Client], jwt_for: Callable[..., str],
        two_clients: dict[str, str]) -> None:
    x, y = two_clients["x"], two_clients["y"]
    params = {"client_id": f"in.({x},{y})", "select": "client_id,step,units",
              "order": "client_id,step"}
    mine = api(jwt_for("client", x)).get("/usage", params=params).json()
    assert mine == [{"client_id": x, "step": "a", "units": 3},
                    {"client_id": x, "step": "b", "units": 1}]
    everything = api(jwt_for("admin")).get("/usage", params=params).json()
    assert {r["client_id"] for r in everything} == {x, y}
    assert len(everything) == 4
    for token in (jwt_for("ingest", x), None):
        assert api(token).get("/usage").status_code in (401, 403)


def test_the_usage_lines_are_read_under_the_row_security_rule(
        db: psycopg.Connection, as_user: Callable[..., Any], two_clients: dict[str, str]) -> None:
    x, y = two_clients["x"], two_clients["y"]
    # Through the barrier view and in the table itself (its row-level security): own client
    # only, admins everything.
    for relation in ("ledger.usage_lines_visible", "ledger.usage_lines_monthly"):
        visible = f"select distinct client_id from {relation} where client_id in (%s, %s)"
        for role in ("client", "bi_reader"):
            with as_user(db, role, x):
                assert db.execute(visible, [x, y]).fetchall() == [(x,)], relation
        with as_user(db, "admin"):
            assert sorted(db.execute(visible, [x, y]).fetchall()) == sorted([(x,), (y,)])
    for role, client in (("ingest", x), ("anon", None)):
        with pytest.raises(psycopg.errors.InsufficientPrivilege), db.transaction(), \
                as_user(db, role, client):
            db.execute("select * from ledger.usage_lines_monthly limit 1")


def test_reports_follow_the_same_row_level_security(
        db: psycopg.Connection, as_user: Callable[..., Any], two_clients: dict[str, str]) -> None:
    x, y = two_clients["x"], two_clients["y"]
    reports = ["reporting.usage_by_step", "reporting.revenue_by_client_month",
               "reporting.minimum_commitments"]
    for report in reports:
        query = f"select distinct client_id from {report} where client_id in (%s, %s)"
        with as_user(db, "bi_reader", x):
            assert db.execute(query, [x, y]).fetchall() == [(x,)], report
        with as_user(db, "admin"):
            expected = [(x,)] if report == "reporting.minimum_commitments" else sorted([(x,), (y,)])
            assert sorted(db.execute(query, [x, y]).fetchall()) == expected, report
    for role in ("client", "ingest", "anon"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege), db.transaction(), \
                as_user(db, role, x):
            db.execute("select * from reporting.usage_by_step limit 1")


def test_revenue_and_minimum_reports(su_conn: psycopg.Connection,
                                     two_clients: dict[str, str], books: Books) -> None:
    x, y = two_clients["x"], two_clients["y"]
    revenue = su_conn.execute(
        "select client_id, period, usage_amount, monthly_minimum, minimum_topup, amount, "
        "invoice_status, invoiced_total from reporting.revenue_by_client_month "
        "where client_id in (%s, %s) and period in ('2025-01', '2025-02') order by 1, 2",
        [x, y]).fetchall()
    assert revenue == sorted([
        (x, "2025-01", D("6.00"), D(100), D("94.00"), D("100.00"), "open", None),
        (x, "2025-02", D(0), D(100), D(100), D(100), "open", None),
        (y, "2025-01", D("10.00"), None, D(0), D("10.00"), "open", None),
    ])
    # the report's amount is what the draft invoice says
    assert books.invoice(x, "2025-01")["total"] == D("100.00")
    books.finalize(x, "2025-01")
    row = su_conn.execute("select invoice_status, invoiced_total from "
                          "reporting.revenue_by_client_month where client_id = %s and "
                          "period = '2025-01'", [x]).fetchone()
    assert row == ("finalized", D("100.00"))
    commitments = su_conn.execute(
        "select period, status, difference from reporting.minimum_commitments "
        "where client_id = %s and period in ('2025-01', '2025-02') order by 1", [x]).fetchall()
    assert commitments == [("2025-01", "under", D("-94.00")), ("2025-02", "under", D(-100))]
    steps = su_conn.execute(
        "select step, completed_steps, units, amount, unpriced_steps from "
        "reporting.usage_by_step where client_id = %s order by step", [y]).fetchall()
    assert steps == [("a", 1, D(5), D("10.00"), 0), ("b", 1, D(1), D(0), 1)]


def test_usage_says_when_it_is_stale_and_refreshing_catches_up(
        no_scheduler: None, books: Books,
        api: Callable[..., httpx.Client], jwt_for: Callable[..., str],
        two_clients: dict[str, str]) -> None:
    x, pipeline = two_clients["x"], two_clients["pipeline"]
    client = api(jwt_for("client", x))
    before = client.get("/usage_freshness").json()[0]
    assert before["pending_changes"] == 0
    books.ingest([
        event(x, uid("job"), pipeline, "a", "completed", "2025-01-20T00:00:00Z", units=4)])
    stale = {r["step"]: r for r in books.usage_rows(x)}
    assert stale["a"]["stale"] is True
    assert stale["b"]["stale"] is True  # same client and month
    assert stale["a"]["units"] == 3  # the view still holds the refreshed figures
    assert client.get("/usage_freshness").json()[0]["pending_changes"] >= 1
    # the invoice never waits for the view: it computes stale months live
    draft = books.invoice(x, "2025-01")
    assert (draft["source"], draft["usage_amount"]) == ("live", D("14.00"))
    result = books.refresh()
    assert result["changes_absorbed"] >= 1
    fresh = {r["step"]: r for r in books.usage_rows(x)}
    assert (fresh["a"]["stale"], fresh["a"]["units"], fresh["a"]["amount"]) == \
        (False, D(7), D("14.00"))
    assert fresh["a"]["refreshed_at"] > before["refreshed_at"]
    draft = books.invoice(x, "2025-01")
    assert (draft["source"], draft["usage_amount"]) == ("materialized", D("14.00"))
    assert client.get("/usage_freshness").json()[0]["pending_changes"] == 0


def test_the_view_and_the_live_path_agree(su_conn: psycopg.Connection,
                                          two_clients: dict[str, str], books: Books) -> None:
    books.refresh()
    query = ("select period, pipeline, step, unit_price, priced, currency, completed_steps, units, "
             "amount from {} where client_id = %s order by 1, 2, 3, 4")
    for client in (two_clients["x"], two_clients["y"]):
        materialized = su_conn.execute(query.format("ledger.usage_lines_visible"),
                                       [client]).fetchall()
        live = su_conn.execute(query.format("ledger._usage_lines(%s, null, null)"),
                               [client, client]).fetchall()
        assert materialized == live and len(live) == 2


@contextlib.contextmanager
def open_refresh(settings: Settings) -> Iterator[psycopg.Connection]:
    """A refresh that has run but not committed: it still holds its locks."""
    with psycopg.connect(settings.dsn("stepledger_owner")) as conn:
        deadline = time.monotonic() + 60
        while True:
            row = conn.execute("select (ledger.refresh_usage('test: held open')->>'refreshed')"
                               "::boolean").fetchone()
            if row and row[0]:
                break
            conn.rollback()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        yield conn
        conn.commit()


def test_a_refresh_blocks_neither_readers_nor_ingest(
        no_scheduler: None, settings: Settings, books: Books,
        admin_token: str, api: Callable[..., httpx.Client], two_clients: dict[str, str]) -> None:
    x, pipeline = two_clients["x"], two_clients["pipeline"]
    admin = api(admin_token)
    with open_refresh(settings):
        started = time.monotonic()
        assert admin.get("/usage", params={"client_id": f"eq.{x}"}).status_code == 200
        assert admin.post("/rpc/invoice", json={"client_id": x, "period": "2025-01"}) \
            .status_code == 200
        books.ingest([
            event(x, uid("job"), pipeline, "a", "completed", "2025-01-21T00:00:00Z", units=1)])
        assert time.monotonic() - started < 5.0
    # That event committed after the refresh's snapshot: the view is stale for it, and says so.
    assert all(r["stale"] for r in books.usage_rows(x))
    assert books.invoice(x, "2025-01")["usage_amount"] == D("8.00")


def test_a_change_committed_during_a_refresh_is_not_lost(
        no_scheduler: None, settings: Settings, books: Books,
        two_clients: dict[str, str]) -> None:
    """An ingest that began before the refresh's snapshot and commits after the refresh."""
    x, pipeline = two_clients["x"], two_clients["pipeline"]
    late = event(x, uid("job"), pipeline, "a", "completed", "2025-01-22T00:00:00Z", units=2)
    with psycopg.connect(settings.dsn("postgres")) as writer:
        writer.execute("select set_config('request.jwt.claims', '{\"role\": \"admin\"}', true)")
        accepted = writer.execute("select api.ingest(%s::text)->>'accepted'",
                                  [json.dumps([late])]).fetchone()
        assert accepted == ("1",)
        books.refresh()  # while the ingest is still uncommitted
        writer.commit()
    assert all(r["stale"] for r in books.usage_rows(x))
    assert {r["step"]: r["units"] for r in books.usage_rows(x)}["a"] == D(3)
    assert books.invoice(x, "2025-01")["usage_amount"] == D("10.00")
    books.refresh()
    assert {r["step"]: (r["units"], r["stale"]) for r in books.usage_rows(x)}["a"] == \
        (D(5), False)


# -- the scheduler --------------------------------------------------------------------------------
def _last_refresh(conn: psycopg.Connection) -> tuple[int, str]:
    row = conn.execute("select refresh_id, requested_by from ledger.billing_refreshes "
                       "order by refresh_id desc limit 1").fetchone()
    assert row is not None
    return int(row[0]), str(row[1])


def test_the_stacks_scheduler_refreshes_after_a_price_change(
        settings: Settings, su_conn: psycopg.Connection, books: Books) -> None:
    assert scheduler.status(settings)["up"], "stepledger up starts the scheduler"
    before, _ = _last_refresh(su_conn)
    books.add_price(books.make_pipeline(["a"]), "a", "1", "2025-01-01T00:00:00Z")
    deadline = time.monotonic() + 60
    while True:
        row = su_conn.execute("select count(*) from ledger.billing_refreshes where refresh_id > %s "
                              "and requested_by = 'scheduler'", [before]).fetchone()
        if row and row[0] > 0:
            break
        assert time.monotonic() < deadline, "no scheduled refresh after the price change"
        time.sleep(0.2)


def test_start_is_idempotent_and_stop_stops(settings: Settings) -> None:
    pid = scheduler.start(settings)
    assert scheduler.start(settings) == pid
    assert scheduler.stop(settings) is True
    assert scheduler.status(settings)["up"] is False
    assert scheduler.stop(settings) is False
    new_pid = scheduler.start(settings)
    assert scheduler.status(settings) == {"up": True, "pid": new_pid,
                                          "log": str(settings.log_dir / "scheduler.log")}


def test_a_scheduler_runs_tasks_on_interval_and_on_notification(
        settings: Settings, su_conn: psycopg.Connection, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scheduler, "DEBOUNCE_S", 0.05)
    marker = uid("tick")
    tasks = [scheduler.Task("often", "select 1", 0.1),
             scheduler.Task("rarely", f"select pg_notify('{marker}', 'ran')", 3600)]
    runner = scheduler.Scheduler(settings.dsn("stepledger_owner"), tasks)
    thread = threading.Thread(target=runner.run)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while runner.runs["often"] < 5 or runner.runs["rarely"] < 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert runner.runs["rarely"] == 1
        su_conn.execute(f"notify {scheduler.CHANNEL}, 'rarely'")
        while runner.runs["rarely"] < 2:
            assert time.monotonic() < deadline, "the notification did not run the task"
            time.sleep(0.05)
        su_conn.execute(f"notify {scheduler.CHANNEL}, 'no-such-task'")
    finally:
        runner.stop()
        thread.join(timeout=10)
    assert not thread.is_alive()
    with pytest.raises(ValueError):
        scheduler.Scheduler(settings.dsn("stepledger_owner"), [])
