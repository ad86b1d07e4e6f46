"""`stepledger demo-pipeline`: a mock BotImage pipeline that reports through the SDK."""

from __future__ import annotations

import argparse
from pathlib import Path

from stepledger import StepledgerError
from stepledger.commands import add_api_arguments
from stepledger.demo.mock_pipeline import (
    job_seconds,
    run_live,
)
from stepledger.demo.pipeline import DEMO_CLIENTS, run_demo_history, setup_catalog
from stepledger.ingest.credentials import api_credentials
from stepledger.sdk import Tracker
from stepledger.settings import Settings


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo-pipeline", help="run a mock BotImage pipeline that reports through the SDK",
        description="Run N jobs for each client through BotImage's 20 steps, with realistic "
                    "timings, failures and retries, reporting through stepledger.sdk. Live by "
                    "default (durations divided by --speed); --history fills the past two weeks "
                    "at once on a simulated clock.")
    p.add_argument("--clients", default=",".join(c[0] for c in DEMO_CLIENTS),
                   help="comma-separated client ids (default: the three demo clients)")
    p.add_argument("--jobs", type=int, default=3, help="jobs per client (default 3)")
    p.add_argument("--speed", type=float, default=100.0,
                   help="live mode: run steps this many times faster than real (default 100)")
    p.add_argument("--history", action="store_true",
                   help="jobs of the past two weeks on a simulated clock, at once")
    p.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    p.add_argument("--setup", action="store_true",
                   help="local stack: register the pipelines and the demo clients first")
    p.add_argument("--spool", type=Path, help="spool directory (default: the SDK's)")
    add_api_arguments(p)
    p.set_defaults(func=cmd_pipeline_demo)


def cmd_pipeline_demo(args: argparse.Namespace) -> int:
    clients = [c.strip() for c in args.clients.split(",") if c.strip()]
    if not clients or args.jobs < 1:
        raise StepledgerError("give at least one client and --jobs >= 1")
    if args.speed <= 0:
        raise StepledgerError("--speed must be positive")
    if args.setup:
        setup_catalog(Settings.from_env())
    url, token = api_credentials(args.url, args.token)
    if args.history:
        summary, tracker = run_demo_history(url, token, clients, args.jobs, args.seed)
    else:
        print(f"stepledger: {len(clients)} client(s) x {args.jobs} job(s), about "
              f"{job_seconds(args.speed):.0f}s per job at speed {args.speed:g}", flush=True)
        with Tracker(url, token, pipeline="botimage", spool_dir=args.spool) as tracker:
            summary = run_live(tracker, clients, args.jobs, args.speed, seed=args.seed)
    ended = ", ".join(f"{n} {outcome}" for outcome, n in sorted(summary.jobs.items()))
    print(f"stepledger: {sum(summary.jobs.values())} jobs ({ended}), {summary.events} events: "
          f"{tracker.stats.accepted} accepted, {tracker.stats.duplicates} duplicates, "
          f"{tracker.stats.rejected} rejected")
    return 0 if tracker.stats.rejected == 0 else 3
