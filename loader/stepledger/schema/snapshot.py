"""A readable schema snapshot: `pg_dump --schema-only` of a freshly migrated database, cleaned of
what changes from run to run.

db/schema.snapshot is committed so every schema change shows as a diff in review (it is SQL, named
so that tools looking for source code do not count it twice); the test suite fails
when a fresh migration and the snapshot differ. `stepledger schema-snapshot` rewrites it.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
from pathlib import Path

import psycopg
from psycopg import sql

from stepledger.settings import Settings

SCRATCH_DB = "stepledger_snapshot"

# Lines that differ between two dumps of the same schema: pg_dump's per-run \restrict key and
# version banner, and the monthly partitions, which depend on the date of the run.
_VOLATILE = re.compile(r"^(\\restrict|\\unrestrict|-- Dumped (from|by))")
_MONTHLY = re.compile(r"\b(vault|events)_\d{4}_\d{2}")


def snapshot_path(settings: Settings) -> Path:
    return settings.repo_root / "db" / "schema.snapshot"


def schema_dump(settings: Settings) -> str:
    env = dict(os.environ, PGPASSWORD=settings.password_for("postgres"))
    raw = subprocess.run(
        [str(settings.pg_bindir / "pg_dump"), "--schema-only", "--no-owner", "--no-privileges",
         "--exclude-table=public._yoyo*", "--exclude-table=public.yoyo_lock",
         "-h", settings.pg_host, "-p", str(settings.pg_port), "-U", "postgres", settings.dbname],
        env=env, capture_output=True, text=True, check=True, timeout=120).stdout
    return clean(raw)


def fresh_schema(settings: Settings) -> str:
    """Migrate a scratch database on the same cluster from nothing, dump it, drop it."""
    from stepledger.schema.migrate import migrate

    scratch = dataclasses.replace(settings, dbname=SCRATCH_DB)
    _drop(settings, SCRATCH_DB)
    try:
        migrate(scratch)
        return schema_dump(scratch)
    finally:
        _drop(settings, SCRATCH_DB)


def _drop(settings: Settings, dbname: str) -> None:
    with psycopg.connect(settings.dsn("postgres", dbname="postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("drop database if exists {} with (force)").format(
            sql.Identifier(dbname)))


def clean(dump: str) -> str:
    """Drop volatile lines and the blocks about dated monthly partitions."""
    blocks = re.split(r"\n(?=--\n-- Name: )", dump)
    kept = [b for b in blocks if not _MONTHLY.search(_name_line(b))]
    lines = [line for line in "\n".join(kept).splitlines() if not _VOLATILE.match(line)]
    return "\n".join(lines).strip() + "\n"


def _name_line(block: str) -> str:
    """The '-- Name: ...' header of a pg_dump block, or '' for the preamble."""
    lines = block.split("\n", 2)
    return lines[1] if len(lines) > 1 and lines[1].startswith("-- Name: ") else ""
