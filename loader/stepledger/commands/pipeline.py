"""`stepledger pipeline add|list|show`: pipelines and their steps."""

from __future__ import annotations

import argparse
from pathlib import Path

from stepledger.commands import add_group, print_rows
from stepledger.db import connect_owner
from stepledger.operator import catalog


def register(subparsers: argparse._SubParsersAction) -> None:
    pipeline_sub = add_group(subparsers, "pipeline", "manage pipelines and their steps")
    p = pipeline_sub.add_parser("add", help="register a pipeline definition (or a new version)")
    p.add_argument("file", type=Path, metavar="FILE.json", help="see schemas/pipeline.v1.json")
    p.set_defaults(func=cmd_pipeline_add)
    p = pipeline_sub.add_parser("list", help="list registered pipelines")
    p.set_defaults(func=cmd_pipeline_list)
    p = pipeline_sub.add_parser("show", help="a pipeline's steps: the keys events carry in step, "
                                             "with their titles")
    p.add_argument("pipeline", metavar="NAME")
    p.set_defaults(func=cmd_pipeline_show)


def cmd_pipeline_add(args: argparse.Namespace) -> int:
    definition = catalog.read_definition(args.file)
    with connect_owner() as conn:
        result = catalog.register_pipeline(conn, definition)
    if result["changed"]:
        print(f"stepledger: pipeline {result['pipeline']} version {result['version']} "
              f"with {result['steps']} steps")
    else:
        print(f"stepledger: pipeline {result['pipeline']} unchanged (version {result['version']})")
    return 0


def cmd_pipeline_list(args: argparse.Namespace) -> int:
    return print_rows(catalog.pipelines, lambda pipeline, version, steps, stall, title:
                      f"{pipeline:<20} v{version:<3} {steps:>3} steps  stall after {stall:<10} "
                      f"{title}")


def cmd_pipeline_show(args: argparse.Namespace) -> int:
    with connect_owner() as conn:
        head, steps = catalog.pipeline(conn, args.pipeline)
    title, version, stall = head
    print(f"{args.pipeline}: {title} (version {version}, {len(steps)} steps, "
          f"stalled after {stall})")
    width = max((len(step) for _, step, _ in steps), default=4)
    print(f"{'#':>3}  {'step key':<{width}}  title")
    for index, step, step_title in steps:
        print(f"{index:>3}  {step:<{width}}  {step_title}")
    return 0
