"""Numeric bounds of JSON Schema as exact SQL over `numeric`, the way our validator reads numbers.

The validator sees a jsonb number through `json.loads` of its text: without a decimal point it
is an exact Python int; with one (numeric scale > 0) it is the double nearest to the decimal
(ties to even), so 1.00000000000000001 is the integer 1.0 and -1e-400 is -0.0, which is >= 0.
Rounding to the nearest double is monotonic, so "double(x) >= B" is "x >= t" (or "x > t") for
one exact decimal threshold t, the midpoint below the least double >= B. The thresholds are
worked out here, exactly, with fractions; the SQL only compares numerics.

An `Interval` is a set of exact decimals; a `Bounds` pairs the set an integer-text number must
fall in with the set a decimal-text number must fall in. When both hold the same integers (the
usual case), one comparison serves both and no scale test is needed.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from fractions import Fraction

# |x| at or above this rounds to an infinite double (the tie goes to the even "2**1024").
OVERFLOW = Fraction(2**1024 - 2**970)
MAX_DOUBLE = 1.7976931348623157e308
# Doubles at or above 2**52 are all integers; a decimal rounds to one of them from here on.
BIG_INTEGRAL = Fraction(2**52) - Fraction(1, 4)
# A decimal no larger than this in magnitude rounds to zero (the tie goes to the even 0.0).
ROUNDS_TO_ZERO = Fraction(1, 2**1075)
# Integers below this are exact doubles and exact quotients: float and exact arithmetic agree.
EXACT_INT = 2**53


def decimal(value: Fraction) -> str:
    """The exact decimal text of a fraction whose denominator is 2**a * 5**b."""
    num, den = value.numerator, value.denominator
    twos = fives = 0
    while den % 2 == 0:
        den //= 2
        twos += 1
    while den % 5 == 0:
        den //= 5
        fives += 1
    if den != 1:
        raise ValueError(f"{value} has no finite decimal expansion")
    places = max(twos, fives)
    scaled = abs(num) * 2 ** (places - twos) * 5 ** (places - fives)
    digits = str(scaled).rjust(places + 1, "0")
    text = digits if places == 0 else digits[:-places] + "." + digits[-places:]
    return ("-" if num < 0 else "") + text


def _even(d: float) -> bool:
    return struct.unpack("<Q", struct.pack("<d", d))[0] & 1 == 0


def least_double_at_least(b: Fraction) -> float:
    """The smallest double >= b (math.inf when b exceeds every finite double)."""
    try:
        d = b.numerator / b.denominator  # correctly rounded
    except OverflowError:
        return math.inf if b > 0 else -MAX_DOUBLE
    if math.isinf(d):
        return math.inf if b > 0 else -MAX_DOUBLE
    if Fraction(d) < b:
        d = math.nextafter(d, math.inf)
    return d + 0.0  # -0.0 -> 0.0


def least_double_above(b: Fraction) -> float:
    d = least_double_at_least(b)
    if not math.isinf(d) and Fraction(d) == b:
        d = math.nextafter(d, math.inf)
    return d


def _rounds_at_least(d: float) -> tuple[Fraction, bool]:
    """(t, inclusive): double(x) >= d exactly when x > t, or x == t if inclusive."""
    if math.isinf(d):
        return OVERFLOW, True
    if d == -MAX_DOUBLE:
        return -OVERFLOW, False  # at -OVERFLOW itself x rounds to -inf
    below = math.nextafter(d, -math.inf)
    return (Fraction(below) + Fraction(d)) / 2, _even(d)


@dataclass(frozen=True)
class Interval:
    """{x : lo <(=) x <(=) hi}; None is unbounded."""

    lo: Fraction | None = None
    lo_incl: bool = True
    hi: Fraction | None = None
    hi_incl: bool = True

    def meet(self, other: Interval) -> Interval:
        lo, lo_incl = self.lo, self.lo_incl
        if other.lo is not None and (lo is None or other.lo > lo
                                     or (other.lo == lo and not other.lo_incl)):
            lo, lo_incl = other.lo, other.lo_incl
        hi, hi_incl = self.hi, self.hi_incl
        if other.hi is not None and (hi is None or other.hi < hi
                                     or (other.hi == hi and not other.hi_incl)):
            hi, hi_incl = other.hi, other.hi_incl
        return Interval(lo, lo_incl, hi, hi_incl)

    def integers(self) -> tuple[int | None, int | None] | None:
        """(first, last) integer inside (None = unbounded), or None when it holds none."""
        first = None if self.lo is None else (
            math.ceil(self.lo) if self.lo_incl else math.floor(self.lo) + 1)
        last = None if self.hi is None else (
            math.floor(self.hi) if self.hi_incl else math.ceil(self.hi) - 1)
        if first is not None and last is not None and first > last:
            return None
        return first, last

    def sql(self, n: str) -> str:
        parts = []
        if self.lo is not None and self.hi is not None and self.lo == self.hi:
            if not (self.lo_incl and self.hi_incl):
                return "false"
            return f"{n} = {decimal(self.lo)}"
        if self.lo is not None and self.hi is not None and (
                self.lo > self.hi or (self.lo == self.hi and not (self.lo_incl and self.hi_incl))):
            return "false"
        if self.lo is not None:
            parts.append(f"{n} {'>=' if self.lo_incl else '>'} {decimal(self.lo)}")
        if self.hi is not None:
            parts.append(f"{n} {'<=' if self.hi_incl else '<'} {decimal(self.hi)}")
        return " and ".join(parts) or "true"


@dataclass(frozen=True)
class Bounds:
    """Where an integer-text number must lie, and where a decimal-text number must lie."""

    exact: Interval = Interval()
    rounded: Interval = Interval()

    def meet(self, other: Bounds) -> Bounds:
        return Bounds(self.exact.meet(other.exact), self.rounded.meet(other.rounded))

    @property
    def unbounded(self) -> bool:
        return self == Bounds()

    def unified(self) -> bool:
        """True when the rounded interval holds exactly the integers of the exact one."""
        return self.exact.integers() == self.rounded.integers()


def at_least(b: Fraction, strict: bool) -> Bounds:
    """value >= b (value > b when strict)."""
    d = least_double_above(b) if strict else least_double_at_least(b)
    t, incl = _rounds_at_least(d)
    return Bounds(Interval(lo=b, lo_incl=not strict), Interval(lo=t, lo_incl=incl))


def at_most(b: Fraction, strict: bool) -> Bounds:
    """value <= b (value < b when strict): the complement of value > b (value >= b)."""
    d = least_double_at_least(b) if strict else least_double_above(b)
    t, incl = _rounds_at_least(d)
    return Bounds(Interval(hi=b, hi_incl=not strict), Interval(hi=t, hi_incl=not incl))


def equal_to(c: Fraction) -> Bounds:
    """value == c as Python compares a JSON number with c (JSON equality of numbers)."""
    return at_least(c, False).meet(at_most(c, False))


def bounds_sql(bounds: Bounds, n: str, *, integral: bool) -> str:
    """SQL over the numeric expression `n`: inside the bounds (and an integer, if asked)."""
    scaled = bounds.rounded.sql(n)
    if integral:
        scaled = _and(scaled, rounds_to_integer(n))
    if not integral and bounds.unified():
        return scaled
    exact = bounds.exact.sql(n)
    if scaled == exact:
        return exact
    return f"(case when scale({n}) = 0 then {exact} else {scaled} end)"


def rounds_to_integer(n: str) -> str:
    """The double nearest to the decimal `n` is an integer (finite)."""
    return (f"(case when abs({n}) >= {decimal(OVERFLOW)} then false"
            f" when abs({n}) >= {decimal(BIG_INTEGRAL)} then true"
            f" when abs({n}) < 0.5 then abs({n}) <= {decimal(ROUNDS_TO_ZERO)}"
            f" else {n}::float8 = trunc({n}::float8) end)")


def _and(a: str, b: str) -> str:
    if a == "true":
        return b
    if b == "true":
        return a
    return f"{a} and {b}"
