"""Backup and restore of the stack's database with pg_dump -Fc / pg_restore, as the superuser.

A backup holds the whole `stepledger` database: the vault, events, live state, prices, invoices,
users, API tokens and the migration history. Roles are cluster-wide and not part of it; `restore`
runs `migrate` first on the target stack, which creates them, then replaces the database's
contents with the dump (docs/reliability.md, "Backup and restore").
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import psycopg
from psycopg import sql

from stepledger import StepledgerError, stack
from stepledger.settings import Settings
from stepledger.stack import postgres


def _env(settings: Settings) -> dict[str, str]:
    return {**os.environ, "PGPASSWORD": settings.password_for("postgres"),
            "PGCONNECT_TIMEOUT": "10"}


def _conn_args(settings: Settings) -> list[str]:
    return ["-h", settings.pg_host, "-p", str(settings.pg_port), "-U", "postgres"]


def _run(cmd: list[str], settings: Settings, what: str) -> None:
    done = subprocess.run(cmd, env=_env(settings), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        reason = lines[-1] if lines else f"exit {done.returncode}"
        raise StepledgerError(f"{what} failed: {reason}")


def backup(settings: Settings, path: Path) -> Path:
    """Write a custom-format dump of the database to `path` (replaced atomically)."""
    path = path.resolve()
    if not path.parent.is_dir():
        raise StepledgerError(f"{path.parent} is not a directory")
    partial = path.with_name(path.name + ".partial")
    _run([str(postgres.pg_tool(settings, "pg_dump")), *_conn_args(settings), "-Fc",
          "-f", str(partial), settings.dbname], settings, "pg_dump")
    partial.replace(path)
    return path


def restore(settings: Settings, path: Path) -> None:
    """Replace the database with the dump at `path`: drop it, recreate it empty, restore into
    it, then migrate (roles, and the functions, grants and policies of this code version)."""
    if not path.is_file():
        raise StepledgerError(f"{path}: no such backup file")
    _run([str(postgres.pg_tool(settings, "pg_restore")), "--list", str(path)], settings,
         f"reading {path}")
    stack.run_migrations(settings)  # the roles exist before any object refers to them
    with psycopg.connect(settings.dsn("postgres", dbname="postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("drop database if exists {} with (force)").format(
            sql.Identifier(settings.dbname)))
        conn.execute(sql.SQL("create database {} owner stepledger_owner").format(
            sql.Identifier(settings.dbname)))
    _run([str(postgres.pg_tool(settings, "pg_restore")), *_conn_args(settings),
          "--single-transaction", "--exit-on-error", "-d", settings.dbname, str(path)],
         settings, "pg_restore")
    stack.run_migrations(settings)
