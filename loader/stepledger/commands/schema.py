"""`stepledger schema-snapshot`: rewrite db/schema.snapshot from a fresh scratch migration."""

from __future__ import annotations

import argparse

from stepledger.schema.snapshot import fresh_schema, snapshot_path
from stepledger.settings import Settings


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("schema-snapshot",
                              help="rewrite db/schema.snapshot (pg_dump of a fresh migration)")
    p.set_defaults(func=cmd_schema_snapshot)


def cmd_schema_snapshot(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    path = snapshot_path(settings)
    text = fresh_schema(settings)
    changed = not path.exists() or path.read_text() != text
    path.write_text(text)
    print(f"stepledger: {path} {'rewritten' if changed else 'unchanged'} "
          f"({len(text.splitlines())} lines)")
    return 0
