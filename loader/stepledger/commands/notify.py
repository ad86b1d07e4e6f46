"""`stepledger notify run|start|stop|status`: the notification delivery worker."""

from __future__ import annotations

import argparse
import json

from stepledger.commands import add_group
from stepledger.operator import notify
from stepledger.settings import Settings


def register(subparsers: argparse._SubParsersAction) -> None:
    sub = add_group(subparsers, "notify", "notification delivery: webhooks and e-mail alerts")
    sub.add_parser("run", help="run in the foreground until interrupted").set_defaults(func=cmd_run)
    sub.add_parser("start", help="start in the background (stepledger up does it)") \
        .set_defaults(func=cmd_start)
    sub.add_parser("stop", help="stop the background worker").set_defaults(func=cmd_stop)
    sub.add_parser("status", help="is it running").set_defaults(func=cmd_status)


def cmd_run(args: argparse.Namespace) -> int:
    notify.main_loop(Settings.from_env())
    return 0


def cmd_start(args: argparse.Namespace) -> int:
    pid = notify.start(Settings.from_env())
    print(f"stepledger: notification worker running (pid {pid})")
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    stopped = notify.stop(Settings.from_env())
    print("stepledger: notification worker stopped" if stopped
          else "stepledger: notification worker was not running")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    info = notify.status(Settings.from_env())
    print(json.dumps(info))
    return 0 if info["up"] else 3
