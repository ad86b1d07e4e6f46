"""The Citus topology: a coordinator and two remote workers, started by the stack itself.

This stage needs Citus. When it is neither installed nor buildable from ../shared/citus/ (a user's
clone without ../shared), the whole module is skipped with one line saying why. With the source
beside the repository (CI), scripts/bootstrap.sh --test has built Citus, and any failure to start
the cluster fails these tests.

What it proves, on workers that are separate PostgreSQL clusters (not shards on the coordinator,
whose local execution would hide remote effects): the nodes, the distribution of the tenant
tables, routing of one client's queries to one worker, and the row-level-security behaviour that
docs/adr/0005-citus-distribution.md builds on.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import socket
import time
from collections.abc import Iterator

import psycopg
import pytest
from conftest import make_home

from stepledger import citus
from stepledger import stack as stack_mod
from stepledger.config import REPO_ROOT, Settings

WORKERS = 2

if not citus.installed() and citus.source_dir(REPO_ROOT) is None:
    pytest.skip("Citus stage skipped: Citus is not installed and its source "
                f"(../shared/citus/{citus.CITUS_ARCHIVE}) is not beside the repository",
                allow_module_level=True)


def _consecutive_free_ports(count: int) -> int:
    """A base port such that base .. base+count-1 are all free (coordinator and workers)."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20000, 60000 - count)
        socks: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no {count} consecutive free ports found")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Settings]:
    """A whole stack (coordinator, 2 workers, PostgREST, nginx, scheduler), migrated."""
    assert citus.installed(), (
        "Citus is not installed although its source is beside the repository: "
        "run scripts/build-citus.sh (make bootstrap-test does) and see its error")
    home = make_home("stepledger-citus-test-")
    from conftest import free_ports
    api, admin, postgrest, web = free_ports(4)
    settings = Settings.from_env(home=home, pg_port=_consecutive_free_ports(WORKERS + 1),
                                 api_port=api, api_admin_port=admin, postgrest_port=postgrest,
                                 web_port=web, citus_workers=WORKERS)
    started = time.monotonic()
    try:
        stack_mod.up(settings, migrate=True)
        print(f"citus stack with {WORKERS} workers up in {time.monotonic() - started:.1f}s")
        yield settings
    finally:
        try:
            stack_mod.down(settings)
        finally:
            shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def coordinator(cluster: Settings) -> Iterator[psycopg.Connection]:
    with psycopg.connect(cluster.dsn("postgres"), autocommit=True) as conn:
        yield conn


@contextlib.contextmanager
def _worker(cluster: Settings, index: int) -> Iterator[psycopg.Connection]:
    with psycopg.connect(cluster.worker(index).dsn("postgres"), autocommit=True) as conn:
        yield conn


def test_coordinator_and_workers_are_separate_clusters(cluster: Settings,
                                                       coordinator: psycopg.Connection) -> None:
    nodes = coordinator.execute(
        "select groupid, nodeport, noderole::text, isactive from pg_dist_node order by groupid"
    ).fetchall()
    assert nodes == [(0, cluster.pg_port, "primary", True),
                     (1, cluster.pg_port + 1, "primary", True),
                     (2, cluster.pg_port + 2, "primary", True)]
    health = coordinator.execute(
        "select bool_and(result) from citus_check_cluster_node_health()").fetchone()
    assert health == (True,)
    system_ids = {coordinator.execute(
        "select system_identifier from pg_control_system()").fetchone()}
    for index in (1, 2):
        with _worker(cluster, index) as conn:
            assert conn.execute("select extversion from pg_extension where extname = 'citus'"
                                ).fetchone() == ("13.2-1",)
            system_ids.add(conn.execute(
                "select system_identifier from pg_control_system()").fetchone())
            assert conn.execute("show port").fetchone() == (str(cluster.pg_port + index),)
    assert len(system_ids) == 3, "each node is its own PostgreSQL cluster"


def test_status_and_down_cover_the_workers(cluster: Settings) -> None:
    info = stack_mod.status(cluster)
    workers = info["postgres"]["citus_workers"]  # type: ignore[index]
    assert [(w["port"], w["up"]) for w in workers] == [(cluster.pg_port + 1, True),
                                                       (cluster.pg_port + 2, True)]
