"""`stepledger client add|update|list` and `stepledger pipeline add|list|show`: the catalog."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from stepledger import StepledgerError
from stepledger.db import call, connect_owner
from stepledger.settings import Settings


def register(subparsers: argparse._SubParsersAction) -> None:
    client = subparsers.add_parser("client", help="manage clients (billed organisations)")
    client_sub = client.add_subparsers(dest="client_command", metavar="ACTION", required=True)
    p = client_sub.add_parser("add", help="add a new client (an existing id is refused)")
    p.add_argument("client_id", metavar="ID", help="slug events carry in client_id, e.g. st-mary")
    p.add_argument("--name", required=True, help="display name")
    p.add_argument("--currency", default="EUR", help="ISO 4217 code (default EUR)")
    p.add_argument("--payment-terms", type=int, metavar="DAYS",
                   help="days from an invoice's issue date to its due date (default 30)")
    p.set_defaults(func=cmd_client_add)
    p = client_sub.add_parser(
        "update", help="change a client's name, currency or payment terms",
        description="Change an existing client. The currency can change only while nothing is "
                    "billed in the old one (no own prices, minimums, open or finalized invoices).")
    p.add_argument("client_id", metavar="ID")
    p.add_argument("--name", help="new display name")
    p.add_argument("--currency", help="new ISO 4217 code")
    p.add_argument("--payment-terms", type=int, metavar="DAYS",
                   help="days from an invoice's issue date to its due date")
    p.set_defaults(func=cmd_client_update)
    p = client_sub.add_parser("list", help="list clients")
    p.set_defaults(func=cmd_client_list)

    pipeline = subparsers.add_parser("pipeline", help="manage pipelines and their steps")
    pipeline_sub = pipeline.add_subparsers(dest="pipeline_command", metavar="ACTION", required=True)
    p = pipeline_sub.add_parser("add", help="register a pipeline definition (or a new version)")
    p.add_argument("file", type=Path, metavar="FILE.json", help="see schemas/pipeline.v1.json")
    p.set_defaults(func=cmd_pipeline_add)
    p = pipeline_sub.add_parser("list", help="list registered pipelines")
    p.set_defaults(func=cmd_pipeline_list)
    p = pipeline_sub.add_parser("show", help="a pipeline's steps: the keys events carry in step, "
                                             "with their titles")
    p.add_argument("pipeline", metavar="NAME")
    p.set_defaults(func=cmd_pipeline_show)


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


def _client_line(row: dict[str, object]) -> str:
    return (f"{row['client_id']} ({row['name']}, {row['currency']}, "
            f"payment terms {row['payment_terms_days']} days)")


def cmd_client_add(args: argparse.Namespace) -> int:
    with connect_owner(Settings.from_env()) as conn:
        row = call(conn, "select to_jsonb(c) from ledger.create_client(%s, %s, %s, %s) c",
                   [args.client_id, args.name, args.currency, args.payment_terms])
    assert isinstance(row, dict)
    print(f"stepledger: client {_client_line(row)} added")
    return 0


def cmd_client_update(args: argparse.Namespace) -> int:
    if args.name is None and args.currency is None and args.payment_terms is None:
        raise StepledgerError("nothing to change: give --name, --currency or --payment-terms")
    with connect_owner(Settings.from_env()) as conn:
        row = call(conn, "select to_jsonb(c) from ledger.update_client(%s, %s, %s, %s) c",
                   [args.client_id, args.name, args.currency, args.payment_terms])
    assert isinstance(row, dict)
    print(f"stepledger: client {_client_line(row)}")
    return 0


def cmd_client_list(args: argparse.Namespace) -> int:
    with connect_owner(Settings.from_env()) as conn:
        rows = conn.execute("select client_id, currency, payment_terms_days, name "
                            "from ledger.clients order by client_id").fetchall()
    for client_id, currency, terms, name in rows:
        print(f"{client_id:<24} {currency}  {terms:>3} days  {name}")
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


def cmd_pipeline_show(args: argparse.Namespace) -> int:
    with connect_owner(Settings.from_env()) as conn:
        head = conn.execute("select title, version, stall_timeout::text from ledger.pipelines "
                            "where pipeline = %s", [args.pipeline]).fetchone()
        if head is None:
            names = [r[0] for r in conn.execute(
                "select pipeline from ledger.pipelines order by pipeline").fetchall()]
            known = ", ".join(names) if names else "none yet (stepledger pipeline add FILE.json)"
            raise StepledgerError(f"unknown pipeline {args.pipeline!r}; registered: {known}")
        steps = conn.execute("select step_index, step, title from ledger.pipeline_steps "
                             "where pipeline = %s order by step_index", [args.pipeline]).fetchall()
    title, version, stall = head
    print(f"{args.pipeline}: {title} (version {version}, {len(steps)} steps, "
          f"stalled after {stall})")
    width = max((len(step) for _, step, _ in steps), default=4)
    print(f"{'#':>3}  {'step key':<{width}}  title")
    for index, step, step_title in steps:
        print(f"{index:>3}  {step:<{width}}  {step_title}")
    return 0
