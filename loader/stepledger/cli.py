"""The `stepledger` command line: subcommands are discovered from stepledger.commands."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

from stepledger import StepledgerError, __version__, commands

# What the `operator` extra installs: the command line needs it, the pipeline SDK does not.
OPERATOR_MODULES = frozenset({"psycopg", "yoyo", "sqlparse", "jinja2", "weasyprint"})
OPERATOR_EXTRA_MISSING = ("the command line needs the operator extra, which is not installed "
                          "(no module {module!r}): pip install 'stepledger[operator]'")


def _operator_extra_missing(exc: ModuleNotFoundError) -> int:
    """One clear line when a module of the operator extra is missing; anything else is a bug."""
    module = (exc.name or "").partition(".")[0]
    if module not in OPERATOR_MODULES:
        raise exc
    print(f"stepledger: {OPERATOR_EXTRA_MISSING.format(module=module)}", file=sys.stderr)
    return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stepledger",
        description="PostgreSQL-native ledger for pipeline steps: local stack and operator tools.",
    )
    parser.add_argument("--version", action="version", version=f"stepledger {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        register = getattr(module, "register", None)
        if callable(register):
            register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = build_parser()
    except ModuleNotFoundError as exc:
        return _operator_extra_missing(exc)
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(func(args) or 0)
    except ModuleNotFoundError as exc:
        # A module imported lazily by one command (WeasyPrint for invoice PDFs, yoyo to migrate).
        return _operator_extra_missing(exc)
    except StepledgerError as exc:
        print(f"stepledger: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("stepledger: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
