"""`stepledger scheduler run|start|stop|status`: the stack's periodic database tasks."""

from __future__ import annotations

import argparse
import json

from stepledger.commands import add_group
from stepledger.settings import Settings
from stepledger.stack import scheduler


def register(subparsers: argparse._SubParsersAction) -> None:
    sub = add_group(subparsers, "scheduler", "periodic tasks: usage refresh, partitions")
    run = sub.add_parser("run", help="run in the foreground until interrupted")
    run.add_argument("--refresh-every", type=float, default=None, metavar="SECONDS",
                     help="refresh usage and analytics this often (default: the database's "
                          "schedule, ledger.scheduled_tasks())")
    run.add_argument("--once", action="store_true", help="run every task once, then exit")
    run.set_defaults(func=cmd_run)
    start = sub.add_parser("start", help="start in the background (stepledger up does it)")
    start.add_argument("--refresh-every", type=float, default=None, metavar="SECONDS")
    start.set_defaults(func=cmd_start)
    sub.add_parser("stop", help="stop the background scheduler").set_defaults(func=cmd_stop)
    sub.add_parser("status", help="is it running").set_defaults(func=cmd_status)


def _positive(seconds: float | None) -> float | None:
    if seconds is not None and seconds <= 0:
        from stepledger import StepledgerError
        raise StepledgerError("--refresh-every must be a positive number of seconds")
    return seconds


def cmd_run(args: argparse.Namespace) -> int:
    scheduler.main_loop(Settings.from_env(), _positive(args.refresh_every), args.once)
    return 0


def cmd_start(args: argparse.Namespace) -> int:
    pid = scheduler.start(Settings.from_env(), _positive(args.refresh_every))
    print(f"stepledger: scheduler running (pid {pid})")
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    stopped = scheduler.stop(Settings.from_env())
    print("stepledger: scheduler stopped" if stopped else "stepledger: scheduler was not running")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    info = scheduler.status(Settings.from_env())
    print(json.dumps(info))
    return 0 if info["up"] else 3
