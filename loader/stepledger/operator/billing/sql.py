"""Running billing statements and reading their JSON answers exactly (numbers as Decimal)."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import psycopg

from stepledger import StepledgerError


def loads(text: str) -> Any:
    """JSON with every non-integer number as Decimal, so money stays exact."""
    return json.loads(text, parse_float=Decimal)


def one_json(conn: psycopg.Connection, query: str, params: list[object]) -> Any:
    """Run a statement whose single value is JSON text; database errors become one line."""
    try:
        row = conn.execute(query, params).fetchone()  # type: ignore[arg-type]
    except psycopg.Error as exc:
        raise StepledgerError(error_line(exc)) from None
    if row is None or row[0] is None:
        return None
    return loads(row[0])


def error_line(exc: psycopg.Error) -> str:
    diag = exc.diag
    message = diag.message_primary or str(exc).strip().splitlines()[0]
    if diag.message_hint:
        message += f" ({diag.message_hint})"
    return message


def dumps(value: Any, indent: int | None = 2) -> str:
    """JSON text that writes Decimal numbers as they are (json.dumps would need floats).
    indent None: one line."""
    return _dump(value, indent, 0)


def _dump(value: Any, indent: int | None, level: int) -> str:
    if indent is None:
        pad = inner = ""
        open_nl = close_nl = ""
        sep = ", "
    else:
        pad, inner = " " * (indent * level), " " * (indent * (level + 1))
        open_nl, close_nl, sep = "\n", "\n" + pad, ",\n"
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = [f"{inner}{json.dumps(str(k))}: {_dump(v, indent, level + 1)}"
                 for k, v in value.items()]
        return "{" + open_nl + sep.join(items) + close_nl + "}"
    if isinstance(value, list | tuple):
        if not value:
            return "[]"
        items = [f"{inner}{_dump(v, indent, level + 1)}" for v in value]
        return "[" + open_nl + sep.join(items) + close_nl + "]"
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"{value} is not a JSON number")
        return str(value)
    return json.dumps(value)
