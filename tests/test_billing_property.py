"""Property: for random pipelines, price books and event streams, every invoice the database
produces equals an independent Python computation of the §5 rules (tests/billing_model.py), to
the cent.

Streams have retries, repeated completions, failures, skips, duplicates (some with another body),
out-of-order arrival over several batches, completions on month boundaries and in other UTC
offsets. Prices are default or per client, effective-dated (often exactly at a completion),
some with graduated tiers, some recorded after the first month was finalized; clients may have a
monthly minimum. Part of the stream arrives after January is finalized: the finalized invoice
must not change and the difference must appear as adjustments on February's draft. The usage
materialized view is refreshed at random moments, so invoices are served from it, from the live
path, or both.

STEPLEDGER_BILLING_EXAMPLES sets the number of examples (default 40).
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing_model import Ledger, lines_from_invoice, total
from billing_support import Books, event, uid

EXAMPLES = int(os.environ.get("STEPLEDGER_BILLING_EXAMPLES", "40"))
START = datetime(2024, 12, 31, 22, 0, tzinfo=UTC)
SPAN_MINUTES = 92 * 24 * 60
BOUNDARIES = [datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 2, 1, tzinfo=UTC),
              datetime(2025, 1, 31, 23, 59, 59, 999000, tzinfo=UTC),
              datetime(2025, 3, 1, tzinfo=UTC)]
OFFSETS = [UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-5)),
           timezone(timedelta(hours=5, minutes=30))]
PERIODS = [date(2024, 12, 1), date(2025, 1, 1), date(2025, 2, 1), date(2025, 3, 1),
           date(2025, 4, 1)]
UNIT_PRICES = [Decimal(p) for p in ("0", "0.005", "0.01", "0.015", "0.125", "0.3333", "1",
                                    "2.5", "19.99")]
UNITS = [Decimal(u) for u in ("0", "1", "2", "3", "5", "7.5", "10", "12.345", "120", "999")]

instants = st.one_of(
    st.sampled_from(BOUNDARIES),
    st.integers(0, SPAN_MINUTES).map(lambda m: START + timedelta(minutes=m)),
)


@dataclass
class Attempt:
    statuses: list[tuple[str, datetime]]  # terminal events: distinct instants
    started: bool
    units: Decimal


@dataclass
class Scenario:
    steps: list[str]
    currencies: list[str]
    jobs: list[tuple[int, dict[str, list[Attempt]]]]  # (client index, step -> attempts)
    prices: list[dict[str, Any]]
    late_prices: list[dict[str, Any]]
    minimums: list[tuple[int, Decimal, date]]
    duplicates: list[tuple[int, Decimal | None]]  # (event index, other units)
    order_seed: int
    batches: int
    finalize_after: int | None  # batches that arrive before January is finalized
    refresh_points: set[int] = field(default_factory=set)


@st.composite
def attempts(draw: st.DrawFn) -> list[Attempt]:
    out = []
    for _ in range(draw(st.integers(1, 3))):
        n_terminal = draw(st.sampled_from([0, 1, 1, 1, 2]))
        first = draw(instants)
        # The first terminal event lands exactly on the drawn instant (often a month boundary,
        # often some price's effective_from); a second one at another minute.
        gaps = [0, draw(st.integers(-600, 600).filter(bool))][:n_terminal]
        statuses = [(draw(st.sampled_from(["completed", "completed", "failed", "skipped"])),
                     first + timedelta(minutes=g)) for g in gaps]
        out.append(Attempt(statuses, draw(st.booleans()), draw(st.sampled_from(UNITS))))
    return out


@st.composite
def price_rows(draw: st.DrawFn, n_steps: int, n_clients: int) -> dict[str, Any]:
    tiers: list[tuple[Decimal, Decimal]] = []
    if draw(st.integers(0, 3)) == 0:
        starts = sorted(draw(st.sets(st.sampled_from([Decimal(x) for x in ("1", "5", "10",
                                                                            "100", "500")]),
                                     min_size=1, max_size=2)))
        tiers = [(s, draw(st.sampled_from(UNIT_PRICES))) for s in starts]
    return {
        "step": draw(st.integers(0, n_steps - 1)),
        "client": draw(st.one_of(st.none(), st.integers(0, n_clients - 1))),
        "currency": draw(st.sampled_from(["EUR", "GBP"])),
        "unit_price": draw(st.sampled_from(UNIT_PRICES)),
        "effective_from": draw(instants),
        "tiers": tiers,
    }


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    steps = [f"s{i}" for i in range(draw(st.integers(1, 3)))]
    currencies = draw(st.lists(st.sampled_from(["EUR", "EUR", "GBP"]), min_size=1, max_size=2))
    jobs = [(draw(st.integers(0, len(currencies) - 1)),
             {s: draw(attempts()) for s in draw(st.sets(st.sampled_from(steps), min_size=1))})
            for _ in range(draw(st.integers(1, 4)))]
    n_events = sum(len(a.statuses) + a.started for _, per in jobs for at in per.values()
                   for a in at)
    batches = draw(st.integers(1, 4))
    return Scenario(
        steps=steps,
        currencies=currencies,
        jobs=jobs,
        prices=draw(st.lists(price_rows(len(steps), len(currencies)), max_size=6)),
        late_prices=draw(st.lists(price_rows(len(steps), len(currencies)), max_size=2)),
        minimums=draw(st.lists(st.tuples(st.integers(0, len(currencies) - 1),
                                         st.sampled_from([Decimal("0"), Decimal("5"),
                                                          Decimal("123.45")]),
                                         st.sampled_from(PERIODS)), max_size=2)),
        duplicates=draw(st.lists(st.tuples(st.integers(0, max(0, n_events - 1)),
                                           st.one_of(st.none(), st.sampled_from(UNITS))),
                                 max_size=3)) if n_events else [],
        order_seed=draw(st.integers(0, 2**31)),
        batches=batches,
        finalize_after=draw(st.one_of(st.none(), st.integers(0, batches))),
        refresh_points=draw(st.sets(st.integers(0, batches + 1), max_size=3)),
    )


def _stamp(moment: datetime, pick: int) -> str:
    return moment.astimezone(OFFSETS[pick % len(OFFSETS)]).isoformat(timespec="milliseconds")


def _events(scenario: Scenario, clients: list[str], pipeline: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for client_index, per_step in scenario.jobs:
        job = uid("job")
        for step, tries in per_step.items():
            for number, attempt in enumerate(tries, start=1):
                first = min((at for _, at in attempt.statuses), default=START)
                if attempt.started:
                    out.append(event(clients[client_index], job, pipeline, step, "started",
                                     _stamp(first - timedelta(minutes=1), len(out)), number))
                for status, at in attempt.statuses:
                    out.append(event(clients[client_index], job, pipeline, step, status,
                                     _stamp(at, len(out)), number,
                                     units=attempt.units if status == "completed" else None))
    return out


def _arrivals(scenario: Scenario, events: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    stream = list(events)
    for index, units in scenario.duplicates:
        copy = dict(events[index])
        if units is not None and copy["status"] == "completed":
            copy["units"] = units
        stream.append(copy)
    random.Random(scenario.order_seed).shuffle(stream)
    size = -(-len(stream) // scenario.batches) if stream else 1
    return [stream[i:i + size] for i in range(0, len(stream), size)] or [[]]


def _price(books: Books, ledger: Ledger, row: dict[str, Any], pipeline: str,
           steps: list[str], clients: list[str], currencies: list[str]) -> None:
    client = None if row["client"] is None else clients[row["client"]]
    # A client's own price is in its currency (the database refuses others).
    currency = currencies[row["client"]] if client else row["currency"]
    step = steps[row["step"]]
    books.add_price(pipeline, step, row["unit_price"], row["effective_from"].isoformat(),
                    client_id=client, currency=currency, tiers=row["tiers"])
    ledger.add_price(pipeline, step, row["unit_price"], row["effective_from"], client_id=client,
                     currency=currency, tiers=row["tiers"])


def _check(books: Books, ledger: Ledger, client: str, period: date) -> dict[str, Any]:
    document = books.invoice(client, period.strftime("%Y-%m"))
    expected = ledger.invoice_lines(client, period)
    got = lines_from_invoice(document)
    assert got == expected, (client, period, document.get("source"))
    assert document["total"] == total(expected)
    assert document["currency"] == ledger.currencies[client]
    return document


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(scenario=scenarios())
def test_invoices_equal_an_independent_computation(
        scenario: Scenario, su_conn: psycopg.Connection, api_url: str,
        jwt_for: Callable[..., str]) -> None:
    # Built here, not by the function-scoped `books` fixture: one example after another reuse it.
    books = Books(su_conn, api_url, jwt_for("admin"))
    pipeline = books.make_pipeline(scenario.steps, prefix="prop")
    clients = [books.make_client(currency=c, prefix="prop") for c in scenario.currencies]
    ledger = Ledger(currencies=dict(zip(clients, scenario.currencies, strict=True)))
    for row in scenario.prices:
        _price(books, ledger, row, pipeline, scenario.steps, clients, scenario.currencies)
    for index, amount, month in scenario.minimums:
        books.set_minimum(clients[index], amount, month)
        ledger.add_minimum(clients[index], amount, month)

    batches = _arrivals(scenario, _events(scenario, clients, pipeline))
    january = date(2025, 1, 1)
    frozen: dict[str, dict[str, Any]] = {}
    for number, batch in enumerate(batches):
        if number in scenario.refresh_points:
            books.refresh()
        if scenario.finalize_after == number:
            for client in clients:
                frozen[client] = books.finalize(client, "2025-01")
                ledger.finalize(client, january)
        if batch:
            books.ingest(batch)
            ledger.arrive(batch)
    if scenario.finalize_after is not None and scenario.finalize_after >= len(batches):
        for client in clients:
            frozen[client] = books.finalize(client, "2025-01")
            ledger.finalize(client, january)
    for row in scenario.late_prices:
        _price(books, ledger, row, pipeline, scenario.steps, clients, scenario.currencies)
    if len(batches) + 1 in scenario.refresh_points:
        books.refresh()

    for client in clients:
        for period in PERIODS:
            document = _check(books, ledger, client, period)
            if client in frozen and period == january:
                assert document["status"] == "finalized"
                assert {k: v for k, v in document.items() if k != "generated_at"} == \
                    {k: v for k, v in frozen[client].items() if k != "generated_at"}
            else:
                assert document["status"] == "draft"

    # After a refresh the usage view (GET /usage) agrees with the rules as well.
    books.refresh()
    for client in clients:
        expected: dict[tuple[str, str], list[Decimal]] = {}
        for period in PERIODS:
            for key, (units, steps, amount) in ledger.usage_lines(client, period).items():
                line = expected.setdefault((period.strftime("%Y-%m"), key[4]), [Decimal(0)] * 3)
                line[0] += units
                line[1] += steps
                line[2] += amount
        rows = books.usage_rows(client)
        assert not any(r["stale"] for r in rows)
        got = {(r["period"], r["step"]): [Decimal(str(r["units"])), Decimal(r["completed_steps"]),
                                          Decimal(str(r["amount"]))] for r in rows}
        assert got == expected
