"""The validator's time limit (ADR 0004): no schema and no instance keeps one validation call
past TIME_LIMIT_S, statement_timeout, pg_cancel_backend and pg_terminate_backend stop a running
validation, and only the database's owner may call the validator at all.

Every call that could run away is made by a psql process waited for with a deadline, then killed:
a validator that cannot be stopped fails the test instead of hanging it (the backend it pins is
the stack's problem, stopped with it).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
import pytest

from stepledger.settings import Settings

TIME_LIMIT_S = 1.0  # TIME_LIMIT_SECONDS in db/bootstrap/20_jsonschema/validator.py
# What a call may take beyond the limit on a busy 2-core machine: the CPU-time tick, parsing,
# the error report, a connection.
SLACK_S = 2.0
WAIT_S = TIME_LIMIT_S + SLACK_S + 5  # how long a test waits before it calls the call stuck
# Exponential for a backtracking engine (the `regex` module too): 64 a's and no match.
CATASTROPHIC = {"type": "string", "pattern": "^(a|aa)+$"}
CATASTROPHIC_INPUT = "a" * 64 + "!"
# The pattern from the report: Python's re backtracks for minutes on it.
NESTED = {"type": "string", "pattern": "^(a+)+$"}
NESTED_INPUT = "a" * 32 + "!"
WARM_UP = "select public.jsonb_matches_schema('{}', '1')"  # a backend's first call loads Python
RESULTS = "-- results --"


def one(conn: psycopg.Connection, sql: str, *params: Any) -> Any:
    row = conn.execute(sql, params).fetchone()
    assert row is not None
    return row[0]


def literal(value: Any) -> str:
    return "'" + json.dumps(value).replace("'", "''") + "'"


def matches_sql(schema: Any, instance: Any) -> str:
    return (f"select public.jsonb_matches_schema({literal(schema)}::json,"
            f" {literal(instance)}::jsonb)")


@dataclass
class Psql:
    """One psql session as some login: statements run after warming the validator up."""
    binary: str
    settings: Settings
    user: str
    password: str

    def start(self, *statements: str,
              warm: bool = True) -> tuple[subprocess.Popen[str], str]:
        name = f"validator-test-{uuid.uuid4().hex[:8]}"
        command = [self.binary, "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1",
                   "-v", "VERBOSITY=verbose", "-h", self.settings.pg_host,
                   "-p", str(self.settings.pg_port), "-U", self.user, "-d", self.settings.dbname]
        script = "".join(f"{statement};\n" for statement in (WARM_UP,) if warm)
        script += f"\\timing on\n\\echo {RESULTS}\n"  # what follows is the test's
        script += "".join(f"{statement};\n" for statement in statements)
        env = {**os.environ, "PGPASSWORD": self.password, "PGAPPNAME": name,
               "PGCONNECT_TIMEOUT": "10"}
        process = subprocess.Popen(command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        assert process.stdin is not None
        process.stdin.write(script)
        process.stdin.close()
        process.stdin = None  # sent whole: communicate() only reads from now on
        return process, name

    def run(self, *statements: str, warm: bool = True) -> Answer:
        process, _ = self.start(*statements, warm=warm)
        return finish(process)


@dataclass
class Answer:
    lines: list[str]  # result rows, without the timing lines
    error: str
    ms: float  # the last statement's time, as psql's timing measures it


def finish(process: subprocess.Popen[str], wait: float = WAIT_S) -> Answer:
    try:
        out, err = process.communicate(timeout=wait)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        pytest.fail(f"no answer within {wait} s: the validation could not be stopped")
    out = out.split(RESULTS + "\n", 1)[-1]
    times = [float(t) for t in re.findall(r"^Time: ([0-9.]+) ms", out, re.M)]
    lines = [line for line in out.splitlines() if line and not line.startswith("Time: ")]
    return Answer(lines, err, times[-1] if times else float("nan"))


@pytest.fixture(scope="module")
def psql_binary(settings: Settings) -> str:
    candidate = settings.pg_bindir / "psql"
    found = str(candidate) if candidate.exists() else shutil.which("psql")
    assert found, "psql is needed"
    return found


@pytest.fixture(scope="module")
def owner(psql_binary: str, settings: Settings) -> Psql:
    """The role the database's own code validates as (ingest is security definer)."""
    return Psql(psql_binary, settings, "stepledger_owner",
                settings.password_for("stepledger_owner"))


def test_a_catastrophic_pattern_is_answered_within_the_limit(owner: Psql) -> None:
    call = matches_sql(CATASTROPHIC, CATASTROPHIC_INPUT)
    errors = (f"select public.jsonschema_errors({literal(CATASTROPHIC)}::json,"
              f" {literal(CATASTROPHIC_INPUT)}::jsonb)")
    answer = owner.run(call, errors)
    assert answer.error == "" and answer.lines[0] == "f", answer
    # The report says why, at once: the backend remembers that this instance hit the limit.
    assert answer.ms < 500
    report = json.loads(answer.lines[1])
    assert [(e["path"], e["keyword"]) for e in report] == [("", None)]
    assert report[0]["message"].startswith(f"validation took longer than {TIME_LIMIT_S:g} s")
    timed = owner.run(call)
    assert timed.lines[0] == "f" and timed.ms < (TIME_LIMIT_S + SLACK_S) * 1000, timed
    messages = owner.run("select public.jsonschema_validation_errors("
                         f"{literal(CATASTROPHIC)}::json, {literal(CATASTROPHIC_INPUT)}::json)")
    assert "validation took longer than" in messages.lines[0]


def test_the_reported_pattern_is_answered_at_once(owner: Psql) -> None:
    """`^(a+)+$` against 32 a's and a '!' ran for minutes on Python's re; the regex engine the
    validator uses now answers it without backtracking at all."""
    answer = owner.run(matches_sql(NESTED, NESTED_INPUT), matches_sql(NESTED, "a" * 32))
    assert answer.lines == ["f", "t"], answer
    assert answer.ms < TIME_LIMIT_S * 1000


def test_a_huge_instance_is_answered_within_the_limit(owner: Psql) -> None:
    """Not only regular expressions: any validation that runs long is stopped at the limit (and
    counts as invalid, though this instance is valid: uniqueItems compares 800 million pairs)."""
    schema = {"type": "array", "items": {"type": "string"}, "uniqueItems": True}
    instance = [f"x{n}" for n in range(40_000)]
    answer = owner.run(matches_sql(schema, instance))
    assert answer.lines == ["f"], answer
    assert answer.ms < (TIME_LIMIT_S + SLACK_S) * 1000


def test_statement_timeout_stops_a_validation(owner: Psql) -> None:
    answer = owner.run("set statement_timeout = '300ms'",
                       matches_sql(CATASTROPHIC, CATASTROPHIC_INPUT + "?"))
    assert "57014" in answer.error  # query_canceled: statement timeout
    # Stopped by the statement timeout, before the validator's own limit.
    assert answer.ms < TIME_LIMIT_S * 1000, answer


def running_query(su_conn: psycopg.Connection, application: str, timeout: float = 20.0) -> int:
    """The pid of the backend of `application` once it runs the validation."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = su_conn.execute("select pid from pg_stat_activity where application_name = %s"
                              " and state = 'active' and query like '%%generate_series%%'",
                              [application]).fetchone()
        if row:
            return int(row[0])
        time.sleep(0.01)
    pytest.fail(f"{application} never started its query")


@pytest.mark.parametrize("stop", ["pg_cancel_backend", "pg_terminate_backend"])
def test_cancel_and_terminate_stop_a_validation(owner: Psql, su_conn: psycopg.Connection,
                                                stop: str) -> None:
    # Every row hits the limit: 30 s of validation in one statement if nothing stops it.
    rows = ("select count(*) from generate_series(1, 30) i where public.jsonb_matches_schema("
            f"{literal(CATASTROPHIC)}::json, to_jsonb('{CATASTROPHIC_INPUT}' || i))")
    process, application = owner.start(rows)
    pid = running_query(su_conn, application)
    time.sleep(0.1)  # well inside the validation of a row, which runs for TIME_LIMIT_S
    sent = time.monotonic()
    assert one(su_conn, f"select {stop}(%s)", pid) is True
    answer = finish(process)
    took = time.monotonic() - sent
    if stop == "pg_cancel_backend":
        assert "57014" in answer.error, answer
        # Inside the validation: waiting for the row to end would take up to TIME_LIMIT_S.
        assert took < TIME_LIMIT_S / 2, took
    else:
        assert "57P01" in answer.error or "terminat" in answer.error, answer
        # The backend also has to exit (and unload Python): slower under load, still prompt.
        assert took < TIME_LIMIT_S + SLACK_S, took
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
def bi_login(su_conn: psycopg.Connection, psql_binary: str, settings: Settings) -> Iterator[Psql]:
    name = f"bi_validator_{uuid.uuid4().hex[:8]}"
    password = f"pw-{uuid.uuid4().hex}"
    verifier = su_conn.pgconn.encrypt_password(password.encode(), name.encode(), b"scram-sha-256")
    su_conn.execute("select auth.add_bi_login(%s, null, %s)", [name, verifier.decode()])
    yield Psql(psql_binary, settings, name, password)
    su_conn.execute("select pg_terminate_backend(pid) from pg_stat_activity where usename = %s",
                    [name])
    su_conn.execute("select auth.drop_bi_login(%s)", [name])


def test_a_bi_login_cannot_pin_a_backend(bi_login: Psql) -> None:
    """The report's attack: a BI login ran the catastrophic pattern for minutes. It is now
    refused before any Python runs."""
    answer = bi_login.run(matches_sql(NESTED, NESTED_INPUT), warm=False)
    assert "42501" in answer.error and answer.ms < 500, answer


def test_the_owner_may_call_the_validator(owner: Psql) -> None:
    assert owner.run(matches_sql({"type": "integer"}, 1)).lines == ["t"]


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
    response = client.post("/rpc/ingest", content=json.dumps(body), timeout=WAIT_S,
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
        answers = [f.result(timeout=WAIT_S + 5) for f in attacks]

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
