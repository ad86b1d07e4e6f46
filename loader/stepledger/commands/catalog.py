"""`stepledger client add` and `stepledger pipeline add|list`: the catalog."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from stepledger import StepledgerError
from stepledger.config import Settings
from stepledger.db import call, connect_owner


def register(subparsers: argparse._SubParsersAction) -> None:
    client = subparsers.add_parser("client", help="manage clients (billed organisations)")
    client_sub = client.add_subparsers(dest="client_command", metavar="ACTION", required=True)
    p = client_sub.add_parser("add", help="add a client, or rename it / change its currency")
    p.add_argument("client_id", metavar="ID", help="slug events carry in client_id, e.g. st-mary")
    p.add_argument("--name", required=True, help="display name")
    p.add_argument("--currency", default="EUR", help="ISO 4217 code (default EUR)")
    p.set_defaults(func=cmd_client_add)

    pipeline = subparsers.add_parser("pipeline", help="manage pipelines and their steps")
    pipeline_sub = pipeline.add_subparsers(dest="pipeline_command", metavar="ACTION", required=True)
    p = pipeline_sub.add_parser("add", help="register a pipeline definition (or a new version)")
    p.add_argument("file", type=Path, metavar="FILE.json", help="see schemas/pipeline.v1.json")
    p.set_defaults(func=cmd_pipeline_add)
    p = pipeline_sub.add_parser("list", help="list registered pipelines")
    p.set_defaults(func=cmd_pipeline_list)


def read_definition(path: Path) -> dict[str, object]:
    try:
        document = json.loads(path.read_text())
    except OSError as exc:
        raise StepledgerError(f"{path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise StepledgerError(
            f"{path}:{exc.lineno}:{exc.colno}: not valid JSON: {exc.msg}") from None
    if not isinstance(document, dict):
        raise StepledgerError(f"{path}: a pipeline definition is a JSON object")
    return document


def cmd_client_add(args: argparse.Namespace) -> int:
    with connect_owner(Settings.from_env()) as conn:
        row = call(conn, "select to_jsonb(c) from ledger.add_client(%s, %s, %s) c",
                   [args.client_id, args.name, args.currency])
    print(f"stepledger: client {row['client_id']} ({row['name']}, {row['currency']})")  # type: ignore[index]
    return 0


def cmd_pipeline_add(args: argparse.Namespace) -> int:
    definition = read_definition(args.file)
    with connect_owner(Settings.from_env()) as conn:
        result = call(conn, "select ledger.register_pipeline(%s::jsonb)", [json.dumps(definition)])
    assert isinstance(result, dict)
    if result["changed"]:
        print(f"stepledger: pipeline {result['pipeline']} version {result['version']} "
              f"with {result['steps']} steps")
    else:
        print(f"stepledger: pipeline {result['pipeline']} unchanged (version {result['version']})")
    return 0


def cmd_pipeline_list(args: argparse.Namespace) -> int:
    with connect_owner(Settings.from_env()) as conn:
        rows = conn.execute("select pipeline, version, steps_total, stall_timeout::text, title "
                            "from ledger.pipelines order by pipeline").fetchall()
    for pipeline, version, steps, stall, title in rows:
        print(f"{pipeline:<20} v{version:<3} {steps:>3} steps  stall after {stall:<10} {title}")
    return 0
