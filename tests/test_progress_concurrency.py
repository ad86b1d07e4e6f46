"""Progress stays right when batches about the same jobs are ingested at the same time."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from stepledger.api_client import IngestClient
from stepledger.settings import Settings

STEPS = ["fetch", "analyse", "report"]


@pytest.fixture
def pipeline(su_conn: psycopg.Connection) -> tuple[str, str]:
    tag = uuid.uuid4().hex[:8]
    name, client = f"cc-{tag}", f"cc-{tag}"
    definition = {"pipeline": name, "title": "Concurrency", "stall_timeout": "1 hour",
                  "steps": [{"key": s, "title": s} for s in STEPS]}
    su_conn.execute("select ledger.register_pipeline(%s::jsonb)", (json.dumps(definition),))
    su_conn.execute("select ledger.add_client(%s, %s)", (client, "Concurrency"))
    return name, client


def test_concurrent_batches_on_the_same_jobs(settings: Settings, su_conn: psycopg.Connection,
                                             jwt_for: Callable[..., str],
                                             pipeline: tuple[str, str]) -> None:
    name, client = pipeline
    jobs = [f"job-{n:02d}" for n in range(20)]
    start = datetime.now(UTC) - timedelta(minutes=5)

    def event(job: str, step: int, status: str, attempt: int) -> dict[str, Any]:
        at = start + timedelta(seconds=10 * step + (5 if status != "started" else 0) + attempt)
        body: dict[str, Any] = {
            "event_id": f"{job}:{step}:{attempt}:{status}", "client_id": client, "job_id": job,
            "pipeline": name, "step": STEPS[step], "status": status, "attempt": attempt,
            "occurred_at": at.isoformat(timespec="milliseconds")}
        if status == "failed":
            body["error"] = {"code": "E_RACE", "message": "first try failed", "retryable": True}
        return body

    # Every step fails on attempt 1 and completes on attempt 2. Four senders each own one kind of
    # event and send them in small batches at the same time, so batches about the same jobs
    # meet in the trigger in every order.
    streams = {
        "starts-1": [event(j, s, "started", 1) for s in range(3) for j in jobs],
        "fails-1": [event(j, s, "failed", 1) for s in range(3) for j in jobs],
        "starts-2": [event(j, s, "started", 2) for s in range(3) for j in jobs],
        "completions-2": [event(j, s, "completed", 2) for s in range(3) for j in jobs],
    }
    token = jwt_for("admin")
    errors: list[Exception] = []
    barrier = threading.Barrier(len(streams))

    def send(events: list[dict[str, Any]]) -> None:
        try:
            with IngestClient(settings.api_url, token) as sender:
                barrier.wait(timeout=30)
                for i in range(0, len(events), 7):
                    result = sender.send(events[i:i + 7])
                    assert result.accepted == len(events[i:i + 7]), result.rejected
        except Exception as exc:  # reported by the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(s,)) for s in streams.values()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert not any(t.is_alive() for t in threads)

    rows = su_conn.execute(
        "select job_id, status, steps_done, events, last_error from api.jobs where client_id = %s",
        (client,)).fetchall()
    assert sorted(rows) == [(j, "completed", 3, 12, None) for j in jobs]
    runs = su_conn.execute(
        "select attempt, status, count(*), count(started_at), count(finished_at), sum(events) "
        "from ledger.step_runs where client_id = %s group by 1, 2 order by 1",
        (client,)).fetchall()
    assert runs == [(1, "failed", 60, 60, 60, 120), (2, "completed", 60, 60, 60, 120)]
    latest = su_conn.execute(
        "select count(*) from ledger.job_steps where client_id = %s and latest_attempt = 2 "
        "and latest_status = 'completed' and billed_attempt = 2", (client,)).fetchone()[0]
    assert latest == 60
