"""Benchmarks of the auth area, on a throw-away local stack.

1. Row-level security on the hot read: `GET /jobs?order=updated_at.desc&limit=50` as a client
   (the policy filters to its client) against the same query as an admin filtered to that client
   (`&client_id=eq.C`, no policy work), interleaved, through the API gateway. Target: p50 ratio
   <= 1.3 at 1M jobs over 100 clients.
2. Login: `POST /rpc/login` p50 through the gateway (paced under its 5 requests/s limit), against
   the bcrypt work alone measured in SQL. Target: p50 under 100 ms.

Run: python -m bench auth [--quick]   (the bench dispatcher calls run(quick))
 or: python -m bench.auth [--jobs 1000000] [--clients 100] [--requests 300] [--logins 40]
Sizes for the dispatcher: BENCH_AUTH_JOBS (default 1,000,000; 100,000 with --quick),
BENCH_AUTH_REQUESTS (300; 100), BENCH_AUTH_LOGINS (40; 20).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx
import psycopg

from bench import harness
from stepledger.settings import Settings

PASSWORD = "bench password 2024"




def load_jobs(settings: Settings, jobs: int, clients: int) -> float:
    """`jobs` jobs spread over `clients` clients, written straight into ledger.jobs (the ingest
    path is benchmarked elsewhere); returns the seconds it took."""
    started = time.perf_counter()
    definition = (settings.repo_root / "schemas" / "pipelines" / "botimage.json").read_text()
    with psycopg.connect(settings.dsn("stepledger_owner")) as conn:
        conn.execute("select ledger.register_pipeline(%s::jsonb)", [definition])
        conn.execute("select ledger.add_client(format('c%%s', lpad(i::text, 3, '0')), "
                     "format('Client %%s', i), 'EUR') from generate_series(0, %s - 1) i",
                     [clients])
        conn.execute(
            """
            insert into ledger.jobs (client_id, job_id, pipeline, steps_total, steps_done, status,
                                     started_at, updated_at, finished_at, last_received_at, events)
            select format('c%%s', lpad((i %% %(clients)s)::text, 3, '0')),
                   format('job-%%s', i), 'botimage', 20, d,
                   case when d = 20 then 'completed' when i %% 17 = 0 then 'failed'
                        else 'running' end,
                   t, t + interval '40 minutes',
                   case when d = 20 then t + interval '40 minutes' end,
                   t + interval '40 minutes', d * 2
              from generate_series(1, %(jobs)s) i,
                   lateral (select (i::bigint * 7919) %% 21 as d,
                                   now() - (i::bigint * 104729 %% 2592000) * interval '1 second'
                                     as t) x
            """, {"clients": clients, "jobs": jobs})
        conn.execute("analyze ledger.jobs")
        conn.execute("analyze ledger.clients")
        conn.commit()
    return time.perf_counter() - started


def _timed(request: Callable[[], httpx.Response]) -> float:
    started = time.perf_counter()
    response = request()
    elapsed = time.perf_counter() - started
    if response.status_code != 200:
        raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")
    return elapsed


def _login(client: httpx.Client, email: str) -> str:
    response = client.post("/rpc/login", json={"email": email, "password": PASSWORD})
    response.raise_for_status()
    return str(response.json()["token"])


def bench_jobs_rls(settings: Settings, client_id: str, requests: int) -> dict[str, float]:
    with psycopg.connect(settings.dsn("stepledger_owner"), autocommit=True) as conn:
        conn.execute("select auth.add_user(%s, %s, '{client}', %s)",
                     [f"staff@{client_id}.example", PASSWORD, client_id])
        conn.execute("select auth.add_user('admin@bench.example', %s, '{admin}')", [PASSWORD])
    with httpx.Client(base_url=settings.postgrest_url, timeout=60) as direct:
        client_token = _login(direct, f"staff@{client_id}.example")
        admin_token = _login(direct, "admin@bench.example")
    path = "/jobs?order=updated_at.desc&limit=50"
    with httpx.Client(base_url=settings.api_url, timeout=60,
                      headers={"Authorization": f"Bearer {client_token}"}) as as_client, \
            httpx.Client(base_url=settings.api_url, timeout=60,
                         headers={"Authorization": f"Bearer {admin_token}"}) as as_admin:
        def client_request() -> httpx.Response:
            return as_client.get(path)

        def admin_request() -> httpx.Response:
            return as_admin.get(f"{path}&client_id=eq.{client_id}")

        first_client, first_admin = client_request().json(), admin_request().json()
        if first_client != first_admin or len(first_client) != 50:
            raise RuntimeError("client and admin queries do not return the same 50 rows")
        for _ in range(20):  # warm-up: connections, plans, caches
            client_request()
            admin_request()
        client_times, admin_times = [], []
        for n in range(requests):  # interleaved, alternating who goes first
            pair = [client_request, admin_request]
            for request in pair if n % 2 == 0 else reversed(pair):
                (client_times if request is client_request else admin_times).append(_timed(request))
    client = harness.latency_ms("client_rls", client_times)
    admin = harness.latency_ms("admin_filtered", admin_times)
    return {"requests_each": requests, **client, **admin,
            "p50_ratio": client["client_rls_p50_ms"] / admin["admin_filtered_p50_ms"]}


def bench_login(settings: Settings, logins: int) -> dict[str, float]:
    email = "login@bench.example"
    with psycopg.connect(settings.dsn("stepledger_owner"), autocommit=True) as conn:
        conn.execute("select auth.add_user(%s, %s, '{admin}')", [email, PASSWORD])
        stored = conn.execute("select password_hash from auth.users where email = %s",
                              [email]).fetchone()
        assert stored is not None
        bcrypt_times = []
        for _ in range(logins):
            started = time.perf_counter()
            conn.execute("select public.crypt(%s, %s)", [PASSWORD, stored[0]]).fetchone()
            bcrypt_times.append(time.perf_counter() - started)
    login_times = []
    with httpx.Client(base_url=settings.api_url, timeout=60) as gateway:
        for _ in range(logins):
            started = time.perf_counter()
            response = gateway.post("/rpc/login", json={"email": email, "password": PASSWORD})
            elapsed = time.perf_counter() - started
            response.raise_for_status()
            login_times.append(elapsed)
            time.sleep(max(0.0, 0.25 - elapsed))  # stay under the gateway's 5 logins/s
    login = harness.latency_ms("login", login_times)
    bcrypt_p50_ms = statistics.median(bcrypt_times) * 1000
    return {"logins": logins, **login, "bcrypt_alone_p50_ms": bcrypt_p50_ms,
            "login_over_bcrypt_p50_ratio": login["login_p50_ms"] / bcrypt_p50_ms}


def measure(jobs: int, clients: int, requests: int, logins: int) -> dict[str, object]:
    """Both benchmarks on a fresh stack; prints a summary and returns the numbers."""
    results: dict[str, object] = {"jobs": jobs, "clients": clients}
    with harness.throwaway_stack("stepledger-bench-auth-") as settings:
        results["load_s"] = load_jobs(settings, jobs, clients)
        rls = bench_jobs_rls(settings, f"c{clients // 2:03d}", requests)
        login = bench_login(settings, logins)
        results["jobs_rls"], results["login"] = rls, login
    print(f"jobs: {jobs} over {clients} clients (loaded in {results['load_s']:.0f} s)")
    print(f"GET /jobs?order=updated_at.desc&limit=50  client (RLS) p50 "
          f"{rls['client_rls_p50_ms']:.2f} ms  admin filtered p50 "
          f"{rls['admin_filtered_p50_ms']:.2f} ms  ratio {rls['p50_ratio']:.2f} (target <= 1.3)")
    print(f"POST /rpc/login p50 {login['login_p50_ms']:.1f} ms (p95 {login['login_p95_ms']:.1f}; "
          f"bcrypt alone {login['bcrypt_alone_p50_ms']:.1f} ms; target < 100 ms)", flush=True)
    return results


def run(quick: bool = False) -> dict[str, object]:
    """Entry point of `python -m bench auth [--quick]`."""
    return measure(jobs=int(os.environ.get("BENCH_AUTH_JOBS", 100_000 if quick else 1_000_000)),
                   clients=100,
                   requests=int(os.environ.get("BENCH_AUTH_REQUESTS", 100 if quick else 300)),
                   logins=int(os.environ.get("BENCH_AUTH_LOGINS", 20 if quick else 40)))


def main(argv: Sequence[str] | None = None) -> int:
    parser = harness.argument_parser("bench.auth", __doc__)
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--requests", type=int, default=300, help="timed requests per side")
    parser.add_argument("--logins", type=int, default=40)
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args(argv)
    results = measure(args.jobs, args.clients, args.requests, args.logins)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    rls, login = results["jobs_rls"], results["login"]
    assert isinstance(rls, dict) and isinstance(login, dict)
    return 0 if rls["p50_ratio"] <= 1.3 and login["login_p50_ms"] < 100 else 1


if __name__ == "__main__":
    sys.exit(main())
