"""Shared plumbing for benchmarks: a throw-away local stack, tokens, timing and memory probes."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
from tests.ports import free_ports  # the tests' helper; bench runs from the repository root

from stepledger import stack
from stepledger.config import Settings
from stepledger.tokens import operator_token

REPO = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def bench_stack(repo_root: Path | None = None) -> Iterator[Settings]:
    """A migrated stack on free ports in a fresh home, with the BotImage catalog; always stopped.
    repo_root: the tree whose db/ and deploy/ it is made from (this checkout by default)."""
    home = Path(tempfile.mkdtemp(prefix="stepledger-bench-", dir="/tmp"))
    home.chmod(0o755)
    pg, api, admin, postgrest, web = free_ports(5)
    settings = Settings.from_env(home=home, pg_port=pg, api_port=api, api_admin_port=admin,
                                 postgrest_port=postgrest, web_port=web,
                                 **({"repo_root": repo_root} if repo_root else {}))
    try:
        stack.up(settings)
        with psycopg.connect(settings.dsn("stepledger_owner"), autocommit=True) as conn:
            for path in sorted((REPO / "schemas" / "pipelines").glob("*.json")):
                conn.execute("select ledger.register_pipeline(%s::jsonb)", [path.read_text()])
            for n in range(100):
                conn.execute("select ledger.add_client(%s, %s)", [f"client-{n:03d}", f"Client {n}"])
        yield settings
    finally:
        try:
            stack.down(settings)
        finally:
            if not os.environ.get("STEPLEDGER_KEEP_BENCH_HOME"):
                shutil.rmtree(home, ignore_errors=True)


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


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(values: list[float]) -> dict[str, float]:
    return {"p50": statistics.median(values), "p95": percentile(values, 0.95),
            "mean": statistics.fmean(values)}


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


def dump(result: dict[str, object]) -> None:
    print(json.dumps(result, indent=2, default=str), flush=True)
