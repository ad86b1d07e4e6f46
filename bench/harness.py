"""Shared plumbing for benchmarks: a throw-away local stack, tokens, timing and memory probes."""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import psycopg
from tests.stacks import (  # noqa: F401 (the tests' helpers, free_ports for the benchmarks)
    PIPELINES,
    free_ports,
    register_catalog,
    throwaway_stack,
)

from stepledger import stack
from stepledger.demo import simulate
from stepledger.ingest.credentials import operator_token
from stepledger.settings import Settings

REPO = Path(__file__).resolve().parents[1]
BENCH_CLIENTS = [(f"client-{n:03d}", f"Client {n}") for n in range(100)]


@contextlib.contextmanager
def bench_stack(prefix: str = "stepledger-bench-",
                clients: Iterable[str | tuple[str, ...]] = BENCH_CLIENTS,
                repo_root: Path | None = None) -> Iterator[Settings]:
    """A migrated stack on free ports in a fresh home, with every pipeline of schemas/pipelines/
    and these clients; always stopped. repo_root: the tree whose db/ and deploy/ it is made from
    (this checkout by default)."""
    overrides = {"repo_root": repo_root} if repo_root else {}
    with throwaway_stack(prefix, keep_home_env="STEPLEDGER_KEEP_BENCH_HOME",
                         **overrides) as settings:
        with psycopg.connect(settings.dsn("stepledger_owner"), autocommit=True) as conn:
            register_catalog(conn, clients, pipelines=sorted(PIPELINES.glob("*.json")))
        yield settings


@contextlib.contextmanager
def revision_tree(revision: str) -> Iterator[Path]:
    """The files of a git revision in a temporary folder (with this checkout's node_modules), for
    a stack made from that revision: `bench_stack(repo_root=...)`."""
    folder = Path(tempfile.mkdtemp(prefix="stepledger-rev-", dir="/tmp"))
    folder.chmod(0o755)
    try:
        archive = subprocess.run(["git", "-C", str(REPO), "archive", revision],
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
        (folder / "node_modules").symlink_to(REPO / "node_modules")
        # Before db/ was sorted by feature, views had a folder of their own, applied after the
        # functions: this checkout's runner applies them in that place from db/functions/99_views.
        if (folder / "db" / "views").is_dir():
            (folder / "db" / "views").rename(folder / "db" / "functions" / "99_views")
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def admin_token(settings: Settings, hours: int = 12) -> str:
    return operator_token(settings.jwt_secret, ttl_s=hours * 3600)


def superuser(settings: Settings) -> psycopg.Connection:
    return psycopg.connect(settings.dsn("postgres"), autocommit=True)


def timed(func: Callable[[], object]) -> float:
    start = time.perf_counter()
    func()
    return time.perf_counter() - start


def ingest_job_ms(http: httpx.Client, client: str, job_id: str, outcome: str,
                  rng: random.Random, now: datetime) -> float:
    """POST the events of one simulated job (started an hour before `now`, ending `outcome`) to
    /rpc/ingest in one request; returns how long the request took, in milliseconds."""
    plan = simulate.JobPlan(client, job_id, now - timedelta(hours=1), outcome)
    body = json.dumps(list(simulate.job_events(plan, rng, now)))
    started = time.perf_counter()
    response = http.post("/rpc/ingest", content=body, headers={"Content-Type": "text/plain"})
    elapsed = (time.perf_counter() - started) * 1000
    assert response.status_code == 200, response.text
    return elapsed


def argument_parser(module: str, doc: str | None) -> argparse.ArgumentParser:
    """The command line of `python -m <module>`: its docstring, as written, is the help."""
    return argparse.ArgumentParser(prog=f"python -m {module}", description=doc,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(values: list[float]) -> dict[str, float]:
    return {"p50": statistics.median(values), "p95": percentile(values, 0.95),
            "mean": statistics.fmean(values)}


def latency_ms(name: str, seconds: list[float]) -> dict[str, float]:
    """{name_p50_ms, name_p95_ms} of timings in seconds: the keys the reports print."""
    figures = summary(seconds)
    return {f"{name}_{q}_ms": figures[q] * 1000 for q in ("p50", "p95")}


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def postgres_rss_kib(settings: Settings) -> int:
    """Resident memory of every process of the cluster (postmaster and backends)."""
    total = 0
    pidfile = settings.pgdata / "postmaster.pid"
    postmaster = int(pidfile.read_text().split()[0])
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if int(entry.name) == postmaster or ppid == postmaster:
            with contextlib.suppress(OSError):
                total += rss_kib(int(entry.name))
    return total


def postgrest_rss_kib(settings: Settings) -> int:
    pid = stack.status(settings)["postgrest"]["pid"]  # type: ignore[index]
    return rss_kib(int(pid)) if pid else 0


def mark_history_changed(conn: psycopg.Connection) -> None:
    """History generated in SQL bypasses ingest and its change logs: mark every client-month and
    client-day changed, so that the next refreshes compute the derived data from all of it
    (docs/adr/0016-rollups.md)."""
    conn.execute("insert into ledger.billing_changes (client_id, period_from, period_to, reason) "
                 "values ('', '-infinity', 'infinity', 'rebuild')")
    conn.execute("insert into ledger.analytics_changes (client_id, day_from, day_to) "
                 "values ('', '-infinity', 'infinity')")


def dump(result: dict[str, object]) -> None:
    print(json.dumps(result, indent=2, default=str), flush=True)
