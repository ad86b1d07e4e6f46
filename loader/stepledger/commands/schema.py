"""`stepledger schema-snapshot` and `stepledger erd`: the schema as reviewers read it, rewritten
from the database (db/schema.snapshot from a fresh scratch migration, docs/erd.md from the
stack's catalog)."""

from __future__ import annotations

import argparse
from pathlib import Path

from stepledger.schema.erd import current_erd, erd_path
from stepledger.schema.snapshot import fresh_schema, snapshot_path
from stepledger.settings import Settings


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("schema-snapshot",
                              help="rewrite db/schema.snapshot (pg_dump of a fresh migration)")
    p.set_defaults(func=cmd_schema_snapshot)
    p = subparsers.add_parser("erd", help="rewrite docs/erd.md (entity-relationship diagram of "
                                          "ledger and auth, from the running stack)")
    p.set_defaults(func=cmd_erd)


def cmd_schema_snapshot(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    return _rewrite(snapshot_path(settings), fresh_schema(settings))


def cmd_erd(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    return _rewrite(erd_path(settings), current_erd(settings))


def _rewrite(path: Path, text: str) -> int:
    changed = not path.exists() or path.read_text() != text
    path.write_text(text)
    print(f"stepledger: {path} {'rewritten' if changed else 'unchanged'} "
          f"({len(text.splitlines())} lines)")
    return 0
