"""Soak: ingest at half the measured maximum for a long stretch; latency, memory and errors
must stay flat.

1. Maximum: two senders post NDJSON batches of realistic BotImage events through the API
   gateway as fast as they can for a short while: events per second (the baseline).
2. Soak: the same senders post on a fixed schedule at half that rate for 5 minutes (--quick:
   60 s). Per 30 s window: requests, events, errors, latency p50/p99 (measured from each
   batch's scheduled time, so falling behind shows as latency), memory of PostgreSQL (PSS of
   the postmaster and its children: shared buffers counted once) and PostgREST (RSS), and the
   machine's 1-minute load average (other work on the machine shows there).
3. Checks: no error, no rejected event, ledger.events holds every event sent.

Ratios reported: last window / first window for p99 and memory, soak rate / maximum.

    python -m bench.soak [--seconds 300] [--max-seconds 20] [--batch 100]
    python -m bench soak [--quick]
"""

from __future__ import annotations

import itertools
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from bench.harness import admin_token, argument_parser, bench_stack, percentile, postgrest_rss_kib
from stepledger.api_client import ApiError, IngestClient
from stepledger.demo import simulate
from stepledger.settings import Settings

CLIENTS = [f"client-{n:03d}" for n in range(100)]
WINDOW_S = 30.0
SENDERS = 2


def event_batches(batch: int) -> Iterator[bytes]:
    """Endless NDJSON batches of whole-job BotImage events, unique ids per round."""
    for round_no in itertools.count():
        lines: list[bytes] = []
        now = datetime.now(UTC)
        for event in simulate.history(CLIENTS, 8, now, days=2, seed=1000 + round_no):
            event = {**event, "job_id": f"r{round_no}-{event['job_id']}",
                     "event_id": f"r{round_no}-{event['event_id']}"}
            lines.append(json.dumps(event, separators=(",", ":")).encode())
            if len(lines) == batch:
                yield b"\n".join(lines)
                lines = []


class Source:
    """Thread-safe supply of batches."""

    def __init__(self, batch: int) -> None:
        self._it = event_batches(batch)
        self._lock = threading.Lock()

    def next(self) -> bytes:
        with self._lock:
            return next(self._it)


def postgres_pss_kib(settings: Settings) -> int:
    """Proportional set size of the postmaster and its children (shared memory split among the
    processes that map it, so the sum counts it once)."""
    postmaster = int((settings.pgdata / "postmaster.pid").read_text().split()[0])
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if int(entry.name) != postmaster and ppid != postmaster:
                continue
            for line in (entry / "smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return total


@dataclass
class Sample:
    at: float          # seconds since the start of the phase (scheduled time)
    latency: float     # seconds from the scheduled time to the answer
    events: int
    ok: bool


def maximum(settings: Settings, token: str, source: Source, seconds: float) -> float:
    """Events per second with SENDERS senders posting back to back."""
    stop = time.monotonic() + seconds
    counts = [0] * SENDERS
    errors: list[str] = []

    def send(n: int) -> None:
        with IngestClient(settings.api_url, token, timeout=60) as client:
            while time.monotonic() < stop:
                try:
                    result = client.send_ndjson(source.next())
                except ApiError as exc:
                    errors.append(str(exc))
                    continue
                counts[n] += result.accepted + result.duplicates + len(result.rejected)

    started = time.monotonic()
    threads = [threading.Thread(target=send, args=(n,)) for n in range(SENDERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"{len(errors)} errors while measuring the maximum: {errors[0]}")
    return sum(counts) / (time.monotonic() - started)


def soak(settings: Settings, token: str, source: Source, rate: float, seconds: float,
         batch: int) -> tuple[list[Sample], list[dict[str, float]], list[str]]:
    """Send batches on a fixed schedule at `rate` events/s; sample memory every window."""
    interval = batch / rate
    slots = itertools.count()
    slot_lock = threading.Lock()
    samples: list[Sample] = []
    errors: list[str] = []
    start = time.monotonic() + 0.5
    end = start + seconds
    windows: list[dict[str, float]] = []

    def send() -> None:
        with IngestClient(settings.api_url, token, timeout=60) as client:
            while True:
                with slot_lock:
                    due = start + next(slots) * interval
                if due >= end:
                    return
                body = source.next()
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)   # the schedule, not a wait for a condition
                ok = True
                try:
                    result = client.send_ndjson(body)
                    if result.rejected:
                        ok = False
                        errors.append(f"{len(result.rejected)} rejected: {result.rejected[0]}")
                except ApiError as exc:
                    ok = False
                    errors.append(str(exc))
                samples.append(Sample(due - start, time.monotonic() - due, batch, ok))

    def memory() -> None:
        n = 1
        while start + n * WINDOW_S <= end + 0.01:
            time.sleep(max(0.0, start + n * WINDOW_S - time.monotonic()))
            windows.append({"pg_pss_mib": postgres_pss_kib(settings) / 1024,
                            "postgrest_rss_mib": postgrest_rss_kib(settings) / 1024,
                            "load_1m": os.getloadavg()[0]})
            n += 1

    threads = [threading.Thread(target=send) for _ in range(SENDERS)]
    threads.append(threading.Thread(target=memory))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return samples, windows, errors


def run(quick: bool = False, seconds: float | None = None, max_seconds: float | None = None,
        batch: int = 100) -> dict[str, object]:
    soak_s = seconds or (60.0 if quick else 300.0)
    max_s = max_seconds or (10.0 if quick else 20.0)
    with bench_stack() as settings:
        token = admin_token(settings)
        source = Source(batch)
        peak = maximum(settings, token, source, max_s)
        with psycopg.connect(settings.dsn("postgres"), autocommit=True) as conn:
            before = conn.execute("select count(*) from ledger.events").fetchone()[0]  # type: ignore[index]
        samples, memory, errors = soak(settings, token, source, peak / 2, soak_s, batch)
        with psycopg.connect(settings.dsn("postgres"), autocommit=True) as conn:
            after = conn.execute("select count(*) from ledger.events").fetchone()[0]  # type: ignore[index]
    sent = sum(s.events for s in samples if s.ok)
    table = []
    for n, mem in enumerate(memory):
        window = [s for s in samples if n * WINDOW_S <= s.at < (n + 1) * WINDOW_S]
        latencies = [s.latency * 1000 for s in window]
        table.append({"window": f"{int(n * WINDOW_S)}-{int((n + 1) * WINDOW_S)}s",
                      "requests": len(window),
                      "events_per_s": round(sum(s.events for s in window) / WINDOW_S),
                      "errors": sum(1 for s in window if not s.ok),
                      "p50_ms": round(percentile(latencies, 0.5), 1) if latencies else None,
                      "p99_ms": round(percentile(latencies, 0.99), 1) if latencies else None,
                      "pg_pss_mib": round(mem["pg_pss_mib"], 1),
                      "postgrest_rss_mib": round(mem["postgrest_rss_mib"], 1),
                      "machine_load_1m": round(mem["load_1m"], 2)})
    first, last = table[0], table[-1]
    result = {
        "max_events_per_s": round(peak), "soak_events_per_s": round(peak / 2),
        "soak_s": soak_s, "batch": batch, "events_sent": sent, "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "events_stored": after - before, "windows": table,
        "ratio_p99_last_first": round(last["p99_ms"] / first["p99_ms"], 2),
        "ratio_pg_memory_last_first": round(last["pg_pss_mib"] / first["pg_pss_mib"], 2),
        "ratio_postgrest_memory_last_first": round(
            last["postgrest_rss_mib"] / first["postgrest_rss_mib"], 2),
    }
    print(json.dumps(result, indent=2), flush=True)
    print(f"soak: {result['soak_events_per_s']} events/s (half of {result['max_events_per_s']}) "
          f"for {soak_s:.0f}s; p99 last/first {result['ratio_p99_last_first']}, PostgreSQL "
          f"memory {result['ratio_pg_memory_last_first']}, PostgREST "
          f"{result['ratio_postgrest_memory_last_first']}; errors {len(errors)}; stored "
          f"{after - before} of {sent}", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argument_parser("bench.soak", __doc__)
    parser.add_argument("--seconds", type=float, default=300.0, help="length of the soak")
    parser.add_argument("--max-seconds", type=float, default=20.0,
                        help="length of the maximum-rate measurement")
    parser.add_argument("--batch", type=int, default=100, help="events per request")
    args = parser.parse_args(argv)
    result = run(seconds=args.seconds, max_seconds=args.max_seconds, batch=args.batch)
    return 0 if result["errors"] == 0 and result["events_stored"] == result["events_sent"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
