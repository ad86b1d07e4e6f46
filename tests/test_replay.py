"""`stepledger replay` and POST /rpc/replay: rejected events become accepted once the catalog
knows their step; nothing is counted twice; each vault row records its replays."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row

from test_loader_support import CLIENTS, count, new_tag, run_cli


@pytest.fixture(scope="module", autouse=True)
def clients(su_conn: psycopg.Connection) -> None:
    for client_id, name in CLIENTS:  # only when missing (northgate may be billed in GBP)
        su_conn.execute("select ledger.create_client(%s, %s) where not exists "
                        "(select from ledger.clients where client_id = %s)",
                        [client_id, name, client_id])


def pipeline(name: str, steps: list[str]) -> dict[str, Any]:
    return {"pipeline": name, "title": f"Replay test {name}",
            "steps": [{"key": s, "title": s.upper()} for s in steps]}


@pytest.fixture
def tag(su_conn: psycopg.Connection) -> str:
    """A fresh pipeline rp-<tag> with steps a and b (step c is not registered yet), and fresh
    clients rp-<tag> and rp-<tag>-2, so that replays by client see only this test's rows."""
    tag = new_tag()
    su_conn.execute("select ledger.register_pipeline(%s::jsonb)",
                    [json.dumps(pipeline(f"rp-{tag}", ["a", "b"]))])
    for client in (f"rp-{tag}", f"rp-{tag}-2"):
        su_conn.execute("select ledger.add_client(%s, %s)", [client, f"Replay test {client}"])
    return tag


def ev(tag: str, n: int, step: str, status: str, client: str = "", job: str = "J1",
       **fields: Any) -> dict[str, Any]:
    return {"event_id": f"{tag}-{n}", "client_id": client or f"rp-{tag}", "job_id": f"{tag}-{job}",
            "pipeline": f"rp-{tag}", "step": step, "status": status,
            "occurred_at": f"2026-11-03T09:{n:02d}:00Z", **fields}


def ingest(client: httpx.Client, events: list[dict[str, Any]]) -> dict[str, Any]:
    response = client.post("/rpc/ingest", content=json.dumps(events),
                           headers={"Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    return response.json()


def replay(client: httpx.Client, **params: Any) -> httpx.Response:
    return client.post("/rpc/replay", json=params)


def vault_rows(conn: psycopg.Connection, tag: str, channel: str = "json") -> list[dict[str, Any]]:
    cur = conn.cursor(row_factory=dict_row)
    return cur.execute(
        "select vault_id, event_id, outcome, replays, client_id from ledger.vault "
        "where event_id like %s and channel = %s order by vault_id", [f"{tag}-%", channel]
    ).fetchall()


def register_step_c(conn: psycopg.Connection, tag: str) -> None:
    conn.execute("select ledger.register_pipeline(%s::jsonb)",
                 [json.dumps(pipeline(f"rp-{tag}", ["a", "b", "c"]))])


def test_replay_after_registering_the_missing_step(
        tag: str, admin: httpx.Client, su_conn: psycopg.Connection,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, api_url: str,
        jwt_for: Callable[..., str]) -> None:
    batch = [ev(tag, 1, "a", "started"), ev(tag, 2, "a", "completed", units=3),
             ev(tag, 3, "c", "started"), ev(tag, 4, "c", "completed", units=5),
             ev(tag, 4, "c", "completed", units=5),          # the same event sent twice
             ev(tag, 5, "c", "done")]                       # broken whatever the catalog
    answer = ingest(admin, batch)
    assert (answer["accepted"], answer["duplicates"], len(answer["rejected"])) == (2, 0, 4)
    assert count(su_conn, "select count(*) from ledger.events where job_id = %s",
                 [f"{tag}-J1"]) == 2

    register_step_c(su_conn, tag)
    monkeypatch.setenv("STEPLEDGER_URL", api_url)
    monkeypatch.setenv("STEPLEDGER_TOKEN", jwt_for("admin"))
    code, out, _ = run_cli(capsys, "replay", "--client", f"rp-{tag}", "--since", "2000-01-01")
    assert code == 3, out
    lines = out.splitlines()
    assert lines[0].startswith("stepledger: replay ")
    assert [line.split() for line in lines[1:4]] == [["accepted", "2"], ["duplicates", "1"],
                                                     ["rejected", "1"]]
    assert "/status:" in out

    # the accepted events are live: step c is billed once, with its units
    billed = su_conn.execute(
        "select step, billed_attempt, billed_units from ledger.job_steps where job_id = %s "
        "order by step", [f"{tag}-J1"]).fetchall()
    assert billed == [("a", 1, 3), ("c", 1, 5)]
    assert count(su_conn, "select count(*) from ledger.events where job_id = %s",
                 [f"{tag}-J1"]) == 4

    # every original row records its replay; the replay rows are marked as such
    rows = vault_rows(su_conn, tag)
    replayed = [r for r in rows if r["outcome"] == "rejected"]
    assert [r["replays"][-1]["outcome"] for r in replayed] == [
        "accepted", "accepted", "duplicate", "rejected"]
    assert all(len(r["replays"]) == 1 for r in replayed)
    assert all(r["replays"] == [] for r in rows if r["outcome"] == "accepted")
    run = replayed[0]["replays"][0]
    assert set(run) == {"replay_id", "replayed_at", "outcome", "errors", "vault_id",
                        "code_version"}
    copy = su_conn.execute(
        "select channel, token_id::text, outcome, payload from ledger.vault where vault_id = %s",
        [run["vault_id"]]).fetchone()
    assert copy == ("replay", run["replay_id"], "accepted", batch[2])
    assert su_conn.execute("select vault_id from ledger.events where event_id = %s",
                           [f"{tag}-3"]).fetchone() == (run["vault_id"],)
    assert replayed[3]["replays"][0]["errors"][0]["path"] == "/status"

    # a second replay only takes what is still rejected, and counts nothing twice
    jobs_before = su_conn.execute("select events, steps_done from ledger.jobs where job_id = %s",
                                  [f"{tag}-J1"]).fetchone()
    second = replay(admin, client_id=f"rp-{tag}").json()
    assert (second["replayed"], second["rejected"], second["more"]) == (1, 1, False)
    third = replay(admin, client_id=f"rp-{tag}", outcome="accepted").json()
    assert (third["replayed"], third["accepted"], third["duplicates"]) == (4, 0, 4)
    assert count(su_conn, "select count(*) from ledger.events where job_id = %s",
                 [f"{tag}-J1"]) == 4
    assert su_conn.execute("select events, steps_done from ledger.jobs where job_id = %s",
                           [f"{tag}-J1"]).fetchone() == jobs_before
    # (the rows accepted by the first replay were replayed again as "accepted" ones)
    assert [[e["outcome"] for e in r["replays"]] for r in vault_rows(su_conn, tag)] == [
        ["duplicate"], ["duplicate"], ["accepted", "duplicate"], ["accepted", "duplicate"],
        ["duplicate"], ["rejected", "rejected"]]

    runs = admin.get("/replays", params={"replay_id": f"eq.{run['replay_id']}"}).json()
    assert runs[0]["replayed"] == 4 and runs[0]["accepted"] == 2
    assert runs[0]["filters"]["client_id"] == f"rp-{tag}"
    assert runs[0]["requested_by"].startswith("admin")


def test_replay_keeps_the_binding_of_an_ingest_token(
        tag: str, api: Callable[..., httpx.Client], api_token: Callable[..., str],
        admin: httpx.Client, su_conn: psycopg.Connection) -> None:
    pipeline_token = api(api_token(f"rp-{tag}"))
    answer = ingest(pipeline_token, [ev(tag, 1, "c", "started"),
                                     ev(tag, 2, "c", "started", client=f"rp-{tag}-2")])
    assert len(answer["rejected"]) == 2
    register_step_c(su_conn, tag)
    # both rows are attributed to the token's client, whatever the events say
    result = replay(admin, client_id=f"rp-{tag}").json()
    assert (result["accepted"], result["rejected"]) == (1, 1)
    [still] = result["rejections"]
    assert still["event_id"] == f"{tag}-2"
    assert still["errors"] == [{"path": "/client_id", "message":
                                f'this token may only write events for client "rp-{tag}"'}]
    assert count(su_conn, "select count(*) from ledger.events where event_id like %s",
                 [f"{tag}-%"]) == 1


def test_filters_dry_run_and_chunks(tag: str, admin: httpx.Client,
                                    su_conn: psycopg.Connection) -> None:
    events = [ev(tag, n, "c", "started", job=f"J{n}") for n in range(25)]
    events.append(ev(tag, 30, "c", "started", client=f"rp-{tag}-2"))
    ingest(admin, events)
    raw = admin.post("/rpc/ingest_ndjson", content=f"not json {tag}",
                     headers={"Content-Type": "application/x-ndjson"})
    assert raw.json()["rejected"][0]["index"] == 1
    register_step_c(su_conn, tag)

    def dry(**params: Any) -> dict[str, Any]:
        return replay(admin, dry_run=True, **params).json()

    mine = f"rp-{tag}"
    assert dry(client_id=mine, since="2999-01-01T00:00:00Z")["matching"] == 0
    assert dry(client_id=mine, until="2000-01-01T00:00:00Z")["matching"] == 0
    assert dry(client_id=mine, since="2000-01-01T00:00:00Z")["matching"] == 25
    assert dry(client_id=mine)["unparsable"] == 0
    assert dry(client_id="")["unparsable"] >= 1       # raw text attributed to nobody

    replay_id = None
    calls = 0
    while True:
        answer = replay(admin, client_id=mine, max_rows=10, replay_id=replay_id).json()
        replay_id = answer["replay_id"]
        calls += 1
        if not answer["more"]:
            break
    assert calls >= 3
    rows = [r for r in vault_rows(su_conn, tag) if r["client_id"] == mine]
    assert len(rows) == 25
    assert all([e["replay_id"] for e in r["replays"]] == [replay_id] for r in rows)
    assert all(r["replays"][0]["outcome"] == "accepted" for r in rows)
    [other] = [r for r in vault_rows(su_conn, tag) if r["client_id"] == f"{mine}-2"]
    assert other["replays"] == []
    assert su_conn.execute("select replayed, accepted from ledger.replays where replay_id = %s",
                           [replay_id]).fetchone() == (25, 25)
    assert dry(client_id=mine)["matching"] == 0


@pytest.mark.parametrize(("params", "code"), [
    ({"outcome": "bogus"}, "SL602"),
    ({"since": "2026-02-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "SL603"),
    ({"replay_id": "00000000-0000-4000-8000-000000000000"}, "SL604"),
    ({"max_rows": 0}, "SL605"),
    ({"max_rows": 10001}, "SL605"),
])
def test_bad_replay_requests_are_refused_with_a_code(admin: httpx.Client, params: dict[str, Any],
                                                     code: str) -> None:
    response = replay(admin, **params)
    assert response.status_code == 400
    assert response.json()["code"] == code


def test_only_admins_replay(db: psycopg.Connection) -> None:
    db.execute("select set_config('request.jwt.claims', %s, true)",
               [json.dumps({"role": "ingest", "client_id": "st-mary"})])
    with pytest.raises(psycopg.Error) as caught:
        db.execute("select api.replay(dry_run => true)")
    assert caught.value.sqlstate == "SL601"


def test_the_vault_stays_append_only_for_api_and_bi_roles(
        db: psycopg.Connection, as_user: Callable[..., Any], admin: httpx.Client) -> None:
    tag = new_tag()
    ingest(admin, [{"event_id": f"{tag}-1", "client_id": "st-mary"}])
    row = db.execute("select vault_id from ledger.vault where event_id = %s",
                     [f"{tag}-1"]).fetchone()
    assert row is not None
    for role, client in (("admin", None), ("ingest", "st-mary"), ("client", "st-mary"),
                         ("bi_reader", "st-mary")):
        for statement in ("update ledger.vault set replays = '[]' where vault_id = %s",
                          "update ledger.vault set outcome = 'accepted' where vault_id = %s",
                          "delete from ledger.vault where vault_id = %s"):
            db.execute("savepoint s")
            with as_user(db, role, client), pytest.raises(psycopg.Error) as caught:
                db.execute(statement, row)
            assert caught.value.sqlstate == "42501", (role, statement)
            db.execute("rollback to savepoint s")
        db.execute("savepoint s")
        with as_user(db, role, client), pytest.raises(psycopg.Error) as caught:
            db.execute("insert into ledger.replays (requested_by, filters, code_version) "
                       "values ('x', '{}', 'x')")
        assert caught.value.sqlstate == "42501", role
        db.execute("rollback to savepoint s")
    # the admin can read the row it may not change
    with as_user(db, "admin"):
        assert db.execute("select count(*) from ledger.vault where vault_id = %s",
                          row).fetchone() == (1,)
