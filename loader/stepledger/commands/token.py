"""`stepledger token create|list|revoke`: API tokens of pipelines."""

from __future__ import annotations

import argparse
import sys
import uuid

from stepledger import StepledgerError
from stepledger.commands import add_group, print_rows
from stepledger.db import connect_owner
from stepledger.operator import access


def register(subparsers: argparse._SubParsersAction) -> None:
    token_sub = add_group(subparsers, "token", "manage API tokens of pipelines")
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


def cmd_token_create(args: argparse.Namespace) -> int:
    with connect_owner() as conn:
        row = access.create_api_token(conn, args.client, args.name)
    scope = f"client {row['client_id']}" if row["client_id"] else "every client"
    print(f"stepledger: ingest token {row['token_id']} ({row['name']}) for {scope}; "
          "it is shown only now", file=sys.stderr)
    print(row["token"])
    return 0


def cmd_token_list(args: argparse.Namespace) -> int:
    return print_rows(access.api_tokens, lambda token_id, client, name, state, last_used:
                      f"{token_id}  {client:<20} {state:<8} last used {last_used:<16}  {name}")


def cmd_token_revoke(args: argparse.Namespace) -> int:
    try:
        uuid.UUID(args.token_id)
    except ValueError:
        raise StepledgerError(f"token id {args.token_id!r} is not a UUID; the ids are in the "
                              "first column of `stepledger token list`") from None
    with connect_owner() as conn:
        row = access.revoke_api_token(conn, args.token_id)
    print(f"stepledger: token {row['token_id']} revoked at {row['revoked_at']}")
    return 0


