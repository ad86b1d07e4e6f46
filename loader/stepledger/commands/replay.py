"""`stepledger replay`: reprocess vault rows, e.g. after a missing step was registered."""

from __future__ import annotations

import argparse

from stepledger.api_client import IngestClient
from stepledger.commands import add_api_arguments
from stepledger.ingest.credentials import api_credentials
from stepledger.ingest.progress import Progress
from stepledger.operator.replay import OUTCOMES, parse_moment, replay


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "replay", help="reprocess vault rows through the current validation and catalog",
        description="Reprocess vault rows (by current outcome, arrival time and client) through "
                    "today's validation and catalog: rejected events that are valid now are "
                    "accepted; events already accepted count as duplicates, never twice. Each "
                    "vault row records its replays. Needs an admin token. Exit status: 0 none "
                    "still rejected, 3 some still rejected, 1 error.")
    p.add_argument("--outcome", choices=OUTCOMES, default="rejected",
                   help="current outcome of the rows to replay (default rejected)")
    p.add_argument("--since", help="rows received at or after this date or date-time (UTC)")
    p.add_argument("--until", help="rows received before this date or date-time (UTC)")
    p.add_argument("--client", help="only rows of this client")
    p.add_argument("--chunk", type=int, default=1000,
                   help="rows per transaction (default 1000, at most 10000)")
    p.add_argument("--dry-run", action="store_true", help="only count the matching rows")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    add_api_arguments(p)
    p.set_defaults(func=cmd_replay)


def cmd_replay(args: argparse.Namespace) -> int:
    since = parse_moment(args.since, "--since")
    until = parse_moment(args.until, "--until")
    url, token = api_credentials(args.url, args.token)
    with IngestClient(url, token, timeout=300.0) as client:
        summary = replay(client, outcome=args.outcome, since=since, until=until,
                         client_id=args.client, chunk=args.chunk, dry_run=args.dry_run,
                         progress=Progress(None, enabled=not args.quiet))
    for line in summary.lines():
        print(line)
    return 3 if summary.rejected else 0
