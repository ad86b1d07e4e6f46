"""`stepledger tail FILE`: follow a growing legacy log and ingest its lines as they appear."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path
from types import FrameType

from stepledger import StepledgerError
from stepledger.api_client import IngestClient, IngestResult
from stepledger.commands import add_api_arguments, add_read_arguments
from stepledger.ingest.credentials import api_credentials
from stepledger.ingest.readers.legacy import LegacyConverter
from stepledger.ingest.tail import Tailer, TailStats, default_state_path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "tail", help="follow a growing legacy log and ingest lines as they appear",
        description="Follow FILE as the program writes it and ingest each complete line. The "
                    "position reached is saved after every stored batch, so a restart resumes "
                    "without gaps; lines sent twice count once. Stops on SIGTERM or Ctrl-C.")
    p.add_argument("file", type=Path, metavar="FILE")
    p.add_argument("--format", choices=("legacy", "ndjson"), default="legacy",
                   help="legacy log lines (default) or NDJSON events")
    add_read_arguments(p)
    p.add_argument("--state", type=Path,
                   help="state file (default ~/.local/state/stepledger/tail/<name>-<hash>.json)")
    p.add_argument("--wait", action="store_true",
                   help="wait for FILE to appear instead of refusing a missing file")
    p.add_argument("--from-end", action="store_true",
                   help="first run only: skip what the file holds already")
    p.add_argument("--poll", type=float, default=0.5, help="seconds between checks (default 0.5)")
    p.add_argument("--batch-size", type=int, default=500, help="lines per request (default 500)")
    p.add_argument("--quiet", action="store_true", help="do not print a line per batch")
    add_api_arguments(p)
    p.set_defaults(func=cmd_tail)


def cmd_tail(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="stepledger: %(message)s")
    if not args.wait and not args.file.is_file():
        reason = "not a regular file" if args.file.exists() else "no such file"
        raise StepledgerError(f"cannot read {args.file}: {reason} (--wait waits for it to appear)")
    url, token = api_credentials(args.url, args.token)
    converter = LegacyConverter(pipeline=args.pipeline or "botimage", client=args.client,
                                tz=args.tz, strict=args.strict)
    state = args.state or default_state_path(args.file)

    def report(stats: TailStats, result: IngestResult) -> None:
        if not args.quiet:
            print(f"stepledger: {args.file}: line {tailer.state.line:,}: +{result.accepted} "
                  f"accepted, {result.duplicates} duplicates, {len(result.rejected)} rejected",
                  flush=True)

    with IngestClient(url, token) as client:
        client.check_reachable()  # once following, it rides out outages of the API instead
        tailer = Tailer(args.file, client, converter, state_path=state, fmt=args.format,
                        poll_s=args.poll, batch_size=args.batch_size, on_batch=report)

        def stop(signum: int, frame: FrameType | None) -> None:
            tailer.stop.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        if not args.quiet:
            print(f"stepledger: following {args.file} (state in {state})", file=sys.stderr,
                  flush=True)
        stats = tailer.run()
    print(f"stepledger: stopped at line {tailer.state.line:,} of {args.file}: {stats.accepted:,} "
          f"accepted, {stats.duplicates:,} duplicates, {stats.rejected:,} rejected, "
          f"{stats.skipped:,} other lines", flush=True)
    return 0
