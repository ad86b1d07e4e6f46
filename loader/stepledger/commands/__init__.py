"""CLI subcommands: every module here defines `register(subparsers)`; cli.py discovers them.

One module per command or command group; they print, and leave the work to the library
(stepledger.operator, .ingest, .stack, .schema). What several of them share is here.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the command line imports this module before it checks the operator extra
    import psycopg


def add_group(subparsers: argparse._SubParsersAction, name: str,
              help_text: str) -> argparse._SubParsersAction:
    """`stepledger NAME ACTION ...`: a command group; returns the subparsers of its actions."""
    group = subparsers.add_parser(name, help=help_text)
    return group.add_subparsers(dest=f"{name.replace('-', '_')}_command", metavar="ACTION",
                                required=True)


def add_api_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", help="API base URL (default STEPLEDGER_URL, else the local stack)")
    p.add_argument("--token", help="API token (default STEPLEDGER_TOKEN, else an operator token "
                                   "of the local stack)")


def add_read_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pipeline", help="pipeline of events that do not name one "
                                      "(legacy logs: default botimage)")
    p.add_argument("--client", help="client of events that do not name one")
    p.add_argument("--tz", default="UTC",
                   help="time zone of timestamps without an offset (default UTC)")
    p.add_argument("--strict", action="store_true",
                   help="legacy logs: every non-blank line must be a step line")


def print_rows(read: Callable[[psycopg.Connection], Sequence[tuple[Any, ...]]],
               line: Callable[..., str]) -> int:
    """The listing commands: read rows as the schema owner, print `line(*row)` for each."""
    from stepledger.db import connect_owner

    with connect_owner() as conn:
        rows = read(conn)
    for row in rows:
        print(line(*row))
    return 0
