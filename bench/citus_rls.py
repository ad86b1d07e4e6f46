"""Row-level security on Citus workers: a client's read under the policy vs. an admin's read.

`python -m bench.citus_rls [--clients 20] [--rows 5000] [--runs 300]` starts a stack with two
Citus workers (needs Citus, scripts/build-citus.sh), creates a table shaped like ledger.jobs,
hash-distributed by client_id, and a plain copy of it on the coordinator (what a single node
has). Policies as ADR 0012 decides: `client_id = auth.caller_client_id()` on the distributed
table (Citus refuses the subquery wrap), `client_id = (select auth.caller_client_id())` on the
local copy. It times, interleaved, the newest 50 rows of one client read by `client` (the client
from the propagated stepledger.client_id, as auth.start_request sets it) and by `admin` with the
same filter, and prints the p50 ratio of each topology (issue 13: at most 1.3).
"""

from __future__ import annotations

import statistics
import time

import psycopg

from bench.harness import argument_parser, throwaway_stack
from stepledger.stack import citus

QUERY = "select * from {table} where client_id = %s order by updated_at desc limit 50"


def _setup(conn: psycopg.Connection, clients: int, rows: int) -> None:
    conn.execute("drop schema if exists citus_bench cascade")
    conn.execute("create schema citus_bench")
    for table in ("distributed", "local"):
        conn.execute(f"""
            create table citus_bench.{table} (
              client_id text not null, job_id text not null, pipeline text not null,
              status text not null, steps_done int not null, updated_at timestamptz not null,
              primary key (client_id, job_id))""")
        conn.execute(f"create index on citus_bench.{table} (client_id, updated_at desc)")
    conn.execute("select create_distributed_table('citus_bench.distributed', 'client_id')")
    for table in ("distributed", "local"):
        conn.execute(f"""
            insert into citus_bench.{table}
            select 'c' || lpad(c::text, 3, '0'), 'job-' || j, 'botimage', 'running', j %% 20,
                   now() - j * interval '1 minute'
              from generate_series(1, %s) c, generate_series(1, %s) j""", [clients, rows])
        conn.execute(f"analyze citus_bench.{table}")
        conn.execute(f"alter table citus_bench.{table} enable row level security")
        conn.execute(f"create policy all_admin on citus_bench.{table} to admin using (true)")
        conn.execute(f"grant select on citus_bench.{table} to client, admin")
    conn.execute("grant usage on schema citus_bench to client, admin")
    conn.execute("create policy select_own_client on citus_bench.distributed to client "
                 "using (client_id = auth.caller_client_id())")
    conn.execute("create policy select_own_client on citus_bench.local to client "
                 "using (client_id = (select auth.caller_client_id()))")


def _read(conn: psycopg.Connection, role: str, table: str, client_id: str) -> list[tuple]:
    # The same round trips for both roles, as PostgREST's pre-request runs for every request:
    # auth.start_request sets stepledger.client_id to the caller's client ('' for an admin).
    bound = client_id if role == "client" else ""
    with conn.transaction():
        conn.execute(f"set local role {role}; set local citus.propagate_set_commands = 'local'; "
                     f"set local stepledger.client_id = '{bound}'")
        return conn.execute(QUERY.format(table=f"citus_bench.{table}"), [client_id]).fetchall()


def measure(conn: psycopg.Connection, table: str, client_id: str, runs: int) -> dict[str, float]:
    as_client, as_admin = _read(conn, "client", table, client_id), \
        _read(conn, "admin", table, client_id)
    if as_client != as_admin or len(as_client) != 50:
        raise RuntimeError(f"{table}: client and admin do not read the same 50 rows")
    for _ in range(20):
        _read(conn, "client", table, client_id)
        _read(conn, "admin", table, client_id)
    times: dict[str, list[float]] = {"client": [], "admin": []}
    for n in range(runs):
        order = ("client", "admin") if n % 2 == 0 else ("admin", "client")
        for role in order:
            started = time.perf_counter()
            _read(conn, role, table, client_id)
            times[role].append(time.perf_counter() - started)
    client_p50, admin_p50 = statistics.median(times["client"]), statistics.median(times["admin"])
    return {"client_p50_ms": client_p50 * 1000, "admin_p50_ms": admin_p50 * 1000,
            "ratio": client_p50 / admin_p50}


def main(argv: list[str] | None = None) -> int:
    parser = argument_parser("bench.citus_rls", __doc__)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--rows", type=int, default=5000, help="rows per client")
    parser.add_argument("--runs", type=int, default=300)
    args = parser.parse_args(argv)
    if not citus.installed():
        print("citus_rls skipped: Citus is not installed (scripts/build-citus.sh builds it)")
        return 0
    with throwaway_stack("stepledger-bench-citus-", pg_port=citus.free_port_block(3),
                         citus_workers=2) as settings, \
            psycopg.connect(settings.dsn("postgres"), autocommit=True) as conn:
        _setup(conn, args.clients, args.rows)
        client_id = f"c{args.clients // 2:03d}"
        for table, label in (("distributed", "2 workers, distributed"),
                             ("local", "coordinator-local (single node)")):
            r = measure(conn, table, client_id, args.runs)
            print(f"{label:<34} client p50 {r['client_p50_ms']:.2f} ms  admin p50 "
                  f"{r['admin_p50_ms']:.2f} ms  ratio {r['ratio']:.2f} (target <= 1.3)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
