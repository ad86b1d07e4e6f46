"""Envelope validation inside the database: the plpython validator against the compiled SQL.

Per batch of 1,000 fresh events (bench.ingest's events), in one connection, alternating sides:
(a) classification: public.jsonb_matches_schema(ledger.step_event_v1_schema(), e) against
    ledger.step_event_v1_valid(e) over the batch, and the same scan with no check (baseline);
(b) classification plus the insert that re-checks, as ingest does: the validator, then an insert
    into a table with the old CHECK (the validator again, a memo hit), against the compiled
    predicate and a table with CHECK (ledger.step_event_v1_valid(payload)), and against no check
    at all (baseline).
Reports milliseconds per 1,000 events (median of the rounds) and the ratios old / new.

Size: BENCH_ENVELOPE_BATCHES (default 40; 10 with --quick).
"""

from __future__ import annotations

import json
import os
import statistics
import time
import uuid

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


def _timed(conn: psycopg.Connection, query: str, body: str) -> float:
    start = time.perf_counter()
    conn.execute(query, [body])  # type: ignore[arg-type]
    return time.perf_counter() - start


def run(quick: bool = False) -> dict[str, object]:
    batches = int(os.environ.get("BENCH_ENVELOPE_BATCHES", 10 if quick else 40))
    scan: dict[str, list[float]] = {k: [] for k in CHECKS}
    store: dict[str, list[float]] = {k: [] for k in STORE}
    with harness.bench_stack() as settings, harness.superuser(settings) as conn:
        conn.execute(SETUP)
        run_id = uuid.uuid4().hex[:8]
        warm = json.dumps(make_batch(f"warm-{run_id}", 0, 1000))
        for check in CHECKS.values():
            conn.execute(SCAN.format(check=check), [warm])
        for i in range(batches):
            order = list(CHECKS) if i % 2 == 0 else list(reversed(CHECKS))
            for side in order:  # fresh events for every side: no memo hit on classification
                body = json.dumps(make_batch(f"{run_id}-{side}", i * 1000, 1000))
                scan[side].append(_timed(conn, SCAN.format(check=CHECKS[side]), body))
            for side in order:
                check, table = STORE[side]
                body = json.dumps(make_batch(f"{run_id}-store-{side}", i * 1000, 1000))
                query = (f"with c as materialized (select e, {check} as ok"
                         f" from jsonb_array_elements(%s::jsonb) e)"
                         f" insert into public.{table} select e from c where ok")
                store[side].append(_timed(conn, query, body))
            conn.execute("truncate public.bench_check_old, public.bench_check_new,"
                         " public.bench_check_none")

    def ms(values: list[float]) -> float:
        return round(statistics.median(values) * 1000, 2)

    def cost(table: dict[str, list[float]], side: str) -> float:
        return ms(table[side]) - ms(table["baseline"])

    result: dict[str, object] = {
        "batches": batches, "batch_size": 1000,
        "classify_ms_per_1000": {k: ms(v) for k, v in scan.items()},
        "classify_ratio_validator_over_compiled": round(
            cost(scan, "validator") / cost(scan, "compiled"), 2),
        "classify_and_store_ms_per_1000": {k: ms(v) for k, v in store.items()},
        "classify_and_store_ratio_validator_over_compiled": round(
            cost(store, "validator") / cost(store, "compiled"), 2),
        "load_average": os.getloadavg(),
    }
    harness.dump(result)
    return result
