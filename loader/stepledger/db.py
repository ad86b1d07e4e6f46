"""Connections to the stack's database for operator commands."""

from __future__ import annotations

import psycopg
from psycopg import sql

from stepledger import StepledgerError
from stepledger.settings import Settings


def connect_owner(settings: Settings) -> psycopg.Connection:
    """A connection as the schema owner: catalog and operator changes bypass the HTTP roles."""
    try:
        return psycopg.connect(settings.dsn("stepledger_owner"), autocommit=True)
    except psycopg.OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StepledgerError(
            f"cannot reach the database ({first}); is the stack up? try `stepledger up`") from None


# The stack's login roles; their passwords come from the stack's secrets (Settings.password_for).
LOGIN_ROLES = ("stepledger_owner", "authenticator")


def ensure_database(settings: Settings) -> None:
    """Create the application database if it is missing (as the superuser, from `postgres`)."""
    with psycopg.connect(settings.dsn("postgres", "postgres"), autocommit=True) as conn:
        exists = conn.execute("select 1 from pg_database where datname = %s",
                              (settings.dbname,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("create database {}").format(sql.Identifier(settings.dbname)))


def set_login_passwords(conn: psycopg.Connection, settings: Settings) -> None:
    """Give the login roles that exist (they come from db/bootstrap) their passwords from the
    secrets; `conn` is a superuser connection."""
    for role in LOGIN_ROLES:
        if conn.execute("select 1 from pg_roles where rolname = %s", (role,)).fetchone():
            conn.execute(sql.SQL("alter role {} with login password {}").format(
                sql.Identifier(role), sql.Literal(settings.password_for(role))))


def call(conn: psycopg.Connection, query: str, params: list[object]) -> object:
    """Run one statement and return its single value, turning database errors into one line."""
    try:
        row = conn.execute(query, params).fetchone()  # type: ignore[arg-type]
    except psycopg.Error as exc:
        diag = exc.diag
        message = diag.message_primary or str(exc)
        if diag.message_hint:
            message += f" ({diag.message_hint})"
        raise StepledgerError(message) from None
    return row[0] if row else None
