"""The Citus topology of the local stack: finding Citus, joining the nodes into one cluster.

A cluster is a coordinator (the stack's PostgreSQL port, which every client talks to) and
`STEPLEDGER_CITUS_WORKERS` workers on the ports after it, each its own PostgreSQL 15 cluster
(docs/adr/0012-citus-distribution.md). Citus is built from source by scripts/build-citus.sh.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
from pathlib import Path

import psycopg
from psycopg import sql

from stepledger import StepledgerError
from stepledger.settings import Settings

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


def free_port_block(count: int) -> int:
    """A port P such that P .. P+count-1 are free on 127.0.0.1: a coordinator and its workers
    for a throw-away cluster (tests, benchmarks)."""
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
    raise StepledgerError(f"no {count} consecutive free ports found on 127.0.0.1")


# -- the cluster ---------------------------------------------------------------------------------
def node_host(settings: Settings) -> str:
    """How the nodes reach each other: the Unix-socket directory they all listen in (mode 700,
    owned by the service user), where they trust each other's connections
    (postgres.write_pg_hba)."""
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



# -- the distributed schema (docs/adr/0012-citus-distribution.md, Decision 3) ---------------------
# The target: reference tables (a copy on every node), in the order their foreign keys need ...
REFERENCE_TABLES = (
    "ledger.pipelines", "ledger.pipeline_steps", "ledger.code_versions",
    "ledger.clients", "ledger.prices", "ledger.client_minimums",
    "auth.users", "auth.api_tokens", "auth.bi_logins",
)
# ... and tenant tables hash-distributed by client_id, co-located with the first.
DISTRIBUTED_TABLES = (
    "ledger.jobs", "ledger.job_steps", "ledger.step_runs", "ledger.event_ids", "ledger.events",
    "ledger.vault", "ledger.invoices", "ledger.invoice_lines", "ledger.billing_changes",
)
DISTRIBUTION_COLUMN = "client_id"
# What `stepledger migrate` distributes today: nothing yet. The catalog alone as reference tables
# is accepted by Citus, but then ingest's statement (local tenant tables joined with reference
# tables, PL/pgSQL parameters) fails with "could not create distributed plan": the tables move
# together with the set-based write path (ADR 0012). `stepledger citus-plan` reports what Citus
# answers for each table of the target.
REFERENCE_TABLES_NOW: tuple[str, ...] = ()
# Roles that queries run as: Citus opens its worker connections as the current role, so each
# must be able to log in there. They get no password, so TCP (scram) still refuses them; only the
# nodes' private socket directory (or pg_dist_authinfo in production) lets the coordinator in.
QUERY_ROLES = ("anon", "client", "admin", "ingest")


def distribution(conn: psycopg.Connection) -> dict[str, str]:
    """Each Citus table of the database: 'reference' or 'distributed by <column>'."""
    rows = conn.execute(
        "select logicalrelid::regclass::text, partmethod, "
        "       column_to_column_name(logicalrelid, partkey) "
        "  from pg_dist_partition").fetchall()
    return {name: "reference" if method == "n" else f"distributed by {column}"
            for name, method, column in rows}


def distribute(settings: Settings) -> dict[str, list[str]]:
    """On a coordinator: let the query roles reach the workers, propagate SET LOCAL from the
    API's requests, and make the tables of REFERENCE_TABLES_NOW reference tables. Idempotent;
    returns what it changed."""
    changed: dict[str, list[str]] = {"reference": [], "login": []}
    with psycopg.connect(settings.dsn("postgres"), autocommit=True) as conn:
        if not is_coordinator(conn):
            return changed
        for role in QUERY_ROLES:
            row = conn.execute("select rolcanlogin from pg_roles where rolname = %s",
                               [role]).fetchone()
            if row is not None and not row[0]:
                conn.execute(sql.SQL("alter role {} login").format(sql.Identifier(role)))
                changed["login"].append(role)
        conn.execute("alter role authenticator set citus.propagate_set_commands = 'local'")
        done = distribution(conn)
        for table in REFERENCE_TABLES_NOW:
            if table not in done:
                conn.execute("select create_reference_table(%s)", [table])
                changed["reference"].append(table)
    return changed


def plan(settings: Settings) -> list[dict[str, str]]:
    """For every table of the target: what it is now, and for those not yet distributed what
    Citus answers when asked to distribute it (tried in a transaction that is rolled back, after
    the reference tables that Citus accepts, as the foreign keys need)."""
    report: list[dict[str, str]] = []
    with psycopg.connect(settings.dsn("postgres")) as conn:
        if not is_coordinator(conn):
            raise StepledgerError(
                f"{settings.pg_host}:{settings.pg_port} is not a Citus coordinator with workers "
                "(start the stack with STEPLEDGER_CITUS_WORKERS=N)")
        done = distribution(conn)
        with conn.transaction(force_rollback=True):
            targets = [(t, "reference") for t in REFERENCE_TABLES] + \
                      [(t, f"distributed by {DISTRIBUTION_COLUMN}") for t in DISTRIBUTED_TABLES]
            colocate = "default"
            for table, target in targets:
                entry = {"table": table, "target": target, "now": done.get(table, "local")}
                if entry["now"] == target:
                    entry["answer"] = "done"
                    if target != "reference" and colocate == "default":
                        colocate = table
                    report.append(entry)
                    continue
                try:
                    with conn.transaction():
                        if target == "reference":
                            conn.execute("select create_reference_table(%s)", [table])
                        else:
                            conn.execute("select create_distributed_table(%s, %s, "
                                         "colocate_with => %s)",
                                         [table, DISTRIBUTION_COLUMN, colocate])
                            if colocate == "default":
                                colocate = table
                    entry["answer"] = "accepted"
                except psycopg.Error as exc:
                    detail = exc.diag.message_detail
                    entry["answer"] = "refused: " + (exc.diag.message_primary or str(exc)) + \
                        (f" ({detail})" if detail else "")
                report.append(entry)
    return report
