"""`stepledger user add|list|disable|enable`: people who log in (POST /rpc/login)."""

from __future__ import annotations

import argparse

from stepledger.commands import add_group, print_rows
from stepledger.db import connect_owner
from stepledger.operator import access


def register(subparsers: argparse._SubParsersAction) -> None:
    user_sub = add_group(subparsers, "user", "manage people who log in (POST /rpc/login)")
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


def cmd_user_add(args: argparse.Namespace) -> int:
    password = access.read_password(args.password)
    with connect_owner() as conn:
        row = access.add_user(conn, args.email, password, args.role, args.client)
    verb = "added" if row["created"] else "updated"
    client = f", client {row['client_id']}" if row["client_id"] else ""
    print(f"stepledger: user {row['email']} {verb} (roles {', '.join(row['roles'])}{client})")
    return 0


def cmd_user_list(args: argparse.Namespace) -> int:
    return print_rows(access.users, lambda email, roles, client, last_login, disabled:
                      f"{email:<40} {roles:<13} {client:<20} last login {last_login}"
                      f"{'  disabled' if disabled else ''}")


def cmd_user_disable(args: argparse.Namespace) -> int:
    with connect_owner() as conn:
        row = access.set_user_disabled(conn, args.email, args.disabled)
    print(f"stepledger: user {row['email']} {'disabled' if args.disabled else 'enabled'}")
    return 0


