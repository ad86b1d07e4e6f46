"""`stepledger load`: files of events into the ingest API, in batches, several in flight.

Events travel as NDJSON to POST /rpc/ingest_ndjson (an NDJSON file's lines pass through
untouched, so a line that is not JSON reaches the vault as received); text that cannot be an
event (a broken legacy line, a CSV row with the wrong number of fields) goes to
POST /rpc/ingest_unreadable, so it too is kept in the vault. Every event carries its event_id,
so loading a file again, or resending a batch after a network error, adds nothing.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from stepledger import StepledgerError
from stepledger.api_client import (
    IngestClient,
    IngestResult,
    RequestRefused,
    RetryPolicy,
    TransientError,
)
from stepledger.ingest.outcomes import Outcomes
from stepledger.ingest.progress import Progress
from stepledger.ingest.readers import ReadOptions, Record, Source

MAX_BATCH_BYTES = 4 << 20   # well under the gateway's 16 MiB body limit
_Pending = deque[tuple["_Batch", Future[tuple[IngestResult, IngestResult]]]]


@dataclass
class LoadOptions:
    read: ReadOptions = field(default_factory=ReadOptions)
    batch_size: int = 1000
    workers: int = 2
    max_shown: int = 20
    errors_to: TextIO | None = None          # every bad line as NDJSON {file, line, errors}
    retry: RetryPolicy = field(default_factory=RetryPolicy)


@dataclass
class BadLine:
    file: str
    line: int
    errors: list[dict[str, object]]

    def text(self) -> str:
        where = f"{self.file}:{self.line}" if self.line > 0 else self.file
        return f"{where}: " + "; ".join(_error_text(e) for e in self.errors)


@dataclass
class LoadSummary(Outcomes):
    files: int = 0
    records: int = 0
    skipped_lines: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    bad_lines: list[BadLine] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def exit_code(self) -> int:
        """0 when every record was accepted or a duplicate, 3 when some were rejected."""
        return 3 if self.rejected else 0

    def lines(self, max_reasons: int = 10) -> list[str]:
        rate = self.records / self.elapsed_s if self.elapsed_s > 0 else 0.0
        out = [f"stepledger: {self.records:,} records from {self.files} file(s) in "
               f"{self.elapsed_s:.1f}s ({rate:,.0f}/s)", *self.outcome_lines()]
        for reason, count in self.reasons.most_common(max_reasons):
            out.append(f"    {count:>10,}  {reason}")
        if len(self.reasons) > max_reasons:
            rest = sum(c for _, c in self.reasons.most_common()[max_reasons:])
            out.append(f"    {rest:>10,}  (other reasons)")
        if self.skipped_lines:
            out.append(f"  skipped     {self.skipped_lines:>12,}  lines that are not step events")
        if self.bad_lines:
            shown = len(self.bad_lines)
            more = self.rejected > shown
            out.append(f"rejected lines (first {shown}):" if more else "rejected lines:")
            out.extend("  " + bad.text() for bad in self.bad_lines)
        return out


def _error_text(error: object) -> str:
    if not isinstance(error, dict):
        return str(error)
    path, message = error.get("path") or "", str(error.get("message", ""))
    return f"{path}: {message}" if path else message


_QUOTED = re.compile(r"\"[^\"]*\"|'[^']*'")
_NOT_JSON = re.compile(r"^line \d+ is (not valid JSON).*", re.S)
_WHERE = re.compile(r" \(line \d+ of .*\)$")
_AT = re.compile(r" at line \d+, column \d+$")


def reason_of(errors: Sequence[object]) -> str:
    """The first error of a rejection, with its particulars blanked, to count rejections by."""
    if not errors:
        return "rejected"
    text = _error_text(errors[0])
    text = _NOT_JSON.sub(r"\1", _WHERE.sub("", text))
    return _QUOTED.sub("\"…\"", _AT.sub("", text))


@dataclass
class _Batch:
    label: str
    bodies: list[bytes] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    unreadable: list[dict[str, object]] = field(default_factory=list)
    size: int = 0

    def __len__(self) -> int:
        return len(self.bodies) + len(self.unreadable)


class Loader:
    """Loads files through an IngestClient; see LoadOptions."""

    def __init__(self, client: IngestClient, options: LoadOptions | None = None,
                 progress: Progress | None = None) -> None:
        self.client = client
        self.options = options or LoadOptions()
        self.progress = progress
        self.summary = LoadSummary()

    def _batches(self, source: Source) -> Iterator[_Batch]:
        limit = self.options.batch_size
        batch = _Batch(source.label)
        record: Record
        for record in source.records():
            if record.body is not None:
                batch.bodies.append(record.body)
                batch.lines.append(record.line)
                batch.size += len(record.body) + 1
            else:
                batch.unreadable.append({
                    "line": record.line, "text": record.raw or "",
                    "error": f"{record.error} (line {record.line} of {source.label})"})
                batch.size += len(record.raw or "") + 100
            if len(batch) >= limit or batch.size >= MAX_BATCH_BYTES:
                yield batch
                batch = _Batch(source.label)
        if len(batch):
            yield batch

    def _send(self, batch: _Batch) -> tuple[IngestResult, IngestResult]:
        retry = self.options.retry
        events = IngestResult()
        unreadable = IngestResult()
        if batch.bodies:
            body = b"\n".join(batch.bodies)
            events = retry.run(lambda: self.client.send_ndjson(body))
        if batch.unreadable:
            unreadable = retry.run(lambda: self.client.send_unreadable(batch.unreadable))
        return events, unreadable

    def _absorb(self, batch: _Batch, results: tuple[IngestResult, IngestResult]) -> None:
        events, unreadable = results
        summary = self.summary
        summary.accepted += events.accepted + unreadable.accepted
        summary.duplicates += events.duplicates + unreadable.duplicates
        found: list[BadLine] = []
        for item in events.rejected:
            index = int(item["index"])  # type: ignore[call-overload]  # 1-based line of the body
            line = batch.lines[index - 1] if 0 < index <= len(batch.lines) else index
            found.append(BadLine(batch.label, line, list(item.get("errors") or [])))  # type: ignore[call-overload]
        for item in unreadable.rejected:
            found.append(BadLine(batch.label, int(item["index"]),  # type: ignore[call-overload]
                                 list(item.get("errors") or [])))  # type: ignore[call-overload]
        found.sort(key=lambda bad: bad.line)
        for bad in found:
            summary.rejected += 1
            summary.reasons[reason_of(bad.errors)] += 1
            if len(summary.bad_lines) < self.options.max_shown:
                summary.bad_lines.append(bad)
            if self.options.errors_to is not None:
                self.options.errors_to.write(json.dumps(
                    {"file": bad.file, "line": bad.line, "errors": bad.errors}) + "\n")

    def load(self, paths: Sequence[str]) -> LoadSummary:
        """Load every file in order; raises StepledgerError when the API refuses or stays away."""
        missing = [p for p in paths if p != "-" and not Path(p).is_file()]
        if missing:
            raise StepledgerError(f"cannot read {missing[0]}: no such file")
        started = time.monotonic()
        total = sum(Path(p).stat().st_size for p in paths if p != "-") or None
        if self.progress is not None:
            self.progress.total = total
        done_before = 0
        pending: _Pending = deque()
        workers = max(1, self.options.workers)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="stepledger-load") as pool:
            try:
                for path in paths:
                    with Source(path, self.options.read) as source:
                        self.summary.files += 1
                        for batch in self._batches(source):
                            self.summary.records += len(batch)
                            pending.append((batch, pool.submit(self._send, batch)))
                            while len(pending) > 2 * workers:
                                self._collect(pending)
                            self._report(done_before + (source.position or 0), source.label)
                        self.summary.skipped_lines += source.skipped
                        done_before += source.size or 0
                while pending:
                    self._collect(pending)
            except BaseException:
                for _, future in pending:
                    future.cancel()
                raise
        self.summary.elapsed_s = time.monotonic() - started
        if self.progress is not None:
            self._report(done_before, "", force=True)
            self.progress.finish()
        return self.summary

    def _collect(self, pending: _Pending) -> None:
        batch, future = pending.popleft()
        try:
            self._absorb(batch, future.result())
        except RequestRefused as exc:
            raise StepledgerError(f"{batch.label}: {exc}") from None
        except TransientError as exc:
            raise StepledgerError(
                f"{batch.label}: {exc}; gave up after {self.options.retry.attempts} tries "
                "(loading again is safe: events already stored count as duplicates)") from None

    def _report(self, done_bytes: int, label: str, force: bool = False) -> None:
        if self.progress is not None:
            self.progress.update(self.summary.records, done_bytes, label, force=force)
