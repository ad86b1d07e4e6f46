"""`stepledger backup FILE` / `stepledger restore FILE`: pg_dump -Fc / pg_restore (superuser)."""

from __future__ import annotations

import argparse
from pathlib import Path

from stepledger.operator import backup
from stepledger.settings import Settings


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("backup", help="dump the database to FILE (pg_dump -Fc)")
    p.add_argument("file", metavar="FILE", type=Path)
    p.set_defaults(func=cmd_backup)
    p = subparsers.add_parser("restore",
                              help="replace the database with the dump in FILE (pg_restore)")
    p.add_argument("file", metavar="FILE", type=Path)
    p.set_defaults(func=cmd_restore)


def cmd_backup(args: argparse.Namespace) -> int:
    path = backup.backup(Settings.from_env(), args.file)
    print(f"stepledger: backup written to {path} ({path.stat().st_size} bytes)")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    backup.restore(Settings.from_env(), args.file)
    print(f"stepledger: restored {args.file}")
    return 0
