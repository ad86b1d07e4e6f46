"""The Citus topology of the local stack: finding Citus, joining the nodes into one cluster.

A cluster is a coordinator (the stack's PostgreSQL port, which every client talks to) and
`STEPLEDGER_CITUS_WORKERS` workers on the ports after it, each its own PostgreSQL 15 cluster
(docs/adr/0005-citus-distribution.md). Citus is built from source by scripts/build-citus.sh.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import psycopg
from psycopg import sql

from stepledger import StepledgerError
from stepledger.config import Settings

CITUS_VERSION = "13.2.2"
CITUS_ARCHIVE = f"citus-{CITUS_VERSION}.tar.gz"
PG_LIBDIR = Path("/usr/lib/postgresql/15/lib")
PG_EXTDIR = Path("/usr/share/postgresql/15/extension")


# -- installation --------------------------------------------------------------------------------
def installed() -> bool:
    """True when the Citus 13.2 extension is installed for PostgreSQL 15."""
    control = PG_EXTDIR / "citus.control"
    return (PG_LIBDIR / "citus.so").exists() and control.exists() \
        and "default_version = '13.2-" in control.read_text()


def source_candidates(repo_root: Path) -> list[Path]:
    """Where the source archive is looked for, in order (as scripts/citus-source.sh)."""
    found: list[Path] = []
    if os.environ.get("STEPLEDGER_CITUS_SOURCE"):
        found.append(Path(os.environ["STEPLEDGER_CITUS_SOURCE"]))
    found.append(repo_root.resolve().parent / "shared" / "citus")
    try:
        common = subprocess.run(
            ["git", "-C", str(repo_root), "rev-parse", "--path-format=absolute",
             "--git-common-dir"], capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        common = ""
    if common:
        main_checkout = Path(common).parent
        if main_checkout != repo_root.resolve():
            found.append(main_checkout.parent / "shared" / "citus")
    return found


def source_dir(repo_root: Path) -> Path | None:
    """The folder holding the Citus source archive, or None."""
    for candidate in source_candidates(repo_root):
        if (candidate / CITUS_ARCHIVE).is_file():
            return candidate
    return None


def require_installed() -> None:
    if not installed():
        raise StepledgerError(
            f"STEPLEDGER_CITUS_WORKERS is set but Citus is not installed "
            f"({PG_LIBDIR / 'citus.so'} missing): run scripts/build-citus.sh as root "
            f"(it builds Citus {CITUS_VERSION} from ../shared/citus/{CITUS_ARCHIVE})")


# -- the cluster ---------------------------------------------------------------------------------
def node_host(settings: Settings) -> str:
    """How the nodes reach each other: the Unix-socket directory they all listen in (mode 700,
    owned by the service user), where they trust each other's connections (stack._pg_hba)."""
    return str(settings.run_dir / "citus")


def form_cluster(settings: Settings) -> None:
    """Create the extension on every node, register the coordinator and add every worker.
    Idempotent: a node already in pg_dist_node is left alone."""
    for node in [*settings.workers, settings]:
        with psycopg.connect(node.dsn("postgres"), autocommit=True) as conn:
            conn.execute("create extension if not exists citus")
    host = node_host(settings)
    with psycopg.connect(settings.dsn("postgres"), autocommit=True) as conn:
        conn.execute("select citus_set_coordinator_host(%s, %s)", [host, settings.pg_port])
        known = {int(r[0]) for r in conn.execute(
            "select nodeport from pg_dist_node where groupid <> 0").fetchall()}
        for worker in settings.workers:
            if worker.pg_port not in known:
                conn.execute("select citus_add_node(%s, %s)", [host, worker.pg_port])


def is_coordinator(conn: psycopg.Connection) -> bool:
    """True when the database is a Citus coordinator with at least one worker."""
    row = conn.execute(
        "select exists (select from pg_extension where extname = 'citus')").fetchone()
    if not row or not row[0]:
        return False
    row = conn.execute("select count(*) from pg_dist_node where groupid <> 0 and isactive"
                       ).fetchone()
    return bool(row and row[0])


def nodes(settings: Settings) -> list[dict[str, object]]:
    """pg_dist_node as the coordinator sees it."""
    with psycopg.connect(settings.dsn("postgres"), autocommit=True) as conn:
        rows = conn.execute(
            "select nodeid, groupid, nodename, nodeport, noderole::text, isactive, "
            "shouldhaveshards from pg_dist_node order by groupid").fetchall()
    keys = ("nodeid", "groupid", "nodename", "nodeport", "role", "active", "has_shards")
    return [dict(zip(keys, r, strict=True)) for r in rows]


_ = sql  # psycopg.sql is used by the distribution step below
