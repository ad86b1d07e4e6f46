"""Hostile and broken input: a corpus (tests/corpus/) plus property-based generation.

Every case must end in a 4xx with a clear message or a rejection entry, never a 5xx, never a
stuck connection; whatever reaches the database is kept in the vault. docs/reliability.md lists
the classes and the limits (body size, batch size, nesting depth, statement timeouts, max rows).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stacks import register_catalog
from stepledger.settings import Settings

REPO = Path(__file__).resolve().parents[1]
CORPUS = Path(__file__).resolve().parent / "corpus"
CLIENT, OTHER = "st-mary", "riverside"


def _jsonl(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (CORPUS / name).read_text().splitlines() if line.strip()]


BAD_EVENTS = _jsonl("events.jsonl")
BAD_BODIES = _jsonl("bodies.jsonl")
ODD_BUT_VALID = _jsonl("valid_odd.jsonl")
FILTERS = [line for line in (CORPUS / "filters.txt").read_text().splitlines()
           if line and not line.startswith("#")]
LISTS = ["/jobs", "/step_runs", "/usage", "/error_stats", "/prices"]


@pytest.fixture(scope="module", autouse=True)
def catalog(su_conn: psycopg.Connection) -> None:
    register_catalog(su_conn, [CLIENT, OTHER])


@pytest.fixture(scope="module")
def sender(stack: Settings, api_token: Callable[..., str]) -> Iterator[httpx.Client]:
    """An ingest token bound to st-mary, through the API gateway."""
    with httpx.Client(base_url=stack.api_url, timeout=60,
                      headers={"Authorization": f"Bearer {api_token(CLIENT)}"}) as client:
        yield client


def event(**fields: Any) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:12]
    body: dict[str, Any] = {
        "event_id": f"bad-{tag}", "client_id": CLIENT, "job_id": f"bad-job-{tag}",
        "pipeline": "botimage", "step": "report", "status": "completed",
        "occurred_at": "2026-11-02T10:00:00Z"}
    body.update(fields)
    return body


def post(client: httpx.Client, content: bytes | str, path: str = "/rpc/ingest",
         content_type: str = "application/json") -> httpx.Response:
    return client.post(path, content=content, headers={"Content-Type": content_type})


def vault_since(conn: psycopg.Connection, since: Any) -> list[tuple[Any, ...]]:
    return conn.execute(
        "select position, outcome, event_id, payload, raw_text, errors from ledger.vault "
        "where received_at >= %s order by batch_id, position", [since]).fetchall()


def db_now(conn: psycopg.Connection) -> Any:
    return conn.execute("select clock_timestamp()").fetchone()[0]


def corrupt(case: dict[str, Any]) -> dict[str, Any]:
    body = event(**case.get("set", {}))
    for name in case.get("remove", []):
        body.pop(name)
    return body


# -- the event corpus: one bad element never fails its batch ------------------------------------
@pytest.mark.parametrize("case", BAD_EVENTS, ids=[c["name"] for c in BAD_EVENTS])
def test_bad_event_is_a_rejection_entry_and_vaulted(sender: httpx.Client,
                                                    su_conn: psycopg.Connection,
                                                    case: dict[str, Any]) -> None:
    good, bad = event(), corrupt(case)
    since = db_now(su_conn)
    response = post(sender, json.dumps([good, bad]))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["accepted"] == 1 and body["duplicates"] == 0, body
    assert [r["index"] for r in body["rejected"]] == [1]
    errors = body["rejected"][0]["errors"]
    assert errors and all(e["message"] for e in errors)
    assert case["path"] in [e["path"] for e in errors], errors
    vaulted = vault_since(su_conn, since)
    assert [(v[0], v[1]) for v in vaulted] == [(0, "accepted"), (1, "rejected")]
    assert vaulted[1][3] == bad and vaulted[1][5] == errors


def test_the_whole_corpus_in_one_batch(sender: httpx.Client, su_conn: psycopg.Connection) -> None:
    batch = [corrupt(c) for c in BAD_EVENTS] + [event()]
    since = db_now(su_conn)
    body = post(sender, json.dumps(batch)).json()
    assert body["accepted"] == 1
    assert [r["index"] for r in body["rejected"]] == list(range(len(BAD_EVENTS)))
    assert len(vault_since(su_conn, since)) == len(batch)


@pytest.mark.parametrize("case", ODD_BUT_VALID, ids=[c["name"] for c in ODD_BUT_VALID])
def test_odd_but_valid_text_is_kept_exactly(sender: httpx.Client, su_conn: psycopg.Connection,
                                            case: dict[str, Any]) -> None:
    sent = event(**{case["field"]: case["value"]})
    if case["field"] == "job_id":
        sent["event_id"] = f"odd-{uuid.uuid4().hex}"
    body = post(sender, json.dumps(sent, ensure_ascii=False).encode()).json()
    assert body == {"accepted": 1, "duplicates": 0, "rejected": []}
    # the event as received is the vault's copy; the typed columns are read from it
    stored = su_conn.execute("select v.payload, e.job_id from ledger.events e"
                             " join ledger.vault v using (client_id, received_at, vault_id)"
                             " where e.client_id = %s and e.event_id = %s",
                             [CLIENT, sent["event_id"]]).fetchone()
    assert stored == (sent, sent["job_id"])


def test_integral_float_attempt_is_an_integer(sender: httpx.Client,
                                              su_conn: psycopg.Connection) -> None:
    # JSON Schema counts 2.0 as an integer; the typed column must not fail the batch on it.
    sent = event(attempt=2.0)
    body = post(sender, json.dumps([sent, event()])).json()
    assert body == {"accepted": 2, "duplicates": 0, "rejected": []}
    assert su_conn.execute("select attempt from ledger.events where client_id = %s "
                           "and event_id = %s", [CLIENT, sent["event_id"]]).fetchone() == (2,)


# -- bodies that are not batches -----------------------------------------------------------------
@pytest.mark.parametrize("case", BAD_BODIES, ids=[c["name"] for c in BAD_BODIES])
def test_bad_body_is_a_4xx_with_a_clear_message(sender: httpx.Client, su_conn: psycopg.Connection,
                                                case: dict[str, Any]) -> None:
    content = bytes.fromhex(case["hex"]) if "hex" in case else case["text"].encode()
    since = db_now(su_conn)
    response = post(sender, content)
    assert response.status_code == case["status"], response.text
    answer = response.json()
    assert answer["message"] and answer["code"] == case.get("code", answer["code"])
    kept = vault_since(su_conn, since)
    assert case["vaulted"]  # every body that reaches the database is kept, whatever its bytes
    assert [k[1] for k in kept] == ["rejected"]
    if "text" in case:
        assert kept[0][4] == case["text"]
    assert kept[0][5][0]["message"] == answer["message"]
    # and its exact bytes, once (the text of bytes that are not UTF-8 is an escaped form)
    bodies = su_conn.execute("select count(*) from ledger.vault_bodies "
                             "where received_at >= %s and sha256(body) = %s",
                             [since, hashlib.sha256(content).digest()]).fetchone()[0]
    assert bodies == 1


def test_deep_nesting_is_a_rejection_not_an_error(sender: httpx.Client,
                                                  su_conn: psycopg.Connection) -> None:
    deep = "[" * 5000 + "]" * 5000
    good = event()
    nested = (json.dumps(event(step="dicom-intake"))[:-1]
              + ', "data": {"images": 1, "x": ' + deep + "}}")
    shallow = json.dumps(event())[:-1] + ', "data": {"x": ' + "[" * 60 + "]" * 60 + "}}"
    since = db_now(su_conn)
    response = post(sender, f"[{json.dumps(good)}, {nested}, {shallow}]")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["accepted"] == 2
    assert body["rejected"][0]["index"] == 1
    assert body["rejected"][0]["errors"] == [
        {"path": "", "message": "the event nests deeper than 64 levels"}]
    outcomes = su_conn.execute("select outcome from ledger.vault where received_at >= %s "
                               "order by outcome", [since]).fetchall()
    assert outcomes == [("accepted",), ("accepted",), ("rejected",)]
    # A whole body nested too deep for the JSON parser is a 400, kept raw.
    response = post(sender, "[" * 100_000 + "]" * 100_000)
    assert response.status_code == 400 and response.json()["code"] == "SL204"


def test_ten_megabyte_bodies(sender: httpx.Client, su_conn: psycopg.Connection) -> None:
    huge_source = event(source="x" * 10_000_000)
    body = post(sender, json.dumps([huge_source])).json()
    assert body["accepted"] == 0
    assert [e["path"] for e in body["rejected"][0]["errors"]] == ["/source"]
    assert len(body["rejected"][0]["errors"][0]["message"]) < 500  # the value is not echoed whole
    huge_data = event(data={"blob": "y" * 10_000_000})
    assert post(sender, json.dumps([huge_data])).json()["accepted"] == 1
    sizes = su_conn.execute(
        "select event_id, outcome, length(payload::text) from ledger.vault "
        "where client_id = %s and event_id = any(%s) order by outcome",
        [CLIENT, [huge_source["event_id"], huge_data["event_id"]]]).fetchall()
    assert [(s[0], s[1]) for s in sizes] == [(huge_data["event_id"], "accepted"),
                                             (huge_source["event_id"], "rejected")]
    assert all(s[2] > 10_000_000 for s in sizes)


def test_over_sixteen_megabytes_is_413_in_the_api_shape(sender: httpx.Client, web_url: str) -> None:
    response = post(sender, b"[" + b" " * 17_000_000 + b"]")
    assert response.status_code == 413
    assert response.json()["code"] == "SL801"
    via_web = httpx.post(f"{web_url}/api/rpc/ingest", content=b"x" * 17_000_000, timeout=60)
    assert via_web.status_code == 413 and via_web.json()["code"] == "SL801"


def test_a_long_query_is_answered_and_a_too_long_one_is_414_in_the_api_shape(
        web_url: str, api_url: str, jwt_for: Callable[..., str]) -> None:
    # PostgREST repeats the path and query in Content-Location: the gateway must hold them
    headers = {"Authorization": f"Bearer {jwt_for('admin')}"}
    for base in (api_url, f"{web_url}/api"):
        for length in (3_000, 6_000, 7_900):
            query = "client_id=eq." + "x" * (length - len("/usage?client_id=eq."))
            answer = httpx.get(f"{base}/usage?{query}", headers=headers, timeout=60)
            assert (answer.status_code, answer.json()) == (200, []), (base, length, answer.text)
        answer = httpx.get(f"{base}/usage?client_id=eq.{'x' * 9_000}", headers=headers,
                           timeout=60)
        assert answer.status_code == 414 and answer.json()["code"] == "SL802", answer.text


@pytest.mark.parametrize("path,separator,content_type", [
    ("/rpc/ingest", ",", "application/json"),
    ("/rpc/ingest_ndjson", "\n", "application/x-ndjson")])
def test_a_100k_element_batch_is_refused_and_kept(sender: httpx.Client,
                                                  su_conn: psycopg.Connection, path: str,
                                                  separator: str, content_type: str) -> None:
    text = separator.join(["{}"] * 100_000)
    if path == "/rpc/ingest":
        text = f"[{text}]"
    since = db_now(su_conn)
    response = post(sender, text, path, content_type)
    assert response.status_code == 413, response.text
    assert response.json()["code"] == "SL202"
    assert "100000" in response.json()["message"]
    assert [(k[1], len(k[4])) for k in vault_since(su_conn, since)] == [("rejected", len(text))]


# -- property-based: generated events and bodies --------------------------------------------------
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30),
    lambda inner: (st.lists(inner, max_size=4)
                   | st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12)
FIELDS = ["event_id", "client_id", "job_id", "pipeline", "step", "status", "occurred_at",
          "attempt", "units", "error", "source", "data"]


@st.composite
def mutated_events(draw: st.DrawFn) -> object:
    if draw(st.integers(0, 9)) == 0:
        return draw(JSON_VALUES)  # not even an object
    body: dict[str, Any] = event()
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=4, unique=True)):
        if draw(st.booleans()):
            body.pop(name, None)
        else:
            body[name] = draw(JSON_VALUES)
    body.update(draw(st.dictionaries(st.text(min_size=1, max_size=8), JSON_VALUES, max_size=2)))
    return body


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(mutated_events(), min_size=1, max_size=6))
def test_generated_events_never_fail_a_batch(sender: httpx.Client, su_conn: psycopg.Connection,
                                             batch: list[object]) -> None:
    text = json.dumps(batch)
    since = db_now(su_conn)
    response = post(sender, text)
    if "\\u0000" in text:  # PostgreSQL's jsonb cannot hold NUL: the body is refused whole
        assert response.status_code == 400 and response.json()["code"] == "SL204"
        assert len(vault_since(su_conn, since)) == 1
        return
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["accepted"] + body["duplicates"] + len(body["rejected"]) == len(batch)
    for rejection in body["rejected"]:
        assert rejection["errors"] and all(e["message"] for e in rejection["errors"])
    assert len(vault_since(su_conn, since)) == len(batch)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.binary(max_size=300) | st.text(max_size=300).map(str.encode),
       path=st.sampled_from(["/rpc/ingest", "/rpc/ingest_ndjson"]))
def test_generated_bodies_get_an_answer_never_a_5xx(sender: httpx.Client, content: bytes,
                                                    path: str) -> None:
    response = post(sender, content, path)
    assert response.status_code in (200, 400), response.text
    answer = response.json()
    if response.status_code == 400:
        assert answer["message"] and answer["code"]
    else:
        assert {"accepted", "duplicates", "rejected"} <= answer.keys()


# -- filters with SQL fragments, for each role ----------------------------------------------------
@pytest.fixture(scope="module")
def other_client_rows(stack: Settings, jwt_for: Callable[..., str]) -> None:
    """Rows of both clients in every list, so a leak would show."""
    with httpx.Client(base_url=stack.api_url, timeout=30,
                      headers={"Authorization": f"Bearer {jwt_for('admin')}"}) as admin:
        batch = [event(client_id=c, occurred_at="2026-10-02T10:00:00Z") for c in (CLIENT, OTHER)]
        batch += [event(client_id=c, status="failed", error={"code": "E", "message": "m"})
                  for c in (CLIENT, OTHER)]
        assert post(admin, json.dumps(batch)).json()["accepted"] == 4
        response = admin.post("/prices", json={"pipeline": "botimage", "step": "report",
                                               "client_id": OTHER, "unit_price": 1.5,
                                               "currency": "EUR", "effective_from": "2026-01-01"})
        assert response.status_code in (201, 409), response.text


@pytest.mark.parametrize("role", ["anon", "client", "admin", "ingest"])
def test_hostile_filters_never_5xx_and_never_leak(stack: Settings, jwt_for: Callable[..., str],
                                                  api_token: Callable[..., str],
                                                  other_client_rows: None, role: str) -> None:
    token = {"anon": None, "client": jwt_for("client", CLIENT), "admin": jwt_for("admin"),
             "ingest": api_token(CLIENT)}[role]
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    seen_other: set[str] = set()
    with httpx.Client(base_url=stack.api_url, timeout=30, headers=headers) as client:
        for endpoint in LISTS:
            for query in FILTERS:
                response = client.get(f"{endpoint}?{query}")
                assert response.status_code < 500, (endpoint, query, response.text)
                if response.status_code != 200:
                    assert response.json()["message"], (endpoint, query)
                    continue
                owners = {row.get("client_id") for row in response.json()}
                seen_other |= owners - {CLIENT, None}
                if role == "client":
                    assert owners <= {CLIENT, None}, (endpoint, query, owners)
                elif role in ("anon", "ingest"):
                    assert owners == set(), (endpoint, query, owners)
    if role == "admin":  # the same queries do reach the other client's rows
        assert OTHER in seen_other


# -- limits are configured and hold; nothing is left stuck ----------------------------------------
def test_statement_timeouts_per_role(su_conn: psycopg.Connection) -> None:
    rows = dict(su_conn.execute(
        "select r.rolname, s.setconfig from pg_db_role_setting s "
        "join pg_roles r on r.oid = s.setrole "
        "where s.setdatabase = 0 and r.rolname in ('anon', 'client', 'ingest', 'admin', "
        "'authenticator')").fetchall())
    assert {k: [c for c in v if c.startswith("statement_timeout=")] for k, v in rows.items()} == {
        "anon": ["statement_timeout=3s"], "client": ["statement_timeout=10s"],
        "ingest": ["statement_timeout=30s"], "admin": ["statement_timeout=60s"],
        "authenticator": ["statement_timeout=60s"]}


def test_db_max_rows_is_configured() -> None:
    conf = (REPO / "deploy" / "postgrest.conf").read_text()
    assert "\ndb-max-rows = 10000\n" in conf
    assert "client_max_body_size 16m;" in (REPO / "deploy/nginx/default.conf.template").read_text()


def test_no_connection_is_left_stuck(stack: Settings, sender: httpx.Client,
                                     su_conn: psycopg.Connection) -> None:
    stuck = su_conn.execute(
        "select count(*) from pg_stat_activity where datname = current_database() "
        "and state in ('idle in transaction', 'idle in transaction (aborted)') "
        "and pid <> pg_backend_pid()").fetchone()[0]
    assert stuck == 0
    assert httpx.get(f"{stack.api_admin_url}/ready", timeout=5).status_code == 200
    assert post(sender, json.dumps([event()])).json()["accepted"] == 1
