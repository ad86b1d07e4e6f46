"""`stepledger user | token | bi-user`: logins, API tokens for pipelines, BI database logins."""

from __future__ import annotations

import argparse
import sys
import uuid
from typing import Any

import psycopg

from stepledger import StepledgerError
from stepledger.db import connect_owner
from stepledger.operator import access as auth
from stepledger.settings import Settings


def register(subparsers: argparse._SubParsersAction) -> None:
    user = subparsers.add_parser("user", help="manage people who log in (POST /rpc/login)")
    user_sub = user.add_subparsers(dest="user_command", metavar="ACTION", required=True)
    p = user_sub.add_parser("add", help="add a user, or set its password and add roles")
    p.add_argument("--email", required=True)
    p.add_argument("--password", required=True, help="at least 10 characters; - reads stdin")
    p.add_argument("--role", required=True, action="append", choices=("admin", "client"),
                   help="admin or client; repeat for both")
    p.add_argument("--client", metavar="ID", help="the client a client user belongs to")
    p.set_defaults(func=cmd_user_add)
    p = user_sub.add_parser("list", help="list users")
    p.set_defaults(func=cmd_user_list)
    for action, text in (("disable", "refuse a user's logins and tokens at once"),
                         ("enable", "let a disabled user log in again")):
        p = user_sub.add_parser(action, help=text)
        p.add_argument("email", metavar="EMAIL")
        p.set_defaults(func=cmd_user_disable, disabled=action == "disable")

    token = subparsers.add_parser("token", help="manage API tokens of pipelines")
    token_sub = token.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    p = token_sub.add_parser("create", help="create an ingest token and print it")
    p.add_argument("--client", metavar="ID",
                   help="the client it may write for (default: every client)")
    p.add_argument("--name", required=True, help="what the token is for, e.g. the pipeline host")
    p.set_defaults(func=cmd_token_create)
    p = token_sub.add_parser("list", help="list API tokens (never the tokens themselves)")
    p.set_defaults(func=cmd_token_list)
    p = token_sub.add_parser("revoke",
                             help="revoke an API token; it is refused from its next request")
    p.add_argument("token_id", metavar="TOKEN_ID")
    p.set_defaults(func=cmd_token_revoke)

    bi = subparsers.add_parser("bi-user", help="manage database logins for BI tools")
    bi_sub = bi.add_subparsers(dest="bi_command", metavar="ACTION", required=True)
    p = bi_sub.add_parser("add", help="create a BI login (or re-bind one and set a new password)")
    p.add_argument("name", metavar="NAME", help="login name: lower-case letters, digits and _")
    p.add_argument("--client", metavar="ID", help="the one client it reads (default: every client)")
    p.add_argument("--password", help="at least 12 characters; - reads stdin; default: generated")
    _limit_arguments(p)
    p.set_defaults(func=cmd_bi_add)
    p = bi_sub.add_parser("limits", help="show a BI login's limits, or change them")
    p.add_argument("name", metavar="NAME")
    _limit_arguments(p)
    p.set_defaults(func=cmd_bi_limits)
    p = bi_sub.add_parser("list", help="list BI logins and their limits")
    p.set_defaults(func=cmd_bi_list)
    p = bi_sub.add_parser("ended", help="BI statements and sessions the watchdog ended")
    p.add_argument("--last", type=int, default=20, metavar="N", help="how many (default 20)")
    p.set_defaults(func=cmd_bi_ended)
    p = bi_sub.add_parser("remove", help="drop a BI login")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(func=cmd_bi_remove)


def _limit_arguments(p: argparse.ArgumentParser) -> None:
    """Options of a BI login's limits (docs/bi.md "Limits"); absent ones stay as they are."""
    p.add_argument("--statement-timeout", metavar="INTERVAL",
                   help="a statement running longer is cancelled (default 5min)")
    p.add_argument("--idle-timeout", metavar="INTERVAL",
                   help="a session idle in a transaction longer is ended (default 30s)")
    p.add_argument("--temp-file-limit", metavar="SIZE",
                   help="temporary files per session, e.g. 512MB (default 1GB)")
    p.add_argument("--connection-limit", type=int, metavar="N",
                   help="connections at once (default 10)")


def _limits_given(args: argparse.Namespace) -> bool:
    return any(v is not None for v in (args.statement_timeout, args.idle_timeout,
                                       args.temp_file_limit, args.connection_limit))


def _set_limits(conn: psycopg.Connection, args: argparse.Namespace) -> dict[str, Any]:
    return auth.set_bi_limits(conn, args.name, args.statement_timeout, args.idle_timeout,
                              args.temp_file_limit, args.connection_limit)


def _print_limits(limits: dict[str, Any]) -> None:
    print(f"  statement timeout   {limits['statement_timeout']}")
    print(f"  idle timeout        {limits['idle_in_transaction_timeout']}")
    print(f"  temp file limit     {limits['temp_file_limit']}")
    print(f"  connection limit    {limits['connection_limit']}")


def cmd_user_add(args: argparse.Namespace) -> int:
    password = auth.read_password(args.password)
    with connect_owner(Settings.from_env()) as conn:
        row = auth.add_user(conn, args.email, password, args.role, args.client)
    verb = "added" if row["created"] else "updated"
    client = f", client {row['client_id']}" if row["client_id"] else ""
    print(f"stepledger: user {row['email']} {verb} (roles {', '.join(row['roles'])}{client})")
    return 0


def cmd_user_list(args: argparse.Namespace) -> int:
    with connect_owner(Settings.from_env()) as conn:
        rows = conn.execute(
            "select email, array_to_string(roles, ','), coalesce(client_id, '-'), "
            "coalesce(to_char(last_login_at, 'YYYY-MM-DD HH24:MI'), 'never'), "
            "disabled_at is not null from auth.users order by email").fetchall()
    for email, roles, client, last_login, disabled in rows:
        state = "  disabled" if disabled else ""
        print(f"{email:<40} {roles:<13} {client:<20} last login {last_login}{state}")
    return 0


def cmd_user_disable(args: argparse.Namespace) -> int:
    with connect_owner(Settings.from_env()) as conn:
        row = auth.set_user_disabled(conn, args.email, args.disabled)
    print(f"stepledger: user {row['email']} {'disabled' if args.disabled else 'enabled'}")
    return 0


def cmd_token_create(args: argparse.Namespace) -> int:
    with connect_owner(Settings.from_env()) as conn:
        row = auth.create_api_token(conn, args.client, args.name)
    scope = f"client {row['client_id']}" if row["client_id"] else "every client"
    print(f"stepledger: ingest token {row['token_id']} ({row['name']}) for {scope}; "
          "it is shown only now", file=sys.stderr)
    print(row["token"])
    return 0


def cmd_token_list(args: argparse.Namespace) -> int:
    with connect_owner(Settings.from_env()) as conn:
        rows = conn.execute(
            "select token_id, coalesce(client_id, '*'), name, "
            "case when revoked_at is null then 'active' else 'revoked' end, "
            "coalesce(to_char(last_used_at, 'YYYY-MM-DD HH24:MI'), 'never') "
            "from auth.api_tokens order by created_at, token_id").fetchall()
    for token_id, client, name, state, last_used in rows:
        print(f"{token_id}  {client:<20} {state:<8} last used {last_used:<16}  {name}")
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    try:
        uuid.UUID(args.token_id)
    except ValueError:
        raise StepledgerError(f"token id {args.token_id!r} is not a UUID; the ids are in the "
                              "first column of `stepledger token list`") from None
    with connect_owner(Settings.from_env()) as conn:
        row = auth.revoke_api_token(conn, args.token_id)
    print(f"stepledger: token {row['token_id']} revoked at {row['revoked_at']}")
    return 0


def cmd_bi_add(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    password = auth.read_password(args.password) if args.password else auth.generate_password(24)
    with connect_owner(settings) as conn, conn.transaction():
        row = auth.add_bi_login(conn, args.name, args.client, password)
        if _limits_given(args):  # in the same transaction: a bad limit creates no login
            _set_limits(conn, args)
    scope = f"client {row['client_id']}" if row["client_id"] else "every client"
    verb = "created" if row["created"] else "updated"
    print(f"stepledger: BI login {row['name']} {verb}; reads schema reporting for {scope}")
    print(f"  host      {settings.pg_host}")
    print(f"  port      {settings.pg_port}")
    print(f"  database  {settings.dbname}")
    print(f"  user      {row['name']}")
    if not args.password:
        print(f"  password  {password}")
    print(f"  psql      psql 'postgresql://{row['name']}@{settings.pg_host}:{settings.pg_port}/"
          f"{settings.dbname}'")
    with connect_owner(settings) as conn:
        _print_limits(auth.bi_limits(conn, row["name"]))
    return 0


def cmd_bi_limits(args: argparse.Namespace) -> int:
    with connect_owner(Settings.from_env()) as conn:
        limits = _set_limits(conn, args) if _limits_given(args) else auth.bi_limits(conn, args.name)
    verb = "limits set" if _limits_given(args) else "limits"
    print(f"stepledger: BI login {limits['name']} {verb}")
    _print_limits(limits)
    return 0


def cmd_bi_list(args: argparse.Namespace) -> int:
    with connect_owner(Settings.from_env()) as conn:
        rows = conn.execute(
            "select rolname, coalesce(client_id, '*'), created_at::date, statement_timeout::text, "
            "idle_in_transaction_timeout::text, pg_size_pretty(temp_file_limit_kb * 1024), "
            "connection_limit from auth.bi_logins order by rolname").fetchall()
    for name, client, created, statement, idle, temp, connections in rows:
        print(f"{name:<32} {client:<20} since {created}  statement {statement}, idle {idle}, "
              f"temp files {temp}, {connections} connections")
    return 0


def cmd_bi_ended(args: argparse.Namespace) -> int:
    if args.last < 1:
        raise StepledgerError("--last must be at least 1")
    with connect_owner(Settings.from_env()) as conn:
        rows = conn.execute(
            "select to_char(ended_at, 'YYYY-MM-DD HH24:MI:SS'), rolname, pid, action, reason, "
            "date_trunc('second', running_for)::text, time_limit::text, "
            "coalesce(application_name, ''), "
            "left(regexp_replace(coalesce(query, ''), '\\s+', ' ', 'g'), 80) "
            "from auth.bi_session_ends order by end_id desc limit %s", [args.last]).fetchall()
    for ended_at, name, pid, action, reason, ran, limit, app, query in rows:
        print(f"{ended_at}  {action:<9} {name} pid {pid}: {reason} {ran} > {limit}  "
              f"[{app}] {query}")
    return 0


def cmd_bi_remove(args: argparse.Namespace) -> int:
    with connect_owner(Settings.from_env()) as conn:
        auth.drop_bi_login(conn, args.name)
    print(f"stepledger: BI login {args.name} removed")
    return 0
