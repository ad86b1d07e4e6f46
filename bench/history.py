"""Ingest against history: a stack that holds N stored events against one that holds almost none,
side by side in one run (target: the full one at >= 0.9 of the small one).

Two stacks from this checkout. Both get the same oldest jobs first (what late events go to); then
"full" is grown to --events stored events of 100 clients over the past --months months. History is
written by the ingest function itself, in SQL, in batches built in SQL (no Python round trip), so
every table that grows with history holds what real ingest leaves: vault, event ids, events, step
runs, job steps, jobs, the billing change log and whatever else ingest maintains.
Then requests alternate between the stacks over HTTP, as admin:
  new:    batches of 1,000 events of new jobs;
  late:   batches of 1,000 events for jobs months old: a second attempt of each of their steps
          (started, then completed), so each batch re-bills old client-months;
  single: one event per request, new jobs.

    python -m bench.history --events 2000000 [--months 6] [--batches 20] [--singles 100]

The events are received now, so history sits in this month's partitions (the worst case for
ingest's index lookups: nothing is left behind in older partitions).
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg

from bench import harness
from bench.ingest import STEPS, _post, make_batch

SIDES = ("small", "full")
EVENTS_PER_JOB = 2 * len(STEPS)  # started and completed, every step
# The oldest jobs, the same on both stacks: late events go to them.
OLD_JOBS = 1_000
HISTORY_BATCH = 10_000  # the most one request may carry

# One batch of history: events `start` to `start + size - 1` of a history of `total_jobs` jobs,
# the first jobs oldest, spread evenly over the past `months` months (as jobs arrive in time).
HISTORY_SQL = """
select api.ingest(jsonb_agg(jsonb_build_object(
         'event_id', 'h-' || n, 'client_id', 'client-' || lpad((job %% 100)::text, 3, '0'),
         'job_id', 'h-job-' || job, 'pipeline', 'botimage', 'step', (%(steps)s::text[])[step + 1],
         'status', case when phase = 0 then 'started' else 'completed' end,
         'occurred_at', to_char((job_at + make_interval(mins => step * 2 + phase))
                                at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
         'attempt', 1, 'units', 1 + job %% 7, 'source', 'node-' || job %% 4)))
  from generate_series(%(start)s::bigint, %(start)s::bigint + %(size)s - 1) n,
       lateral (select (n / %(per_job)s)::integer as job,
                       ((n %% %(per_job)s) / 2)::integer as step, (n %% 2)::integer as phase) k,
       lateral (select now() - make_interval(months => %(months)s::integer)
                       * (1 - job::float8 / %(total_jobs)s) as job_at) t
"""


def grow(conn: psycopg.Connection, start: int, end: int, total_jobs: int, months: int) -> float:
    """Ingest history events `start` to `end - 1`; returns the events per second."""
    began = time.perf_counter()
    for first in range(start, end, HISTORY_BATCH):
        size = min(HISTORY_BATCH, end - first)
        answer = conn.execute(HISTORY_SQL, {
            "steps": STEPS, "start": first, "size": size, "per_job": EVENTS_PER_JOB,
            "months": months, "total_jobs": total_jobs}).fetchone()[0]
        if answer.get("accepted") != size:
            raise RuntimeError(f"history batch at {first}: {str(answer)[:300]}")
    return (end - start) / max(time.perf_counter() - began, 1e-9)


def late_batch(run: str, index: int, size: int, months: int) -> list[dict[str, object]]:
    """A second attempt of every step of the old jobs `index * size / 40` onwards: each job's
    steps are started and completed again, in the month the first attempt ran."""
    when = (datetime.now(UTC) - timedelta(days=30 * months - 1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    out: list[dict[str, object]] = []
    for n in range(index * size, (index + 1) * size):
        job, rest = divmod(n, EVENTS_PER_JOB)
        step, phase = divmod(rest, 2)
        out.append({
            "event_id": f"{run}-late-{n}", "client_id": f"client-{job % OLD_JOBS % 100:03d}",
            "job_id": f"h-job-{job % OLD_JOBS}", "pipeline": "botimage", "step": STEPS[step],
            "status": "started" if phase == 0 else "completed", "attempt": 2 + job // OLD_JOBS,
            "occurred_at": when, "units": 1, "source": "node-late",
        })
    return out


def _stored(settings: object) -> dict[str, object]:
    with harness.superuser(settings) as conn:  # type: ignore[arg-type]
        events = conn.execute("select count(*) from ledger.events").fetchone()[0]
        size = conn.execute("select pg_database_size(current_database())").fetchone()[0]
    return {"events": events, "database_mb": round(size / 2**20)}


def _summary(times: list[float], per: int) -> dict[str, float]:
    return {"p50_ms": round(harness.summary(times)["p50"] * 1000, 2),
            "events_per_s": round(per * len(times) / sum(times))}


def run(events: int, months: int, batches: int, singles: int) -> dict[str, object]:
    total_jobs = max(events // EVENTS_PER_JOB, OLD_JOBS)
    run_id = uuid.uuid4().hex[:8]
    with contextlib.ExitStack() as stack:
        stacks = {side: stack.enter_context(harness.bench_stack()) for side in SIDES}
        growth: dict[str, float] = {}
        for side in SIDES:
            with harness.superuser(stacks[side]) as conn:
                conn.execute("""select set_config('request.jwt.claims', '{"role": "admin"}',
                                                  false)""")
                conn.execute("set role admin")
                end = OLD_JOBS * EVENTS_PER_JOB if side == "small" else total_jobs * EVENTS_PER_JOB
                growth[side] = round(grow(conn, 0, end, total_jobs, months))
            with harness.superuser(stacks[side]) as conn:
                conn.execute("vacuum analyze")
        stored = {side: _stored(stacks[side]) for side in SIDES}
        http = {side: stack.enter_context(httpx.Client(
            base_url=stacks[side].api_url, timeout=600,  # type: ignore[attr-defined]
            headers={"Authorization": f"Bearer {harness.admin_token(stacks[side])}"}))
            for side in SIDES}
        for side in SIDES:  # PostgREST's connections plan ingest once, on either side alike
            _post(http[side], "/rpc/ingest", json.dumps(make_batch(f"warm-{run_id}", 0, 1_000)))

        def alternate(make: object, count: int) -> dict[str, list[float]]:
            times: dict[str, list[float]] = {side: [] for side in SIDES}
            for i in range(count):
                body = json.dumps(make(i))  # type: ignore[operator]
                for side in SIDES if i % 2 == 0 else SIDES[::-1]:
                    times[side].append(_post(http[side], "/rpc/ingest", body))
            return times

        phases = {
            "new_batch_of_1000": (alternate(
                lambda i: make_batch(f"new-{run_id}", i * 1_000, 1_000), batches), 1_000),
            "late_batch_of_1000": (alternate(
                lambda i: late_batch(run_id, i, 1_000, months), batches), 1_000),
            "single": (alternate(
                lambda i: make_batch(f"one-{run_id}", i, 1)[0], singles), 1),
        }
    result: dict[str, object] = {
        "events": events, "months": months, "batches": batches, "singles": singles,
        "stored": stored, "history_events_per_s": growth,
        **{phase: {**{side: _summary(times[side], per) for side in SIDES},
                   "ratio_full_to_small": round(sum(times["small"]) / sum(times["full"]), 3)}
           for phase, (times, per) in phases.items()},
    }
    harness.dump(result)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = harness.argument_parser("bench.history", __doc__)
    parser.add_argument("--events", type=int, default=2_000_000,
                        help="stored events on the full stack")
    parser.add_argument("--months", type=int, default=6, help="months of history")
    parser.add_argument("--batches", type=int, default=20, help="batches of 1,000 per phase")
    parser.add_argument("--singles", type=int, default=100, help="single-event requests")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args(argv)
    result = run(args.events, args.months, args.batches, args.singles)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
