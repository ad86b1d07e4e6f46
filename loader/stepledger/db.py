"""Connections to the stack's database for operator commands."""

from __future__ import annotations

import psycopg

from stepledger import StepledgerError
from stepledger.config import Settings


def connect_owner(settings: Settings) -> psycopg.Connection:
    """A connection as the schema owner: catalog and operator changes bypass the HTTP roles."""
    try:
        return psycopg.connect(settings.dsn("stepledger_owner"), autocommit=True)
    except psycopg.OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StepledgerError(
            f"cannot reach the database ({first}); is the stack up? try `stepledger up`") from None


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
