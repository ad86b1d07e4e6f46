"""Operator-side helpers for users, API tokens and BI logins; the rules live in the database
(db/functions/60_auth/10_auth.sql) and these only call them as the schema owner."""

from __future__ import annotations

import secrets
import string
import sys
from typing import Any

import psycopg

from stepledger import StepledgerError
from stepledger.db import call

_PASSWORD_ALPHABET = string.ascii_letters + string.digits


def generate_password(length: int = 20) -> str:
    """A random password of letters and digits (safe in connection URIs)."""
    return "".join(secrets.choice(_PASSWORD_ALPHABET) for _ in range(length))


def read_password(value: str) -> str:
    """The password given on the command line, or the first line of stdin for "-"."""
    if value != "-":
        return value
    line = sys.stdin.readline().rstrip("\r\n")
    if not line:
        raise StepledgerError("no password on standard input")
    return line


def _as_dict(value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise StepledgerError(f"unexpected answer from the database: {value!r}")
    return value


def add_user(conn: psycopg.Connection, email: str, password: str, roles: list[str],
             client_id: str | None) -> dict[str, Any]:
    """Create a user, or update its password and client and add roles (auth.add_user)."""
    return _as_dict(call(conn, "select auth.add_user(%s, %s, %s, %s)",
                         [email, password, roles, client_id]))


def set_user_disabled(conn: psycopg.Connection, email: str, disabled: bool) -> dict[str, Any]:
    return _as_dict(call(conn, "select auth.set_user_disabled(%s, %s)", [email, disabled]))


def create_api_token(conn: psycopg.Connection, client_id: str | None, name: str,
                     created_by: str = "stepledger cli") -> dict[str, Any]:
    """Issue an ingest token for one client or (None) every client; the answer holds the token."""
    return _as_dict(call(conn, "select auth.create_api_token(%s, %s, 'ingest', %s)",
                         [client_id, name, created_by]))


def revoke_api_token(conn: psycopg.Connection, token_id: str,
                     revoked_by: str = "stepledger cli") -> dict[str, Any]:
    return _as_dict(call(conn, "select auth.revoke_api_token(%s::uuid, %s)",
                         [token_id, revoked_by]))


def scram_verifier(conn: psycopg.Connection, name: str, password: str) -> str:
    """The SCRAM-SHA-256 verifier of a password, computed here so the clear text never reaches
    the server (nor its logs)."""
    verifier = conn.pgconn.encrypt_password(password.encode(), name.encode(), b"scram-sha-256")
    return verifier.decode("ascii")


def add_bi_login(conn: psycopg.Connection, name: str, client_id: str | None,
                 password: str) -> dict[str, Any]:
    """Create or re-bind a BI database login (auth.add_bi_login)."""
    if len(password) < 12:
        raise StepledgerError("a BI password needs at least 12 characters")
    return _as_dict(call(conn, "select auth.add_bi_login(%s, %s, %s)",
                         [name, client_id, scram_verifier(conn, name, password)]))


def set_bi_limits(conn: psycopg.Connection, name: str, statement_timeout: str | None = None,
                  idle_in_transaction_timeout: str | None = None,
                  temp_file_limit: str | None = None,
                  connection_limit: int | None = None) -> dict[str, Any]:
    """Change a BI login's limits (auth.set_bi_limits); None keeps a limit as it is."""
    return _as_dict(call(conn, "select auth.set_bi_limits(%s, %s, %s, %s, %s)",
                         [name, statement_timeout, idle_in_transaction_timeout, temp_file_limit,
                          connection_limit]))


def bi_limits(conn: psycopg.Connection, name: str) -> dict[str, Any]:
    """A BI login's limits (auth.bi_limits)."""
    limits = call(conn, "select auth.bi_limits(%s)", [name])
    if limits is None:
        raise StepledgerError(f'"{name}" is not a BI login')
    return _as_dict(limits)


def drop_bi_login(conn: psycopg.Connection, name: str) -> dict[str, Any]:
    return _as_dict(call(conn, "select auth.drop_bi_login(%s)", [name]))


def users(conn: psycopg.Connection) -> list[tuple[Any, ...]]:
    """(email, roles, client or '-', last login or 'never', disabled) of every user."""
    return conn.execute(
        "select email, array_to_string(roles, ','), coalesce(client_id, '-'), "
        "coalesce(to_char(last_login_at, 'YYYY-MM-DD HH24:MI'), 'never'), "
        "disabled_at is not null from auth.users order by email").fetchall()


def api_tokens(conn: psycopg.Connection) -> list[tuple[Any, ...]]:
    """(token id, client or '*', name, active or revoked, last use or 'never') of every API
    token, as admins see them (api.api_tokens: never the token itself)."""
    return conn.execute(
        "select token_id, coalesce(client_id, '*'), name, "
        "case when active then 'active' else 'revoked' end, "
        "coalesce(to_char(last_used_at, 'YYYY-MM-DD HH24:MI'), 'never') "
        "from api.api_tokens order by created_at, token_id").fetchall()


def bi_logins(conn: psycopg.Connection) -> list[tuple[Any, ...]]:
    """(name, client or '*', created, statement timeout, idle timeout, temp file limit,
    connection limit) of every BI login."""
    return conn.execute(
        "select rolname, coalesce(client_id, '*'), created_at::date, statement_timeout::text, "
        "idle_in_transaction_timeout::text, pg_size_pretty(temp_file_limit_kb * 1024), "
        "connection_limit from auth.bi_logins order by rolname").fetchall()


def bi_session_ends(conn: psycopg.Connection, last: int) -> list[tuple[Any, ...]]:
    """The `last` BI statements and sessions the watchdog ended, newest first."""
    if last < 1:
        raise StepledgerError("--last must be at least 1")
    return conn.execute(
        "select to_char(ended_at, 'YYYY-MM-DD HH24:MI:SS'), rolname, pid, action, reason, "
        "date_trunc('second', running_for)::text, time_limit::text, "
        "coalesce(application_name, ''), "
        "left(regexp_replace(coalesce(query, ''), '\\s+', ' ', 'g'), 80) "
        "from auth.bi_session_ends order by end_id desc limit %s", [last]).fetchall()
