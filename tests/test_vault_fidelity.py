"""Vault fidelity: every ingest body that reaches the database is kept byte for byte, once per
request (ledger.vault_bodies), with what was wrong with it (docs/security.md, ADR 0007).

Each odd body is sent over HTTP through the API gateway (nginx, both ports) and through SQL, and
the sha256 of the stored bytes is compared with the sha256 of the bytes sent.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from stacks import BOTIMAGE, register_catalog
from stepledger.settings import Settings

REPO = Path(__file__).resolve().parents[1]
CLIENT, OTHER = "st-mary", "riverside"


@pytest.fixture(scope="module", autouse=True)
def catalog(su_conn: psycopg.Connection) -> None:
    register_catalog(su_conn, [CLIENT, OTHER])


def event(tag: str, n: int = 0, client_id: str = CLIENT) -> dict[str, Any]:
    return {"event_id": f"{tag}-{n}", "client_id": client_id, "job_id": f"job-{tag}",
            "pipeline": "botimage", "step": BOTIMAGE["steps"][n]["key"], "status": "completed",
            "occurred_at": "2026-11-02T10:00:00Z"}


def compact(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


def odd_bodies(tag: str) -> dict[str, tuple[str, bytes, int]]:
    """name -> (endpoint, exact bytes, expected status): each body unique to this test run."""
    one = compact(event(tag, 0))
    two = compact(event(tag, 1))
    return {
        "invalid-utf8": ("/rpc/ingest",
                         f'[{{"event_id":"{tag}","x":"'.encode() + b'\xff\xfe"}]', 400),
        "overlong-utf8": ("/rpc/ingest", f'["{tag}","'.encode() + b'\xc0\xaf"]', 400),
        "nul-byte": ("/rpc/ingest", f'[{one[:-1]},"x":"a'.encode() + b"\x00" + b'b"}]', 400),
        "nul-after-json": ("/rpc/ingest", f"[{one}]".encode() + b"\x00trailing", 400),
        "duplicate-keys": (
            "/rpc/ingest",
            f'[{one[:-1]},"data":{{"a":1,"a":2}},"status":"started"}}]'.encode(), 200),
        "byte-order-mark": ("/rpc/ingest", b"\xef\xbb\xbf" + f"[{one}]".encode(), 400),
        "huge-numbers": ("/rpc/ingest", (
            f'[{one[:-1]},"data":{{"n":123456789012345678901234567890.1234567890123e-5,'
            f'"m":1E+400,"z":-0.0}}}}]').encode(), 200),
        "whitespace": ("/rpc/ingest", ("\r\n\t [ " + json.dumps(event(tag, 0), indent=3)
                                       + " ,\n\n" + two + "\t]\r\n ").encode(), 200),
        "not-json": ("/rpc/ingest", f"[{{{tag}: nope}}]".encode(), 400),
        "empty": ("/rpc/ingest", b"", 400),
        "ndjson-crlf": ("/rpc/ingest_ndjson", f"{one}\r\n\r\n  \r\n{two}\r\n".encode(), 200),
        "ndjson-bad-bytes": ("/rpc/ingest_ndjson",
                             f"{one}\n".encode() + b"\xff\n" + f"{two}\n".encode(), 400),
        "ndjson-duplicate-keys": ("/rpc/ingest_ndjson",
                                  f'{one}\n{two[:-1]},"units":2,"units":3}}\n'.encode(), 200),
        "ndjson-empty": ("/rpc/ingest_ndjson", b"", 200),
    }


def stored(conn: psycopg.Connection, sent: bytes, since: Any) -> list[tuple[Any, ...]]:
    """The body rows stored since `since` whose bytes have the sha256 of the bytes sent."""
    return conn.execute(
        "select encode(sha256(body), 'hex'), problems, elements, client_id, batch_id "
        "  from ledger.vault_bodies where received_at >= %s and sha256(body) = %s",
        [since, hashlib.sha256(sent).digest()]).fetchall()


def db_now(conn: psycopg.Connection) -> Any:
    return conn.execute("select clock_timestamp()").fetchone()[0]


@pytest.mark.parametrize("port", ["api", "web"])
def test_every_odd_body_is_kept_byte_for_byte_over_http(
    stack: Settings, api_token: Callable[..., str], su_conn: psycopg.Connection, port: str
) -> None:
    base = stack.api_url if port == "api" else f"{stack.web_url}/api"
    tag = uuid.uuid4().hex[:12]
    headers = {"Authorization": f"Bearer {api_token(CLIENT)}"}
    with httpx.Client(base_url=base, headers=headers, timeout=30) as sender:
        for name, (path, content, status) in odd_bodies(tag).items():
            since = db_now(su_conn)
            content_type = "application/x-ndjson" if "ndjson" in path else "application/json"
            response = sender.post(path, content=content, headers={"Content-Type": content_type})
            assert response.status_code == status, (name, response.text)
            rows = stored(su_conn, content, since)
            assert len(rows) == 1, name  # kept once, exactly as sent
            assert rows[0][0] == hashlib.sha256(content).hexdigest()
            assert rows[0][3] == CLIENT  # a bound token's bodies are its client's
            # one body row per request, beside the per-element rows of the same batch
            elements = su_conn.execute("select count(*) from ledger.vault where batch_id = %s",
                                       [rows[0][4]]).fetchone()[0]
            assert elements == rows[0][2], name


def problems_of(conn: psycopg.Connection, sent: bytes, since: Any) -> list[dict[str, Any]]:
    rows = stored(conn, sent, since)
    assert len(rows) == 1
    return rows[0][1]


def test_the_vault_says_what_was_wrong(
    stack: Settings, api_token: Callable[..., str], su_conn: psycopg.Connection
) -> None:
    tag = uuid.uuid4().hex[:12]
    bodies = odd_bodies(tag)
    with httpx.Client(base_url=stack.api_url, timeout=30,
                      headers={"Authorization": f"Bearer {api_token(CLIENT)}"}) as sender:
        def send(name: str) -> tuple[httpx.Response, list[dict[str, Any]]]:
            path, content, _ = bodies[name]
            since = db_now(su_conn)
            response = sender.post(path, content=content,
                                   headers={"Content-Type": "application/octet-stream"})
            return response, problems_of(su_conn, content, since)

        offset = bodies["invalid-utf8"][1].index(b"\xff")
        response, problems = send("invalid-utf8")
        expected = f"invalid UTF-8 at byte offset {offset} (byte 0xff)"
        assert problems == [{"offset": offset, "message": expected}]
        assert response.json()["code"] == "SL204"
        assert response.json()["message"] == "request body is not valid JSON: " + expected

        offset = bodies["overlong-utf8"][1].index(b"\xc0")
        assert send("overlong-utf8")[1] == [
            {"offset": offset, "message": f"invalid UTF-8 at byte offset {offset} (byte 0xc0)"}]

        for name in ("nul-byte", "nul-after-json"):
            offset = bodies[name][1].index(b"\x00")
            response, problems = send(name)
            assert problems == [{"offset": offset, "message": f"NUL byte at byte offset {offset}"}]
            assert f"NUL byte at byte offset {offset}" in response.json()["message"]

        response, problems = send("duplicate-keys")
        assert response.json()["accepted"] == 1
        read = "only its last value was read"
        assert problems == [
            {"path": "/0", "key": "status",
             "message": f'duplicate key "status" in the object at /0: {read}'},
            {"path": "/0/data", "key": "a",
             "message": f'duplicate key "a" in the object at /0/data: {read}'}]

        response, problems = send("ndjson-duplicate-keys")
        assert response.json()["accepted"] + response.json()["duplicates"] == 2
        assert problems == [
            {"line": 2, "path": "", "key": "units",
             "message": f'line 2: duplicate key "units" in the top-level object: {read}'}]

        response, problems = send("byte-order-mark")
        assert response.status_code == 400 and "byte order mark" in response.json()["message"]
        assert [p["message"] for p in problems] == [response.json()["message"]]

        response, problems = send("not-json")
        assert [p["message"] for p in problems] == [response.json()["message"]]
        assert "not valid JSON" in problems[0]["message"]

        response, problems = send("ndjson-bad-bytes")
        offset = bodies["ndjson-bad-bytes"][1].index(b"\xff")
        assert problems == [
            {"offset": offset, "message": f"invalid UTF-8 at byte offset {offset} (byte 0xff)"}]

        content = b'{"event_id": 1}\n\nnot json ' + tag.encode() + b"\n"
        since = db_now(su_conn)
        response = sender.post("/rpc/ingest_ndjson", content=content)
        assert [r["index"] for r in response.json()["rejected"]] == [1, 3]
        problems = problems_of(su_conn, content, since)
        assert [(p["line"], p["message"].split(" is ")[0]) for p in problems] == [(3, "line 3")]

        # bodies without a fault say nothing
        for name in ("huge-numbers", "whitespace", "ndjson-crlf", "ndjson-empty"):
            assert send(name)[1] == [], name


def test_sql_callers_keep_their_bodies_too(settings: Settings) -> None:
    tag = uuid.uuid4().hex[:12]
    count = "select count(*) from ledger.vault_bodies where sha256(body) = %s"
    with psycopg.connect(settings.dsn("postgres")) as conn:
        conn.execute("""select set_config('request.jwt.claims', '{"role": "ingest"}', true)""")

        def ingest_as_token(function: str, argument: bytes | str, cast: str) -> None:
            conn.execute("set local role ingest")
            conn.execute(f"select {function}(%s::{cast})", [argument])
            conn.execute("reset role")

        for name, (path, content, _) in odd_bodies(tag).items():
            function = "api.ingest" if path == "/rpc/ingest" else "api.ingest_ndjson"
            digest = hashlib.sha256(content).digest()
            before = conn.execute(count, [digest]).fetchone()[0]
            ingest_as_token(function, content, "bytea")
            assert conn.execute(count, [digest]).fetchone()[0] == before + 1, name
            try:
                text = content.decode()
            except UnicodeDecodeError:
                continue
            if "\x00" in text:
                continue  # not text PostgreSQL can hold: only bytea carries it
            ingest_as_token(function, text, "text")  # the same bytes again
            assert conn.execute(count, [digest]).fetchone()[0] == before + 2, name
        conn.rollback()


def test_a_body_belongs_to_one_client_or_to_nobody(
    stack: Settings, api_token: Callable[..., str], su_conn: psycopg.Connection
) -> None:
    tag = uuid.uuid4().hex[:12]
    with httpx.Client(base_url=stack.api_url, timeout=30,
                      headers={"Authorization": f"Bearer {api_token(None)}"}) as sender:
        cases = {
            CLIENT: [event(tag, 0), event(tag, 1)],
            "": [event(tag, 2), event(tag, 3, client_id=OTHER)],  # two clients: nobody's
        }
        for owner, batch in cases.items():
            content = json.dumps(batch).encode()
            since = db_now(su_conn)
            assert sender.post("/rpc/ingest", content=content).json()["accepted"] == 2
            assert [r[3] for r in stored(su_conn, content, since)] == [owner]
        content = b"not json at all " + tag.encode()
        since = db_now(su_conn)
        assert sender.post("/rpc/ingest", content=content).status_code == 400
        assert [r[3] for r in stored(su_conn, content, since)] == [""]


def test_bodies_are_read_by_admins_only_and_never_changed(
    db: psycopg.Connection, as_user: Callable[..., Any], su_conn: psycopg.Connection,
    stack: Settings, api_token: Callable[..., str]
) -> None:
    content = json.dumps([event(uuid.uuid4().hex[:12])]).encode()
    since = db_now(su_conn)
    with httpx.Client(base_url=stack.api_url, timeout=30,
                      headers={"Authorization": f"Bearer {api_token(CLIENT)}"}) as sender:
        assert sender.post("/rpc/ingest", content=content).json()["accepted"] == 1
    digest = hashlib.sha256(content).digest()
    query = "select count(*) from ledger.vault_bodies where sha256(body) = %s and received_at >= %s"
    with as_user(db, "admin"):
        assert db.execute(query, [digest, since]).fetchone()[0] == 1  # admins can
    for role in ("client", "ingest"):  # even the body's own client cannot
        db.execute("savepoint s")
        with pytest.raises(psycopg.errors.InsufficientPrivilege), \
                as_user(db, role, client_id=CLIENT):
            db.execute(query, [digest, since])
        db.execute("rollback to savepoint s")
    for statement in ("update ledger.vault_bodies set body = ''::bytea where sha256(body) = %s",
                      "delete from ledger.vault_bodies where sha256(body) = %s"):
        db.execute("savepoint s")
        with pytest.raises(psycopg.DatabaseError) as refused:
            db.execute(statement, [digest])  # as a superuser
        assert refused.value.sqlstate == "SL205"
        db.execute("rollback to savepoint s")


# Bodies where counting '":' alone would miss a key given twice: a key followed by white space,
# and a value that spells a quote as \u0022 next to a colon (the normalised text has one '":'
# more there, which hides the key that was dropped). And bodies with no duplicate that look alike.
SPELLINGS = {
    '{"a":1,"a":2}': [("", "a")],
    '{"a" : 1, "a": 2}': [("", "a")],
    '{"a"\t:1,"a"\n:2}': [("", "a")],
    '{"a":1,"a":"\\u0022:"}': [("", "a")],
    '[{"x":{"k":1,"k":2}}]': [("/0/x", "k")],
    '{"a":1,"b":"\\":"}': [],
    '{"a" : 1, "b": "\\u0022:"}': [],
}


@pytest.mark.parametrize("text", list(SPELLINGS))
def test_a_key_given_twice_is_found_however_the_body_is_spelled(su_conn: psycopg.Connection,
                                                                 text: str) -> None:
    problems = su_conn.execute("select ledger._duplicate_key_problems(%s, %s::jsonb)",
                               [text, text]).fetchone()[0]
    assert [(p["path"], p["key"]) for p in problems] == SPELLINGS[text]
