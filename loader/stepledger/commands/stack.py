"""`stepledger up | down | status | migrate`: the local stack."""

from __future__ import annotations

import argparse
import functools
import json
from collections.abc import Callable

import psycopg

from stepledger import StepledgerError, stack
from stepledger.settings import Settings


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("up", help="start PostgreSQL, migrate, start PostgREST and nginx")
    p.add_argument("--no-migrate", action="store_true", help="start without running migrations")
    p.set_defaults(func=cmd_up)

    p = subparsers.add_parser("down", help="stop the local stack")
    p.set_defaults(func=cmd_down)

    p = subparsers.add_parser("status", help="show which components of the local stack run")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_status)

    p = subparsers.add_parser("migrate", help="apply bootstrap, migrations, functions, policies")
    p.add_argument("--reapply", action="store_true",
                   help="re-apply every function, view and policy even when none changed "
                        "(after an edit by hand); a migrate with nothing new leaves them alone")
    p.set_defaults(func=cmd_migrate)


Command = Callable[[argparse.Namespace], int]


def _db_errors(func: Command) -> Command:
    """Turn connection failures into one-line errors."""
    @functools.wraps(func)
    def wrapper(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except psycopg.OperationalError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StepledgerError(f"database: {first}") from None
    return wrapper


@_db_errors
def cmd_up(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    warnings = stack.up(settings, migrate=not args.no_migrate)
    _print_status(stack.status(settings))
    for warning in warnings:
        print(f"warning: {warning}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    stack.down(settings)
    print("stepledger: stack stopped")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    info = stack.status(Settings.from_env())
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        _print_status(info)
    components = ("postgres", "postgrest", "nginx")
    workers_up = all(w["up"] for w in info["postgres"]["citus_workers"])  # type: ignore[index]
    return 0 if workers_up and all(info[c]["up"] for c in components) else 3  # type: ignore[index]


@_db_errors
def cmd_migrate(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    result = stack.run_migrations(settings, reapply=args.reapply)
    applied = result.get("applied") if isinstance(result, dict) else None
    suffix = f" (applied: {', '.join(applied)})" if applied else ""
    if isinstance(result, dict) and result.get("definitions") == "unchanged":
        suffix += " (functions, views and policies unchanged)"
    print(f"stepledger: migrated {settings.dbname} on {settings.pg_host}:{settings.pg_port}"
          f"{suffix}")
    return 0


def _print_status(info: dict[str, object]) -> None:
    rows = [
        ("postgres", info["postgres"], "url"),
        ("postgrest", info["postgrest"], "url"),
        ("nginx", info["nginx"], "url"),
    ]
    for name, comp, key in rows:
        assert isinstance(comp, dict)
        state = "up" if comp["up"] else "down"
        if name == "postgrest" and comp["up"] and not comp["ready"]:
            state = "up (not ready: schema cache not loaded)"
        user = f" as {comp['user']}" if comp.get("user") else ""
        print(f"{name:<10} {state:<5} {comp[key]}{user}")
        for worker in comp.get("citus_workers", []):
            print(f"  {worker['node']:<8} {'up' if worker['up'] else 'down':<5} "
                  f"port {worker['port']} (Citus worker)")
    print(f"{'home':<10} {info['home']}")
    print(f"{'logs':<10} {info['logs']}")
    for note in info["notes"]:  # type: ignore[attr-defined]
        print(f"note: {note}")
