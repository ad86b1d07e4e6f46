"""Progress of a long load: a live bar with rate and ETA on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO


def duration(seconds: float) -> str:
    """1:02:03, 2:03 or 0:03."""
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    """Reports records done and bytes read against the total size of the input.

    On a terminal the line is redrawn at most `tty_interval_s` apart; elsewhere (logs, CI) one
    plain line is printed every `plain_interval_s`. `enabled=False` prints nothing.
    """

    def __init__(self, total_bytes: int | None, stream: TextIO | None = None,
                 enabled: bool = True, plain_interval_s: float = 10.0,
                 tty_interval_s: float = 0.2,
                 clock: Callable[[], float] | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.total = total_bytes if total_bytes else None
        self.enabled = enabled
        self.tty = enabled and self.stream.isatty()
        self.interval = tty_interval_s if self.tty else plain_interval_s
        self.clock = clock or time.monotonic
        self.started = self.clock()
        self._last = self.started
        self._drawn = False
        self.records = 0
        self.done_bytes = 0
        self.label = ""

    def rate(self) -> float:
        elapsed = self.clock() - self.started
        return self.records / elapsed if elapsed > 0 else 0.0

    def eta_s(self) -> float | None:
        if not self.total or self.done_bytes <= 0:
            return None
        elapsed = self.clock() - self.started
        return elapsed * (self.total - self.done_bytes) / self.done_bytes

    def line(self) -> str:
        parts = [self.label] if self.label else []
        if self.total:
            fraction = min(1.0, self.done_bytes / self.total)
            if self.tty:
                width = 24
                filled = int(fraction * width)
                parts.append(f"{fraction * 100:5.1f}% [{'#' * filled}{'.' * (width - filled)}]")
            else:
                parts.append(f"{fraction * 100:.1f}%")
        parts.append(f"{self.records:,} records")
        parts.append(f"{self.rate():,.0f}/s")
        eta = self.eta_s()
        if eta is not None:
            parts.append(f"ETA {duration(eta)}")
        return "  ".join(parts)

    def update(self, records: int, done_bytes: int | None = None, label: str | None = None,
               force: bool = False) -> None:
        self.records = records
        if done_bytes is not None:
            self.done_bytes = done_bytes
        if label is not None:
            self.label = label
        if not self.enabled:
            return
        now = self.clock()
        if not force and now - self._last < self.interval:
            return
        self._last = now
        if self.tty:
            self.stream.write("\r\x1b[K" + self.line())
            self._drawn = True
        else:
            self.stream.write("stepledger: " + self.line() + "\n")
        self.stream.flush()

    def finish(self) -> None:
        """Clear the live line (the caller prints its summary next)."""
        if self.tty and self._drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._drawn = False
