"""The validator's time limit (ADR 0004): no schema and no instance keeps one validation call
past TIME_LIMIT_S, statement_timeout, pg_cancel_backend and pg_terminate_backend stop a running
validation, and only the database's owner may call the validator at all.

Every call here that could run away is made in a thread and waited for with a deadline, so a
validator that cannot be stopped fails the test instead of hanging it.
"""

from __future__ import annotations

import concurrent.futures
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import psycopg
import pytest

from stepledger.config import Settings

TIME_LIMIT_S = 1.0  # TIME_LIMIT_SECONDS in db/bootstrap/20_jsonschema.sql, docs/security.md
# What a call may take beyond the limit on a busy 2-core machine: the CPU-time tick, parsing,
# the error report, a connection.
SLACK_S = 2.0
# Exponential for a backtracking engine (the `regex` module too): 64 a's and no match.
CATASTROPHIC = {"type": "string", "pattern": "^(a|aa)+$"}
CATASTROPHIC_INPUT = "a" * 64 + "!"
# The pattern from the report: Python's re backtracks for minutes on it.
NESTED = {"type": "string", "pattern": "^(a+)+$"}
NESTED_INPUT = "a" * 32 + "!"
MATCHES_SQL = "select public.jsonb_matches_schema(%s::json, %s::jsonb)"


def within(seconds: float, call: Callable[[], Any]) -> tuple[Any, float]:
    """(result, elapsed) of call, which must return or raise within `seconds`."""
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    started = time.monotonic()
    future = pool.submit(call)
    try:
        result = future.result(timeout=seconds)
    except concurrent.futures.TimeoutError:
        pytest.fail(f"no answer within {seconds} s: the validation could not be stopped")
    finally:
        pool.shutdown(wait=False)
    return result, time.monotonic() - started


def one(conn: psycopg.Connection, sql: str, *params: Any) -> Any:
    row = conn.execute(sql, params).fetchone()
    assert row is not None
    return row[0]


def owner_connection(settings: Settings) -> psycopg.Connection:
    """A connection as the role the database's own code validates as (ingest is security
    definer), with the validator already loaded: a backend's first call imports it (not bounded
    by the limit; a fixed cost, whatever the schema and instance)."""
    conn = psycopg.connect(settings.dsn("stepledger_owner"), autocommit=True)
    one(conn, MATCHES_SQL, "{}", "1")
    return conn


@pytest.fixture
def owner(settings: Settings) -> Iterator[psycopg.Connection]:
    conn = owner_connection(settings)
    yield conn
    conn.close()  # not `with`: its exit waits for a query that a stuck validator never ends


def test_a_catastrophic_pattern_is_answered_within_the_limit(owner: psycopg.Connection) -> None:
    args = (json.dumps(CATASTROPHIC), json.dumps(CATASTROPHIC_INPUT))
    valid, elapsed = within(TIME_LIMIT_S + SLACK_S + 5, lambda: one(owner, MATCHES_SQL, *args))
    assert valid is False
    assert elapsed < TIME_LIMIT_S + SLACK_S
    # The report says why, at once: the backend remembers that this instance hit the limit.
    report, elapsed = within(TIME_LIMIT_S + SLACK_S, lambda: one(
        owner, "select public.jsonschema_errors(%s::json, %s::jsonb)", *args))
    assert elapsed < 0.5
    assert [(e["path"], e["keyword"]) for e in report] == [("", None)]
    assert report[0]["message"].startswith(f"validation took longer than {TIME_LIMIT_S:g} s")
    messages = one(owner, "select public.jsonschema_validation_errors(%s::json, %s::json)", *args)
    assert any(m.startswith("validation took longer than") for m in messages)


def test_the_reported_pattern_is_answered_at_once(owner: psycopg.Connection) -> None:
    """`^(a+)+$` against 32 a's and a '!' ran for minutes on Python's re; the regex engine the
    validator uses now answers it without backtracking at all."""
    args = (json.dumps(NESTED), json.dumps(NESTED_INPUT))
    valid, elapsed = within(TIME_LIMIT_S + SLACK_S + 5, lambda: one(owner, MATCHES_SQL, *args))
    assert valid is False and elapsed < TIME_LIMIT_S
    assert one(owner, MATCHES_SQL, json.dumps(NESTED), json.dumps("a" * 32)) is True


def test_a_huge_instance_is_answered_within_the_limit(owner: psycopg.Connection) -> None:
    """Not only regular expressions: any validation that runs long is stopped at the limit."""
    schema = {"type": "array", "items": {"anyOf": [{"type": "string", "pattern": "^b"},
                                                   {"type": "string", "minLength": 3}]},
              "uniqueItems": True}  # uniqueItems: the general path, quadratic here
    instance = [f"x{n}" for n in range(40_000)]
    args = (json.dumps(schema), json.dumps(instance))
    valid, elapsed = within(TIME_LIMIT_S + SLACK_S + 5, lambda: one(owner, MATCHES_SQL, *args))
    assert valid is False
    assert elapsed < TIME_LIMIT_S + SLACK_S


def running_query(su_conn: psycopg.Connection, pid: int, timeout: float = 10.0) -> None:
    """Wait until backend `pid` is executing a statement."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if one(su_conn, "select state = 'active' and query like '%%matches_schema%%' "
                        "from pg_stat_activity where pid = %s", pid):
            return
        time.sleep(0.01)
    pytest.fail(f"backend {pid} never started its query")


def test_statement_timeout_stops_a_validation(owner: psycopg.Connection) -> None:
    owner.execute("set statement_timeout = '300ms'")
    args = (json.dumps(CATASTROPHIC), json.dumps(CATASTROPHIC_INPUT + "?"))

    def call() -> str | None:
        try:
            one(owner, MATCHES_SQL, *args)
        except psycopg.Error as exc:
            return exc.sqlstate
        return None

    sqlstate, elapsed = within(TIME_LIMIT_S + SLACK_S + 5, call)
    assert sqlstate == "57014"  # query_canceled: statement timeout
    assert elapsed < TIME_LIMIT_S  # stopped by the statement timeout, before the validator's limit


@pytest.mark.parametrize("stop", ["pg_cancel_backend", "pg_terminate_backend"])
def test_cancel_and_terminate_stop_a_validation(settings: Settings, su_conn: psycopg.Connection,
                                                stop: str) -> None:
    conn = owner_connection(settings)
    pid = conn.info.backend_pid
    # Every row hits the limit: 30 s of validation in one statement if nothing stops it.
    sql = ("select count(*) from generate_series(1, 30) i"
           " where public.jsonb_matches_schema(%s::json, to_jsonb(%s || i))")
    args = (json.dumps(CATASTROPHIC), CATASTROPHIC_INPUT + uuid.uuid4().hex)
    outcome: dict[str, Any] = {}

    def call() -> None:
        started = time.monotonic()
        try:
            one(conn, sql, *args)
        except psycopg.Error as exc:
            outcome["sqlstate"] = exc.sqlstate
        outcome["ended"] = time.monotonic()
        outcome["took"] = outcome["ended"] - started

    worker = threading.Thread(target=call, daemon=True)
    worker.start()
    try:
        running_query(su_conn, pid)
        time.sleep(0.1)  # well inside the validation, which runs for TIME_LIMIT_S
        sent = time.monotonic()
        assert one(su_conn, f"select {stop}(%s)", pid) is True
        worker.join(TIME_LIMIT_S + SLACK_S + 5)
        assert not worker.is_alive(), f"{stop} did not stop the validation"
    finally:
        conn.close()
    if stop == "pg_cancel_backend":
        # Inside the validation: waiting for the row to end would take up to TIME_LIMIT_S.
        assert outcome["ended"] - sent < TIME_LIMIT_S / 2, outcome
        assert outcome["sqlstate"] == "57014"
    else:
        # The backend also has to exit (and unload Python): slower under load, still prompt.
        assert outcome["ended"] - sent < TIME_LIMIT_S + SLACK_S, outcome
        assert outcome.get("sqlstate") in ("57P01", None)  # admin_shutdown, or the closed socket
        assert not one(su_conn, "select exists (select from pg_stat_activity where pid = %s)",
                       pid)


# -- who may validate --------------------------------------------------------------------------
VALIDATOR_FUNCTIONS = (
    "public.jsonb_matches_schema('{}', '1')",
    "public.json_matches_schema('{}', '1')",
    "public.jsonschema_is_valid('{}')",
    "public.jsonschema_validation_errors('{}', '1')",
    "public.jsonschema_errors('{}', '1')",
    "public._jsonschema_boot()",
    "public._jsonschema_registry_lookup('x')",
)


@pytest.mark.parametrize("role", ["anon", "client", "ingest", "admin", "bi_reader"])
@pytest.mark.parametrize("call", VALIDATOR_FUNCTIONS)
def test_api_roles_and_bi_may_not_call_the_validator(db: psycopg.Connection, as_user: Any,
                                                     role: str, call: str) -> None:
    db.execute(f"select {call}")  # the superuser may: the call itself works
    with as_user(db, role, client_id="st-mary"), pytest.raises(
            psycopg.errors.InsufficientPrivilege):
        db.execute(f"select {call}")


@pytest.fixture
def bi_login(su_conn: psycopg.Connection, settings: Settings) -> Iterator[psycopg.Connection]:
    name = f"bi_validator_{uuid.uuid4().hex[:8]}"
    password = f"pw-{uuid.uuid4().hex}"
    verifier = su_conn.pgconn.encrypt_password(password.encode(), name.encode(), b"scram-sha-256")
    su_conn.execute("select auth.add_bi_login(%s, null, %s)", [name, verifier.decode()])
    conn = psycopg.connect(host=settings.pg_host, port=settings.pg_port, dbname=settings.dbname,
                           user=name, password=password, autocommit=True)
    try:
        yield conn
    finally:
        conn.close()
        su_conn.execute("select auth.drop_bi_login(%s)", [name])


def test_a_bi_login_cannot_pin_a_backend(bi_login: psycopg.Connection) -> None:
    """The report's attack: a BI login ran the catastrophic pattern for minutes. It is now
    refused before any Python runs."""
    args = (json.dumps(NESTED), json.dumps(NESTED_INPUT))

    def call() -> str | None:
        try:
            one(bi_login, MATCHES_SQL, *args)
        except psycopg.Error as exc:
            return exc.sqlstate
        return None

    sqlstate, elapsed = within(TIME_LIMIT_S + SLACK_S + 5, call)
    assert sqlstate == "42501" and elapsed < 0.5


def test_the_owner_may_call_the_validator(owner: psycopg.Connection) -> None:
    assert one(owner, MATCHES_SQL, '{"type": "integer"}', "1") is True


# -- through the API: a step data schema with the pattern ----------------------------------------
@pytest.fixture(scope="module")
def slow_pipeline(su_conn: psycopg.Connection) -> str:
    """A pipeline whose step data schema has the catastrophic pattern, for client 'slow-lab'."""
    name = f"slowpattern-{uuid.uuid4().hex[:8]}"
    su_conn.execute("select ledger.register_pipeline(%s::jsonb)", [json.dumps({
        "pipeline": name, "title": "A pipeline with a catastrophic pattern",
        "steps": [{"key": "scan", "title": "Scan", "data_schema": {
            "type": "object", "properties": {"code": CATASTROPHIC}}}],
    })])
    for client_id in ("slow-lab", "quick-lab"):
        su_conn.execute("select ledger.add_client(%s, %s)", [client_id, client_id])
    return name


def event(pipeline: str, client_id: str, code: str) -> dict[str, Any]:
    return {"event_id": f"ev-{uuid.uuid4().hex}", "client_id": client_id,
            "job_id": f"job-{uuid.uuid4().hex[:8]}", "pipeline": pipeline, "step": "scan",
            "status": "completed", "occurred_at": "2026-11-02T10:00:00Z", "data": {"code": code}}


def post(client: httpx.Client, body: object) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = client.post("/rpc/ingest", content=json.dumps(body),
                           headers={"Content-Type": "application/json"})
    return response, time.monotonic() - started


def test_ingest_rejects_and_vaults_an_event_that_hits_the_limit(
        slow_pipeline: str, api: Callable[..., httpx.Client], api_token: Callable[..., str],
        su_conn: psycopg.Connection) -> None:
    slow = api(api_token("slow-lab"))
    quick = api(api_token("quick-lab"))
    bad = [event(slow_pipeline, "slow-lab", CATASTROPHIC_INPUT + str(n)) for n in range(3)]
    good = event(slow_pipeline, "quick-lab", "aaaa")

    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
        attacks = [pool.submit(post, slow, body) for body in bad]
        time.sleep(0.2)  # the attacks are validating now
        other, other_took = post(quick, good)
        answers = [f.result(timeout=TIME_LIMIT_S + SLACK_S + 20) for f in attacks]

    # Another tenant is served while the attacks run, and its valid event is accepted.
    assert other.status_code == 200, other.text
    assert other.json()["accepted"] == 1
    assert other_took < TIME_LIMIT_S + SLACK_S  # not queued behind the attacks
    for (response, took), body in zip(answers, bad, strict=True):
        assert response.status_code == 200, response.text
        assert took < TIME_LIMIT_S + SLACK_S
        result = response.json()
        assert result["accepted"] == 0
        [rejected] = result["rejected"]
        [error] = rejected["errors"]
        assert error["path"] == "/data"
        assert error["message"].startswith("validation took longer than")
        vaulted = su_conn.execute("select outcome, payload from ledger.vault where event_id = %s",
                                  [body["event_id"]]).fetchall()
        assert vaulted == [("rejected", body)]
