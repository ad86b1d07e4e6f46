"""Error statistics, step timings, counts per state and timelines over HTTP, checked against an
independent Python computation on generated BotImage histories.

The module loads two clients' histories on a pipeline of its own (a copy of BotImage under another
name), so filtering on that pipeline isolates its data from other tests' in the shared stack.
"""

from __future__ import annotations

import json
import math
import subprocess
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import httpx
import psycopg
import pytest

from ingest_support import IngestClient
from stacks import run_cli_process
from stepledger.demo import simulate
from stepledger.settings import Settings

STEP_KEYS = [s[0] for s in simulate.BOTIMAGE_STEPS]
STEP_INDEX = {key: i + 1 for i, key in enumerate(STEP_KEYS)}
STALL = timedelta(hours=2)  # schemas/pipelines/botimage.json


def rate(failures: int, attempts: int) -> float:
    """failures / attempts to 4 decimals, half away from zero (as PostgreSQL numeric rounds)."""
    quotient = Decimal(failures) / Decimal(attempts)
    return float(quotient.quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP))


def parse_ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# -- the independent model -------------------------------------------------------------------------
@dataclass
class Attempt:
    client: str
    job: str
    step: str
    attempt: int
    status: str = "started"
    decided: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error_code: str | None = None
    error_message: str | None = None
    retryable: bool = False
    source: str = ""


def fold(events: Iterable[dict[str, Any]]) -> dict[tuple[str, str, str, int], Attempt]:
    """Step attempts from raw events: a terminal status beats started, the later one wins."""
    attempts: dict[tuple[str, str, str, int], Attempt] = {}
    for e in events:
        key = (e["client_id"], e["job_id"], e["step"], int(e.get("attempt", 1)))
        a = attempts.setdefault(key, Attempt(*key))
        at = parse_ts(e["occurred_at"])
        if e["status"] == "started":
            a.started_at = at if a.started_at is None else min(a.started_at, at)
            if a.status == "started":
                a.source = a.source or e.get("source", "")
            continue
        if a.status == "started" or (a.decided is not None and at >= a.decided):
            a.status, a.decided, a.finished_at = e["status"], at, at
            a.source = e.get("source", "") or a.source
            error = e.get("error") or {}
            a.error_code, a.error_message = error.get("code"), error.get("message")
            a.retryable = bool(error.get("retryable"))
    return attempts


def error_stats(attempts: Iterable[Attempt]) -> dict[str, dict[str, Any]]:
    """Per step: attempts (completed or failed), failures, rate, top error code and message."""
    per_step: dict[str, dict[str, Any]] = defaultdict(lambda: {"attempts": 0, "failures": 0})
    codes: dict[str, dict[str, list[Attempt]]] = defaultdict(lambda: defaultdict(list))
    for a in attempts:
        if a.status not in ("completed", "failed"):
            continue
        row = per_step[a.step]
        row["attempts"] += 1
        if a.status == "failed":
            row["failures"] += 1
            codes[a.step][a.error_code or ""].append(a)
    for step, row in per_step.items():
        row["failure_rate"] = rate(row["failures"], row["attempts"])
        row["top_error_code"] = row["top_error_message"] = None
        if codes[step]:
            code, failed = min(codes[step].items(),
                               key=lambda kv: (-len(kv[1]), -max(a.finished_at.timestamp()
                                                                 for a in kv[1]), kv[0]))
            latest = max(failed, key=lambda a: a.finished_at)
            row["top_error_code"], row["top_error_message"] = code, latest.error_message
    return dict(per_step)


def percentile(values: list[float], p: float) -> float:
    """Linear interpolation between closest ranks (PostgreSQL percentile_cont)."""
    ordered = sorted(values)
    pos = p * (len(ordered) - 1)
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def timings(attempts: list[Attempt], since: date, until: date) -> dict[str, dict[str, Any]]:
    """Per step: duration percentiles of completed attempts and queue times before attempts,
    for attempts that started on a UTC day in [since, until]."""
    by_job: dict[tuple[str, str], list[Attempt]] = defaultdict(list)
    for a in attempts:
        if a.started_at is not None:
            by_job[(a.client, a.job)].append(a)
    durations: dict[str, list[float]] = defaultdict(list)
    queues: dict[str, list[float]] = defaultdict(list)
    counts: Counter[str] = Counter()
    for runs in by_job.values():
        runs.sort(key=lambda a: (a.started_at, STEP_INDEX[a.step], a.attempt))
        ready: datetime | None = None
        for a in runs:
            if since <= a.started_at.astimezone(UTC).date() <= until:
                counts[a.step] += 1
                if a.status == "completed" and a.finished_at is not None:
                    durations[a.step].append((a.finished_at - a.started_at).total_seconds())
                if ready is not None:
                    queues[a.step].append(max(0.0, (a.started_at - ready).total_seconds()))
            if a.finished_at is not None:
                ready = a.finished_at if ready is None else max(ready, a.finished_at)
    out = {}
    for step, n in counts.items():
        d, q = durations[step], queues[step]
        out[step] = {
            "attempts": n, "completed": len(d),
            "p50_s": percentile(d, 0.5) if d else None, "p95_s": percentile(d, 0.95) if d else None,
            "max_s": max(d) if d else None,
            "queue_p50_s": percentile(q, 0.5) if q else None,
            "queue_p95_s": percentile(q, 0.95) if q else None,
        }
    return out


def job_states(attempts: Iterable[Attempt], now: datetime) -> dict[tuple[str, str], str]:
    """Contract §6 status of every job from its attempts."""
    latest: dict[tuple[str, str, str], Attempt] = {}
    last_event: dict[tuple[str, str], datetime] = {}
    for a in attempts:
        key = (a.client, a.job, a.step)
        if key not in latest or a.attempt > latest[key].attempt:
            latest[key] = a
        for t in (a.started_at, a.finished_at):
            if t is not None:
                job = (a.client, a.job)
                last_event[job] = max(last_event.get(job, t), t)
    done: Counter[tuple[str, str]] = Counter()
    failed: set[tuple[str, str]] = set()
    for (client, job, _), a in latest.items():
        if a.status in ("completed", "skipped"):
            done[(client, job)] += 1
        elif a.status == "failed":
            failed.add((client, job))
    states = {}
    for job, last in last_event.items():
        if done[job] >= len(STEP_KEYS):
            states[job] = "completed"
        elif job in failed:
            states[job] = "failed"
        elif now - last > STALL:
            states[job] = "stalled"
        else:
            states[job] = "running"
    return states


# -- the data --------------------------------------------------------------------------------------
@dataclass
class Loaded:
    pipeline: str
    a: str
    b: str
    attempts: list[Attempt]
    now: datetime

    def of(self, *clients: str) -> list[Attempt]:
        return [x for x in self.attempts if x.client in clients]


def register_copy(conn: psycopg.Connection, settings: Settings, name: str) -> None:
    path = settings.repo_root / "schemas" / "pipelines" / "botimage.json"
    definition = json.loads(path.read_text())
    definition["pipeline"] = name
    conn.execute("select ledger.register_pipeline(%s::jsonb)", (json.dumps(definition),))


def load_history(settings: Settings, conn: psycopg.Connection, admin_token: str, pipeline: str,
                 clients: list[str], jobs: int, seed: int) -> list[dict[str, Any]]:
    register_copy(conn, settings, pipeline)
    for client in clients:
        conn.execute("select ledger.add_client(%s, %s)", (client, f"Client {client}"))
    now = datetime.now(UTC)
    events = [{**e, "pipeline": pipeline}
              for e in simulate.history(clients, jobs, now, days=10, seed=seed)]
    with IngestClient(settings.api_url, admin_token) as client:
        result = client.send_all(events, batch_size=500)
    assert (result.accepted, result.rejected) == (len(events), [])
    return events


@pytest.fixture(scope="module")
def loaded(settings: Settings, su_conn: psycopg.Connection,
           jwt_for: Callable[..., str]) -> Loaded:
    tag = uuid.uuid4().hex[:6]
    pipeline, a, b = f"ana-{tag}", f"ana-a-{tag}", f"ana-b-{tag}"
    events = load_history(settings, su_conn, jwt_for("admin"), pipeline, [a, b], jobs=30, seed=11)
    su_conn.execute("select ledger.refresh_analytics()")
    return Loaded(pipeline, a, b, list(fold(events).values()), datetime.now(UTC))


@pytest.fixture(scope="module")
def http(settings: Settings, jwt_for: Callable[..., str]) -> Callable[..., httpx.Client]:
    clients: dict[tuple[str, str | None], httpx.Client] = {}

    def make(role: str, client_id: str | None = None) -> httpx.Client:
        key = (role, client_id)
        if key not in clients:
            clients[key] = httpx.Client(
                base_url=settings.api_url, timeout=30,
                headers={"Authorization": f"Bearer {jwt_for(role, client_id)}"})
        return clients[key]
    return make


def get(http_client: httpx.Client, path: str, **params: Any) -> Any:
    response = http_client.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def by_step(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["step"]: r for r in rows}


def per_step(rows: list[dict[str, Any]], expected: dict[str, dict[str, Any]]
             ) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(step, row, expected) for each expected step, once the rows are found to name exactly
    the expected steps."""
    got = by_step(rows)
    assert set(got) == set(expected)
    for step, want in expected.items():
        yield step, got[step], want


def assert_error_stats(rows: list[dict[str, Any]], expected: dict[str, dict[str, Any]]) -> None:
    for step, row, want in per_step(rows, expected):
        assert (row["attempts"], row["failures"]) == (want["attempts"], want["failures"]), step
        assert float(row["failure_rate"]) == want["failure_rate"], step
        assert row["top_error_code"] == want["top_error_code"], step
        assert row["top_error_message"] == want["top_error_message"], step


# -- error statistics ------------------------------------------------------------------------------
def test_generated_history_has_failures_and_retries(loaded: Loaded) -> None:
    statuses = Counter(a.status for a in loaded.attempts)
    assert statuses["failed"] >= 5 and statuses["completed"] > 500
    assert any(a.attempt > 1 for a in loaded.attempts)


def test_client_error_stats_match_python(loaded: Loaded, http: Callable[..., httpx.Client]) -> None:
    for client in (loaded.a, loaded.b):
        rows = get(http("client", client), "/error_stats", pipeline=f"eq.{loaded.pipeline}")
        assert_error_stats(rows, error_stats(loaded.of(client)))


def test_admin_error_stats_span_clients(loaded: Loaded, http: Callable[..., httpx.Client]) -> None:
    rows = get(http("admin"), "/error_stats", pipeline=f"eq.{loaded.pipeline}")
    assert_error_stats(rows, error_stats(loaded.of(loaded.a, loaded.b)))
    # The contract's columns come first, in order.
    assert list(rows[0])[:6] == ["pipeline", "step", "failures", "attempts", "failure_rate",
                                 "top_error_code"]
    one = get(http("admin"), "/rpc/error_stats_window", client=loaded.b,
              pipeline=f"eq.{loaded.pipeline}")
    assert_error_stats(one, error_stats(loaded.of(loaded.b)))


def test_error_stats_over_a_window(loaded: Loaded, http: Callable[..., httpx.Client]) -> None:
    today = loaded.now.date()
    since, until = today - timedelta(days=6), today - timedelta(days=2)
    inside = [a for a in loaded.of(loaded.a)
              if a.finished_at and since <= a.finished_at.astimezone(UTC).date() <= until]
    rows = get(http("client", loaded.a), "/rpc/error_stats_window", since=str(since),
               until=str(until), pipeline=f"eq.{loaded.pipeline}")
    assert_error_stats(rows, error_stats(inside))
    assert sum(r["attempts"] for r in rows) < sum(
        r["attempts"] for r in error_stats(loaded.of(loaded.a)).values())


def test_error_stats_by_day(loaded: Loaded, http: Callable[..., httpx.Client]) -> None:
    today = loaded.now.date()
    rows = get(http("client", loaded.a), "/rpc/error_stats_by_day",
               since=str(today - timedelta(days=30)), until=str(today),
               pipeline=f"eq.{loaded.pipeline}")
    days: dict[date, list[Attempt]] = defaultdict(list)
    for a in loaded.of(loaded.a):
        if a.finished_at is not None:
            days[a.finished_at.astimezone(UTC).date()].append(a)
    expected = {(day, step): row for day, group in days.items()
                for step, row in error_stats(group).items()}
    got = {(date.fromisoformat(r["day"]), r["step"]): r for r in rows}
    assert set(got) == set(expected)
    for key, want in expected.items():
        assert (got[key]["attempts"], got[key]["failures"]) == (want["attempts"], want["failures"])
        assert float(got[key]["failure_rate"]) == want["failure_rate"]
        assert got[key]["top_error_code"] == want["top_error_code"]


def test_error_stats_by_source(loaded: Loaded, http: Callable[..., httpx.Client]) -> None:
    expected: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    for a in loaded.of(loaded.a, loaded.b):
        if a.status in ("completed", "failed"):
            expected[(a.client, a.source)]["attempts"] += 1
            expected[(a.client, a.source)]["failures"] += a.status == "failed"

    mine = get(http("client", loaded.a), "/rpc/error_stats_by_source", pipeline=loaded.pipeline)
    assert {r["client_id"] for r in mine} == {loaded.a}
    every = get(http("admin"), "/rpc/error_stats_by_source", pipeline=loaded.pipeline)
    ours = [r for r in every if r["client_id"] in (loaded.a, loaded.b)]
    assert {r["client_id"] for r in ours} == {loaded.a, loaded.b}
    assert [r for r in every if r["client_id"] == loaded.a] == mine
    got = {(r["client_id"], r["source"]): r for r in ours}
    assert set(got) == set(expected)
    for key, want in expected.items():
        assert (got[key]["attempts"], got[key]["failures"]) == (want["attempts"], want["failures"])
        assert float(got[key]["failure_rate"]) == rate(want["failures"], want["attempts"])


def test_error_codes_with_share_and_sample(loaded: Loaded,
                                           http: Callable[..., httpx.Client]) -> None:
    rows = get(http("admin"), "/rpc/error_codes", pipeline=f"eq.{loaded.pipeline}")
    failed = [a for a in loaded.of(loaded.a, loaded.b) if a.status == "failed"]
    per_code = Counter((a.step, a.error_code) for a in failed)
    per_step = Counter(a.step for a in failed)
    got = {(r["step"], r["error_code"]): r for r in rows}
    assert set(got) == set(per_code)
    for (step, code), n in per_code.items():
        row = got[(step, code)]
        assert row["failures"] == n
        assert float(row["share"]) == rate(n, per_step[step])
        latest = max((a for a in failed if (a.step, a.error_code) == (step, code)),
                     key=lambda a: a.finished_at)
        assert row["sample_message"] == latest.error_message
        assert row["clients"] == len({a.client for a in failed
                                      if (a.step, a.error_code) == (step, code)})
    assert [r["failures"] for r in rows] == sorted((r["failures"] for r in rows), reverse=True)


def test_bad_window_is_refused(loaded: Loaded, http: Callable[..., httpx.Client]) -> None:
    for path in ("/rpc/error_stats_window", "/rpc/step_durations", "/rpc/error_stats_by_day"):
        response = http("client", loaded.a).get(path, params={"since": "2026-02-10",
                                                              "until": "2026-02-01"})
        assert response.status_code == 400, path
        assert response.json()["code"] == "SL501", path


# -- step timings ----------------------------------------------------------------------------------
def assert_timings(rows: list[dict[str, Any]], expected: dict[str, dict[str, Any]]) -> None:
    for step, row, want in per_step(rows, expected):
        assert (row["attempts"], row["completed"]) == (want["attempts"], want["completed"]), step
        for col in ("p50_s", "p95_s", "max_s", "queue_p50_s", "queue_p95_s"):
            if want[col] is None:
                assert row[col] is None, (step, col)
            else:
                assert float(row[col]) == pytest.approx(want[col], abs=0.0011), (step, col)


def test_step_durations_match_python(loaded: Loaded, http: Callable[..., httpx.Client]) -> None:
    today = loaded.now.date()
    since = today - timedelta(days=30)
    rows = get(http("client", loaded.a), "/rpc/step_durations", since=str(since), until=str(today),
               pipeline=f"eq.{loaded.pipeline}")
    assert_timings(rows, timings(loaded.of(loaded.a), since, today))
    assert {(r["window_start"], r["window_end"]) for r in rows} == {(str(since), str(today))}


def test_step_durations_over_a_narrow_window_and_across_clients(
        loaded: Loaded, http: Callable[..., httpx.Client]) -> None:
    today = loaded.now.date()
    since, until = today - timedelta(days=5), today - timedelta(days=3)
    rows = get(http("admin"), "/rpc/step_durations", since=str(since), until=str(until),
               pipeline=f"eq.{loaded.pipeline}")
    assert_timings(rows, timings(loaded.of(loaded.a, loaded.b), since, until))


def test_step_durations_default_to_the_last_seven_days(
        loaded: Loaded, http: Callable[..., httpx.Client]) -> None:
    rows = get(http("client", loaded.b), "/rpc/step_durations", pipeline=f"eq.{loaded.pipeline}")
    today = datetime.now(UTC).date()
    assert rows and rows[0]["window_start"] == str(today - timedelta(days=6))
    assert_timings(rows, timings(loaded.of(loaded.b), today - timedelta(days=6), today))


# -- counts per state and job filters --------------------------------------------------------------
def test_counts_per_state_match_python(loaded: Loaded, http: Callable[..., httpx.Client]) -> None:
    states = job_states(loaded.of(loaded.a), loaded.now)
    counts = get(http("client", loaded.a), "/rpc/job_counts", pipeline=loaded.pipeline)
    expected = Counter(states.values())
    assert {k: counts[k] for k in ("running", "completed", "failed", "stalled")} == \
        {k: expected[k] for k in ("running", "completed", "failed", "stalled")}
    assert counts["total"] == len(states)
    assert expected["failed"] and expected["stalled"] and expected["running"]
    # Without filters the counts come from an index-only path; an empty prefix forces the
    # general one: both must agree, for a client and for an admin.
    for http_client, params in ((http("client", loaded.a), {}),
                                (http("admin"), {"client": loaded.b})):
        fast = get(http_client, "/rpc/job_counts", **params)
        general = get(http_client, "/rpc/job_counts", job_prefix="", **params)
        assert {k: v for k, v in fast.items() if k != "as_of"} == \
            {k: v for k, v in general.items() if k != "as_of"}
        assert fast["stalled"] > 0


def test_job_filters_users_expect(loaded: Loaded, http: Callable[..., httpx.Client]) -> None:
    client = http("client", loaded.a)
    states = job_states(loaded.of(loaded.a), loaded.now)
    pipe = f"eq.{loaded.pipeline}"

    failed = get(client, "/jobs", pipeline=pipe, status="eq.failed", select="job_id")
    assert {r["job_id"] for r in failed} == {j for (_, j), s in states.items() if s == "failed"}

    open_jobs = get(client, "/jobs", pipeline=pipe, status="neq.completed", select="job_id,status")
    assert {r["job_id"] for r in open_jobs} == \
        {j for (_, j), s in states.items() if s != "completed"}

    jobs = get(client, "/jobs", pipeline=pipe, select="job_id,started_at", order="started_at")
    middle = parse_ts(jobs[len(jobs) // 2]["started_at"])
    since, until = middle - timedelta(days=2), middle + timedelta(days=1)
    ranged = client.get("/jobs", params=[("pipeline", pipe), ("select", "job_id"),
                                         ("started_at", f"gte.{since.isoformat()}"),
                                         ("started_at", f"lt.{until.isoformat()}")]).json()
    want = {r["job_id"] for r in jobs if since <= parse_ts(r["started_at"]) < until}
    assert {r["job_id"] for r in ranged} == want and want
    counted = get(client, "/rpc/job_counts", pipeline=loaded.pipeline, since=since.isoformat(),
                  until=until.isoformat())
    assert counted["total"] == len(want)

    prefix = jobs[0]["job_id"][: len(loaded.a) + 7]  # client-YYYYMM
    by_prefix = get(client, "/jobs", pipeline=pipe, job_id=f"like.{prefix}*", select="job_id")
    assert {r["job_id"] for r in by_prefix} == \
        {r["job_id"] for r in jobs if r["job_id"].startswith(prefix)}
    assert get(client, "/rpc/job_counts", job_prefix=prefix)["total"] == len(by_prefix)


# -- timelines -------------------------------------------------------------------------------------
def test_timeline_of_a_failed_job(loaded: Loaded, http: Callable[..., httpx.Client]) -> None:
    states = job_states(loaded.of(loaded.a), loaded.now)
    job = sorted(j for (_, j), s in states.items() if s == "failed")[0]
    body = get(http("client", loaded.a), "/rpc/job_timeline", job_id=job)
    assert (body["client_id"], body["job_id"], body["status"]) == (loaded.a, job, "failed")
    assert [s["step"] for s in body["steps"]] == STEP_KEYS
    mine = {(a.step, a.attempt): a for a in loaded.attempts if (a.client, a.job) == (loaded.a, job)}
    reached = {step for step, _ in mine}
    for step in body["steps"]:
        runs = step["runs"]
        assert len(runs) == len([k for k in mine if k[0] == step["step"]])
        if step["step"] not in reached:
            # a failed job will not reach it: not_run (pending is for open jobs)
            assert (step["state"], runs) == ("not_run", [])
        for run in runs:
            a = mine[(step["step"], run["attempt"])]
            assert run["status"] == a.status
            assert parse_ts(run["started_at"]) == a.started_at
            if a.status != "started":
                assert parse_ts(run["ended_at"]) == a.finished_at
    assert parse_ts(body["span"]["start"]) == min(a.started_at for a in mine.values())
    assert parse_ts(body["span"]["end"]) == parse_ts(body["finished_at"])


def test_timeline_queue_times(loaded: Loaded, http: Callable[..., httpx.Client]) -> None:
    states = job_states(loaded.of(loaded.b), loaded.now)
    job = sorted(j for (_, j), s in states.items() if s == "completed")[0]
    body = get(http("admin"), "/rpc/job_timeline", job_id=job, client_id=loaded.b)
    runs = sorted((a for a in loaded.attempts if (a.client, a.job) == (loaded.b, job)),
                  key=lambda a: (a.started_at, STEP_INDEX[a.step], a.attempt))
    ready: datetime | None = None
    expected: dict[tuple[str, int], float | None] = {}
    for a in runs:
        expected[(a.step, a.attempt)] = None if ready is None else \
            max(0.0, (a.started_at - ready).total_seconds())
        ready = a.finished_at if ready is None else max(ready, a.finished_at)
    got = {(s["step"], r["attempt"]): r["queue_s"] for s in body["steps"] for r in s["runs"]}
    assert set(got) == set(expected)
    for key, want in expected.items():
        if want is None:
            assert got[key] is None
        else:
            assert float(got[key]) == pytest.approx(want, abs=0.0011)


def test_timeline_of_a_stalled_job_closes_its_open_attempt(
        loaded: Loaded, http: Callable[..., httpx.Client]) -> None:
    states = job_states(loaded.of(loaded.a), loaded.now)
    job = next(j for (_, j), s in states.items() if s == "stalled")
    body = get(http("client", loaded.a), "/rpc/job_timeline", job_id=job)
    assert body["status"] == "stalled"
    open_steps = [s for s in body["steps"] if s["state"] == "stalled"]
    assert len(open_steps) == 1
    assert parse_ts(open_steps[0]["ended_at"]) == parse_ts(body["updated_at"])
    assert not [s for s in body["steps"] if s["state"] == "running"]


def test_timeline_tenancy_and_ambiguity(loaded: Loaded, su_conn: psycopg.Connection,
                                        http: Callable[..., httpx.Client],
                                        settings: Settings, jwt_for: Callable[..., str]) -> None:
    b_job = next(a.job for a in loaded.attempts if a.client == loaded.b)
    hidden = http("client", loaded.a).get("/rpc/job_timeline", params={"job_id": b_job})
    assert hidden.status_code == 404
    assert hidden.json()["code"] == "SL504"
    seen = http("admin").get("/rpc/job_timeline", params={"job_id": b_job})
    assert seen.status_code == 200 and seen.json()["client_id"] == loaded.b

    shared = f"shared-{uuid.uuid4().hex[:6]}"
    now = datetime.now(UTC)
    with IngestClient(settings.api_url, jwt_for("admin")) as sender:
        result = sender.send([{"event_id": f"{shared}-{c}", "client_id": c, "job_id": shared,
                               "pipeline": loaded.pipeline, "step": STEP_KEYS[0],
                               "status": "started",
                               "occurred_at": now.isoformat(timespec="milliseconds")}
                              for c in (loaded.a, loaded.b)])
    assert result.accepted == 2
    ambiguous = http("admin").get("/rpc/job_timeline", params={"job_id": shared})
    assert ambiguous.status_code == 400 and ambiguous.json()["code"] == "SL503"
    one = get(http("admin"), "/rpc/job_timeline", job_id=shared, client_id=loaded.b)
    assert one["client_id"] == loaded.b
    # A client sees only its own job of that id, so the id is not ambiguous to it.
    own = get(http("client", loaded.a), "/rpc/job_timeline", job_id=shared)
    assert own["client_id"] == loaded.a


# -- tenancy of the statistics ---------------------------------------------------------------------
def test_a_client_never_sees_another_clients_stats(
        loaded: Loaded, http: Callable[..., httpx.Client]) -> None:
    a, b = http("client", loaded.a), http("admin")
    today = loaded.now.date()
    window = {"since": str(today - timedelta(days=30)), "until": str(today)}
    for path, params in (("/rpc/error_stats_window", {}),
                         ("/rpc/error_stats_by_source", {}),
                         ("/rpc/error_stats_by_day", window),
                         ("/rpc/error_codes", {}),
                         ("/rpc/step_durations", window)):
        # Asking for the other client's rows by name gives nothing ...
        assert get(a, path, client=loaded.b, **params) == [], path
        # ... while an admin asking the same question sees them.
        assert get(b, path, client=loaded.b, **params) != [], path
    assert get(a, "/rpc/job_counts", client=loaded.b)["total"] == 0
    assert get(b, "/rpc/job_counts", client=loaded.b)["total"] > 0
    assert get(a, "/jobs", client_id=f"eq.{loaded.b}") == []
    assert get(b, "/jobs", client_id=f"eq.{loaded.b}", limit=1) != []


def test_statistics_without_asking_are_the_clients_own(
        loaded: Loaded, http: Callable[..., httpx.Client]) -> None:
    mine = get(http("client", loaded.a), "/error_stats", pipeline=f"eq.{loaded.pipeline}")
    admin_a = get(http("admin"), "/rpc/error_stats_window", client=loaded.a,
                  pipeline=f"eq.{loaded.pipeline}")
    admin_all = get(http("admin"), "/error_stats", pipeline=f"eq.{loaded.pipeline}")
    # the same rows; refreshed_at is the time of the latest refresh, which the scheduler may
    # repeat between the two requests
    assert [dict(r, refreshed_at=None) for r in mine] == \
        [dict(r, refreshed_at=None) for r in admin_a]
    assert sum(r["attempts"] for r in admin_all) > sum(r["attempts"] for r in mine)


def test_the_roll_ups_are_read_under_the_row_security_rule(
        loaded: Loaded, settings: Settings, as_user: Callable[..., Any]) -> None:
    with psycopg.connect(settings.dsn("postgres")) as conn:
        # The tables themselves: own client only under their row-level security; no ingest token.
        for table in ("step_outcomes_daily", "step_outcomes_total", "step_timings_daily"):
            for role, client in (("client", loaded.a), ("bi_reader", loaded.a)):
                with as_user(conn, role, client):
                    seen = conn.execute(f"select array_agg(distinct client_id) from "
                                        f"ledger.{table}").fetchone()[0]
                conn.rollback()
                assert seen == [loaded.a], (table, role)
            with pytest.raises(psycopg.errors.InsufficientPrivilege), \
                    as_user(conn, "ingest", loaded.a):
                conn.execute(f"select count(*) from ledger.{table}").fetchone()
            conn.rollback()
        # Through the barrier view a client reads its own rows and an admin every client's.
        with as_user(conn, "client", loaded.a):
            own = conn.execute("select array_agg(distinct client_id) from "
                               "ledger.visible_step_outcomes_daily").fetchone()[0]
        conn.rollback()
        with as_user(conn, "admin"):
            every = conn.execute("select array_agg(distinct client_id) from "
                                 "ledger.visible_step_outcomes_daily").fetchone()[0]
        conn.rollback()
        with as_user(conn, "bi_reader", loaded.b):
            bi = conn.execute("select array_agg(distinct client_id) from "
                              "reporting.step_outcomes_daily").fetchone()[0]
        conn.rollback()
    assert own == [loaded.a]
    assert {loaded.a, loaded.b} <= set(every)
    assert bi == [loaded.b]


# -- freshness -------------------------------------------------------------------------------------
def test_statistics_show_their_freshness_and_change_on_refresh(
        settings: Settings, su_conn: psycopg.Connection, jwt_for: Callable[..., str],
        http: Callable[..., httpx.Client], no_scheduler: None) -> None:
    # refreshed by the test alone: the scheduler's refresh could come between two reads
    tag = uuid.uuid4().hex[:6]
    pipeline, client = f"fresh-{tag}", f"fresh-{tag}"
    register_copy(su_conn, settings, pipeline)
    su_conn.execute("select ledger.add_client(%s, %s)", (client, "Fresh"))
    now = datetime.now(UTC)

    def failure(n: int) -> dict[str, Any]:
        return {"event_id": f"f{n}", "client_id": client, "job_id": f"job-{n}",
                "pipeline": pipeline,
                "step": STEP_KEYS[0], "status": "failed",
                "occurred_at": (now - timedelta(minutes=n)).isoformat(timespec="milliseconds"),
                "error": {"code": "PACS_TIMEOUT", "message": f"try {n}"}}

    admin = http("admin")
    with IngestClient(settings.api_url, jwt_for("admin")) as sender:
        sender.send([failure(1)])
        refreshed = admin.post("/rpc/refresh_analytics", json={})
        assert refreshed.status_code == 200, refreshed.text
        assert [v["view"] for v in refreshed.json()["refreshed"]] == \
            ["step_outcomes_daily", "step_outcomes_total", "step_timings_daily"]
        before = get(admin, "/error_stats", pipeline=f"eq.{pipeline}")
        assert before[0]["failures"] == 1
        fresh = {r["view_name"]: r for r in get(admin, "/analytics_freshness")}
        assert parse_ts(before[0]["refreshed_at"]) == \
            parse_ts(fresh["step_outcomes_total"]["refreshed_at"])
        assert float(fresh["step_outcomes_total"]["age_s"]) < 60

        sender.send([failure(2)])
        stale = get(admin, "/error_stats", pipeline=f"eq.{pipeline}")
        assert stale == before, "statistics change only when refreshed"
        # Young views are left alone when a maximum age is given.
        skipped = admin.post("/rpc/refresh_analytics", json={"max_age_s": 3600}).json()
        assert skipped["refreshed"] == []
        admin.post("/rpc/refresh_analytics", json={})
    after = get(admin, "/error_stats", pipeline=f"eq.{pipeline}")
    assert after[0]["failures"] == 2
    assert after[0]["top_error_message"] == "try 1", "the latest failure's message is the sample"
    assert parse_ts(after[0]["refreshed_at"]) > parse_ts(before[0]["refreshed_at"])


def test_freshness_tells_clients_nothing_of_other_clients_activity(
        loaded: Loaded, http: Callable[..., httpx.Client], settings: Settings,
        as_user: Callable[..., Any]) -> None:
    """Row counts and refresh durations grow with every client's activity: admins only."""
    assert http("admin").post("/rpc/refresh_analytics", json={}).status_code == 200
    admin = get(http("admin"), "/analytics_freshness")
    assert admin and all(r["row_count"] is not None and r["duration_ms"] is not None
                         for r in admin)  # the same rows, seen by an admin
    client = get(http("client", loaded.a), "/analytics_freshness")
    assert {r["view_name"] for r in client} == {r["view_name"] for r in admin}
    assert all(r["refreshed_at"] for r in client)
    assert [(r["row_count"], r["duration_ms"]) for r in client] == [(None, None)] * len(client)
    with psycopg.connect(settings.dsn("postgres")) as conn:
        for role in ("client", "bi_reader"):
            with as_user(conn, role, loaded.a):
                conn.execute("select view_name, refreshed_at from ledger.analytics_refreshes")
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute("select row_count from ledger.analytics_refreshes")
            conn.rollback()


def test_only_admins_refresh(loaded: Loaded, http: Callable[..., httpx.Client]) -> None:
    refused = http("client", loaded.a).post("/rpc/refresh_analytics", json={})
    assert refused.status_code in (401, 403)
    assert refused.json()["code"] == "42501"
    bad = http("admin").post("/rpc/refresh_analytics", json={"max_age_s": -1})
    assert bad.status_code == 400 and bad.json()["code"] == "SL501"


# -- operator command ------------------------------------------------------------------------------
def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli_process(settings, "analytics", *args, timeout=120)


def test_cli_refreshes_and_refuses_bad_input(settings: Settings,
                                             su_conn: psycopg.Connection) -> None:
    newest = "select max(refreshed_at) from ledger.analytics_refreshes"
    before = su_conn.execute(newest).fetchone()[0]
    done = _cli(settings, "refresh")
    assert done.returncode == 0, done.stderr
    assert "step_outcomes_daily" in done.stdout
    oldest = "select min(refreshed_at) from ledger.analytics_refreshes"
    after = su_conn.execute(oldest).fetchone()[0]
    assert before is None or after > before
    young = _cli(settings, "refresh", "--max-age", "3600")
    assert young.returncode == 0 and "refreshed: nothing" in young.stdout
    bad = _cli(settings, "refresh", "--max-age", "-1")
    assert bad.returncode == 1
    assert bad.stderr.strip().startswith("stepledger: ")
    assert len(bad.stderr.strip().splitlines()) == 1
