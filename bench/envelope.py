"""Envelope validation inside the database: the plpython validator against the compiled SQL.

Per batch of 1,000 fresh events (bench.ingest's events), in one connection, alternating sides:
(a) classification: public.jsonb_matches_schema(ledger.step_event_v1_schema(), e) against
    ledger.step_event_v1_valid(e) over the batch, and the same scan with no check (baseline);
(b) classification plus the insert that re-checks, as ingest does: the validator, then an insert
    into a table with the old CHECK (the validator again, a memo hit), against the compiled
    predicate and a table with CHECK (ledger.step_event_v1_valid(payload)), and against no check
    at all (baseline).
Reports milliseconds per 1,000 events, wall clock (median of the rounds) and CPU time of the
database backend (total over the rounds, from /proc: robust when other work loads the
machine), and the ratios old / new with the baseline subtracted.

Size: BENCH_ENVELOPE_BATCHES (default 40; 10 with --quick).
"""

from __future__ import annotations

import json
import os
import statistics
import time
import uuid
from pathlib import Path

import psycopg

from bench import harness
from bench.ingest import make_batch

SETUP = """
create unlogged table if not exists public.bench_check_old (payload jsonb not null
  check (public.jsonb_matches_schema(ledger.step_event_v1_schema(), payload)));
create unlogged table if not exists public.bench_check_new (payload jsonb not null
  check (ledger.step_event_v1_valid(payload)));
create unlogged table if not exists public.bench_check_none (payload jsonb not null);
"""
SCAN = "select count(*) filter (where {check}) from jsonb_array_elements(%s::jsonb) e"
CHECKS = {
    "baseline": "e is not null",
    "validator": "public.jsonb_matches_schema(ledger.step_event_v1_schema(), e)",
    "compiled": "ledger.step_event_v1_valid(e)",
}
STORE = {
    "baseline": ("e is not null", "bench_check_none"),
    "validator": (CHECKS["validator"], "bench_check_old"),
    "compiled": (CHECKS["compiled"], "bench_check_new"),
}


def _cpu_s(pid: int) -> float:
    """User plus system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _timed(conn: psycopg.Connection, pid: int, query: str, body: str) -> tuple[float, float]:
    cpu = _cpu_s(pid)
    start = time.perf_counter()
    conn.execute(query, [body])  # type: ignore[arg-type]
    return time.perf_counter() - start, _cpu_s(pid) - cpu


def run(quick: bool = False) -> dict[str, object]:
    batches = int(os.environ.get("BENCH_ENVELOPE_BATCHES", 10 if quick else 40))
    scan: dict[str, list[tuple[float, float]]] = {k: [] for k in CHECKS}
    store: dict[str, list[tuple[float, float]]] = {k: [] for k in STORE}
    with harness.bench_stack() as settings, harness.superuser(settings) as conn:
        conn.execute(SETUP)
        row = conn.execute("select pg_backend_pid()").fetchone()
        assert row is not None
        pid = int(row[0])
        run_id = uuid.uuid4().hex[:8]
        warm = json.dumps(make_batch(f"warm-{run_id}", 0, 1000))
        for check in CHECKS.values():
            conn.execute(SCAN.format(check=check), [warm])
        for i in range(batches):
            order = list(CHECKS) if i % 2 == 0 else list(reversed(CHECKS))
            for side in order:  # fresh events for every side: no memo hit on classification
                body = json.dumps(make_batch(f"{run_id}-{side}", i * 1000, 1000))
                scan[side].append(_timed(conn, pid, SCAN.format(check=CHECKS[side]), body))
            for side in order:
                check, table = STORE[side]
                body = json.dumps(make_batch(f"{run_id}-store-{side}", i * 1000, 1000))
                query = (f"with c as materialized (select e, {check} as ok"
                         f" from jsonb_array_elements(%s::jsonb) e)"
                         f" insert into public.{table} select e from c where ok")
                store[side].append(_timed(conn, pid, query, body))
            conn.execute("truncate public.bench_check_old, public.bench_check_new,"
                         " public.bench_check_none")

    def wall(rounds: list[tuple[float, float]]) -> float:
        return statistics.median(w for w, _ in rounds) * 1000

    def cpu(rounds: list[tuple[float, float]]) -> float:
        return sum(c for _, c in rounds) / len(rounds) * 1000

    def report(table: dict[str, list[tuple[float, float]]]) -> dict[str, object]:
        out: dict[str, object] = {}
        for name, measure in (("wall", wall), ("cpu", cpu)):
            ms = {k: round(measure(v), 2) for k, v in table.items()}
            base = ms["baseline"]
            out[f"{name}_ms_per_1000"] = ms
            out[f"{name}_ratio_validator_over_compiled"] = round(
                (ms["validator"] - base) / max(ms["compiled"] - base, 1e-9), 2)
        return out

    result: dict[str, object] = {
        "batches": batches, "batch_size": 1000,
        "classify": report(scan),
        "classify_and_store": report(store),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    harness.dump(result)
    return result
