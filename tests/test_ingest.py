"""Ingest through the real API gateway and PostgREST: partial acceptance, dedup, the raw vault."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

REPO = Path(__file__).resolve().parents[1]
BOTIMAGE = json.loads((REPO / "schemas" / "pipelines" / "botimage.json").read_text())
STEPS = [s["key"] for s in BOTIMAGE["steps"]]


@pytest.fixture(scope="module", autouse=True)
def catalog(su_conn: psycopg.Connection) -> None:
    su_conn.execute("select ledger.register_pipeline(%s::jsonb)", [json.dumps(BOTIMAGE)])
    for client_id, name in (("st-mary", "St Mary's Hospital"), ("riverside", "Riverside Clinic")):
        su_conn.execute("select ledger.add_client(%s, %s)", [client_id, name])


@pytest.fixture
def admin(api: Callable[..., httpx.Client], jwt_for: Callable[..., str]) -> httpx.Client:
    return api(jwt_for("admin"))


@pytest.fixture
def tag() -> str:
    return uuid.uuid4().hex[:10]


def event(tag: str, n: int, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event_id": f"{tag}-{n}",
        "client_id": "st-mary",
        "job_id": f"job-{tag}",
        "pipeline": "botimage",
        "step": STEPS[n % len(STEPS)],
        "status": "completed",
        "occurred_at": f"2026-11-02T10:{n % 60:02d}:00Z",
    }
    body.update(fields)
    return {k: v for k, v in body.items() if v is not None}


def vault_rows(conn: psycopg.Connection, batch_of_event: str) -> list[dict[str, Any]]:
    """The vault rows of the batch that carried the given event id."""
    cur = conn.cursor(row_factory=psycopg.rows.dict_row)
    return cur.execute(
        """select position, outcome, errors, payload, raw_text, event_id, client_id, channel,
                  sender_role, code_version
             from ledger.vault
            where batch_id = (select batch_id from ledger.vault where event_id = %s limit 1)
            order by position""",
        [batch_of_event],
    ).fetchall()


def ingest(client: httpx.Client, body: object, path: str = "/rpc/ingest") -> httpx.Response:
    return client.post(path, content=json.dumps(body), headers={"Content-Type": "application/json"})


# -- the acceptance batch -----------------------------------------------------------------------
def test_batch_of_100_keeps_everything_and_answers_per_element(
    admin: httpx.Client, su_conn: psycopg.Connection, tag: str
) -> None:
    valid = [event(tag, n, units=n % 5) for n in range(97)]
    batch: list[object] = list(valid)
    batch.insert(10, "not an event")  # not an object
    batch.insert(40, event(tag, 500, status="cancelled"))  # breaks the schema
    batch.insert(70, dict(valid[3], units=99))  # same event_id again
    assert len(batch) == 100

    response = ingest(admin, batch)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["accepted"] == 97
    assert body["duplicates"] == 1
    rejected = {r["index"]: r for r in body["rejected"]}
    assert set(rejected) == {10, 40}
    assert rejected[10]["errors"] == [
        {"path": "", "message": "an event must be a JSON object, not string"}
    ]
    assert rejected[40]["event_id"] == f"{tag}-500"
    assert [e["path"] for e in rejected[40]["errors"]] == ["/status"]
    assert "cancelled" in rejected[40]["errors"][0]["message"]

    rows = vault_rows(su_conn, f"{tag}-0")
    assert [r["position"] for r in rows] == list(range(100))
    outcomes = [r["outcome"] for r in rows]
    assert outcomes.count("accepted") == 97 and outcomes.count("duplicate") == 1
    assert rows[10]["payload"] == "not an event" and rows[10]["outcome"] == "rejected"
    assert rows[40]["errors"][0]["path"] == "/status"
    assert rows[70]["outcome"] == "duplicate" and rows[70]["payload"]["units"] == 99
    assert {r["channel"] for r in rows} == {"json"}
    assert {r["sender_role"] for r in rows} == {"admin"}
    assert all(r["code_version"] for r in rows)
    stored = su_conn.execute(
        "select count(*) from ledger.events where event_id like %s", [f"{tag}-%"]
    ).fetchone()
    assert stored == (97,)


def test_the_same_batch_again_is_all_duplicates(admin: httpx.Client, tag: str) -> None:
    batch = [event(tag, n) for n in range(20)]
    assert ingest(admin, batch).json()["accepted"] == 20
    again = ingest(admin, batch).json()
    assert again == {"accepted": 0, "duplicates": 20, "rejected": []}


def test_a_duplicate_is_a_no_op_whatever_its_body(
    admin: httpx.Client, su_conn: psycopg.Connection, tag: str
) -> None:
    first = event(tag, 1, units=3)
    assert ingest(admin, first).json()["accepted"] == 1
    changed = dict(first, units=50, status="failed")  # would even be invalid: failed needs error
    assert ingest(admin, changed).json() == {"accepted": 0, "duplicates": 1, "rejected": []}
    units = su_conn.execute(
        "select units from ledger.events where event_id = %s", [first["event_id"]]
    )
    assert units.fetchall() == [(3,)]


def test_single_event_object_and_heterogeneous_batches(
    admin: httpx.Client, web_url: str, jwt_for: Callable[..., str], tag: str
) -> None:
    assert ingest(admin, event(tag, 0)).json()["accepted"] == 1
    mixed = [
        event(tag, 1, status="failed", error={"code": "GPU_OOM", "message": "out of memory"}),
        event(tag, 2, data={"images": 3}, step="dicom-intake", source="site-a"),
        event(tag, 3, attempt=2, units=7.5),
    ]
    assert ingest(admin, mixed).json() == {"accepted": 3, "duplicates": 0, "rejected": []}
    # The same through the web server's /api/ prefix.
    with httpx.Client(
        base_url=f"{web_url}/api",
        timeout=30,
        headers={"Authorization": f"Bearer {jwt_for('admin')}"},
    ) as web:
        later = [event(tag, 4, error=None), event(tag, 5, source="x")]
        assert ingest(web, later).json()["accepted"] == 2


# -- rejections say what, where and why -----------------------------------------------------------
@pytest.mark.parametrize(
    ("fields", "path", "fragment"),
    [
        ({"pipeline": "nope"}, "/pipeline", 'unknown pipeline "nope"'),
        ({"step": "no-such-step"}, "/step", 'has no step "no-such-step"'),
        ({"client_id": "ghost"}, "/client_id", 'unknown client "ghost"'),
        ({"occurred_at": "2026-02-30T10:00:00Z"}, "/occurred_at", "not a date that exists"),
        ({"occurred_at": "2026-11-02T10:00:00"}, "/occurred_at", "does not match"),
        ({"status": "failed"}, "/error", "required"),
        ({"error": {"code": "X", "message": "y"}}, "/error", ""),
        ({"units": -1}, "/units", ""),
        ({"attempt": 0}, "/attempt", ""),
        ({"attempt": "2"}, "/attempt", ""),
        ({"extra": 1}, "/extra", "not allowed"),
        ({"event_id": ""}, "/event_id", ""),
        ({"step": "dicom-intake", "data": {"images": -3}}, "/data/images", ""),
        ({"step": "dicom-intake", "data": {"modality": "XRAY"}}, "/data/modality", ""),
    ],
)
def test_each_rejection_names_the_path(
    admin: httpx.Client, tag: str, fields: dict[str, Any], path: str, fragment: str
) -> None:
    body = ingest(admin, [event(tag, 0, **fields)]).json()
    assert body["accepted"] == 0, body
    errors = body["rejected"][0]["errors"]
    assert path in [e["path"] for e in errors], errors
    message = next(e["message"] for e in errors if e["path"] == path)
    assert fragment in message
    assert message.strip()


def test_job_keeps_its_pipeline(admin: httpx.Client, su_conn: psycopg.Connection, tag: str) -> None:
    other = dict(BOTIMAGE, pipeline="second", title="Second", steps=BOTIMAGE["steps"][:2])
    su_conn.execute("select ledger.register_pipeline(%s::jsonb)", [json.dumps(other)])
    assert ingest(admin, event(tag, 0)).json()["accepted"] == 1
    body = ingest(admin, event(tag, 1, pipeline="second", step=STEPS[0])).json()
    assert body["rejected"][0]["errors"] == [
        {"path": "/pipeline", "message": f'job "job-{tag}" belongs to pipeline "botimage"'}
    ]


# -- bodies that are not a batch -------------------------------------------------------------------
def test_malformed_body_is_400_and_kept_in_the_vault(
    admin: httpx.Client, su_conn: psycopg.Connection, tag: str
) -> None:
    text = '[{"event_id": "' + tag + '", "status": nope}]'
    response = admin.post("/rpc/ingest", content=text, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "SL204"
    assert "not valid JSON" in body["message"] and "nope" in body["message"]
    kept = su_conn.execute(
        "select outcome, raw_text, errors->0->>'message' from ledger.vault where raw_text = %s",
        [text],
    ).fetchall()
    assert len(kept) == 1 and kept[0][0] == "rejected" and "nope" in kept[0][2]


@pytest.mark.parametrize("body", ["42", '"text"', "null", "true"])
def test_scalar_body_is_400(admin: httpx.Client, body: str) -> None:
    response = admin.post("/rpc/ingest", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json()["code"] == "SL203"


def test_empty_array_is_an_empty_answer(admin: httpx.Client) -> None:
    assert ingest(admin, []).json() == {"accepted": 0, "duplicates": 0, "rejected": []}


def test_batch_over_the_limit_is_refused_with_a_4xx(admin: httpx.Client) -> None:
    response = admin.post(
        "/rpc/ingest",
        content="[" + ",".join(["{}"] * 10001) + "]",
        headers={"Content-Type": "application/json"},
    )
    assert 400 <= response.status_code < 500
    assert response.json()["code"] == "SL202"


# -- NDJSON ----------------------------------------------------------------------------------------
def test_ndjson_lines_with_bad_lines_kept_raw(
    admin: httpx.Client, su_conn: psycopg.Connection, tag: str
) -> None:
    lines = [
        json.dumps(event(tag, 0)),
        "",
        "this is not json",
        json.dumps(event(tag, 1)),
        "   ",
        json.dumps(event(tag, 2, status="weird")),
        json.dumps(event(tag, 0)),
    ]
    response = admin.post(
        "/rpc/ingest_ndjson",
        content="\n".join(lines) + "\n",
        headers={"Content-Type": "application/x-ndjson"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["accepted"], body["duplicates"]) == (2, 1)
    by_line = {r["index"]: r for r in body["rejected"]}
    assert set(by_line) == {3, 6}  # 1-based line numbers; blank lines count but are skipped
    assert "line 3" in by_line[3]["errors"][0]["message"]
    assert by_line[6]["errors"][0]["path"] == "/status"
    raw = su_conn.execute(
        "select raw_text, position from ledger.vault where raw_text = %s", ["this is not json"]
    ).fetchall()
    assert ("this is not json", 3) in raw


def test_ndjson_all_valid_takes_one_parse(admin: httpx.Client, tag: str) -> None:
    lines = "\r\n".join(json.dumps(event(tag, n)) for n in range(50))
    response = admin.post(
        "/rpc/ingest_ndjson", content=lines, headers={"Content-Type": "application/x-ndjson"}
    )
    assert response.json() == {"accepted": 50, "duplicates": 0, "rejected": []}


def test_ndjson_line_holding_two_values_is_rejected(admin: httpx.Client, tag: str) -> None:
    text = json.dumps(event(tag, 0)) + "\n" + json.dumps(event(tag, 1)) + ", {}\n"
    body = admin.post(
        "/rpc/ingest_ndjson", content=text, headers={"Content-Type": "application/x-ndjson"}
    ).json()
    assert body["accepted"] == 1
    assert [r["index"] for r in body["rejected"]] == [2]


# -- who may ingest ------------------------------------------------------------------------------
def test_bound_token_writes_only_for_its_client(
    api: Callable[..., httpx.Client],
    api_token: Callable[..., str],
    su_conn: psycopg.Connection,
    tag: str,
) -> None:
    token = api_token("riverside")
    client = api(token)
    own = event(tag, 0, client_id="riverside")
    foreign = event(tag, 1, client_id="st-mary")
    body = ingest(client, [own, foreign]).json()
    assert body["accepted"] == 1
    assert body["rejected"][0]["errors"] == [
        {"path": "/client_id", "message": 'this token may only write events for client "riverside"'}
    ]
    # The refused element is kept, attributed to the token's client, not to the one it named.
    owner = su_conn.execute(
        "select client_id, outcome from ledger.vault where event_id = %s", [foreign["event_id"]]
    ).fetchall()
    assert owner == [("riverside", "rejected")]


def test_foreign_event_ids_are_not_revealed_as_duplicates(
    api: Callable[..., httpx.Client], api_token: Callable[..., str], admin: httpx.Client, tag: str
) -> None:
    taken = event(tag, 0, client_id="st-mary")
    assert ingest(admin, taken).json()["accepted"] == 1
    riverside = api(api_token("riverside"))
    body = ingest(riverside, taken).json()
    assert body["duplicates"] == 0 and len(body["rejected"]) == 1


def test_answers_for_a_foreign_client_do_not_depend_on_its_data(
    api: Callable[..., httpx.Client], api_token: Callable[..., str], admin: httpx.Client,
    su_conn: psycopg.Connection, tag: str
) -> None:
    """A token bound to riverside sends events for st-mary: every answer must be the same
    whether st-mary has the job, the event id, or nothing at all (byte for byte)."""
    other = dict(BOTIMAGE, pipeline="second", title="Second", steps=BOTIMAGE["steps"][:2])
    su_conn.execute("select ledger.register_pipeline(%s::jsonb)", [json.dumps(other)])
    existing = event(tag, 0, client_id="st-mary", job_id=f"secret-{tag}")
    assert ingest(admin, existing).json()["accepted"] == 1  # st-mary has the job and the event id
    riverside = api(api_token("riverside"))

    def answer(**fields: Any) -> bytes:
        return riverside.post("/rpc/ingest", content=json.dumps(dict(existing, **fields)),
                              headers={"Content-Type": "application/json"}).content

    for fields in ({"pipeline": "nope"},                      # unknown pipeline
                   {"pipeline": "second", "step": STEPS[0]},  # not the job's pipeline
                   {"step": STEPS[1]},                        # otherwise valid
                   {}):                                       # st-mary's very event
        for event_id in (existing["event_id"], f"{tag}-never-sent"):
            known = answer(**fields, event_id=event_id)
            unknown = answer(**dict(fields, job_id=f"absent-{tag}"), event_id=event_id)
            assert known == unknown, (fields, event_id)
            assert json.loads(known)["duplicates"] == 0
    assert answer(client_id=f"ghost-{tag}") == answer()  # a client that does not exist
    # and the event id of st-mary is no duplicate either: the answers for a used and an unused
    # id differ only in the id they echo
    used = json.loads(answer(event_id=existing["event_id"]))
    unused = json.loads(answer(event_id=f"{tag}-never-sent"))
    unused["rejected"][0]["event_id"] = existing["event_id"]
    assert used == unused
    assert used["rejected"][0]["errors"] == [
        {"path": "/client_id",
         "message": 'this token may only write events for client "riverside"'}]


@pytest.mark.parametrize("role", ["client", "anon"])
def test_clients_and_anonymous_callers_cannot_ingest(
    api: Callable[..., httpx.Client], jwt_for: Callable[..., str], role: str, tag: str
) -> None:
    token = None if role == "anon" else jwt_for("client", client_id="st-mary")
    response = ingest(api(token), [event(tag, 0)])
    assert response.status_code in (401, 403)


# -- the database enforces the envelope and the vault, whatever the path --------------------------
def test_events_table_refuses_an_event_that_breaks_the_envelope(db: psycopg.Connection) -> None:
    with pytest.raises(psycopg.errors.CheckViolation):
        db.execute("""insert into ledger.events (client_id, received_at, event_id, vault_id, job_id,
                        pipeline, step, status, occurred_at, attempt, units)
                      values ('st-mary', now(), 'x', 0, 'j', 'botimage', 'report', 'failed',
                              now(), 1, 1)""")


def test_vault_is_append_only_even_for_a_superuser(db: psycopg.Connection) -> None:
    with pytest.raises(psycopg.DatabaseError) as info:
        db.execute("update ledger.vault set outcome = 'accepted' where outcome = 'rejected'")
    assert info.value.sqlstate == "SL205"


def test_vault_is_append_only_for_delete(db: psycopg.Connection) -> None:
    with pytest.raises(psycopg.DatabaseError) as info:
        db.execute("delete from ledger.vault")
    assert info.value.sqlstate == "SL205"


@pytest.fixture
def fresh_tag() -> Iterator[str]:
    yield uuid.uuid4().hex[:8]


def test_ingest_is_visible_in_jobs_as_soon_as_it_returns(
    admin: httpx.Client, fresh_tag: str
) -> None:
    events = [event(fresh_tag, n, step=STEPS[n]) for n in range(5)]
    assert ingest(admin, events).json()["accepted"] == 5
    jobs = admin.get("/jobs", params={"job_id": f"eq.job-{fresh_tag}"}).json()
    assert len(jobs) == 1
    assert jobs[0]["steps_done"] == 5 and jobs[0]["steps_total"] == 20
    assert jobs[0]["progress"] == 0.25
