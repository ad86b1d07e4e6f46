"""`stepledger load` of N NDJSON events against `psql \\copy` of the same file into a bare table.

Both run in the same run, on a fresh local stack: the baseline copies the lines into a table
with one jsonb column (and, for reference, one text column) and does nothing else; the loader
sends them through the gateway and PostgREST to the ingest function, which validates every event
against the envelope, deduplicates it, vaults it, stores it and updates jobs and step runs. The
loader runs as its own process, whose peak resident memory is measured (ru_maxrss of that
child alone).

    python -m bench.load [--events 1000000] [--workers 2] [--batch-size 1000]
    python -m bench load [--quick]          (with the bench package's runner)
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from bench import harness
from stepledger.demo import simulate
from stepledger.ingest.credentials import operator_token
from stepledger.settings import Settings

REPO = Path(__file__).resolve().parents[1]
CLIENTS = [f"client-{n:03d}" for n in range(20)]




def fresh_stack() -> contextlib.AbstractContextManager[Settings]:
    """A migrated stack on free ports in a throw-away home, with the catalog and CLIENTS."""
    return harness.bench_stack("stepledger-bench-load-", clients=CLIENTS)


def write_events(path: Path, events: int, seed: int = 17) -> int:
    """N realistic BotImage events (whole jobs, spread over the clients), one per line."""
    now = datetime.now(UTC)
    written = 0
    with open(path, "w") as fh:
        per_client = events // (30 * len(CLIENTS)) + 3   # jobs average ~40 events
        for event in simulate.history(CLIENTS, per_client, now, seed=seed):
            fh.write(json.dumps(event, separators=(",", ":")) + "\n")
            written += 1
            if written >= events:
                break
    return written


def ingest_function(settings: Settings, path: Path, sample: int,
                    batch_size: int) -> dict[str, float]:
    """Events/s of ledger._ingest_batch alone on one connection, without HTTP, on the first
    `sample` lines in batches, each variant in a transaction that is rolled back: as is, without
    the events' envelope CHECK constraint, and without the progress trigger. Where the time of
    ingest goes, for the record (the loader cannot change it)."""
    with open(path) as fh:
        lines = [line for _, line in zip(range(sample), fh, strict=False)]
    # (until ADR 0014 also without the envelope CHECK and without the progress trigger; both are
    # part of ingest's own statements now)
    variants: dict[str, list[str]] = {"as_is": []}
    rates: dict[str, float] = {}
    with psycopg.connect(settings.dsn("postgres")) as conn:
        for name, setup in variants.items():
            conn.execute("select set_config('request.jwt.claims', '{\"role\": \"admin\"}', true)")
            for statement in setup:
                conn.execute(statement)  # type: ignore[arg-type]
            start = time.perf_counter()
            for i in range(0, len(lines), batch_size):
                chunk = lines[i:i + batch_size]
                conn.execute("select ledger._ingest_batch('ndjson', %s, %s::jsonb[], %s, %s)",
                             [list(range(1, len(chunk) + 1)), chunk, [None] * len(chunk),
                              [None] * len(chunk)])
            rates[name] = len(lines) / (time.perf_counter() - start)
            conn.rollback()
    return rates


def psql_copy(settings: Settings, path: Path, column_type: str) -> float:
    """Seconds for `psql \\copy` of the file into a fresh bare table (doc <column_type>)."""
    table = f"bench_bare_{column_type}"
    env = {**os.environ, "PGPASSWORD": settings.password_for("postgres")}
    base = [str(settings.pg_bindir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1",
            "-h", settings.pg_host, "-p", str(settings.pg_port), "-U", "postgres",
            "-d", settings.dbname]
    subprocess.run([*base, "-c", f"drop table if exists {table}; "
                                 f"create table {table} (doc {column_type})"],
                   check=True, env=env)
    # CSV with quote and delimiter bytes that never occur, so every line is one value as is
    copy = (f"\\copy {table} (doc) from '{path}' "
            "with (format csv, quote e'\\x01', delimiter e'\\x02')")
    start = time.perf_counter()
    subprocess.run([*base, "-c", copy], check=True, env=env)
    return time.perf_counter() - start


def stepledger_load(settings: Settings, path: Path, workers: int,
                    batch_size: int) -> tuple[float, int, float, str]:
    """Seconds, peak RSS (KiB) and CPU seconds of the loader process, and its summary."""
    env = {**os.environ, "STEPLEDGER_URL": settings.api_url,
           "STEPLEDGER_TOKEN": operator_token(settings.jwt_secret, ttl_s=6 * 3600)}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "stepledger", "load", "--quiet",
                             "--workers", str(workers), "--batch-size", str(batch_size),
                             str(path)], env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"stepledger load failed ({proc.returncode}):\n{out}")
    return elapsed, usage.ru_maxrss, usage.ru_utime + usage.ru_stime, out


def run(quick: bool = False, events: int | None = None, workers: int = 2,
        batch_size: int = 1000) -> dict[str, object]:
    n = events or (50_000 if quick else 1_000_000)
    work = Path(tempfile.mkdtemp(prefix="stepledger-bench-load-data-"))
    try:
        path = work / "events.ndjson"
        t0 = time.perf_counter()
        n = write_events(path, n)
        print(f"generated {n:,} events ({path.stat().st_size / 1e6:.0f} MB) in "
              f"{time.perf_counter() - t0:.0f}s", flush=True)
        with fresh_stack() as settings:
            copy_jsonb = psql_copy(settings, path, "jsonb")
            copy_text = psql_copy(settings, path, "text")
            print(f"psql \\copy: jsonb {copy_jsonb:.1f}s, text {copy_text:.1f}s", flush=True)
            in_db = ingest_function(settings, path, min(n, 20_000), batch_size)
            print("ledger._ingest_batch alone, one connection: "
                  + ", ".join(f"{k} {v:,.0f}/s" for k, v in in_db.items()), flush=True)
            load_s, peak_kib, cpu_s, out = stepledger_load(settings, path, workers, batch_size)
            print(out.strip(), flush=True)
            with psycopg.connect(settings.dsn("postgres")) as conn:
                stored = conn.execute("select count(*) from ledger.events").fetchone()
                vaulted = conn.execute("select count(*) from ledger.vault").fetchone()
        assert stored == (n,) and vaulted == (n,), (stored, vaulted, n)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {
        "events": n,
        "workers": workers,
        "batch_size": batch_size,
        "copy_jsonb_s": round(copy_jsonb, 2),
        "copy_jsonb_events_per_s": round(n / copy_jsonb),
        "copy_text_s": round(copy_text, 2),
        "copy_text_events_per_s": round(n / copy_text),
        "load_s": round(load_s, 2),
        "load_events_per_s": round(n / load_s),
        "ratio_vs_copy_jsonb": round(copy_jsonb / load_s, 3),
        "ratio_vs_copy_text": round(copy_text / load_s, 3),
        "ingest_function_events_per_s": {k: round(v) for k, v in in_db.items()},
        "loader_peak_rss_mb": round(peak_kib / 1024, 1),
        "loader_cpu_s": round(cpu_s, 1),
        "load_average_1m_after": round(os.getloadavg()[0], 2),
        "targets": {"ratio_vs_copy": 0.3, "loader_peak_rss_mb": 200},
    }
    print(json.dumps(result, indent=2), flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = harness.argument_parser("bench.load", __doc__)
    parser.add_argument("--events", type=int, default=1_000_000, help="events (default 1M)")
    parser.add_argument("--workers", type=int, default=2, help="loader requests in flight")
    parser.add_argument("--batch-size", type=int, default=1000, help="events per request")
    parser.add_argument("--quick", action="store_true", help="50k events")
    args = parser.parse_args(argv)
    run(quick=args.quick, events=None if args.quick else args.events, workers=args.workers,
        batch_size=args.batch_size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
