"""The catalog for operators: clients (billed organisations) and pipelines with their steps.

Changes go through the database's functions (ledger.create_client, ledger.update_client,
ledger.register_pipeline, db/functions/20_catalog.sql), which check them; these call them as
the schema owner.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg

from stepledger import StepledgerError
from stepledger.db import call

_CLIENT_CHANGES = {
    "create": "select to_jsonb(c) from ledger.create_client(%s, %s, %s, %s) c",
    "update": "select to_jsonb(c) from ledger.update_client(%s, %s, %s, %s) c",
}


def read_definition(path: Path) -> dict[str, object]:
    """A pipeline definition file (schemas/pipeline.v1.json) as a JSON object."""
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


def change_client(conn: psycopg.Connection, change: str, client_id: str, name: str | None,
                  currency: str | None, payment_terms_days: int | None) -> dict[str, Any]:
    """`create` a client, or `update` the given fields of one; returns the client's row."""
    row = call(conn, _CLIENT_CHANGES[change], [client_id, name, currency, payment_terms_days])
    assert isinstance(row, dict)
    return row


def clients(conn: psycopg.Connection) -> list[tuple[Any, ...]]:
    """(client id, currency, payment terms in days, name) of every client."""
    return conn.execute("select client_id, currency, payment_terms_days, name "
                        "from ledger.clients order by client_id").fetchall()


def register_pipeline(conn: psycopg.Connection, definition: dict[str, object]) -> dict[str, Any]:
    """Register a pipeline definition, or a new version of it; says whether it changed."""
    result = call(conn, "select ledger.register_pipeline(%s::jsonb)", [json.dumps(definition)])
    assert isinstance(result, dict)
    return result


def pipelines(conn: psycopg.Connection) -> list[tuple[Any, ...]]:
    """(pipeline, version, number of steps, stall timeout, title) of every pipeline."""
    return conn.execute("select pipeline, version, steps_total, stall_timeout::text, title "
                        "from ledger.pipelines order by pipeline").fetchall()


def pipeline(conn: psycopg.Connection,
             name: str) -> tuple[tuple[Any, ...], list[tuple[Any, ...]]]:
    """A pipeline's (title, version, stall timeout) and its (index, step key, title) in order."""
    head = conn.execute("select title, version, stall_timeout::text from ledger.pipelines "
                        "where pipeline = %s", [name]).fetchone()
    if head is None:
        names = [r[0] for r in conn.execute(
            "select pipeline from ledger.pipelines order by pipeline").fetchall()]
        known = ", ".join(names) if names else "none yet (stepledger pipeline add FILE.json)"
        raise StepledgerError(f"unknown pipeline {name!r}; registered: {known}")
    steps = conn.execute("select step_index, step, title from ledger.pipeline_steps "
                         "where pipeline = %s order by step_index", [name]).fetchall()
    return head, steps
