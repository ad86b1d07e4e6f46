"""An independent Python computation of the billing rules (contract §5, docs/billing.md).

Written from the rules, not from the SQL, so the tests can compare the database's invoices with
it to the cent. Inputs are what the tests send (events in arrival order, price rows, minimums);
outputs are invoice lines as plain tuples.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal

CENT = Decimal("0.01")


def parse_ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def month_of(moment: datetime) -> date:
    utc = moment.astimezone(UTC)
    return date(utc.year, utc.month, 1)


def round_cents(amount: Decimal) -> Decimal:
    """Half away from zero, to the cent (ROUND_HALF_UP is away from zero for Decimal)."""
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


@dataclass(frozen=True)
class Price:
    seq: int  # order in which the rows were recorded
    pipeline: str
    step: str
    client_id: str | None
    currency: str
    unit_price: Decimal
    effective_from: datetime
    tiers: tuple[tuple[Decimal, Decimal], ...] = ()


@dataclass(frozen=True)
class Minimum:
    seq: int
    client_id: str
    effective_from: date
    amount: Decimal
    currency: str


@dataclass(frozen=True)
class Charge:
    client_id: str
    job_id: str
    pipeline: str
    step: str
    units: Decimal
    completed_at: datetime


# (kind, basis, for_period, pipeline, step, unit_price, priced) -> [units, steps, amount]
LineKey = tuple[str, str, date, str | None, str | None, Decimal | None, bool | None]


@dataclass
class Ledger:
    """Everything the rules need: accepted events in arrival order, the price book, minimums."""

    currencies: dict[str, str] = field(default_factory=dict)
    events: list[dict[str, object]] = field(default_factory=list)  # accepted, arrival order
    seen: set[tuple[str, str]] = field(default_factory=set)
    prices: list[Price] = field(default_factory=list)
    minimums: list[Minimum] = field(default_factory=list)
    finalized: dict[tuple[str, date], list[tuple[LineKey, tuple]]] = field(default_factory=dict)

    # -- input ------------------------------------------------------------------------------
    def arrive(self, batch: Iterable[dict[str, object]]) -> None:
        """A batch as sent: a repeated (client_id, event_id) is a duplicate and never counts."""
        for event in batch:
            key = (str(event["client_id"]), str(event["event_id"]))
            if key in self.seen:
                continue
            self.seen.add(key)
            self.events.append(event)

    def add_price(self, pipeline: str, step: str, unit_price: Decimal, effective_from: datetime,
                  client_id: str | None = None, currency: str | None = None,
                  tiers: Sequence[tuple[Decimal, Decimal]] = ()) -> Price:
        if currency is None:
            currency = self.currencies[client_id] if client_id else "EUR"
        price = Price(len(self.prices), pipeline, step, client_id, currency, unit_price,
                      effective_from, tuple(tiers))
        self.prices.append(price)
        return price

    def add_minimum(self, client_id: str, amount: Decimal, month: date) -> None:
        self.minimums.append(Minimum(len(self.minimums), client_id, month, amount,
                                     self.currencies[client_id]))

    # -- §5: what is billed ---------------------------------------------------------------------
    def charges(self) -> list[Charge]:
        """One charge per (client, job, step) with a completed attempt: the latest such attempt.

        Per attempt, the terminal event (completed, failed, skipped) with the latest occurred_at
        decides its outcome; started events never decide. (Ties: the database lets the later
        batch win but leaves the order within one batch undefined, so the tests never send two
        terminal events of one attempt at the same instant; here the later arrival wins.)
        """
        decisive: dict[tuple[str, str, str, int], tuple[datetime, int, dict[str, object]]] = {}
        for arrival, event in enumerate(self.events):
            if event["status"] == "started":
                continue
            key = (str(event["client_id"]), str(event["job_id"]), str(event["step"]),
                   int(event.get("attempt", 1)))  # type: ignore[call-overload]
            at = parse_ts(str(event["occurred_at"]))
            if key not in decisive or (at, arrival) >= decisive[key][:2]:
                decisive[key] = (at, arrival, event)
        billed: dict[tuple[str, str, str], tuple[int, Charge]] = {}
        for (client, job, step, attempt), (at, _, event) in decisive.items():
            if event["status"] != "completed":
                continue
            units = Decimal(str(event.get("units", 1)))
            charge = Charge(client, job, str(event["pipeline"]), step, units, at)
            if (client, job, step) not in billed or attempt > billed[(client, job, step)][0]:
                billed[(client, job, step)] = (attempt, charge)
        return [c for _, c in billed.values()]

    def price_for(self, charge: Charge) -> Price | None:
        """The client's own price beats the default; the latest effective_from <= completion
        wins; of equal effective_from, the later recorded row."""
        currency = self.currencies[charge.client_id]
        for owner in (charge.client_id, None):
            candidates = [p for p in self.prices
                          if p.client_id == owner and p.pipeline == charge.pipeline
                          and p.step == charge.step and p.currency == currency
                          and p.effective_from <= charge.completed_at]
            if candidates:
                return max(candidates, key=lambda p: (p.effective_from, p.seq))
        return None

    def usage_lines(self, client_id: str, period: date) -> dict[LineKey, list[Decimal]]:
        """Usage lines of one client and month: units x unit price per (pipeline, step, price),
        graduated tiers counted over the month in order of completion (then job id)."""
        by_step: dict[tuple[str, str], list[Charge]] = defaultdict(list)
        for charge in self.charges():
            if charge.client_id == client_id and month_of(charge.completed_at) == period:
                by_step[(charge.pipeline, charge.step)].append(charge)
        raw: dict[LineKey, list[Decimal]] = defaultdict(lambda: [Decimal(0)] * 3)
        for (pipeline, step), charges in by_step.items():
            charges.sort(key=lambda c: (c.completed_at, c.job_id))
            cumulative = Decimal(0)
            for charge in charges:
                price = self.price_for(charge)
                if price is None:
                    bands = [(Decimal(0), None, Decimal(0))]
                else:
                    starts = [(Decimal(0), price.unit_price), *price.tiers]
                    bands = [(lo, starts[i + 1][0] if i + 1 < len(starts) else None, p)
                             for i, (lo, p) in enumerate(starts)]
                start, end = cumulative, cumulative + charge.units
                for lower, upper, unit_price in bands:
                    home = lower <= start and (upper is None or start < upper)
                    overlap = min(end, upper if upper is not None else end) - max(start, lower)
                    if not home and overlap <= 0:
                        continue
                    key: LineKey = ("usage", "usage", period, pipeline, step,
                                    unit_price.normalize(), price is not None)
                    line = raw[key]
                    line[0] += max(overlap, Decimal(0))
                    line[1] += 1 if home else 0
                    line[2] += max(overlap, Decimal(0)) * unit_price
                cumulative = end
        return {k: [u, s, round_cents(a)] for k, (u, s, a) in raw.items()}

    def owed(self, client_id: str, period: date) -> dict[LineKey, list[Decimal]]:
        """Usage lines plus the monthly-minimum top-up when usage is below the minimum."""
        lines = self.usage_lines(client_id, period)
        usage = sum((v[2] for v in lines.values()), Decimal(0))
        currency = self.currencies[client_id]
        in_force = [m for m in self.minimums if m.client_id == client_id
                    and m.currency == currency and m.effective_from <= period]
        if in_force:
            minimum = max(in_force, key=lambda m: (m.effective_from, m.seq)).amount
            if minimum > usage:
                key: LineKey = ("minimum", "minimum", period, None, None, None, None)
                lines[key] = [None, None, minimum - usage]  # type: ignore[list-item]
        return lines

    # -- invoices -------------------------------------------------------------------------------
    def invoice_lines(self, client_id: str, period: date) -> dict[LineKey, list[Decimal]]:
        """The frozen lines when finalized; else the draft: what the period owes now, plus an
        adjustment for each finalized earlier period whose next open invoice this is (every
        month in between finalized): owed now minus everything billed for it so far."""
        if (client_id, period) in self.finalized:
            return {k: list(v) for k, v in self.finalized[(client_id, period)]}
        lines = self.owed(client_id, period)
        for client, earlier in sorted(self.finalized):
            if client != client_id or earlier >= period:
                continue
            if any((client_id, m) not in self.finalized for m in _months(earlier, period)[1:-1]):
                continue
            # (basis, pipeline, step, unit_price, priced) -> units, steps, amount billed so far
            billed: dict[tuple, list[Decimal]] = defaultdict(lambda: [Decimal(0)] * 3)
            for (c, _), frozen in self.finalized.items():
                for key, values in frozen:
                    if c == client_id and key[2] == earlier:
                        for i, v in enumerate(values):
                            billed[(key[1], *key[3:])][i] += v or 0
            now = {(k[1], *k[3:]): v for k, v in self.owed(client_id, earlier).items()}
            for core in set(now) | set(billed):
                owed_now = now.get(core, [0, 0, 0])
                diff = [(owed_now[i] or 0) - billed[core][i] for i in range(3)]
                if any(d != 0 for d in diff):
                    if core[0] == "minimum":
                        diff = [None, None, diff[2]]  # type: ignore[list-item]
                    lines[("adjustment", core[0], earlier, *core[1:])] = diff  # type: ignore[index]
        return lines

    def finalize(self, client_id: str, period: date) -> None:
        lines = self.invoice_lines(client_id, period)
        self.finalized[(client_id, period)] = [(k, tuple(v)) for k, v in lines.items()]


def _months(first: date, last: date) -> list[date]:
    months, current = [], first
    while current <= last:
        months.append(current)
        current = date(current.year + current.month // 12, current.month % 12 + 1, 1)
    return months


def lines_from_invoice(document: dict[str, object]) -> dict[LineKey, list[Decimal]]:
    """The database's invoice document in the model's shape."""
    out: dict[LineKey, list[Decimal]] = {}
    for line in document["lines"]:  # type: ignore[attr-defined]
        for_period = date.fromisoformat(line["for_period"] + "-01")
        unit_price = None if line["unit_price"] is None else Decimal(str(line["unit_price"]))
        key: LineKey = (line["kind"], line["basis"], for_period, line["pipeline"], line["step"],
                        unit_price.normalize() if unit_price is not None else None, line["priced"])
        assert key not in out, f"two lines with the same key {key}"
        units = None if line["units"] is None else Decimal(str(line["units"]))
        steps = None if line["completed_steps"] is None else Decimal(line["completed_steps"])
        out[key] = [units, steps, Decimal(str(line["amount"]))]
    return out


def total(lines: dict[LineKey, list[Decimal]]) -> Decimal:
    return sum((v[2] for v in lines.values()), Decimal(0))
