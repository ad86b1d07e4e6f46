"""Live updates: the polling cursor of GET /rpc/job_changes and NOTIFY on stepledger_jobs."""

from __future__ import annotations

import json
import re
import string
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg
import pytest

from stepledger.api_client import IngestClient
from stepledger.settings import Settings


@dataclass
class Live:
    pipeline: str
    a: str
    b: str
    settings: Settings
    admin_token: str
    seq: int = 0

    def event(self, client: str, job: str, status: str = "started") -> dict[str, Any]:
        self.seq += 1
        return {"event_id": f"live-{self.seq}-{uuid.uuid4().hex[:6]}", "client_id": client,
                "job_id": job, "pipeline": self.pipeline, "step": "fetch", "status": status,
                "occurred_at": datetime.now(UTC).isoformat(timespec="milliseconds")}

    def send(self, *events: dict[str, Any]) -> None:
        with IngestClient(self.settings.api_url, self.admin_token) as sender:
            assert sender.send(list(events)).accepted == len(events)


@pytest.fixture(scope="module")
def live(settings: Settings, su_conn: psycopg.Connection, jwt_for: Callable[..., str]) -> Live:
    tag = uuid.uuid4().hex[:6]
    pipeline = f"live-{tag}"
    definition = {"pipeline": pipeline, "title": "Live test", "stall_timeout": "1 hour",
                  "steps": [{"key": "fetch", "title": "Fetch"},
                            {"key": "report", "title": "Report"}]}
    su_conn.execute("select ledger.register_pipeline(%s::jsonb)", (json.dumps(definition),))
    a, b = f"live-a-{tag}", f"live-b-{tag}"
    for client in (a, b):
        su_conn.execute("select ledger.add_client(%s, %s)", (client, client))
    return Live(pipeline, a, b, settings, jwt_for("admin"))


@pytest.fixture
def as_client(api: Callable[..., httpx.Client],
              jwt_for: Callable[..., str]) -> Callable[[str | None], httpx.Client]:
    def make(client: str | None) -> httpx.Client:
        return api(jwt_for("client", client) if client else jwt_for("admin"))
    return make


def changes(http: httpx.Client, since: str | None = None, **params: Any) -> dict[str, Any]:
    query: dict[str, Any] = dict(params)
    if since is not None:
        query["since"] = since
    response = http.get("/rpc/job_changes", params=query)
    assert response.status_code == 200, response.text
    return response.json()


def test_poll_with_a_cursor(live: Live, as_client: Callable[[str | None], httpx.Client]) -> None:
    a, admin = as_client(live.a), as_client(None)
    first = changes(a)
    assert first["jobs"] == [] and re.fullmatch(r"[A-Za-z0-9_-]{43}", first["cursor"])
    admin_cursor = changes(admin)["cursor"]

    live.send(live.event(live.a, "a-job"), live.event(live.b, "b-job"))
    second = changes(a, first["cursor"])
    assert [(j["client_id"], j["job_id"]) for j in second["jobs"]] == [(live.a, "a-job")]
    assert second["jobs"][0]["status"] == "running"
    assert "changed_xid" not in second["jobs"][0]
    # The admin's poll sees both clients' jobs.
    seen = {(j["client_id"], j["job_id"]) for j in changes(admin, admin_cursor)["jobs"]}
    assert {(live.a, "a-job"), (live.b, "b-job")} <= seen

    # Nothing new: nothing listed (a repeat of the same cursor may list a job again, never miss it).
    assert changes(a, second["cursor"])["jobs"] == []
    live.send(live.event(live.a, "a-job", "completed"))
    third = changes(a, second["cursor"])
    assert [(j["job_id"], j["steps_done"]) for j in third["jobs"]] == [("a-job", 1)]


def test_a_batch_in_flight_when_polling_is_not_missed(live: Live, settings: Settings,
                                                      as_user: Callable[..., Any]) -> None:
    job = f"inflight-{uuid.uuid4().hex[:6]}"
    with psycopg.connect(settings.dsn("postgres")) as writer, \
            psycopg.connect(settings.dsn("postgres"), autocommit=False) as reader:
        with as_user(writer, "admin"):
            writer.execute("select api.ingest(%s::jsonb)", (json.dumps([live.event(live.a, job)]),))
        # The writer has not committed: a poll now cannot see the job yet ...
        with as_user(reader, "client", live.a):
            before = reader.execute("select api.job_changes()").fetchone()[0]
            cursor = before["cursor"]
            now_visible = reader.execute("select api.job_changes(%s)", (cursor,)).fetchone()[0]
        reader.commit()
        assert job not in {j["job_id"] for j in now_visible["jobs"]}
        writer.commit()
        # ... and the next poll with that cursor reports it.
        with as_user(reader, "client", live.a):
            after = reader.execute("select api.job_changes(%s)", (cursor,)).fetchone()[0]
        reader.commit()
    assert job in {j["job_id"] for j in after["jobs"]}


def test_too_many_changes_ask_for_a_resync(live: Live,
                                           as_client: Callable[[str | None], httpx.Client]) -> None:
    b = as_client(live.b)
    cursor = changes(b)["cursor"]
    live.send(*[live.event(live.b, f"many-{n}") for n in range(5)])
    limited = changes(b, cursor, max_jobs=3)
    assert (limited["resync"], limited["jobs"]) == (True, [])
    full = changes(b, cursor, max_jobs=10)
    assert full["resync"] is False and len(full["jobs"]) == 5


def test_bad_cursor_and_limit_are_refused(live: Live,
                                          as_client: Callable[[str | None], httpx.Client]) -> None:
    a = as_client(live.a)
    cursor = changes(a)["cursor"]
    # The last of 43 base64url characters carries 4 bits of the 32 bytes and 2 unused ones:
    # flip a bit that counts (0x10), or the "forged" cursor decodes to the same bytes.
    alphabet = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"
    forged = [cursor[:20] + ("A" if cursor[20] != "A" else "B") + cursor[21:],
              cursor[:-1] + alphabet[alphabet.index(cursor[-1]) ^ 0x10]]
    for params in ({"since": -1}, {"since": "1"}, {"since": "not a cursor"},
                   *({"since": f} for f in forged),
                   {"since": cursor, "max_jobs": 0}, {"since": cursor, "max_jobs": 10001}):
        response = a.get("/rpc/job_changes", params=params)
        assert response.status_code == 400, params
        assert response.json()["code"] == "SL501", params


def test_cursors_tell_nothing_of_other_clients_activity(
        live: Live, as_client: Callable[[str | None], httpx.Client]) -> None:
    """A cursor must not count transactions (every client's), and no job shows a transaction id:
    differences between them would count the other clients' batches."""
    a = as_client(live.a)
    quiet = [changes(a)["cursor"] for _ in range(2)]
    live.send(*[live.event(live.b, f"busy-{n}") for n in range(3)])
    busy = changes(a, quiet[1])
    for cursor in (*quiet, busy["cursor"]):
        assert re.fullmatch(r"[A-Za-z0-9_-]{43}", cursor), cursor  # not a number
    # Two cursors taken with nothing written in between differ as much as any two: equal cursors
    # would tell that nobody wrote.
    assert quiet[0] != quiet[1]
    assert busy["jobs"] == []
    live.send(live.event(live.a, "own-job"))
    own = changes(a, busy["cursor"])["jobs"]
    assert [j["job_id"] for j in own] == ["own-job"] and "changed_xid" not in own[0]
    listed = a.get("/jobs", params={"select": "changed_xid", "limit": 1})
    assert listed.status_code == 400  # no transaction ids in GET /jobs either
    assert "changed_xid" not in a.get("/jobs", params={"limit": 1}).json()[0]


@pytest.fixture
def listener(settings: Settings) -> Iterator[psycopg.Connection]:
    with psycopg.connect(settings.dsn("postgres"), autocommit=True) as conn:
        conn.execute("listen stepledger_jobs")
        yield conn


def test_notify_tells_listeners_which_client_changed(live: Live,
                                                     listener: psycopg.Connection) -> None:
    live.send(live.event(live.a, "n-1"), live.event(live.a, "n-2"), live.event(live.b, "n-3"))
    wanted = {live.a: 2, live.b: 1}
    got: dict[str, int] = {}
    deadline = time.monotonic() + 10
    while set(got) != set(wanted) and time.monotonic() < deadline:
        for note in listener.notifies(timeout=max(0.1, deadline - time.monotonic()), stop_after=1):
            payload = json.loads(note.payload)
            if payload["client_id"] in wanted:
                got[payload["client_id"]] = payload["jobs"]
                assert payload["changed_xid"] > 0
    assert got == wanted
