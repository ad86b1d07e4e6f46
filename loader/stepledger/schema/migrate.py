"""The migration runner: brings a database to the current schema, idempotently.

Order (docs/architecture.md):
1. db/bootstrap/*.sql as the superuser: roles, extensions, the JSON Schema functions;
2. the stack's passwords for its login roles;
3. db/migrations/ through yoyo, as the owner: numbered, never edited once landed; on a Citus
   cluster whose tables are distributed, checked first for the ALTER TABLE forms it refuses;
4. immutable wrappers generated from schemas/*.json and the envelope compiled to SQL
   (`ledger.step_event_v1_valid`, ADR 0003), which ingest classifies with (the events table
   guards the envelope with CHECKs on its typed columns, migration 0080, ADR 0014);
5. db/functions/NN_feature/*.sql (each feature's functions, then the views built on them), then
   db/policies/*.sql, as the owner (idempotent files; db/README.md): re-applied when they, the
   generated functions or a migration changed anything since the last run (a digest kept in
   ledger.applied_definitions), or when asked to (`stepledger migrate --reapply`), so that a
   migrate with nothing new takes no lock on the tables of a live system;
6. the JWT secret (for login tokens signed in the database) and `notify pgrst, 'reload schema'`
   with the files of 5; every time, the code version, this month's partitions and the BI logins'
   limits;
7. on a Citus coordinator, the distribution (stepledger.stack.citus.distribute, ADR 0012).
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import time
from pathlib import Path

import psycopg
import sqlparse
from psycopg import sql

from stepledger import StepledgerError, __version__
from stepledger.db import ensure_database, set_login_passwords
from stepledger.schema.envelope_sql import Dialect, compile_schema_details
from stepledger.settings import Settings
from stepledger.stack import citus

# Schema files turned into `ledger.<name>()` functions; a CHECK constraint cannot run a subquery,
# so the envelope reaches it through an immutable function whose body is the file's literal.
SCHEMA_FUNCTIONS = {
    "step_event.v1.json": "step_event_v1_schema",
    "pipeline.v1.json": "pipeline_v1_schema",
}
ENVELOPE_FILE = "step_event.v1.json"
ENVELOPE_PREDICATE = "step_event_v1_valid"
MIGRATE_ATTEMPTS = 5
LOCK_CONFLICTS = (psycopg.errors.DeadlockDetected, psycopg.errors.LockNotAvailable)


def code_version(repo_root: Path) -> str:
    """Package version plus the git commit when run from a checkout."""
    try:
        sha = subprocess.run(
            ["git", "-C", str(repo_root), "rev-parse", "--short=12", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{__version__}+{sha}" if sha else __version__


def sql_files(directory: Path) -> list[Path]:
    """The .sql files of a folder in name order, a subfolder's files in its place (db/functions/
    NN_feature/, db/bootstrap/20_jsonschema/): functions before the views built on them."""
    files: list[Path] = []
    for entry in sorted(directory.iterdir()):
        if entry.is_dir():
            files.extend(sql_files(entry))
        elif entry.suffix == ".sql":
            files.append(entry)
    return files


def idempotent_files(db_dir: Path) -> list[Path]:
    """The files re-applied on every migrate, in order: the features of db/functions in folder
    order (the path of an event: common, catalog, ingest, jobs, billing, ...), then db/policies."""
    return sql_files(db_dir / "functions") + sql_files(db_dir / "policies")


# A line `# include: FILE` (a comment in both SQL bodies and Python) is replaced by the text of
# FILE, next to the SQL file: the validator's Python lives in a .py file of its own.
INCLUDE = re.compile(r"^# include: (\S+)$", re.MULTILINE)


def sql_text(path: Path) -> str:
    def included(match: re.Match[str]) -> str:
        try:
            return (path.parent / match.group(1)).read_text().rstrip("\n")
        except OSError as exc:
            raise StepledgerError(f"{path.parent.name}/{path.name}: cannot include "
                                  f"{match.group(1)} ({exc.strerror})") from exc
    return INCLUDE.sub(included, path.read_text())


def _run_file(conn: psycopg.Connection, path: Path, one_statement_at_a_time: bool = False) -> None:
    """Run a file of SQL statements. On a Citus coordinator one statement at a time: Citus sends
    the text of some DDL (ALTER TABLE ... ROW LEVEL SECURITY, policies) on a Citus table to the
    workers as it was received, and a worker refuses several commands in one prepared statement.
    There, policies also take the form Citus accepts (citus.policy_sql)."""
    text = sql_text(path)
    if one_statement_at_a_time and path.parent.name == "policies":
        text = citus.policy_sql(text)
    statements = [s for s in sqlparse.split(text) if s.strip()] if one_statement_at_a_time \
        else [text]
    try:
        for statement in statements:
            conn.execute(statement)  # type: ignore[arg-type]  # no parameters
    except LOCK_CONFLICTS:
        raise  # migrate() retries the whole idempotent phase
    except psycopg.Error as exc:
        where = f"{path.parent.name}/{path.name}"
        raise StepledgerError(f"{where}: {exc.diag.message_primary or exc}") from exc


def bootstrap(settings: Settings) -> None:
    """Superuser part: roles, extensions, validator functions, and the login roles' passwords."""
    with psycopg.connect(settings.dsn("postgres"), autocommit=True) as conn:
        for path in sql_files(settings.repo_root / "db" / "bootstrap"):
            _run_file(conn, path)
        set_login_passwords(conn, settings)
        if citus.is_coordinator(conn):
            citus.bootstrap_workers(conn)


def apply_migrations(settings: Settings) -> list[str]:
    """Numbered migrations through yoyo; returns the ids it applied."""
    from yoyo import get_backend, read_migrations

    dsn = settings.dsn("stepledger_owner").replace("postgresql://", "postgresql+psycopg://", 1)
    backend = get_backend(dsn)
    migrations = read_migrations(str(settings.repo_root / "db" / "migrations"))
    with backend.lock():
        pending = backend.to_apply(migrations)
        if pending:
            _check_for_citus(settings, [Path(m.path) for m in pending])
        backend.apply_migrations(pending)
    return [m.id for m in pending]


def _check_for_citus(settings: Settings, paths: list[Path]) -> None:
    """On a cluster whose tables are distributed, refuse before applying anything the migrations
    whose ALTER TABLE statements a coordinator would refuse (ADR 0012), saying what to write."""
    with psycopg.connect(settings.dsn("stepledger_owner")) as conn:
        if not citus.has_distributed_tables(conn):
            return
    refusals = [f"{path.name}: {refusal}" for path in paths
                for refusal in citus.alter_table_refusals(path.read_text())]
    if refusals:
        raise StepledgerError("migrations a Citus coordinator would refuse; nothing applied:\n  "
                              + "\n  ".join(refusals))


def install_schema_functions(conn: psycopg.Connection, schemas_dir: Path) -> None:
    for filename, function in SCHEMA_FUNCTIONS.items():
        document = json.loads((schemas_dir / filename).read_text())
        literal = json.dumps(document, separators=(",", ":"), sort_keys=True)
        conn.execute(sql.SQL(
            "create or replace function ledger.{fn}() returns json "
            "language sql immutable parallel safe as {body}").format(
                fn=sql.Identifier(function),
                body=sql.Literal("select " + _quote_literal(literal) + "::json")))
        conn.execute(sql.SQL("comment on function ledger.{fn}() is {c}").format(
            fn=sql.Identifier(function), c=sql.Literal(f"The JSON Schema in schemas/{filename}.")))
    install_envelope_predicate(conn, json.loads((schemas_dir / ENVELOPE_FILE).read_text()))


def validator_dialect(conn: psycopg.Connection, schema: object) -> Dialect:
    """Which implementation `public.jsonb_matches_schema` is (envelope_sql): pg_jsonschema, or our
    plpython validator, whose two paths give one answer (ADR 0001)."""
    row = conn.execute("select exists (select from pg_extension where extname = 'pg_jsonschema')"
                       ).fetchone()
    if row and row[0]:
        return "spec"
    return "general"


def install_envelope_predicate(conn: psycopg.Connection, schema: dict[str, object]) -> None:
    """`ledger.step_event_v1_valid(payload jsonb)`: the envelope compiled to one SQL expression,
    inlined wherever it is called (ingest), equal to the validator."""
    text = json.dumps(schema)
    row = conn.execute("select public.jsonschema_is_valid(%s::json)", [text]).fetchone()
    if not row or not row[0]:
        raise StepledgerError(f"schemas/{ENVELOPE_FILE} is not a valid JSON Schema")
    compiled = compile_schema_details(schema, "payload", dialect=validator_dialect(conn, schema))
    body = (f"-- Generated from schemas/{ENVELOPE_FILE} by stepledger.schema.envelope_sql "
            f"(ADR 0003).\nselect {compiled.sql}")
    fn = sql.Identifier(ENVELOPE_PREDICATE)
    conn.execute(sql.SQL(
        "create or replace function ledger.{fn}(payload jsonb) returns boolean "
        "language sql immutable parallel safe as {body}").format(fn=fn, body=sql.Literal(body)))
    comment = (f"True when payload matches schemas/{ENVELOPE_FILE}, exactly as "
               "public.jsonb_matches_schema(ledger.step_event_v1_schema(), payload) says, "
               "without leaving SQL: generated by the migration runner (ADR 0003).")
    if compiled.fallbacks:
        comment += " Left to the validator: " + ", ".join(p or "(whole schema)"
                                                         for p in compiled.fallbacks) + "."
    conn.execute(sql.SQL("comment on function ledger.{fn}(jsonb) is {c}").format(
        fn=fn, c=sql.Literal(comment)))
    conn.execute(sql.SQL("revoke execute on function ledger.{fn}(jsonb) from public").format(fn=fn))
    conn.execute(sql.SQL("grant execute on function ledger.{fn}(jsonb) to admin").format(fn=fn))


def _quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def migrate(settings: Settings, reapply: bool = False) -> dict[str, object]:
    """Bring the stack's database up to date. Safe to run any number of times. `reapply`
    re-applies the functions, views and policies even when none changed (after an edit by hand)."""
    ensure_database(settings)
    bootstrap(settings)
    applied = apply_migrations(settings)
    version = code_version(settings.repo_root)
    for attempt in range(1, MIGRATE_ATTEMPTS + 1):
        try:
            # A migration may drop what the idempotent files define (a view, with CASCADE).
            definitions = _apply_idempotent(settings, version, reapply=reapply or bool(applied))
            break
        except LOCK_CONFLICTS:
            # A live stack (ingest, the scheduler's refreshes) may hold locks that the policy
            # files need; the phase is one transaction and idempotent, so run it again.
            if attempt == MIGRATE_ATTEMPTS:
                raise StepledgerError("migrate: the database stayed busy (lock conflicts); "
                                      "try again") from None
            time.sleep(0.5 * attempt)
    # On a Citus coordinator: the part of the schema that is distributed (ADR 0012).
    distributed = citus.distribute(settings)
    if distributed["reference"] or distributed["distributed"]:
        # Citus has just created the views over those tables on the workers, without their
        # grants (a client's read of api.pipeline_steps was refused there): grant again, now
        # propagated to every node.
        with psycopg.connect(settings.dsn("stepledger_owner")) as conn, conn.transaction():
            for path in sql_files(settings.repo_root / "db" / "policies"):
                _run_file(conn, path, one_statement_at_a_time=True)
    return {"applied": applied, "code_version": version, "definitions": definitions,
            "citus": distributed}


def definitions_digest(settings: Settings, on_citus: bool) -> str:
    """One digest of everything the idempotent phase applies: the files in their order, the
    schemas the generated functions come from and the code that generates them or rewrites
    policies for Citus, the JWT secret, and the topology (policies take another form on Citus)."""
    package = Path(__file__).resolve().parent.parent
    generators = sorted((package / "schema" / "envelope_sql").glob("*.py"))
    generators += [package / "stack" / "citus.py", Path(__file__).resolve()]
    digest = hashlib.sha256()
    root = settings.repo_root
    for path in idempotent_files(root / "db"):
        digest.update(f"{path.relative_to(root)}\0{sql_text(path)}\0".encode())
    for filename in sorted(SCHEMA_FUNCTIONS):
        digest.update(f"schemas/{filename}\0".encode() + (root / "schemas" / filename).read_bytes())
    for path in generators:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    digest.update(hashlib.sha256(settings.jwt_secret.encode()).digest())
    digest.update(b"citus" if on_citus else b"single node")
    return digest.hexdigest()


def _apply_idempotent(settings: Settings, version: str, reapply: bool) -> str:
    """Schema functions, db/functions, db/policies and the JWT secret when they changed (or when
    asked to), then the code version and this month's partitions: one transaction, safe to
    repeat. Returns "applied" or "unchanged"."""
    with psycopg.connect(settings.dsn("stepledger_owner")) as conn:
        with conn.transaction():
            conn.execute("set local lock_timeout = '10s'")
            on_citus = citus.is_coordinator(conn)
            digest = definitions_digest(settings, on_citus)
            newest = conn.execute("select digest from ledger.applied_definitions "
                                  "order by applied_at desc limit 1").fetchone()
            apply = reapply or newest is None or newest[0] != digest
            if apply:
                if on_citus:
                    conn.execute("lock table " + ", ".join(citus.NOTIFICATION_WORKER_TABLES)
                                 + " in access exclusive mode")
                install_schema_functions(conn, settings.repo_root / "schemas")
                if on_citus:
                    citus.drop_functions_over_shard_types(conn)
                for path in idempotent_files(settings.repo_root / "db"):
                    _run_file(conn, path, one_statement_at_a_time=on_citus)
                # Login tokens are signed in the database with PostgREST's secret
                # (docs/security.md).
                conn.execute("select auth.install_jwt_secret(%s)", [settings.jwt_secret])
                conn.execute(
                    "insert into ledger.applied_definitions (digest, code_version) values (%s, %s) "
                    "on conflict (digest) do update set applied_at = now(), "
                    "code_version = excluded.code_version", [digest, version])
            conn.execute("insert into ledger.code_versions (code_version) values (%s) "
                         "on conflict do nothing", [version])
            conn.execute("select ledger.ensure_partitions()")
            # A BI login that reset its own role's defaults gets its limits back (ADR 0006).
            conn.execute("select auth._apply_bi_limits(rolname) from auth.bi_logins")
        if apply:
            conn.execute("notify pgrst, 'reload schema'")
        conn.commit()
    return "applied" if apply else "unchanged"
