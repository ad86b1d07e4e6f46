"""Ingest throughput through the real gateway and PostgREST, against a bare insert of the same rows.

(a) POST /rpc/ingest with batches of 1,000 events vs POST /bench_baseline (a table with the same
    columns, no constraints, no indexes, no trigger) with the same 1,000 rows;
(b) one event per request, both ways.
Requests alternate between the two sides so that both see the same machine load. Memory of
PostgreSQL (all processes) and PostgREST is sampled along the way.

Sizes: BENCH_INGEST_EVENTS (default 200,000 per side; 1,000,000 for the memory claim),
BENCH_INGEST_SINGLES (default 2,000 requests per side).
"""

from __future__ import annotations

import json
import os
import time
import uuid

import httpx

from bench import harness

STEPS = [s["key"] for s in json.loads((harness.REPO / "schemas" / "pipelines" / "botimage.json")
                                      .read_text())["steps"]]
BASELINE_DDL = """
create table if not exists api.bench_baseline (
  event_id text, client_id text, job_id text, pipeline text, step text, status text,
  occurred_at text, attempt integer, units numeric, source text);
grant insert on api.bench_baseline to admin;
notify pgrst, 'reload schema';
"""


def make_batch(run: str, start: int, size: int) -> list[dict[str, object]]:
    """`size` events with identical keys (the bulk-insert baseline needs that): each job runs the
    20 steps, a started and a completed event per step, spread over 100 clients."""
    out: list[dict[str, object]] = []
    for n in range(start, start + size):
        job, rest = divmod(n, 40)
        step, phase = divmod(rest, 2)
        out.append({
            "event_id": f"{run}-{n}", "client_id": f"client-{job % 100:03d}",
            "job_id": f"{run}-job-{job}", "pipeline": "botimage", "step": STEPS[step],
            "status": "started" if phase == 0 else "completed",
            "occurred_at": f"2026-11-{1 + job % 28:02d}T{step:02d}:{phase * 30:02d}:00Z",
            "attempt": 1, "units": 1 + job % 7, "source": f"node-{job % 4}",
        })
    return out


def _wait_for_baseline(http: httpx.Client) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if http.post("/bench_baseline", json=[]).status_code in (200, 201):
            return
        time.sleep(0.2)
    raise RuntimeError("PostgREST did not pick up api.bench_baseline")


def _post(http: httpx.Client, path: str, body: str) -> float:
    start = time.perf_counter()
    response = http.post(path, content=body, headers={"Content-Type": "application/json",
                                                      "Prefer": "return=minimal"})
    elapsed = time.perf_counter() - start
    if response.status_code not in (200, 201):
        raise RuntimeError(f"{path}: HTTP {response.status_code}: {response.text[:300]}")
    if path == "/rpc/ingest":
        answer = response.json()
        if answer["rejected"] or answer["duplicates"]:
            raise RuntimeError(f"unexpected ingest answer: {str(answer)[:300]}")
    return elapsed


def run(quick: bool = False) -> dict[str, object]:
    events = int(os.environ.get("BENCH_INGEST_EVENTS", 20_000 if quick else 200_000))
    singles = int(os.environ.get("BENCH_INGEST_SINGLES", 200 if quick else 2_000))
    batch_size = 1_000
    with harness.bench_stack() as settings:
        with harness.superuser(settings) as conn:
            conn.execute(BASELINE_DDL)
        headers = {"Authorization": f"Bearer {harness.admin_token(settings)}"}
        with httpx.Client(base_url=settings.api_url, headers=headers, timeout=300) as http:
            _wait_for_baseline(http)
            run_id = uuid.uuid4().hex[:8]
            # Warm both paths (compiled validators, plans, connection pools).
            warm = make_batch(f"warm-{run_id}", 0, batch_size)
            _post(http, "/rpc/ingest", json.dumps(warm))
            _post(http, "/bench_baseline", json.dumps(warm))

            batches = {"ingest": [], "baseline": []}
            memory: list[dict[str, int]] = []
            marks = {0, events // batch_size // 2, events // batch_size - 1}
            for i in range(events // batch_size):
                body = json.dumps(make_batch(run_id, i * batch_size, batch_size))
                first, second = (("ingest", "/rpc/ingest"), ("baseline", "/bench_baseline"))
                if i % 2:
                    first, second = second, first
                for name, path in (first, second):
                    batches[name].append(_post(http, path, body))
                if i in marks:
                    memory.append({"after_events": (i + 1) * batch_size,
                                   "postgres_rss_kib": harness.postgres_rss_kib(settings),
                                   "postgrest_rss_kib": harness.postgrest_rss_kib(settings)})

            single = {"ingest": [], "baseline": []}
            one_run = f"one-{run_id}"
            for i in range(singles):
                body = json.dumps(make_batch(one_run, i, 1)[0])
                single["ingest"].append(_post(http, "/rpc/ingest", body))
                single["baseline"].append(_post(http, "/bench_baseline", body))

    def rate(times: list[float], per: int) -> float:
        return per * len(times) / sum(times)

    result: dict[str, object] = {
        "events_per_side": events, "batch_size": batch_size, "single_requests": singles,
        "batch_ingest_events_per_s": round(rate(batches["ingest"], batch_size)),
        "batch_baseline_events_per_s": round(rate(batches["baseline"], batch_size)),
        "batch_ratio": round(sum(batches["baseline"]) / sum(batches["ingest"]), 3),
        "batch_p50_ms": {k: round(harness.summary(v)["p50"] * 1000, 1) for k, v in batches.items()},
        "single_ingest_events_per_s": round(rate(single["ingest"], 1)),
        "single_baseline_events_per_s": round(rate(single["baseline"], 1)),
        "single_ratio": round(sum(single["baseline"]) / sum(single["ingest"]), 3),
        "single_p50_ms": {k: round(harness.summary(v)["p50"] * 1000, 2) for k, v in single.items()},
        "memory": memory,
    }
    harness.dump(result)
    return result
