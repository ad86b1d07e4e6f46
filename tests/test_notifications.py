"""Notifications end to end: the real worker of the stack delivers signed webhooks to a real
receiver on 127.0.0.1, and e-mails to a real SMTP server process on loopback
(docs/notifications.md).

The module restarts the stack's worker with STEPLEDGER_WEBHOOK_ALLOW_PRIVATE=1 (the receiver is on
loopback) and STEPLEDGER_SMTP_URL (aiosmtpd), as `stepledger up` would start it, and restores the
worker as it was at the end. Tests that need a short retry schedule set it for their own duration.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from auth_support import add_user, login
from billing_support import add_price, make_client, make_pipeline
from notify_support import (
    Answer,
    Receiver,
    SmtpServer,
    smtp_server,
    verify_signature,
    wait_for,
    worker_environment,
)
from stepledger.operator import notify
from stepledger.settings import Settings

ALL_JOB_EVENTS = ["job.failed", "job.recovered", "job.stalled", "job.completed"]


# -- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def smtp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SmtpServer]:
    with smtp_server(tmp_path_factory.mktemp("maildir")) as server:
        yield server


@pytest.fixture(scope="module")
def worker(settings: Settings, smtp: SmtpServer) -> Iterator[Settings]:
    """The stack's worker, restarted with private targets allowed and e-mail configured."""
    with worker_environment(settings, STEPLEDGER_WEBHOOK_ALLOW_PRIVATE="1",
                            STEPLEDGER_SMTP_URL=smtp.url):
        yield settings


@pytest.fixture(scope="module")
def catalog(su_conn: psycopg.Connection) -> dict[str, str]:
    two = make_pipeline(su_conn, ("prepare", "analyse"), prefix="np")
    stall = {"pipeline": f"ns-{uuid.uuid4().hex[:8]}", "title": "Stalls quickly",
             "stall_timeout": "2 seconds", "steps": [{"key": "a", "title": "A"},
                                                     {"key": "b", "title": "B"}]}
    su_conn.execute("select ledger.register_pipeline(%s::jsonb)", [json.dumps(stall)])
    return {"two": two, "stall": stall["pipeline"]}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def delivery_settings(su_conn: psycopg.Connection) -> Iterator[Callable[..., None]]:
    """Change the delivery settings for one test (e.g. compress the 24 h schedule); restored
    to the defaults after it."""
    def change(**values: str | int) -> None:
        for column, value in values.items():
            su_conn.execute(f"update ledger.notification_settings set {column} = %s", [value])
    yield change
    su_conn.execute("update ledger.notification_settings set retry_first = default, "
                    "retry_max = default, retry_for = default, request_timeout = default, "
                    "per_endpoint_concurrency = default")


class Tenant:
    """A fresh client with an admin, a client user's token and an ingest token."""

    def __init__(self, su_conn: psycopg.Connection, api: Callable[..., httpx.Client],
                 jwt_for: Callable[..., str], api_token: Callable[..., str],
                 prefix: str = "nt") -> None:
        self.client_id = make_client(su_conn, prefix=prefix)
        self.admin = api(jwt_for("admin"))
        self.user = api(jwt_for("client", self.client_id))
        self.ingest_http = api(api_token(self.client_id))

    def create_webhook(self, url: str, events: list[str] | None = None,
                       http: httpx.Client | None = None) -> dict[str, Any]:
        response = (http or self.user).post("/rpc/create_webhook", json={
            "url": url, "events": events or ALL_JOB_EVENTS, "client_id": self.client_id})
        assert response.status_code == 200, response.text
        return response.json()

    def ingest(self, events: list[dict[str, Any]]) -> float:
        """Ingest; returns the moment the response arrived (time.monotonic())."""
        response = self.ingest_http.post("/rpc/ingest", json=events)
        assert response.status_code == 200, response.text
        assert response.json()["accepted"] == len(events), response.text
        return time.monotonic()

    def event(self, pipeline: str, job: str, step: str, status: str, attempt: int = 1,
              at: datetime | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "event_id": uuid.uuid4().hex, "client_id": self.client_id, "job_id": job,
            "pipeline": pipeline, "step": step, "status": status, "attempt": attempt,
            "occurred_at": (at or datetime.now(UTC)).isoformat().replace("+00:00", "Z")}
        if status == "failed":
            body["error"] = {"code": "GPU_OOM", "message": "CUDA out of memory"}
        return body


@pytest.fixture
def tenant(su_conn: psycopg.Connection, api: Callable[..., httpx.Client],
           jwt_for: Callable[..., str], api_token: Callable[..., str]) -> Tenant:
    return Tenant(su_conn, api, jwt_for, api_token)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def deliveries(http: httpx.Client, **filters: str) -> list[dict[str, Any]]:
    response = http.get("/webhook_deliveries", params={**filters, "order": "created_at,attempt"})
    assert response.status_code == 200, response.text
    return response.json()


# -- events reach the receiver -------------------------------------------------------------------
def test_job_failed_arrives_signed_within_10_seconds(worker: Settings, catalog: dict[str, str],
                                                     tenant: Tenant, receiver: Receiver) -> None:
    hook = tenant.create_webhook(receiver.url)
    assert hook["secret"].startswith("whsec_")
    job = f"job-{uuid.uuid4().hex[:8]}"
    tenant.ingest([tenant.event(catalog["two"], job, "prepare", "started")])
    done = tenant.ingest([tenant.event(catalog["two"], job, "prepare", "failed")])

    (request,) = wait_for(lambda: receiver.of_type("job.failed", job_id=job), 10,
                          "job.failed at the receiver")
    assert request.at - done < 10
    verify_signature(hook["secret"], request)
    body = request.json()
    assert set(body) == {"type", "timestamp", "data"}
    data = body["data"]
    assert data["client_id"] == tenant.client_id and data["pipeline"] == catalog["two"]
    assert (data["status"], data["step"], data["step_title"], data["attempt"]) == \
        ("failed", "prepare", "Prepare", 1)
    assert (data["error_code"], data["error_message"]) == ("GPU_OOM", "CUDA out of memory")
    assert data["url"].endswith(f"/#/jobs/{tenant.client_id}/{job}")
    assert data["occurred_at"]
    # The message is listed for the client, with the id the receiver saw.
    messages = tenant.user.get("/webhook_messages", params={"event_type": "eq.job.failed"}).json()
    assert [m["message_id"] for m in messages] == [request.headers["webhook-id"]]
    rows = wait_for(lambda: [d for d in deliveries(tenant.user) if d["state"] == "succeeded"], 10,
                    "the delivery recorded as succeeded")
    assert rows[0]["status_code"] == 200 and rows[0]["latency_ms"] is not None
    assert rows[0]["response_excerpt"] == "ok"


def test_retry_recovers_and_completion_completes(worker: Settings, catalog: dict[str, str],
                                                 tenant: Tenant, receiver: Receiver) -> None:
    tenant.create_webhook(receiver.url)
    job = f"job-{uuid.uuid4().hex[:8]}"
    pipe = catalog["two"]
    tenant.ingest([tenant.event(pipe, job, "prepare", "failed")])
    tenant.ingest([tenant.event(pipe, job, "prepare", "started", attempt=2)])
    tenant.ingest([tenant.event(pipe, job, "prepare", "completed", attempt=2),
                   tenant.event(pipe, job, "analyse", "completed")])
    wait_for(lambda: receiver.of_type("job.completed", job_id=job), 10, "job.completed")
    kinds = [r.json()["type"] for r in receiver.requests if r.json()["data"]["job_id"] == job]
    assert sorted(kinds) == ["job.completed", "job.failed", "job.recovered"]
    assert receiver.of_type("job.recovered", job_id=job)[0].json()["data"]["status"] == "running"
    # Nothing more: a transition is one message, whatever the number of events.
    tenant.ingest([tenant.event(pipe, job, "analyse", "completed", attempt=2)])
    with psycopg.connect(worker.dsn("postgres")) as conn:
        count = conn.execute("select count(*) from ledger.notification_messages "
                             "where body->'data'->>'job_id' = %s", [job]).fetchone()
    assert count == (3,)


def test_job_stalled_is_sent_once_after_the_stall_timeout(
        worker: Settings, su_conn: psycopg.Connection, catalog: dict[str, str], tenant: Tenant,
        receiver: Receiver) -> None:
    tenant.create_webhook(receiver.url, ["job.stalled"])
    job = f"job-{uuid.uuid4().hex[:8]}"
    tenant.ingest([tenant.event(catalog["stall"], job, "a", "started")])

    def stalled() -> bool:
        # the scheduler scans every 15 s; ask it for a scan now, as a price change would
        su_conn.execute("notify stepledger_scheduler, 'scan_stalled_jobs'")
        return bool(receiver.of_type("job.stalled", job_id=job))
    wait_for(stalled, 40, "job.stalled at the receiver", interval=1.0)
    (request,) = receiver.of_type("job.stalled", job_id=job)
    assert request.json()["data"]["status"] == "stalled"
    # Further scans find nothing new for this stall.
    assert su_conn.execute("select ledger.scan_stalled_jobs()").fetchone() is not None
    assert su_conn.execute("select count(*) from ledger.notification_messages "
                           "where event_type = 'job.stalled' and body->'data'->>'job_id' = %s",
                           [job]).fetchone() == (1,)
    # A new event ends the stall; stalling again is a new stall, announced again.
    tenant.ingest([tenant.event(catalog["stall"], job, "a", "completed")])

    def stalled_twice() -> bool:
        su_conn.execute("notify stepledger_scheduler, 'scan_stalled_jobs'")
        return len(receiver.of_type("job.stalled", job_id=job)) == 2
    wait_for(stalled_twice, 40, "the second stall announced", interval=1.0)


def test_invoice_finalized_on_finalize(worker: Settings, su_conn: psycopg.Connection,
                                       catalog: dict[str, str], tenant: Tenant,
                                       receiver: Receiver) -> None:
    tenant.create_webhook(receiver.url, ["invoice.finalized"])
    last_month = (datetime.now(UTC).replace(day=1) - timedelta(days=1)).replace(day=10)
    add_price(su_conn, catalog["two"], "prepare", "2.50", "2020-01-01", client_id=tenant.client_id)
    tenant.ingest([tenant.event(catalog["two"], f"job-{n}", "prepare", "completed", at=last_month)
                   for n in range(4)])
    period = last_month.strftime("%Y-%m")
    response = tenant.admin.post("/rpc/finalize_invoice",
                                 json={"client_id": tenant.client_id, "period": period})
    assert response.status_code == 200, response.text
    (request,) = wait_for(lambda: receiver.of_type("invoice.finalized"), 10, "invoice.finalized")
    data = request.json()["data"]
    assert data["client_id"] == tenant.client_id and data["period"] == period
    assert Decimal(str(data["total"])) == Decimal("10.00") and data["currency"] == "EUR"
    (invoice_no,) = su_conn.execute(
        "select invoice_no from ledger.invoices "
        "where client_id = %s and period = (%s || '-01')::date",
        (tenant.client_id, period)).fetchone()
    assert data["invoice_no"] == invoice_no


def test_usage_threshold_crossed_once_a_month(worker: Settings, su_conn: psycopg.Connection,
                                              catalog: dict[str, str], tenant: Tenant,
                                              receiver: Receiver) -> None:
    tenant.create_webhook(receiver.url, ["usage.threshold_crossed"])
    add_price(su_conn, catalog["two"], "analyse", "4.00", "2020-01-01", client_id=tenant.client_id)
    # A client user may not set thresholds; an admin may.
    refused = tenant.user.post("/rpc/set_usage_alert", json={
        "client_id": tenant.client_id, "amount": 10, "currency": "EUR"})
    assert refused.status_code in (401, 403), refused.text
    answer = tenant.admin.post("/rpc/set_usage_alert", json={
        "client_id": tenant.client_id, "amount": 10, "currency": "EUR"})
    assert answer.status_code == 200, answer.text

    def refresh() -> None:
        response = tenant.admin.post("/rpc/refresh_usage", json={})
        assert response.status_code == 200, response.text
        if not response.json()["refreshed"]:  # the scheduler's refresh ran: ours must run too
            wait_for(lambda: tenant.admin.post("/rpc/refresh_usage", json={}).json()["refreshed"],
                     30, "a usage refresh")

    tenant.ingest([tenant.event(catalog["two"], "j1", "analyse", "completed"),
                   tenant.event(catalog["two"], "j2", "analyse", "completed")])
    refresh()  # 8.00: below
    tenant.ingest([tenant.event(catalog["two"], "j3", "analyse", "completed")])
    refresh()  # 12.00: crossed
    (request,) = wait_for(lambda: receiver.of_type("usage.threshold_crossed"), 10,
                          "usage.threshold_crossed")
    data = request.json()["data"]
    assert (Decimal(str(data["amount"])), Decimal(str(data["threshold"])), data["currency"]) == \
        (Decimal("12.00"), Decimal("10"), "EUR")
    assert data["period"] == datetime.now(UTC).strftime("%Y-%m")
    tenant.ingest([tenant.event(catalog["two"], "j4", "analyse", "completed")])
    refresh()  # 16.00: still crossed, not again
    assert su_conn.execute("select count(*) from ledger.notification_messages where client_id = %s "
                           "and event_type = 'usage.threshold_crossed'",
                           [tenant.client_id]).fetchone() == (1,)
    alerts = tenant.user.get("/usage_alerts").json()
    assert [(a["client_id"], a["crossed_period"]) for a in alerts] == \
        [(tenant.client_id, data["period"])]


# -- retries, final failures, disabling ----------------------------------------------------------
def test_dead_receiver_gets_growing_gaps_then_the_endpoint_is_disabled(
        worker: Settings, delivery_settings: Callable[..., None], catalog: dict[str, str],
        tenant: Tenant) -> None:
    # The production schedule (24 h) compressed: 1 s, 2 s, 4 s ... for 6 s.
    delivery_settings(retry_first="1 second", retry_max="1 minute", retry_for="6 seconds",
                      request_timeout="2 seconds")
    dead = Receiver(lambda n: Answer(status=503, body=b"down for maintenance"))
    try:
        hook = tenant.create_webhook(dead.url, ["job.failed"])
        job = f"job-{uuid.uuid4().hex[:8]}"
        tenant.ingest([tenant.event(catalog["two"], job, "prepare", "failed")])

        def disabled() -> dict[str, Any] | None:
            rows = tenant.user.get("/webhooks", params={"webhook_id": f"eq.{hook['webhook_id']}"})
            row = rows.json()[0]
            return row if not row["enabled"] else None
        row = wait_for(disabled, 40, "the endpoint disabled", interval=0.2)
        assert "failing since" in row["disabled_reason"] and "HTTP 503" in row["disabled_reason"]
        times = [r.at for r in dead.requests]
        assert len(times) >= 4, times
        assert len({r.headers["webhook-id"] for r in dead.requests}) == 1  # the same message
        attempts = deliveries(tenant.user, webhook_id=f"eq.{hook['webhook_id']}")
        assert [a["status_code"] for a in attempts] == [503] * len(times)
        # The schedule grows (backoff with jitter), and no retry comes before its time; the
        # gaps seen by the receiver grow with it (they also carry the machine's load).
        scheduled = [(datetime.fromisoformat(a["next_retry_at"])
                      - datetime.fromisoformat(a["attempted_at"])).total_seconds()
                     for a in attempts[:-1]]
        assert all(later > earlier for earlier, later in pairwise(scheduled)), scheduled
        gaps = [b - a for a, b in pairwise(times)]
        assert all(gap >= due - 0.3 for gap, due in zip(gaps, scheduled, strict=True)), \
            (gaps, scheduled)
        assert gaps[-1] > gaps[0], gaps  # observed gaps also carry the load; the schedule doubles
        assert attempts[-1]["outcome"] == "disabled" and attempts[-1]["state"] == "failed"
        assert all(a["outcome"] == "retry" and a["next_retry_at"] for a in attempts[:-1])
        assert attempts[0]["response_excerpt"] == "down for maintenance"
        # A disabled endpoint gets no new deliveries until it is enabled again.
        tenant.ingest([tenant.event(catalog["two"], f"{job}-2", "prepare", "failed")])
        refused = tenant.user.post("/rpc/test_webhook", json={"webhook_id": hook["webhook_id"]})
        assert refused.status_code == 400 and refused.json()["code"] == "SL606"
        assert tenant.user.post("/rpc/enable_webhook",
                                json={"webhook_id": hook["webhook_id"]}).status_code == 200
    finally:
        dead.close()


def test_production_schedule_retries_for_a_day(su_conn: psycopg.Connection) -> None:
    row = su_conn.execute("select retry_first, retry_max, retry_for from "
                          "(select (ledger._notification_settings()).*) s").fetchone()
    assert row == (timedelta(seconds=10), timedelta(hours=2), timedelta(hours=24))


def test_a_4xx_is_final_but_429_and_408_are_retried(
        worker: Settings, delivery_settings: Callable[..., None], catalog: dict[str, str],
        tenant: Tenant) -> None:
    delivery_settings(retry_first="0.5 seconds", retry_for="1 hour")
    gone = Receiver(lambda n: Answer(status=410, body=b"gone"))
    busy = Receiver(lambda n: Answer(status={1: 429, 2: 408}.get(n, 200)))
    try:
        h_gone = tenant.create_webhook(gone.url, ["job.failed"])
        h_busy = tenant.create_webhook(busy.url, ["job.failed"])
        tenant.ingest([tenant.event(catalog["two"], "j-4xx", "prepare", "failed")])
        wait_for(lambda: len(busy.requests) == 3, 20, "a 429, a 408 and a success")
        busy_rows = f"eq.{h_busy['webhook_id']}"
        assert wait_for(lambda: [d for d in deliveries(tenant.user, webhook_id=busy_rows)
                                 if d["state"] == "succeeded" and d["attempt"] == 3],
                        10, "recorded")
        gone_rows = deliveries(tenant.user, webhook_id=f"eq.{h_gone['webhook_id']}")
        assert [(d["attempt"], d["status_code"], d["state"]) for d in gone_rows] == \
            [(1, 410, "failed")]
        assert len(gone.requests) == 1
        hooks = {h["webhook_id"]: h for h in tenant.user.get("/webhooks").json()}
        assert hooks[h_gone["webhook_id"]]["enabled"] and hooks[h_busy["webhook_id"]]["enabled"]
    finally:
        gone.close()
        busy.close()


def test_kill_9_of_the_worker_mid_delivery_loses_nothing(
        worker: Settings, delivery_settings: Callable[..., None], catalog: dict[str, str],
        tenant: Tenant) -> None:
    delivery_settings(request_timeout="1 second")  # the lease: 2 x timeout + 5 s
    held = threading.Event()
    r = Receiver(lambda n: Answer(hold=held if n == 1 else None))
    try:
        hook = tenant.create_webhook(r.url, ["job.failed"])
        tenant.ingest([tenant.event(catalog["two"], "j-kill-1", "prepare", "failed")])
        wait_for(lambda: r.requests, 10, "the first delivery under way")
        pid = notify.running_pid(worker)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: notify.running_pid(worker) is None, 10, "the worker gone")
        held.set()
        # Written while no worker runs: waits in the outbox.
        tenant.ingest([tenant.event(catalog["two"], "j-kill-2", "prepare", "failed")])
        notify.start(worker)  # as `stepledger up` restarts it
        wait_for(lambda: r.of_type("job.failed", job_id="j-kill-2"), 15,
                 "the message written meanwhile")
        first = wait_for(lambda: r.of_type("job.failed", job_id="j-kill-1")[1:], 20,
                         "the interrupted message sent again")
        assert first[0].headers["webhook-id"] == r.requests[0].headers["webhook-id"]
        verify_signature(hook["secret"], first[0])
        def succeeded() -> list[dict[str, Any]]:
            rows = [d for d in deliveries(tenant.user) if d["state"] == "succeeded"]
            return rows if len(rows) == 2 else []
        states = wait_for(succeeded, 10, "both deliveries succeeded")
        assert {d["event_type"] for d in states} == {"job.failed"}
    finally:
        held.set()
        r.close()
        notify.start(worker)


def test_a_slow_endpoint_delays_neither_ingest_nor_other_endpoints(
        worker: Settings, catalog: dict[str, str], tenant: Tenant, receiver: Receiver) -> None:
    held = threading.Event()
    slow = Receiver(lambda n: Answer(hold=held, hold_timeout=30))
    try:
        tenant.create_webhook(slow.url, ["job.failed"])
        tenant.create_webhook(receiver.url, ["job.failed"])
        jobs = [f"j-slow-{n}" for n in range(4)]
        for job in jobs:
            started = time.monotonic()
            tenant.ingest([tenant.event(catalog["two"], job, "prepare", "failed")])
            assert time.monotonic() - started < 2.0
        wait_for(lambda: len(receiver.of_type("job.failed")) == 4, 10,
                 "every message at the fast endpoint while the slow one hangs")
        # The slow endpoint holds only its own slots (2 by default), not the worker; and the
        # worker waits for a free slot instead of polling for it.
        assert 1 <= len(slow.requests) <= 2
        pid = notify.running_pid(worker)
        assert pid is not None
        with psycopg.connect(worker.dsn("postgres"), autocommit=True) as conn:
            backends = [p for (p,) in conn.execute(
                "select pid from pg_stat_activity where application_name = 'stepledger notify'")]
        assert backends
        pids = [pid, *backends]  # the worker and its database session
        before, started = sum(map(cpu_seconds, pids)), time.monotonic()
        time.sleep(3)  # a measuring window (CPU used while idle-waiting), not a synchronisation
        used = sum(map(cpu_seconds, pids)) - before
        assert used < 0.05 * (time.monotonic() - started), f"{used:.2f} s of CPU in 3 s"
        assert len(slow.requests) <= 2
    finally:
        held.set()
        slow.close()


# -- security ------------------------------------------------------------------------------------
@pytest.mark.parametrize("url", [
    "https://127.0.0.1/hook", "https://localhost/hook", "https://169.254.169.254/latest/meta-data",
    "https://10.0.0.8/x", "https://[::1]/x", "https://[::ffff:192.168.1.1]/x",
    "https://metadata.google.internal/x", "http://example.com/hook", "ftp://example.com/x",
    "https://user:secret@example.com/x", "https://0x7f000001/x", "javascript:alert(1)",
])
def test_private_and_non_https_targets_are_refused_at_creation(
        su_conn: psycopg.Connection, tenant: Tenant, url: str) -> None:
    su_conn.execute("update ledger.notification_settings set allow_private_targets = false")
    try:
        response = tenant.user.post("/rpc/create_webhook",
                                    json={"url": url, "events": ["job.failed"]})
        assert response.status_code == 400, response.text
        assert response.json()["code"] == "SL601", response.text
    finally:
        su_conn.execute("update ledger.notification_settings set allow_private_targets = %s",
                        [notify.allow_private_from_env()])
    # A public https URL is fine.
    ok = tenant.user.post("/rpc/create_webhook", json={"url": "https://hooks.example.com/in",
                                                       "events": ["job.failed"]})
    assert ok.status_code == 200, ok.text


def test_delivery_checks_the_resolved_address(worker: Settings, su_conn: psycopg.Connection,
                                              tenant: Tenant, receiver: Receiver) -> None:
    # Created while private targets were allowed, under a name that resolves to loopback; when
    # the operator no longer allows them, the worker refuses after resolving the name.
    hook = tenant.create_webhook(f"http://localhost:{receiver.port}/hook", ["job.failed"])
    su_conn.execute("update ledger.notification_settings set allow_private_targets = false")
    try:
        sent = tenant.user.post("/rpc/test_webhook", json={"webhook_id": hook["webhook_id"]})
        assert sent.status_code == 200, sent.text
        rows = wait_for(lambda: [d for d in deliveries(tenant.user) if d["attempt"]], 10,
                        "the attempt recorded")
        assert rows[0]["status_code"] is None
        assert "refused" in rows[0]["error"] and "127.0.0.1" in rows[0]["error"], rows[0]
        assert receiver.requests == []
    finally:
        su_conn.execute("update ledger.notification_settings set allow_private_targets = %s",
                        [notify.allow_private_from_env()])


def test_redirects_are_not_followed_and_only_an_excerpt_is_kept(
        worker: Settings, tenant: Tenant, receiver: Receiver) -> None:
    big = b"x" * 50_000
    redirecting = Receiver(lambda n: Answer(status=307, body=big,
                                            headers={"location": receiver.url}))
    try:
        hook = tenant.create_webhook(redirecting.url, ["job.failed"])
        tenant.user.post("/rpc/test_webhook", json={"webhook_id": hook["webhook_id"]})
        rows = wait_for(lambda: [d for d in deliveries(tenant.user) if d["attempt"]], 10,
                        "the attempt recorded")
        assert rows[0]["status_code"] == 307 and rows[0]["state"] == "pending"
        assert rows[0]["response_excerpt"] == "x" * 200
        assert receiver.requests == []
    finally:
        redirecting.close()


# -- the endpoints' API ---------------------------------------------------------------------------
def test_secret_shown_once_rotation_test_send_redeliver_delete(
        worker: Settings, tenant: Tenant, receiver: Receiver) -> None:
    hook = tenant.create_webhook(receiver.url, ["job.failed"])
    listed = tenant.user.get("/webhooks").json()
    assert [h["webhook_id"] for h in listed] == [hook["webhook_id"]]
    assert "secret" not in listed[0] and hook["secret"] not in json.dumps(listed)

    sent = tenant.user.post("/rpc/test_webhook", json={"webhook_id": hook["webhook_id"]}).json()
    (first,) = wait_for(lambda: receiver.of_type("webhook.test"), 10, "the test message")
    verify_signature(hook["secret"], first)
    assert first.headers["webhook-id"] == sent["message_id"]

    rotated = tenant.user.post("/rpc/rotate_webhook_secret",
                               json={"webhook_id": hook["webhook_id"]}).json()
    assert rotated["secret"] != hook["secret"]
    wait_for(lambda: [d for d in deliveries(tenant.user) if d["state"] == "succeeded"], 10,
             "recorded")
    again = tenant.user.post("/rpc/redeliver", json={"delivery_id": sent["delivery_id"]})
    assert again.status_code == 200, again.text
    second = wait_for(lambda: receiver.of_type("webhook.test")[1:], 10, "redelivered")[0]
    assert second.headers["webhook-id"] == first.headers["webhook-id"]  # same id on every retry
    verify_signature(rotated["secret"], second)
    with pytest.raises(AssertionError):
        verify_signature(hook["secret"], second)

    gone = tenant.user.post("/rpc/delete_webhook", json={"webhook_id": hook["webhook_id"]})
    assert gone.status_code == 200 and tenant.user.get("/webhooks").json() == []
    bad = tenant.user.post("/rpc/create_webhook",
                           json={"url": receiver.url, "events": ["job.exploded"]})
    assert bad.status_code == 400 and bad.json()["code"] == "SL602"
    assert "job.exploded" in bad.json()["message"]


# -- e-mail --------------------------------------------------------------------------------------
def test_email_opt_in_sends_job_failed_through_a_real_smtp_server(
        worker: Settings, su_conn: psycopg.Connection, api: Callable[..., httpx.Client],
        catalog: dict[str, str], tenant: Tenant, smtp: SmtpServer) -> None:
    email = f"ops-{uuid.uuid4().hex[:8]}@{tenant.client_id}.example"
    add_user(su_conn, email, ["client"], tenant.client_id)
    token = login(api(), email).json()["token"]
    person = api(token)
    assert person.get("/email_alerts").json() == [{"email": email, "events": [],
                                                   "email_enabled": True}]
    answer = person.post("/rpc/set_email_alerts", json={"events": ["job.failed"]})
    assert answer.status_code == 200, answer.text
    assert person.post("/rpc/set_email_alerts", json={"events": ["invoice.finalized"]}) \
        .json()["code"] == "SL602"
    job = f"job-{uuid.uuid4().hex[:8]}"
    tenant.ingest([tenant.event(catalog["two"], job, "prepare", "failed")])
    (mail,) = wait_for(lambda: smtp.mails_to(email), 15, "the e-mail in the SMTP server's mailbox",
                       interval=0.2)
    assert job in mail["Subject"] and "failed" in mail["Subject"]
    text = mail.get_content()
    assert "GPU_OOM" in text and f"/#/jobs/{tenant.client_id}/{job}" in text
    # Opting out stops them.
    assert person.post("/rpc/set_email_alerts", json={"events": []}).status_code == 200
    assert person.get("/email_alerts").json()[0]["events"] == []


def test_stack_up_starts_the_worker_and_down_stops_it(worker: Settings) -> None:
    assert notify.status(worker)["up"]
    assert notify.stop(worker)
    assert not notify.status(worker)["up"]
    notify.start(worker)
    assert notify.status(worker)["up"]
