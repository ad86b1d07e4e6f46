"""Ingest with 10 webhook endpoints subscribed vs none (issue 15): the outbox must cost ingest
(almost) nothing, whatever the number of endpoints.

`python -m bench.notifications [--rounds N] [--batches N]`: on a throw-away stack whose worker
delivers to a real receiver on 127.0.0.1, sends the same HTTP ingest batches (one BotImage job,
about 41 events, every third job failing) alternately for a client with no endpoint and for a
client with 10 endpoints subscribed to every job event, in interleaved rounds, and reports the
p50 ratio. Deliveries run meanwhile (the worker is part of the stack), so both sides share the
same background load; the run checks at the end that every message was delivered 10 times.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import sys
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import psycopg

from bench.harness import admin_token, argument_parser, bench_stack, ingest_job_ms, percentile

ENDPOINTS = 10
EVENTS = ["job.failed", "job.recovered", "job.stalled", "job.completed"]


class _Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    received = 0
    lock = threading.Lock()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        with _Sink.lock:
            _Sink.received += 1
        self.send_response(204)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def _stats(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50_ms": round(statistics.median(values), 2),
            "p95_ms": round(percentile(values, 0.95), 2), "max_ms": round(max(values), 2)}


def measure(rounds: int = 6, batches: int = 15) -> dict[str, Any]:
    os.environ["STEPLEDGER_WEBHOOK_ALLOW_PRIVATE"] = "1"  # the receiver is on loopback
    sink = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{sink.server_address[1]}/hook"
    try:
        with bench_stack() as settings, \
                httpx.Client(base_url=settings.api_url, timeout=120, headers={
                    "Authorization": f"Bearer {admin_token(settings)}"}) as http, \
                psycopg.connect(settings.dsn("postgres"), autocommit=True) as su:
            quiet, busy = "client-000", "client-001"
            for _ in range(ENDPOINTS):
                r = http.post("/rpc/create_webhook", json={"url": url, "events": EVENTS,
                                                           "client_id": busy})
                assert r.status_code == 200, r.text
            rng = random.Random(15)
            now = datetime.now(UTC)
            samples: dict[str, list[float]] = {quiet: [], busy: []}
            for n in range(rounds):
                for b in range(batches):
                    for client in ((quiet, busy) if (n + b) % 2 == 0 else (busy, quiet)):
                        outcome = "failed" if b % 3 == 0 else "completed"
                        samples[client].append(ingest_job_ms(
                            http, client, f"nb-{n}-{b}-{time.time_ns()}", outcome, rng, now))
            messages = su.execute("select count(*) from ledger.notification_messages "
                                  "where client_id = %s", [busy]).fetchone()[0]
            expected = messages * ENDPOINTS
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                delivered = su.execute("select count(*) from ledger.webhook_deliveries "
                                       "where state = 'succeeded'").fetchone()[0]
                if delivered >= expected:
                    break
                time.sleep(0.5)
            none, ten = _stats(samples[quiet]), _stats(samples[busy])
            return {"no_endpoint": none, "ten_endpoints": ten,
                    "p50_ratio": round(ten["p50_ms"] / max(none["p50_ms"], 1e-9), 3),
                    "messages": messages, "deliveries_expected": expected,
                    "deliveries_succeeded": delivered, "received": _Sink.received}
    finally:
        sink.shutdown()


def run(quick: bool = False) -> dict[str, Any]:
    """Entry point of `python -m bench notifications [--quick]`."""
    result = measure(rounds=2 if quick else 6, batches=6 if quick else 15)
    print(json.dumps(result, indent=2), flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argument_parser("bench.notifications", __doc__)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--batches", type=int, default=15, help="batches per side and round")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args(argv)
    result = measure(args.rounds, args.batches)
    print(json.dumps(result, indent=2), flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["p50_ratio"] <= 1.05 else 1


if __name__ == "__main__":
    sys.exit(main())
