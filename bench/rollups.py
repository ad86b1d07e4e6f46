"""Derived data: the work to keep usage and error statistics fresh, at two history sizes, for the
same ingest (docs/benchmarks.md, "Derived data"; docs/adr/0016-rollups.md).

Two stacks, one holding a small history and one a large one (--small and --large stored events,
generated in SQL by bench.billing.generate: BotImage jobs over 12 months of 2025 and --clients
clients, events and billed job steps, plus the step runs ingest would have folded from those
events). Each is fully refreshed once (the whole history: what every refresh cost before the
refreshes followed the change logs). Then, alternating between the two stacks, --rounds times:
the same ingest (a batch of 1,000 events of new jobs, today, for 10 of the clients, 4% of the
steps failing once before a retry completes) through HTTP, then the usage refresh and the
analytics refresh, each timed, and the table and index blocks they touched counted
(pg_statio_user_tables of the ledger schema, flushed after each refresh). The stacks' schedulers
are stopped, so the refreshes measured are the only ones.

Last, freshness: on the small stack with its scheduler running (refreshes every 2 s), --fresh
times one event completed and one failed for a client, then polls GET /usage (the row no longer
`stale`), POST /rpc/invoice (usage read from the refreshed lines: `source: materialized`) and
GET /rpc/error_stats_window until each shows the ingest: seconds from the ingest's answer.

    python -m bench.rollups [--small 200000] [--large 2000000] [--clients 20] [--rounds 5]
                            [--fresh 10] [--json FILE]
"""

from __future__ import annotations

import contextlib
import json
import shutil
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg

from bench import harness
from bench.billing import _say, _settings, generate
from stepledger import stack
from stepledger.api_client import IngestClient
from stepledger.demo import simulate
from stepledger.settings import Settings
from stepledger.stack import scheduler

STEPS = [s for s, *_ in simulate.BOTIMAGE_STEPS]
BATCH = 1000
INGEST_CLIENTS = 10

# The step runs that ingest folds from the generated events (one row per attempt).
DERIVE_STEP_RUNS = """
insert into ledger.step_runs (client_id, job_id, step, attempt, pipeline, step_index, status,
                              started_at, finished_at, units, error_code, error_message,
                              error_retryable, source, decided_at, events, updated_at)
select e.client_id, e.job_id, e.step, e.attempt, min(e.pipeline), min(s.step_index),
       (array_agg(e.status order by e.status <> 'started' desc, e.occurred_at desc))[1],
       min(e.occurred_at) filter (where e.status = 'started'),
       max(e.occurred_at) filter (where e.status <> 'started'),
       max(e.units) filter (where e.status = 'completed'),
       max(e.error_code), max(e.error_message), bool_or(e.error_retryable), min(e.source),
       max(e.occurred_at), count(*), now()
  from ledger.events e
  join ledger.pipeline_steps s on s.pipeline = e.pipeline and s.step = e.step
 group by e.client_id, e.job_id, e.step, e.attempt
"""

BLOCKS = """
select coalesce(sum(heap_blks_hit + heap_blks_read + coalesce(idx_blks_hit, 0)
                    + coalesce(idx_blks_read, 0)), 0)::bigint
  from pg_statio_user_tables where schemaname = 'ledger'
"""


def ingest_batch(run: str) -> list[dict[str, object]]:
    """1,000 events of new jobs today: 25 jobs of 10 clients, 20 steps each, a started and a
    terminal event per step; one step in 25 fails first (retryable) and completes on attempt 2,
    in place of two events of another step of the same job, so that the batch stays 1,000."""
    now = datetime.now(UTC).replace(microsecond=0)
    start = now.replace(hour=0, minute=0, second=0)
    events: list[dict[str, object]] = []
    for job in range(BATCH // (2 * len(STEPS))):
        client = f"bench-{1 + job % INGEST_CLIENTS:03d}"
        job_id = f"{run}-{job}"
        t0 = start.timestamp() + (now.timestamp() - start.timestamp()) * job / 25
        for index, step in enumerate(STEPS):
            at = t0 + index * 2
            retried = (job + index) % 25 == 0
            attempts = [("failed", 1), ("completed", 2)] if retried else [("completed", 1)]
            for status, attempt in attempts:
                for phase, state in ((0, "started"), (1, status)):
                    event: dict[str, object] = {
                        "event_id": f"{job_id}-{index}-{attempt}-{phase}", "client_id": client,
                        "job_id": job_id, "pipeline": "botimage", "step": step,
                        "status": state, "attempt": attempt, "source": "bench-node",
                        "occurred_at": datetime.fromtimestamp(at + phase, UTC).isoformat()}
                    if state == "completed":
                        event["units"] = 1 + job % 7
                    if state == "failed":
                        event["error"] = {"code": "GPU_OOM", "message": "CUDA out of memory",
                                          "retryable": True}
                    events.append(event)
                at += 2
    return events[:BATCH]


def build(settings: Settings, events: int, clients: int) -> dict[str, Any]:
    """Generate the history, derive its step runs, and refresh everything once."""
    with psycopg.connect(settings.dsn("stepledger_owner")) as conn:
        data = generate(conn, events, clients, 12)
        started = time.perf_counter()
        data["step_runs"] = conn.execute(DERIVE_STEP_RUNS).rowcount
        conn.execute("analyze ledger.step_runs")
        conn.commit()
        data["derive_step_runs_s"] = round(time.perf_counter() - started, 1)
        conn.autocommit = True
        harness.mark_history_changed(conn)
        for name, call in (("usage", "select ledger.refresh_usage('bench')"),
                           ("analytics", "select ledger.refresh_analytics()")):
            started = time.perf_counter()
            conn.execute(call)
            data[f"full_refresh_{name}_s"] = round(time.perf_counter() - started, 2)
        conn.execute("vacuum analyze")
        data["stored_events"] = conn.execute("select count(*) from ledger.events").fetchone()[0]
    return data


def measure(settings: Settings, run: str) -> dict[str, Any]:
    """One ingest, then each refresh: its time and the blocks it touched."""
    with IngestClient(settings.api_url, harness.admin_token(settings)) as client:
        result = client.send(ingest_batch(run))
    assert (result.accepted, result.rejected) == (BATCH, []), result
    out: dict[str, Any] = {}
    with psycopg.connect(settings.dsn("postgres"), autocommit=True) as conn:
        for name, call in (("usage", "select ledger.refresh_usage('bench')"),
                           ("analytics", "select ledger.refresh_analytics()")):
            conn.execute("select pg_stat_force_next_flush()")
            conn.execute("select pg_stat_clear_snapshot()")
            before = conn.execute(BLOCKS).fetchone()[0]
            started = time.perf_counter()
            conn.execute(call)
            out[f"{name}_ms"] = (time.perf_counter() - started) * 1000
            conn.execute("select pg_stat_force_next_flush()")
            conn.execute("select pg_stat_clear_snapshot()")
            out[f"{name}_blocks"] = conn.execute(BLOCKS).fetchone()[0] - before
    return out


def _usage_units(invoice: dict[str, Any]) -> float:
    return sum(float(line["units"] or 0) for line in invoice["lines"] if line["kind"] == "usage")


def freshness(settings: Settings, runs: int) -> dict[str, dict[str, float]]:
    """Seconds from an ingest's answer until usage, an invoice draft and error statistics show
    it, through HTTP, with the stack's scheduler running."""
    scheduler.start(settings)
    lags: dict[str, list[float]] = {"usage": [], "invoice": [], "error_stats": []}
    with httpx.Client(base_url=settings.api_url, timeout=30, headers={
            "Authorization": f"Bearer {harness.admin_token(settings)}"}) as api:
        for run in range(runs):
            client = f"bench-{1 + run % INGEST_CLIENTS:03d}"
            job = f"fresh-{uuid.uuid4().hex[:8]}"
            at = datetime.now(UTC).replace(microsecond=0)
            period = at.strftime("%Y-%m")
            base = {"client_id": client, "job_id": job, "pipeline": "botimage", "attempt": 1,
                    "occurred_at": at.isoformat()}
            # a completion (one unit) and a failure
            with IngestClient(settings.api_url, harness.admin_token(settings)) as ingest:
                before = _usage_units(api.post("/rpc/invoice", json={
                    "client_id": client, "period": period}).json())
                result = ingest.send([
                    {**base, "event_id": f"{job}-1", "step": STEPS[0], "status": "completed",
                     "units": 1},
                    {**base, "event_id": f"{job}-2", "step": STEPS[1], "status": "failed",
                     "error": {"code": "FRESHNESS", "message": "probe", "retryable": False}}])
            assert result.accepted == 2, result
            started = time.monotonic()
            seen: dict[str, float] = {}
            while len(seen) < len(lags) and time.monotonic() - started < 60:
                if "usage" not in seen:
                    rows = api.get("/usage", params={"client_id": f"eq.{client}",
                                                     "period": f"eq.{period}"}).json()
                    if rows and not any(r["stale"] for r in rows):
                        seen["usage"] = time.monotonic() - started
                if "invoice" not in seen:
                    draft = api.post("/rpc/invoice", json={"client_id": client,
                                                           "period": period}).json()
                    if draft["source"] == "materialized" and _usage_units(draft) == before + 1:
                        seen["invoice"] = time.monotonic() - started
                if "error_stats" not in seen:
                    codes = api.get("/rpc/error_codes", params={"client": client}).json()
                    if any(c["error_code"] == "FRESHNESS" and c["failures"] == run // 10 + 1
                           for c in codes):
                        seen["error_stats"] = time.monotonic() - started
                time.sleep(0.05)
            for name, lag in seen.items():
                lags[name].append(lag)
    return {name: {"runs": len(v), "median_s": round(statistics.median(v), 2),
                   "max_s": round(max(v), 2)} for name, v in lags.items() if v}


def main(argv: list[str] | None = None) -> int:
    parser = harness.argument_parser("bench.rollups", __doc__)
    parser.add_argument("--small", type=int, default=200_000)
    parser.add_argument("--large", type=int, default=2_000_000)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--fresh", type=int, default=10, help="freshness probes (0: none)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    sizes = {"small": args.small, "large": args.large}
    results: dict[str, Any] = {"parameters": vars(args) | {"json": None}}
    with contextlib.ExitStack() as cleanup:
        stacks: dict[str, Settings] = {}
        for name in sizes:
            home = Path(tempfile.mkdtemp(prefix=f"stepledger-bench-rollups-{name}-", dir="/tmp"))
            home.chmod(0o755)
            cleanup.callback(shutil.rmtree, home, True)
            settings = _settings(home)
            stack.up(settings, migrate=True)
            cleanup.callback(stack.down, settings)
            scheduler.stop(settings)  # the refreshes measured are the only ones
            stacks[name] = settings
        for name, events in sizes.items():
            _say(f"{name}: generating {events:,} events over {args.clients} clients")
            results[name] = {"history": build(stacks[name], events, args.clients)}
            _say(f"{name}: {results[name]['history']}")
        samples: dict[str, list[dict[str, Any]]] = {name: [] for name in sizes}
        for i in range(args.rounds):
            for name in sizes:  # alternating, so both see the same machine load
                samples[name].append(measure(stacks[name], f"r{i}-{uuid.uuid4().hex[:6]}"))
            _say(f"round {i + 1}: " + json.dumps({n: {k: round(v, 1) for k, v in s[-1].items()}
                                                 for n, s in samples.items()}))
        for name in sizes:
            results[name]["refresh_after_ingest"] = {
                key: round(statistics.median(s[key] for s in samples[name]), 1)
                for key in samples[name][0]}
        small, large = (results[n]["refresh_after_ingest"] for n in sizes)
        results["large_over_small"] = {key: round(large[key] / small[key], 3)
                                       for key in small if small[key]}
        if args.fresh:
            _say("freshness, the small stack's scheduler running")
            results["freshness"] = freshness(stacks["small"], args.fresh)
    print(json.dumps(results, indent=2, default=str))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
