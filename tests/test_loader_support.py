"""Helpers shared by the loader, replay, tail and SDK tests (no tests of its own)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

import stacks
from stacks import BOTIMAGE
from stepledger import cli
from stepledger.demo import simulate
from stepledger.ingest.readers.legacy import format_line

STEP_NUMBER = {s["key"]: i + 1 for i, s in enumerate(BOTIMAGE["steps"])}
CLIENTS = (("st-mary", "St Mary's Hospital"), ("riverside", "Riverside Clinic"),
           ("northgate", "Northgate Imaging"))


def register_catalog(conn: psycopg.Connection) -> None:
    stacks.register_catalog(conn)  # BotImage; the clients below only when missing
    for client_id, name in CLIENTS:
        # Only when missing: `stepledger demo` (another test) bills northgate in GBP, and a
        # currency cannot change once something is billed in it.
        conn.execute("select ledger.create_client(%s, %s) where not exists "
                     "(select from ledger.clients where client_id = %s)",
                     [client_id, name, client_id])


def new_tag() -> str:
    return "t" + uuid.uuid4().hex[:10]


def botimage_events(tag: str, clients: tuple[str, ...] = ("st-mary",), jobs: int = 3,
                    seed: int = 3) -> list[dict[str, Any]]:
    """Realistic BotImage events whose job and event ids carry `tag` (unique per test)."""
    events = []
    for event in simulate.history(list(clients), jobs, datetime.now(UTC), seed=seed):
        event = dict(event)
        event["job_id"] = f"{tag}-{event['job_id']}"
        event["event_id"] = f"{tag}-{event['event_id']}"
        events.append(event)
    return events


def write_ndjson(path: Path, events: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return path


def legacy_lines(events: list[dict[str, Any]], with_attempt: bool = True) -> list[str]:
    return [format_line(e, STEP_NUMBER[str(e["step"])], len(STEP_NUMBER), with_attempt)
            for e in events]


def count(conn: psycopg.Connection, query: str, params: list[object]) -> int:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return int(row[0])


def events_of(conn: psycopg.Connection, tag: str) -> int:
    return count(conn, "select count(*) from ledger.events where job_id like %s", [f"{tag}-%"])


def run_cli(capsys: Any, *args: str) -> tuple[int, str, str]:
    """Run the stepledger CLI in this process; returns (exit status, stdout, stderr)."""
    capsys.readouterr()
    try:
        code = cli.main(list(args))
    except SystemExit as exc:  # argparse
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def wait_for(check: Callable[[], object], timeout: float = 30.0, what: str = "condition",
             interval: float = 0.1) -> Any:
    """Poll `check` until it returns a truthy value; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {value!r})")
        time.sleep(interval)


def lines_of(text: str) -> Iterator[str]:
    return (line for line in text.splitlines() if line.strip())
