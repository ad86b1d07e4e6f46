"""`stepledger load FILE...`: NDJSON, JSON arrays, CSV and legacy logs into the ledger."""

from __future__ import annotations

import argparse
import contextlib
import sys

from stepledger import StepledgerError
from stepledger.api_client import IngestClient, RetryPolicy
from stepledger.commands import add_api_arguments, add_read_arguments
from stepledger.ingest.credentials import api_credentials
from stepledger.ingest.load import Loader, LoadOptions
from stepledger.ingest.progress import Progress
from stepledger.ingest.readers import FORMATS, ReadOptions, Source


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "load", help="load files of events: NDJSON, JSON arrays, CSV, legacy logs",
        description="Load events from files (.ndjson/.jsonl, .json, .csv, .log/.txt; .gz too). "
                    "Loading a file again adds nothing. Exit status: 0 all stored (or "
                    "duplicates), 3 some records rejected, 1 error.")
    p.add_argument("files", nargs="+", metavar="FILE", help="files to load; - reads standard input")
    p.add_argument("--format", choices=("auto", *FORMATS), default="auto",
                   help="input format (default: from the file name, else from its content)")
    add_read_arguments(p)
    p.add_argument("--extra-columns", choices=("error", "data", "ignore"), default="error",
                   help="CSV columns that are not envelope fields: refuse the file (default), "
                        "put them in data, or ignore them")
    p.add_argument("--batch-size", type=int, default=1000, help="events per request (default 1000)")
    p.add_argument("--workers", type=int, default=2, help="requests in flight (default 2)")
    p.add_argument("--errors", metavar="PATH", help="write every rejected line to PATH as NDJSON")
    p.add_argument("--show", type=int, default=20, help="rejected lines to print (default 20)")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    p.add_argument("--convert", action="store_true",
                   help="print the events as NDJSON instead of loading them (nothing is sent)")
    add_api_arguments(p)
    p.set_defaults(func=cmd_load)


def read_options(args: argparse.Namespace) -> ReadOptions:
    return ReadOptions(format=getattr(args, "format", "legacy"), client=args.client,
                       pipeline=args.pipeline, tz=args.tz, strict=args.strict,
                       extra_columns=getattr(args, "extra_columns", "error"))


def cmd_load(args: argparse.Namespace) -> int:
    if args.batch_size < 1 or args.batch_size > 10000:
        raise StepledgerError("--batch-size must be between 1 and 10000")
    if args.workers < 1:
        raise StepledgerError("--workers must be at least 1")
    options = read_options(args)
    if args.convert:
        return _convert(args.files, options)
    url, token = api_credentials(args.url, args.token)
    with contextlib.ExitStack() as stack:
        errors_to = stack.enter_context(open(args.errors, "w")) if args.errors else None
        client = stack.enter_context(IngestClient(url, token, timeout=300.0))
        client.check_reachable()
        progress = Progress(None, enabled=not args.quiet)
        loader = Loader(client, LoadOptions(read=options, batch_size=args.batch_size,
                                            workers=args.workers, max_shown=args.show,
                                            errors_to=errors_to, retry=RetryPolicy()),
                        progress)
        summary = loader.load(args.files)
    for line in summary.lines():
        print(line)
    return summary.exit_code


def _convert(paths: list[str], options: ReadOptions) -> int:
    bad = 0
    out = sys.stdout.buffer
    for path in paths:
        with Source(path, options) as source:
            for record in source.records():
                if record.body is not None:
                    out.write(record.body + b"\n")
                else:
                    bad += 1
                    print(f"{source.label}:{record.line}: {record.error}", file=sys.stderr)
    out.flush()
    return 3 if bad else 0
