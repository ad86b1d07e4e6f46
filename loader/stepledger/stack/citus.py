"""The Citus topology of the local stack: finding Citus, joining the nodes into one cluster.

A cluster is a coordinator (the stack's PostgreSQL port, which every client talks to) and
`STEPLEDGER_CITUS_WORKERS` workers on the ports after it, each its own PostgreSQL 15 cluster
(docs/adr/0012-citus-distribution.md). Citus is built from source by scripts/build-citus.sh.
"""

from __future__ import annotations

import os
import random
import re
import socket
import subprocess
from pathlib import Path

import psycopg
import sqlparse
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
# Reference tables (a copy on every node), in the order their foreign keys need ...
REFERENCE_TABLES = (
    "ledger.pipelines", "ledger.pipeline_steps", "ledger.code_versions",
    "ledger.clients",
    # default prices have no client, and every client's usage reads them (rare writes: one
    # two-phase commit to every node, by ledger.add_price)
    "ledger.prices",
)
# ... and tenant tables hash-distributed by client_id, co-located with the first.
DISTRIBUTED_TABLES = (
    "ledger.jobs", "ledger.job_steps", "ledger.step_runs", "ledger.event_ids", "ledger.events",
    "ledger.vault", "ledger.vault_bodies", "ledger.billing_changes", "ledger.invoices",
    "ledger.invoice_lines", "ledger.invoice_documents", "ledger.client_minimums",
    # derived data rewritten per client next to the facts it is computed from (ADR 0016): error
    # statistics, step timings and the usage lines (whose staleness GET /usage computes in one
    # join per statement, ledger.usage_unseen_months, not in a function per line)
    "ledger.analytics_changes", "ledger.step_outcomes_daily", "ledger.step_outcomes_total",
    "ledger.step_timings_daily", "ledger.usage_lines_monthly",
)
DISTRIBUTION_COLUMN = "client_id"
# Roles that queries run as: Citus opens its worker connections as the current role, so each
# must be able to log in there. They get no password, so TCP (scram) still refuses them; only the
# nodes' private socket directory (or pg_dist_authinfo in production) lets the coordinator in.
QUERY_ROLES = ("anon", "client", "admin", "ingest")
# The policies' form on a single node, and the one Citus accepts. The scalar subquery makes
# PostgreSQL evaluate the caller's client once per statement (an InitPlan); Citus refuses
# subqueries in policies of its tables and evaluates policies only on the workers, where the
# client travels in stepledger.client_id (auth.caller_client_id()). There the function is the
# index condition of the (client_id, ...) keys: once per shard scan.
# Settings of functions on a coordinator only (the files keep the single node's):
COORDINATOR_FUNCTION_SETTINGS: dict[str, tuple[str, ...]] = {
    # planned once per connection on a single node (generic plans); Citus plans a statement
    # over its tables only with the parameters' values
    # ... and ingest writes the outbox (job.* messages) after its writes to the shards: as below
    "ledger._ingest_batch(text, integer[], jsonb[], text[], text[], bytea, jsonb)":
        ("plan_cache_mode = force_custom_plan", "citus.multi_shard_modify_mode = 'sequential'"),
    "ledger._fold_client_progress(text, ledger.events[])": ("plan_cache_mode = force_custom_plan",),
    "ledger._job_notification_data(text, jsonb)": ("plan_cache_mode = force_custom_plan",),
    # finalizing reads the client's shards in parallel, then writes the outbox, a Citus local
    # table with a foreign key to a reference table, which Citus allows only over the one
    # connection per node that a sequential transaction uses
    "ledger._finalize_invoice(text, text)": ("citus.multi_shard_modify_mode = 'sequential'",),
    # the same for the stall scan: it reads every client's jobs, then writes the outbox
    "ledger.scan_stalled_jobs()": ("citus.multi_shard_modify_mode = 'sequential'",),
    # and for the usage refresh: it rewrites the distributed usage lines, then writes the
    # usage.threshold_crossed messages
    "ledger.refresh_usage(text, boolean)": ("citus.multi_shard_modify_mode = 'sequential'",),
}
# The tables the notification worker writes, in the order its transactions take them. On a
# coordinator the idempotent phase of a migrate locks them first: its DDL on them (policies,
# triggers) is sent to Citus' metadata on every node and takes long enough that, locking them
# one by one, it deadlocked with the worker's short transactions on every retry.
NOTIFICATION_WORKER_TABLES = (
    "ledger.notification_messages", "ledger.webhooks", "ledger.webhook_deliveries",
    "ledger.email_subscriptions", "ledger.email_deliveries", "ledger.webhook_attempts",
    "ledger.notification_settings",
)
SINGLE_NODE_POLICY_CLIENT = "(select auth.client_id())"
CITUS_POLICY_CLIENT = "auth.caller_client_id()"


def policy_sql(text: str) -> str:
    """The policy files as a coordinator runs them (the only difference between topologies)."""
    return text.replace(SINGLE_NODE_POLICY_CLIENT, CITUS_POLICY_CLIENT)


def drop_functions_over_shard_types(conn: psycopg.Connection) -> list[str]:
    """Drop the functions whose signature names the row type of a table that Citus turned into a
    shard. A table with a foreign key to a reference table becomes a Citus local table: Citus
    renames the table to its shard and creates a new one under the old name, so a function that
    returns `auth.sessions` now returns `auth.sessions_102013`, and `create or replace` with the
    new table's type is refused. (Citus hides the shard from pg_class, not its row type.) The
    idempotent phase creates them again right after."""
    rows = conn.execute("""
        select p.oid::regprocedure::text
          from pg_catalog.pg_proc p
          join pg_catalog.pg_namespace n on n.oid = p.pronamespace
         where n.nspname in ('ledger', 'auth', 'api', 'reporting')
           and exists (
                 select from pg_catalog.pg_type t
                   join pg_dist_shard s
                     on shard_name(s.logicalrelid, s.shardid) = t.oid::regtype::text
                  where t.oid = any(array_append(coalesce(p.proallargtypes, p.proargtypes::oid[]),
                                                 p.prorettype)))""").fetchall()
    for (function,) in rows:
        conn.execute(f"drop function {function}")
    return [r[0] for r in rows]


# Parameters the owner stores as BI logins' role defaults, which Citus propagates to the workers
# (db/bootstrap grants them on the coordinator): the client binding and the temp file limit.
OWNER_ROLE_PARAMETERS = ("stepledger.client_id", "temp_file_limit")


# -- migrations on a distributed schema ----------------------------------------------------------
# Once tables are distributed, a coordinator refuses some forms of ALTER TABLE that PostgreSQL
# takes (Citus 13.2, commands/table.c): a constraint, a partition or a trigger switch together
# with other subcommands ("cannot execute ADD CONSTRAINT command with other subcommands"), and a
# column added with an unnamed constraint of its own, which Citus wants named ("cannot execute ADD
# COLUMN command with PRIMARY KEY, UNIQUE, FOREIGN and CHECK constraints").
_ALONE = re.compile(r"(add\s+(constraint|primary|unique|foreign|check|exclude)\b"
                    r"|(attach|detach)\s+partition\b"
                    r"|(enable|disable)\s+((always|replica)\s+)?trigger\b)", re.I)
_ADD_COLUMN = re.compile(r"add\s+(?!(constraint|primary|unique|foreign|check|exclude)\b)", re.I)
_COLUMN_CONSTRAINT = re.compile(r"\b(check\s*\(|unique\b|primary\s+key\b|references\b)", re.I)
# What the constraint test does not read: literals, quoted names and dollar-quoted text, and the
# constraints a column names itself (`constraint c_positive check (...)`), which Citus takes.
_QUOTED = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|\$(\w*)\$.*?\$\1\$", re.S)
_NAMED = re.compile(r"\bconstraint\s+\S+\s+(?=check|unique|primary|references)", re.I)


def _top_level_parts(text: str) -> list[str]:
    """The text split at its commas outside parentheses and quotes."""
    parts, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    return [*parts, text[start:]]


def alter_table_refusals(text: str) -> list[str]:
    """The ALTER TABLE statements of a migration that a coordinator with distributed tables
    refuses, each with what to write instead."""
    refusals = []
    for statement in sqlparse.split(sqlparse.format(text, strip_comments=True)):
        words = " ".join(statement.split()).rstrip(";")
        head = re.match(r"(?i)alter\s+table\s+(if\s+exists\s+)?(only\s+)?(\S+)\s+", words)
        if not head:
            continue
        subcommands = [p.strip() for p in _top_level_parts(words[head.end():])]
        alone = [sub.split()[0:2] for sub in subcommands if _ALONE.match(sub)]
        if alone and len(subcommands) > 1:
            refusals.append(f"ALTER TABLE {head.group(3)}: {' '.join(alone[0]).upper()} with "
                            "other subcommands: write it in a statement of its own")
        refusals += [f"ALTER TABLE {head.group(3)} {sub}: add the column, then its constraint "
                     "by name (ADD CONSTRAINT name ...)" for sub in subcommands
                     if _ADD_COLUMN.match(sub)
                     and _COLUMN_CONSTRAINT.search(_NAMED.sub("named_", _QUOTED.sub("''", sub)))]
    return refusals


def has_distributed_tables(conn: psycopg.Connection) -> bool:
    """True on a coordinator whose tables were distributed (by an earlier migrate)."""
    return is_coordinator(conn) and bool(conn.execute(
        "select exists (select from pg_dist_partition)").fetchone()[0])


def bootstrap_workers(conn: psycopg.Connection) -> None:
    """The superuser's part that Citus does not propagate, on every worker (db/bootstrap runs on
    the coordinator): GRANT SET ON PARAMETER, so that the owner may store BI logins' role
    defaults (which Citus does propagate) there as well."""
    command = "grant set on parameter " + ", ".join(OWNER_ROLE_PARAMETERS) + \
        " to stepledger_owner"
    failed = conn.execute(
        "select nodename, nodeport, result from run_command_on_workers(%s) where not success",
        [command]).fetchall()
    if failed:
        raise StepledgerError(f"{command} failed on {failed}")


def distribution(conn: psycopg.Connection) -> dict[str, str]:
    """Each Citus table of the database: 'reference', 'distributed by <column>', or 'citus local'
    (a table on the coordinator that Citus added to its metadata: one with a foreign key to a
    reference table)."""
    rows = conn.execute(
        "select logicalrelid::regclass::text, partmethod, repmodel, "
        "       column_to_column_name(logicalrelid, partkey) "
        "  from pg_dist_partition").fetchall()
    kinds: dict[str, str] = {}
    for name, method, repmodel, column in rows:
        if method == "h":
            kinds[name] = f"distributed by {column}"
        else:
            kinds[name] = "reference" if repmodel == "t" else "citus local"
    return kinds


def _foreign_keys_among(conn: psycopg.Connection,
                        tables: list[str]) -> list[tuple[str, str, str]]:
    """(table, name, definition) of the foreign keys between these tables."""
    if not tables:
        return []
    return [(r[0], r[1], r[2]) for r in conn.execute(
        "select conrelid::regclass::text, conname, pg_get_constraintdef(oid) from pg_constraint "
        " where contype = 'f' and conrelid = any(%s::regclass[]) "
        "   and confrelid = any(%s::regclass[])", [tables, tables]).fetchall()]


def _to_convert(done: dict[str, str]) -> tuple[list[str], list[str]]:
    """The tables still to make reference tables and to distribute (a table may be a Citus
    local table already: one with a key to a reference table)."""
    return ([t for t in REFERENCE_TABLES if done.get(t) != "reference"],
            [t for t in DISTRIBUTED_TABLES
             if done.get(t) != f"distributed by {DISTRIBUTION_COLUMN}"])


def _set_aside_keys(conn: psycopg.Connection, tables: list[str]) -> list[tuple[str, str, str]]:
    """Drop the foreign keys among these tables, to add back once they are converted. Citus
    refuses a key between a distributed and a local table, and turns a plain table with a key to
    a reference table into a Citus local table: a new table under its name, with the views over
    it created again (an INSTEAD OF trigger of api.prices was lost), which Citus converts no
    further when it has an identity column (client_minimums)."""
    keys = _foreign_keys_among(conn, tables)
    for table, name, _ in keys:
        conn.execute(sql.SQL("alter table {} drop constraint {}").format(
            sql.SQL(table), sql.Identifier(name)))
    return keys


def distribute(settings: Settings) -> dict[str, list[str]]:
    """On a coordinator: let the query roles reach the workers, propagate SET LOCAL from the
    API's requests, then make the catalog, the per-client settings and the auth lookups reference
    tables and every tenant table a table distributed by client_id, co-located, in one
    transaction. Idempotent; returns what it changed."""
    changed: dict[str, list[str]] = {"reference": [], "distributed": [], "login": []}
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
        # Row triggers that touch only their own row (append-only, immutable, checks) and the
        # progress and billing triggers run on the shards; every table they write is co-located.
        conn.execute(sql.SQL("alter database {} set citus.enable_unsafe_triggers = on").format(
            sql.Identifier(settings.dbname)))
        conn.execute("set citus.enable_unsafe_triggers = on")
        for function, settings_of_function in COORDINATOR_FUNCTION_SETTINGS.items():
            for setting in settings_of_function:
                conn.execute(f"alter function {function} set {setting}")
    with psycopg.connect(settings.dsn("postgres")) as conn, conn.transaction():
        conn.execute("set local citus.enable_unsafe_triggers = on")
        # One transaction, so that a distribution is all or nothing: Citus sends the copies of
        # the rows over the same connections, one after the other.
        conn.execute("set local citus.multi_shard_modify_mode = 'sequential'")
        references, pending = _to_convert(distribution(conn))
        keys = _set_aside_keys(conn, references + pending)
        for table in references:
            conn.execute("select create_reference_table(%s)", [table])
            changed["reference"].append(table)
        for table in pending:
            colocate = "none" if table == DISTRIBUTED_TABLES[0] else DISTRIBUTED_TABLES[0]
            conn.execute("select create_distributed_table(%s, %s, colocate_with => %s)",
                         [table, DISTRIBUTION_COLUMN, colocate])
            changed["distributed"].append(table)
        for table, name, definition in keys:
            conn.execute(sql.SQL("alter table {} add constraint {} {}").format(
                sql.SQL(table), sql.Identifier(name), sql.SQL(definition)))
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
            _set_aside_keys(conn, [t for tables in _to_convert(done) for t in tables])
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
