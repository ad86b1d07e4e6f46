"""The compiled envelope in the database: ledger.step_event_v1_valid, the events CHECK constraint
that uses it, the migration that installs both, and ingest classifying with it."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from stacks import BOTIMAGE, register_catalog
from stepledger.schema.migrate import ENVELOPE_CONSTRAINT, migrate
from stepledger.settings import Settings

REPO = Path(__file__).resolve().parents[1]
OLD_CHECK = "public.jsonb_matches_schema(ledger.step_event_v1_schema(), payload)"


@pytest.fixture(scope="module", autouse=True)
def catalog(su_conn: psycopg.Connection) -> None:
    register_catalog(su_conn, [("st-mary", "St Mary's Hospital")])


def event(**fields: Any) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:10]
    body = {"event_id": f"env-{tag}", "client_id": "st-mary", "job_id": f"job-{tag}",
            "pipeline": "botimage", "step": BOTIMAGE["steps"][0]["key"], "status": "completed",
            "occurred_at": "2026-11-02T10:00:00Z"}
    body.update(fields)
    return body


def constraint_def(conn: psycopg.Connection) -> tuple[str, bool]:
    row = conn.execute(
        "select pg_get_constraintdef(oid), convalidated from pg_constraint "
        "where conrelid = 'ledger.events'::regclass and conname = %s",
        [ENVELOPE_CONSTRAINT]).fetchone()
    assert row is not None
    return row[0], row[1]


# -- the function ------------------------------------------------------------------------------
def test_predicate_is_immutable_plain_sql_and_documented(su_conn: psycopg.Connection) -> None:
    row = su_conn.execute(
        "select l.lanname, p.provolatile, p.proparallel, p.proisstrict, p.prosecdef,"
        "       p.proconfig, obj_description(p.oid, 'pg_proc')"
        "  from pg_proc p join pg_language l on l.oid = p.prolang"
        " where p.oid = 'ledger.step_event_v1_valid(jsonb)'::regprocedure").fetchone()
    assert row is not None
    assert row[:6] == ("sql", "i", "s", False, False, None)
    assert "schemas/step_event.v1.json" in row[6]


def test_predicate_is_inlined(su_conn: psycopg.Connection) -> None:
    plan = su_conn.execute(
        "explain (verbose, costs off) select ledger.step_event_v1_valid(payload)"
        "  from ledger.events").fetchall()
    text = "\n".join(r[0] for r in plan)
    assert "step_event_v1_valid" not in text and "jsonb_typeof" in text
    assert "jsonb_matches_schema" not in text  # the envelope is compiled whole


def test_admin_may_call_the_predicate_a_client_may_not(db: psycopg.Connection,
                                                       as_user: Callable[..., Any]) -> None:
    with as_user(db, "admin"):
        assert db.execute("select ledger.step_event_v1_valid(%s::jsonb)",
                          [json.dumps(event())]).fetchone() == (True,)
    with as_user(db, "client", client_id="st-mary"), pytest.raises(
            psycopg.errors.InsufficientPrivilege):
        db.execute("select ledger.step_event_v1_valid('{}')")


# -- the CHECK constraint ----------------------------------------------------------------------
def test_constraint_uses_the_predicate(su_conn: psycopg.Connection) -> None:
    assert constraint_def(su_conn) == ("CHECK (ledger.step_event_v1_valid(payload))", True)


def _insert(conn: psycopg.Connection, payload: dict[str, Any]) -> None:
    conn.execute(
        "insert into ledger.events (client_id, received_at, event_id, vault_id, job_id, pipeline,"
        " step, status, occurred_at, attempt, units, payload)"
        " values ('st-mary', now(), %s, 0, 'j', 'botimage', 'dicom-intake', 'completed', now(),"
        " 1, 1, %s::jsonb)", [payload.get("event_id", "x"), json.dumps(payload)])


def test_constraint_refuses_a_bad_payload_on_any_path(db: psycopg.Connection) -> None:
    _insert(db, event())  # a good one goes in
    with pytest.raises(psycopg.errors.CheckViolation) as caught:
        _insert(db, event(status="cancelled"))
    assert caught.value.diag.constraint_name == ENVELOPE_CONSTRAINT


def test_migrate_replaces_an_older_constraint(settings: Settings,
                                              su_conn: psycopg.Connection) -> None:
    with su_conn.transaction():
        su_conn.execute(f"alter table ledger.events drop constraint {ENVELOPE_CONSTRAINT}")
        su_conn.execute(f"alter table ledger.events add constraint {ENVELOPE_CONSTRAINT}"
                        f" check ({OLD_CHECK})")
    assert "jsonb_matches_schema" in constraint_def(su_conn)[0]
    migrate(settings)
    assert constraint_def(su_conn) == ("CHECK (ledger.step_event_v1_valid(payload))", True)
    partitions = su_conn.execute(
        "select count(*) filter (where pg_get_constraintdef(c.oid) like '%%step_event_v1_valid%%'),"
        "       count(*)"
        "  from pg_inherits i join pg_constraint c on c.conrelid = i.inhrelid"
        " where i.inhparent = 'ledger.events'::regclass and c.conname = %s",
        [ENVELOPE_CONSTRAINT]).fetchone()
    assert partitions is not None and partitions[0] == partitions[1] > 0


# -- ingest ------------------------------------------------------------------------------------
def ingest(client: httpx.Client, text: str) -> dict[str, Any]:
    response = client.post("/rpc/ingest", content=text,
                           headers={"Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    return response.json()


def stored(conn: psycopg.Connection, event_id: str) -> tuple[Any, ...] | None:
    return conn.execute("select attempt, units from ledger.events where event_id = %s",
                        [event_id]).fetchone()


@pytest.mark.parametrize(("number_field", "stored_as"), [
    ('"attempt": 1.0', (1, 1)),
    ('"attempt": 0.99999999999999999', (1, 1)),
    ('"attempt": 2e0', (2, 1)),
    ('"units": -1e-400', (1, 0)),
    ('"units": 2.50', (1, 2.5)),
    ("", (1, 1)),
])
def test_numbers_the_envelope_accepts_are_stored(admin: httpx.Client, su_conn: psycopg.Connection,
                                                 number_field: str,
                                                 stored_as: tuple[int, float]) -> None:
    """A number JSON Schema calls valid must not break the batch when typed into columns."""
    body = event()
    text = json.dumps(body)[:-1] + (", " + number_field if number_field else "") + "}"
    other = event()
    answer = ingest(admin, f"[{text}, {json.dumps(other)}]")
    assert answer == {"accepted": 2, "duplicates": 0, "rejected": []}
    assert stored(su_conn, body["event_id"]) == stored_as
    assert stored(su_conn, other["event_id"]) == (1, 1)


def test_invalid_events_still_get_detailed_errors(admin: httpx.Client) -> None:
    bad = event(status="failed", attempt=0, extra=True)
    answer = ingest(admin, json.dumps([bad, event()]))
    assert answer["accepted"] == 1
    errors = answer["rejected"][0]["errors"]
    assert {e["path"] for e in errors} == {"/attempt", "/error", "/extra"}
    assert all(e["message"] for e in errors)


def test_a_trailing_newline_is_rejected_with_its_cause(admin: httpx.Client,
                                                      su_conn: psycopg.Connection) -> None:
    """`$` ends the string for the envelope check and for the detailed report alike (ECMA-262),
    so a slug with a trailing newline is refused with its path, not in general terms."""
    bad = event(client_id="st-mary\n")
    answer = ingest(admin, json.dumps([bad]))
    assert answer["accepted"] == 0
    [rejection] = answer["rejected"]
    assert [(e["path"], e["keyword"]) for e in rejection["errors"]] == [("/client_id", "pattern")]
    kept = su_conn.execute("select outcome, errors from ledger.vault where event_id = %s",
                           [bad["event_id"]]).fetchone()
    assert kept == ("rejected", rejection["errors"])


@pytest.mark.parametrize(("occurred_at", "exists"), [
    ("2024-02-29T10:00:00Z", True), ("2000-02-29T10:00:00Z", True),
    ("2026-02-29T10:00:00Z", False), ("1900-02-29T10:00:00Z", False),
    ("2026-02-28T23:59:59.999999999-23:59", True), ("2026-04-31T10:00:00Z", False),
    ("2026-06-30T10:00:00Z", True), ("2026-12-31T10:00:00+05:00", True),
    ("0000-01-01T00:00:00Z", False), ("0001-01-01T00:00:00+23:59", True),
    ("9999-12-31T23:59:59-23:59", True),
])
def test_dates_that_do_not_exist_are_rejected(admin: httpx.Client, occurred_at: str,
                                              exists: bool) -> None:
    body = event(occurred_at=occurred_at)
    answer = ingest(admin, json.dumps([body, event()]))
    assert answer["accepted"] == (2 if exists else 1), answer
    if not exists:
        assert answer["rejected"][0]["errors"] == [
            {"path": "/occurred_at", "message": f'"{occurred_at}" is not a date that exists'}]


@pytest.mark.parametrize(("occurred_at", "utc"), [
    ("2026-01-01T00:00:00+16:00", "2025-12-31 08:00:00+00"),
    ("2026-01-01T00:00:00-23:59", "2026-01-01 23:59:00+00"),
    ("2026-01-01T10:00:00.5+05:30", "2026-01-01 04:30:00.5+00"),
    ("2026-01-01t10:00:00z", "2026-01-01 10:00:00+00"),
])
def test_any_rfc3339_offset_is_stored_as_its_instant(admin: httpx.Client,
                                                     su_conn: psycopg.Connection,
                                                     occurred_at: str, utc: str) -> None:
    """PostgreSQL reads offsets only up to ±15:59; the envelope allows ±23:59."""
    body = event(occurred_at=occurred_at)
    assert ingest(admin, json.dumps([body]))["accepted"] == 1
    row = su_conn.execute("select occurred_at = %s::timestamptz from ledger.events"
                          " where event_id = %s", [utc, body["event_id"]]).fetchone()
    assert row == (True,)
