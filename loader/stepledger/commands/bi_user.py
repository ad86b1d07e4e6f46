"""`stepledger bi-user add|limits|list|ended|remove`: database logins for BI tools
(docs/bi.md)."""

from __future__ import annotations

import argparse
from typing import Any

import psycopg

from stepledger.commands import add_group, print_rows
from stepledger.db import connect_owner
from stepledger.operator import access
from stepledger.settings import Settings


def register(subparsers: argparse._SubParsersAction) -> None:
    bi_sub = add_group(subparsers, "bi-user", "manage database logins for BI tools")
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
    return access.set_bi_limits(conn, args.name, args.statement_timeout, args.idle_timeout,
                              args.temp_file_limit, args.connection_limit)


def _print_limits(limits: dict[str, Any]) -> None:
    print(f"  statement timeout   {limits['statement_timeout']}")
    print(f"  idle timeout        {limits['idle_in_transaction_timeout']}")
    print(f"  temp file limit     {limits['temp_file_limit']}")
    print(f"  connection limit    {limits['connection_limit']}")


def cmd_bi_add(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    password = (access.read_password(args.password) if args.password
                else access.generate_password(24))
    with connect_owner(settings) as conn, conn.transaction():
        row = access.add_bi_login(conn, args.name, args.client, password)
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
        _print_limits(access.bi_limits(conn, row["name"]))
    return 0


def cmd_bi_limits(args: argparse.Namespace) -> int:
    with connect_owner() as conn:
        limits = (_set_limits(conn, args) if _limits_given(args)
                  else access.bi_limits(conn, args.name))
    verb = "limits set" if _limits_given(args) else "limits"
    print(f"stepledger: BI login {limits['name']} {verb}")
    _print_limits(limits)
    return 0


def cmd_bi_list(args: argparse.Namespace) -> int:
    return print_rows(access.bi_logins,
                      lambda name, client, created, statement, idle, temp, connections:
                      f"{name:<32} {client:<20} since {created}  statement {statement}, "
                      f"idle {idle}, temp files {temp}, {connections} connections")


def cmd_bi_ended(args: argparse.Namespace) -> int:
    return print_rows(lambda conn: access.bi_session_ends(conn, args.last),
                      lambda ended_at, name, pid, action, reason, ran, limit, app, query:
                      f"{ended_at}  {action:<9} {name} pid {pid}: {reason} {ran} > {limit}  "
                      f"[{app}] {query}")


def cmd_bi_remove(args: argparse.Namespace) -> int:
    with connect_owner() as conn:
        access.drop_bi_login(conn, args.name)
    print(f"stepledger: BI login {args.name} removed")
    return 0
