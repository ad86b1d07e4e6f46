"""The compiled envelope in the database: ledger.step_event_v1_valid and ingest classifying with
it; the CHECKs on the typed columns of ledger.events that mirror the envelope, whatever the path
(ADR 0014)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from stepledger.config import Settings
from stepledger.migrate import migrate

REPO = Path(__file__).resolve().parents[1]
BOTIMAGE = json.loads((REPO / "schemas" / "pipelines" / "botimage.json").read_text())


@pytest.fixture(scope="module", autouse=True)
def catalog(su_conn: psycopg.Connection) -> None:
    su_conn.execute("select ledger.register_pipeline(%s::jsonb)", [json.dumps(BOTIMAGE)])
    su_conn.execute("select ledger.add_client('st-mary', 'St Mary''s Hospital')")


def event(**fields: Any) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:10]
    body = {"event_id": f"env-{tag}", "client_id": "st-mary", "job_id": f"job-{tag}",
            "pipeline": "botimage", "step": BOTIMAGE["steps"][0]["key"], "status": "completed",
            "occurred_at": "2026-11-02T10:00:00Z"}
    body.update(fields)
    return body


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
        "  from ledger.vault").fetchall()
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


# -- the CHECK constraints ---------------------------------------------------------------------
def _insert(conn: psycopg.Connection, **override: Any) -> None:
    """A direct insert into ledger.events, as psql or a future loader could try."""
    row: dict[str, Any] = {"client_id": "st-mary", "event_id": uuid.uuid4().hex, "job_id": "j",
                           "status": "completed",
                           "attempt": 1, "units": 1, "error_code": None, "error_message": None,
                           "error_retryable": None, "source": None, "data": None}
    row.update(override)
    conn.execute(
        "insert into ledger.events (client_id, received_at, vault_id, pipeline, step, occurred_at,"
        " event_id, job_id, status, attempt, units, error_code, error_message, error_retryable,"
        " source, data)"
        " values (%(client_id)s, now(), 0, 'botimage', 'dicom-intake', now(),"
        " %(event_id)s, %(job_id)s, %(status)s, %(attempt)s, %(units)s, %(error_code)s,"
        " %(error_message)s, %(error_retryable)s, %(source)s, %(data)s::jsonb)", row)


@pytest.mark.parametrize(("override", "constraint"), [
    ({"event_id": ""}, "events_event_id_check"),
    ({"event_id": "x" * 129}, "events_event_id_check"),
    ({"job_id": "j" * 201}, "events_job_id_check"),
    ({"status": "failed"}, "events_error_iff_failed"),
    ({"status": "failed", "error_code": "E"}, "events_error_iff_failed"),
    ({"error_code": "E", "error_message": "m"}, "events_error_iff_failed"),
    ({"error_retryable": True}, "events_error_iff_failed"),
    ({"status": "failed", "error_code": "", "error_message": "m"}, "events_error_code_check"),
    ({"status": "failed", "error_code": "E", "error_message": "m" * 10_001},
     "events_error_message_check"),
    ({"attempt": 0}, "events_attempt_check"),
    ({"attempt": 1_000_001}, "events_attempt_check"),
    ({"units": -1}, "events_units_check"),
    ({"units": 10**12 + 1}, "events_units_check"),
    ({"source": "s" * 201}, "events_source_check"),
    ({"data": "[1]"}, "events_data_check"),
])
def test_constraints_refuse_a_bad_event_on_any_path(db: psycopg.Connection,
                                                     override: dict[str, Any],
                                                     constraint: str) -> None:
    _insert(db)  # a good one goes in
    _insert(db, status="failed", error_code="E", error_message="m", error_retryable=False,
            data='{"pages": 3}', source="host-1")
    with pytest.raises(psycopg.errors.CheckViolation) as caught, db.transaction():
        _insert(db, **override)
    assert caught.value.diag.constraint_name == constraint


@pytest.mark.parametrize("override", [
    {"status": "cancelled"}, {"client_id": "St Mary"}, {"client_id": "a" * 64},
    {"client_id": "-a"}, {"client_id": "a\n"}, {"client_id": ""}])
def test_domains_refuse_a_bad_status_or_slug(db: psycopg.Connection,
                                             override: dict[str, Any]) -> None:
    with pytest.raises(psycopg.errors.CheckViolation):
        _insert(db, **override)


def test_the_slug_domain_takes_63_characters(db: psycopg.Connection) -> None:
    _insert(db, client_id="a" * 63)
    _insert(db, client_id="0_-")


def test_events_keep_no_second_copy_of_the_payload(su_conn: psycopg.Connection) -> None:
    """The event as received is kept once, in the vault; the events table has no payload column
    and no CHECK that re-runs the envelope."""
    columns = {r[0] for r in su_conn.execute(
        "select attname from pg_attribute where attrelid = 'ledger.events'::regclass"
        " and attnum > 0 and not attisdropped").fetchall()}
    assert "payload" not in columns and "data" in columns
    checks = [r[0] for r in su_conn.execute(
        "select pg_get_constraintdef(oid) from pg_constraint"
        " where conrelid = 'ledger.events'::regclass and contype = 'c'").fetchall()]
    assert checks and not [c for c in checks if "step_event_v1_valid" in c or "jsonb_matches" in c]


def test_migrate_twice_keeps_the_constraints(settings: Settings,
                                             su_conn: psycopg.Connection) -> None:
    def constraints() -> list[tuple[str, str]]:
        return [tuple(r) for r in su_conn.execute(
            "select conname, pg_get_constraintdef(oid) from pg_constraint"
            " where conrelid = 'ledger.events'::regclass order by conname").fetchall()]
    before = constraints()
    migrate(settings)
    assert constraints() == before


# -- ingest ------------------------------------------------------------------------------------
@pytest.fixture
def admin(api: Callable[..., httpx.Client], jwt_for: Callable[..., str]) -> httpx.Client:
    return api(jwt_for("admin"))


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
