"""Ingest plans are cached per connection: a plan made while the tables were empty, or for a batch
of 1,000 events, must still probe by key once the tables have grown (docs/benchmarks.md,
"Ingest plans"). Runs on its own fresh stack: the plans under test are made on empty tables."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator

import psycopg
import pytest

from stacks import BOTIMAGE_STEPS, register_catalog, throwaway_stack
from stepledger.settings import Settings

STEPS = BOTIMAGE_STEPS
GROWING_TABLES = ("jobs", "step_runs", "job_steps", "event_ids")


@contextlib.contextmanager
def stack_without_autoanalyze(prefix: str) -> Iterator[Settings]:
    """A fresh stack whose growing tables are never analyzed by autovacuum."""
    with throwaway_stack(prefix) as settings:
        with psycopg.connect(settings.dsn("stepledger_owner"), autocommit=True) as conn:
            register_catalog(conn, [("plans", "Plans Clinic")])
            # An ANALYZE of a table replans the statements that read it; autovacuum runs one
            # when it gets to it (within a minute here, only every 10% of growth on a big table).
            # Without it, the plans made on the empty tables stay until the connection ends.
            for table in GROWING_TABLES:
                conn.execute(f"alter table ledger.{table} set (autovacuum_enabled = off)")
        yield settings


@pytest.fixture(scope="module")
def fresh_stack() -> Iterator[Settings]:
    with stack_without_autoanalyze("stepledger-plans-") as settings:
        yield settings


def events(run: str, start: int, count: int) -> list[dict[str, object]]:
    """`count` events, 40 per job: a started and a completed event for each of the 20 steps."""
    out: list[dict[str, object]] = []
    for n in range(start, start + count):
        job, rest = divmod(n, 40)
        step, phase = divmod(rest, 2)
        out.append({"event_id": f"{run}-{n}", "client_id": "plans", "job_id": f"{run}-job-{job}",
                    "pipeline": "botimage", "step": STEPS[step],
                    "status": "started" if phase == 0 else "completed",
                    "occurred_at": f"2026-11-01T{step:02d}:{phase * 30:02d}:00Z"})
    return out


def admin_session(settings: Settings, explain: bool = False) -> psycopg.Connection:
    conn = psycopg.connect(settings.dsn("postgres"), autocommit=True)
    if explain:
        # Every statement's plan, nested ones included (those inside ingest and its trigger),
        # sent to this client as notices.
        conn.execute("load 'auto_explain'")
        conn.execute("set auto_explain.log_min_duration = 0")
        conn.execute("set auto_explain.log_nested_statements = on")
        conn.execute("set auto_explain.log_level = notice")
    conn.execute("""select set_config('request.jwt.claims', '{"role": "admin"}', false)""")
    conn.execute("set role admin")
    return conn


def ingest(conn: psycopg.Connection, body: object) -> dict[str, object]:
    answer = conn.execute("select api.ingest(%s::jsonb)", [json.dumps(body)]).fetchone()[0]
    assert answer["rejected"] == [] and answer["duplicates"] == 0, answer
    return answer


def scans_of(table: str, text: str) -> list[str]:
    return re.findall(rf"(\w[\w ]*?Scan)(?: using \w+)? on {table}\b", text)


def plans_after_growth(settings: Settings, first_batch: int) -> list[str]:
    """The plans a connection keeps from its first batch (`first_batch` events, planned on the
    tables as they are now), as used once the tables have grown by 10,000 events from another
    connection: for one event of a job that exists and one of a new job."""
    with admin_session(settings, explain=True) as planned_early, \
            admin_session(settings) as bulk:
        plans: list[str] = []
        planned_early.add_notice_handler(lambda d: plans.append(d.message_primary or ""))
        ingest(planned_early, events("early", 0, first_batch))
        # (from another connection, so the plans above stay cached)
        for i in range(10):
            ingest(bulk, events("bulk", i * 1000, 1000))
        plans.clear()
        ingest(planned_early, events("bulk", 10_000, 1)[0])
        ingest(planned_early, events("late", 0, 1))
        # and one that fails a job: its job.failed message reads the job and its steps
        ingest(planned_early, dict(events("late", 1, 1)[0], status="failed",
                                   error={"code": "E_PLAN", "message": "failed"}))
    return plans


def assert_probed_by_key(plans: list[str]) -> None:
    text = "\n".join(plans)
    assert "insert into ledger.event_ids" in text and "insert into ledger.job_steps" in text, \
        "the nested statements of ingest were not explained"
    assert "ledger.notification_settings" in text, "the job messages' data were not explained"
    for table in GROWING_TABLES:
        scans = scans_of(table, text)
        assert scans, f"no plan reads ledger.{table}"
        whole_table = [s for s in scans if s == "Seq Scan"]
        assert not whole_table, \
            f"ledger.{table} is read by {whole_table}, not probed by key:\n{text}"


def test_plans_made_on_empty_tables_for_a_big_batch_still_probe_by_key(
        fresh_stack: Settings) -> None:
    # planned on empty, never analyzed tables, for a batch of 1,000
    assert_probed_by_key(plans_after_growth(fresh_stack, 1000))


@pytest.fixture
def tiny_stack() -> Iterator[Settings]:
    """A stack of its own, for plans made after an ANALYZE of tables that are (nearly) empty."""
    with stack_without_autoanalyze("stepledger-plans-tiny-") as settings:
        yield settings


@pytest.mark.parametrize("rows", [0, 80])
def test_plans_made_after_an_analyze_of_tiny_tables_still_probe_by_key(
        tiny_stack: Settings, rows: int) -> None:
    # The tables are empty or hold a few rows, and ANALYZE has seen them so (autovacuum does that
    # on a fresh stack after 50 rows): the plans made now are kept while the tables grow.
    with admin_session(tiny_stack) as setup:
        if rows:
            ingest(setup, events("tiny", 0, rows))
        for table in GROWING_TABLES:
            setup.execute(f"analyze ledger.{table}")
    assert_probed_by_key(plans_after_growth(tiny_stack, 40))


def planner_runs(conn: psycopg.Connection, statement: str, params: list[object]) -> int:
    """How many times the planner ran for one execution of `statement` (prepared on the server,
    so its own plan is made once), nested statements included: log_planner_stats reports each."""
    reports: list[str] = []

    def planner_report(notice: psycopg.errors.Diagnostic) -> None:
        if notice.message_primary == "PLANNER STATISTICS":
            reports.append(notice.message_primary)
    conn.add_notice_handler(planner_report)
    try:
        with conn.transaction():
            conn.execute("set local role postgres")
            conn.execute("set local log_planner_stats = on")
            conn.execute("set local client_min_messages = log")
            conn.execute("set local role admin")
            conn.execute(statement, params, prepare=True)
    finally:
        conn.remove_notice_handler(planner_report)
    return len(reports)


def test_one_event_per_request_plans_nothing_once_the_session_is_warm(
        fresh_stack: Settings) -> None:
    # A single event's request runs in a few milliseconds, and planning a statement costs a
    # tenth of a millisecond or more: every statement ingest runs (the API function, its call of
    # the batch core, the checks of the request's token) is planned once per session, not again
    # on every request. The bytea variant is the one behind POST /rpc/ingest.
    run = events("warm-plans", 0, 20)
    with admin_session(fresh_stack) as conn:
        for n, event in enumerate(run[:-1]):
            conn.execute("select api.ingest(%s::bytea)", [json.dumps(event).encode()], prepare=True)
            if n == 0:
                ingest(conn, events("warm-plans-batch", 0, 40))
        # the count sees a plan where there is one: a statement this session never ran
        assert planner_runs(conn, "select count(*) from ledger.jobs where job_id = %s",
                            ["never-planned"]) > 0
        assert planner_runs(conn, "select api.ingest(%s::bytea)",
                            [json.dumps(run[-1]).encode()]) == 0
        # PostgREST's pre-request check of a login token (sub, role, expiry)
        claims = {"role": "admin", "sub": "operator", "exp": 4102444800}
        conn.execute("select set_config('request.jwt.claims', %s, false)", [json.dumps(claims)])
        for _ in range(8):
            conn.execute("select auth.pre_request()", prepare=True)
        assert planner_runs(conn, "select auth.pre_request()", []) == 0
