"""The product on a single node vs. a Citus cluster: RLS, GET /jobs, an invoice.

`python -m bench.topology [--runs 200]` measures the stack of the environment (STEPLEDGER_HOME,
STEPLEDGER_PG_PORT, STEPLEDGER_API_PORT, STEPLEDGER_CITUS_WORKERS ...), loading the demo first
when it holds no jobs (`stepledger demo`). Run it once against a single node and once against a
cluster started with STEPLEDGER_CITUS_WORKERS=2 (docs/benchmarks.md, "Citus"):

- rls: the newest 50 jobs of one client through api.jobs, read by `client` (the client from the
  claims and from stepledger.client_id, as auth.start_request sets them) and by `admin` with
  the same filter, interleaved; p50 of each and their ratio (issue 13: at most 1.3);
- get_jobs: GET /jobs?client_id=eq.<c>&order=updated_at.desc&limit=50 through PostgREST with a
  client's login token, p50 and p95;
- invoice: POST /rpc/invoice of that client for the month with the most completions, p50, p95;
- ingest: POST /rpc/ingest with a token bound to a client of its own, --batches batches of
  1,000 new events (25 jobs of 20 steps, started and completed), events per second.

On one machine the cluster gains nothing: the figures are the cost of the distribution.
"""

from __future__ import annotations

import json
import random
import secrets
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import httpx
import psycopg

from bench.harness import argument_parser, percentile
from stepledger.demo import simulate
from stepledger.settings import Settings
from stepledger.stack import citus

JOBS = ("select job_id, status, steps_done, updated_at from api.jobs where client_id = %s "
        "order by updated_at desc limit 50")
USER = "bench-topology@example.invalid"
PASSWORD = "bench-topology-password"


def _read(conn: psycopg.Connection, role: str, client_id: str) -> list[tuple]:
    # The same statements for both roles and topologies, as PostgREST's pre-request runs for
    # every request (citus.propagate_set_commands is authenticator's role setting on a cluster;
    # on a single node the setting is unknown and a placeholder, so harmless).
    bound = client_id if role == "client" else ""
    claims = json.dumps({"role": role, "client_id": bound or None})
    with conn.transaction():
        conn.execute(f"set local citus.propagate_set_commands = 'local'; "
                     f"set local stepledger.client_id = '{bound}'")
        conn.execute("select set_config('request.jwt.claims', %s, true)", [claims])
        conn.execute(f"set local role {role}")
        return conn.execute(JOBS, [client_id]).fetchall()


def rls(conn: psycopg.Connection, client_id: str, runs: int) -> dict[str, float]:
    as_client, as_admin = _read(conn, "client", client_id), _read(conn, "admin", client_id)
    if as_client != as_admin or not as_client:
        raise RuntimeError("client and admin do not read the same jobs")
    times: dict[str, list[float]] = {"client": [], "admin": []}
    for n in range(runs + 20):
        for role in (("client", "admin") if n % 2 == 0 else ("admin", "client")):
            started = time.perf_counter()
            _read(conn, role, client_id)
            if n >= 20:  # warm-up first
                times[role].append(time.perf_counter() - started)
    client_p50, admin_p50 = statistics.median(times["client"]), statistics.median(times["admin"])
    return {"client_p50_ms": round(client_p50 * 1000, 2),
            "admin_p50_ms": round(admin_p50 * 1000, 2),
            "ratio": round(client_p50 / admin_p50, 2), "rows": len(as_client)}


def _http(call, runs: int) -> dict[str, float]:  # type: ignore[no-untyped-def]
    for _ in range(10):
        call()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        response = call()
        times.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            raise RuntimeError(response.text)
    return {"p50_ms": round(percentile(times, 0.5), 2), "p95_ms": round(percentile(times, 0.95), 2)}


def ingest(api: httpx.Client, token: str, client_id: str, batches: int) -> dict[str, float]:
    start = datetime.now(UTC) - timedelta(days=1)
    bodies = []
    for b in range(batches):
        events: list[dict[str, object]] = []
        for j in range(25):
            plan = simulate.JobPlan(client_id, f"bench-{b}-{j}", start, "completed")
            events += list(simulate.job_events(plan, random.Random(b * 100 + j),
                                               start + timedelta(hours=6)))
        bodies.append(json.dumps(events[:1000]))
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "text/plain; charset=utf-8"}
    sent, started = 0, time.perf_counter()
    for body in bodies:
        answer = api.post("/rpc/ingest", content=body, headers=headers)
        if answer.status_code != 200 or answer.json()["rejected"]:
            raise RuntimeError(answer.text[:500])
        sent += answer.json()["accepted"]
    elapsed = time.perf_counter() - started
    return {"events": sent, "seconds": round(elapsed, 2), "events_per_s": round(sent / elapsed)}


def main(argv: list[str] | None = None) -> int:
    parser = argument_parser("bench.topology", __doc__)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument("--client", help="the client to read (default: the one with the most "
                                         "completions in one month)")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    with psycopg.connect(settings.dsn("postgres"), autocommit=True) as conn:
        if not conn.execute("select exists (select 1 from ledger.jobs)").fetchone()[0]:
            subprocess.run([sys.executable, "-m", "stepledger", "demo"], check=True,
                           capture_output=True)
        client_id, period = conn.execute(
            "select client_id, to_char(date_trunc('month', completed_at), 'YYYY-MM') "
            "  from ledger.job_steps where completed_at is not null "
            "   and (%s::text is null or client_id = %s::text) "
            " group by 1, 2 order by count(*) desc, 1 limit 1",
            [args.client, args.client]).fetchone()
        conn.execute("select auth.add_user(%s, %s, array['client'], %s) "
                     " where not exists (select 1 from auth.users where email = %s)",
                     [USER, PASSWORD, client_id, USER])
        conn.execute("update auth.users set client_id = %s where email = %s", [client_id, USER])
        topology = f"{settings.citus_workers} workers" if citus.is_coordinator(conn) \
            else "single node"
        result: dict[str, object] = {"topology": topology, "client_id": client_id,
                                     "period": period, "rls": rls(conn, client_id, args.runs)}
        writer = f"bench-{secrets.token_hex(3)}"
        conn.execute("select ledger.add_client(%s, %s, 'EUR')", [writer, writer])
        ingest_token = conn.execute(
            "select auth.create_api_token(%s, 'bench', 'ingest', 'bench')",
            [writer]).fetchone()[0]["token"]
    with httpx.Client(base_url=settings.api_url, timeout=60) as api:
        token = api.post("/rpc/login", json={"email": USER, "password": PASSWORD}).json()["token"]
        api.headers["Authorization"] = f"Bearer {token}"
        result["get_jobs"] = _http(lambda: api.get(
            "/jobs", params={"client_id": f"eq.{client_id}", "order": "updated_at.desc",
                             "limit": "50"}), args.runs)
        result["invoice"] = _http(lambda: api.post(
            "/rpc/invoice", json={"client_id": client_id, "period": period}), args.runs)
    with httpx.Client(base_url=settings.api_url, timeout=120) as api:
        result["ingest"] = ingest(api, ingest_token, writer, args.batches)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
