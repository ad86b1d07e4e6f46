"""The one way operator code talks to the stack's database: connections, one statement's value
(`call`, `call_json`), and JSON read and written exactly (numbers as Decimal, so money stays
exact)."""

from __future__ import annotations

import getpass
import json
import socket
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import sql

from stepledger import StepledgerError
from stepledger.settings import Settings


def connect_owner(settings: Settings | None = None) -> psycopg.Connection:
    """A connection as the schema owner: catalog and operator changes bypass the HTTP roles.
    Without settings: the local stack's, from the environment."""
    settings = settings or Settings.from_env()
    try:
        return psycopg.connect(settings.dsn("stepledger_owner"), autocommit=True)
    except psycopg.OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StepledgerError(
            f"cannot reach the database ({first}); is the stack up? try `stepledger up`") from None


def connect_operator(action: str) -> psycopg.Connection:
    """`connect_owner`, named for the operator and the command acting, which the database
    records with price rows and finalized invoices (their recorded_via)."""
    conn = connect_owner()
    conn.execute("select set_config('application_name', %s, false)",
                 [f"stepledger {action} ({getpass.getuser()}@{socket.gethostname()})"[:63]])
    return conn


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


def call(conn: psycopg.Connection, query: str, params: list[object]) -> Any:
    """Run one statement and return its single value, turning database errors into one line."""
    try:
        row = conn.execute(query, params).fetchone()  # type: ignore[arg-type]
    except psycopg.Error as exc:
        raise StepledgerError(error_line(exc)) from None
    return row[0] if row else None


def call_json(conn: psycopg.Connection, query: str, params: list[object]) -> Any:
    """`call` for a statement whose single value is JSON text (`...::text`), read exactly."""
    value = call(conn, query, params)
    return None if value is None else loads(value)


def error_line(exc: psycopg.Error) -> str:
    """A database error on one line: the message, and the hint when there is one."""
    diag = exc.diag
    message = diag.message_primary or str(exc).strip().splitlines()[0]
    if diag.message_hint:
        message += f" ({diag.message_hint})"
    return message


def loads(text: str) -> Any:
    """JSON with every non-integer number as Decimal, so money stays exact."""
    return json.loads(text, parse_float=Decimal)


def dumps(value: Any, indent: int | None = 2) -> str:
    """JSON text that writes Decimal numbers as they are (json.dumps would need floats).
    indent None: one line."""
    return _dump(value, indent, 0)


def _dump(value: Any, indent: int | None, level: int) -> str:
    if indent is None:
        pad = inner = ""
        open_nl = close_nl = ""
        sep = ", "
    else:
        pad, inner = " " * (indent * level), " " * (indent * (level + 1))
        open_nl, close_nl, sep = "\n", "\n" + pad, ",\n"
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = [f"{inner}{json.dumps(str(k))}: {_dump(v, indent, level + 1)}"
                 for k, v in value.items()]
        return "{" + open_nl + sep.join(items) + close_nl + "}"
    if isinstance(value, list | tuple):
        if not value:
            return "[]"
        items = [f"{inner}{_dump(v, indent, level + 1)}" for v in value]
        return "[" + open_nl + sep.join(items) + close_nl + "]"
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"{value} is not a JSON number")
        return str(value)
    return json.dumps(value)
