"""The price book and monthly minimums: parse operator input, append rows (never update)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import psycopg

from stepledger import StepledgerError
from stepledger.db import call, call_json, dumps, error_line

INVALID_PERIOD = "SL405"  # ledger._parse_period: not a month written YYYY-MM


@dataclass(frozen=True)
class Tier:
    """From `from_units` units of a step in a month on, `unit_price` applies."""

    from_units: Decimal
    unit_price: Decimal

    def as_json(self) -> dict[str, Decimal]:
        return {"from_units": self.from_units, "unit_price": self.unit_price}


def parse_amount(text: str, what: str = "price") -> Decimal:
    """A non-negative decimal number, e.g. 0.05."""
    try:
        value = Decimal(text.strip())
    except (InvalidOperation, AttributeError):
        raise StepledgerError(f"{what} {text!r} is not a number") from None
    if not value.is_finite() or value < 0:
        raise StepledgerError(f"{what} must be a number >= 0, not {text!r}")
    return value


def parse_tier(text: str) -> Tier:
    """FROM_UNITS:UNIT_PRICE, e.g. 1000:0.03; the database checks the tiers (_normalized_tiers)."""
    head, sep, tail = text.partition(":")
    if not sep:
        raise StepledgerError(f"tier {text!r} must be FROM_UNITS:UNIT_PRICE, e.g. 1000:0.03")
    return Tier(parse_amount(head, "tier units"), parse_amount(tail, "tier price"))


def parse_effective_from(text: str) -> datetime:
    """YYYY-MM-DD (midnight UTC) or an ISO 8601 instant (UTC when it has no offset)."""
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            moment = datetime.combine(date.fromisoformat(text), datetime.min.time())
        else:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise StepledgerError(f"--from {text!r} is not a date (YYYY-MM-DD) or ISO 8601 instant") \
            from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_month(conn: psycopg.Connection, text: str) -> date:
    """YYYY-MM to the first day of that month, read as the database reads a billing period."""
    try:
        row = conn.execute("select ledger._parse_period(%s)", [text]).fetchone()
    except psycopg.Error as exc:
        if exc.sqlstate == INVALID_PERIOD:
            raise StepledgerError(f"{text!r} is not a month (YYYY-MM)") from None
        raise StepledgerError(error_line(exc)) from None
    assert row is not None
    return row[0]


def set_price(conn: psycopg.Connection, pipeline: str, step: str, unit_price: Decimal, *,
              client_id: str | None = None, currency: str | None = None,
              effective_from: datetime | None = None, tiers: Sequence[Tier] = (),
              note: str | None = None) -> dict[str, Any]:
    """Append a price row; the database validates it and records who and when."""
    price_id = call(conn, "select ledger.add_price(%s, %s, %s, %s, %s, %s, %s::jsonb, %s)",
                    [pipeline, step, unit_price, client_id, currency, effective_from,
                     dumps([t.as_json() for t in tiers], indent=None), note])
    row = call_json(conn, "select to_jsonb(p)::text from ledger.prices p where p.price_id = %s",
                    [price_id])
    assert isinstance(row, dict)
    return row


def set_minimum(conn: psycopg.Connection, client_id: str, amount: Decimal, month: date, *,
                currency: str | None = None, note: str | None = None) -> dict[str, Any]:
    """Append a monthly minimum for a client from a month on (0 ends a minimum)."""
    minimum_id = call(conn, "select ledger.add_client_minimum(%s, %s, %s, %s, %s)",
                      [client_id, amount, month, currency, note])
    row = call_json(conn, "select to_jsonb(m)::text from ledger.client_minimums m "
                          "where m.client_id = %s and m.minimum_id = %s", [client_id, minimum_id])
    assert isinstance(row, dict)
    return row


def list_prices(conn: psycopg.Connection, pipeline: str | None = None,
                client_id: str | None = None) -> list[dict[str, Any]]:
    """Price rows, with the instant each stops being in force (`until`, null: open-ended) and
    its `status` now: `scheduled` (from a later date), `in force` or `superseded`."""
    if client_id is not None and call_json(
            conn, "select to_jsonb(exists (select from ledger.clients where client_id = %s))::text",
            [client_id]) is not True:
        raise StepledgerError(f"unknown client {client_id!r} (see `stepledger client list`)")
    # The state of each row (in force, scheduled, superseded) is the database's: api.prices.
    # `until` is when the next row of the same pipeline, step, client and currency takes over.
    rows = call_json(conn, """
        select coalesce(jsonb_agg(to_jsonb(p)
                                  order by p.pipeline, p.step_index, p.client_id nulls first,
                                           p.currency, p.effective_from, p.price_id),
                        '[]')::text
          from (
            select pr.*, s.step_index, book.state as status,
                   lead(pr.effective_from) over (
                     partition by pr.client_id, pr.pipeline, pr.step, pr.currency
                     order by pr.effective_from, pr.price_id) as until
              from ledger.prices pr
              join api.prices book on book.price_id = pr.price_id
              left join ledger.pipeline_steps s on s.pipeline = pr.pipeline and s.step = pr.step
          ) p
         where (%s::text is null or p.pipeline = %s)
           and (%s::text is null or p.client_id is null or p.client_id = %s)""",
        [pipeline, pipeline, client_id, client_id])
    assert isinstance(rows, list)
    return rows
