"""Input files as records for `stepledger load`: NDJSON, JSON arrays, CSV and legacy logs.

Every reader streams its file (memory stays flat whatever the size) and yields `Record`s in file
order: either one NDJSON line for the ingest API (an event, or any JSON value the database will
judge), or a piece of text that cannot be an event, with the reason. Both carry the line number
where they start. Files ending in .gz are decompressed on the fly.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import hashlib
import io
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, TextIO

from stepledger import StepledgerError
from stepledger.ingest.readers.legacy import LegacyConverter, LegacyLineError, normalize_timestamp
from stepledger.ingest.readers.values import INTEGER, NUMBER, time_zone, typed_value

FORMATS = ("ndjson", "json", "csv", "legacy")
_EXTENSIONS = {".ndjson": "ndjson", ".jsonl": "ndjson", ".json": "json", ".csv": "csv",
               ".log": "legacy", ".txt": "legacy"}
_BOM = codecs.BOM_UTF8
MAX_JSON_RECORD = 1 << 20   # a JSON element larger than this is treated as broken
_CHUNK = 1 << 16
_NUL_FREE = str.maketrans({"\x00": "\ufffd"})


@dataclass(slots=True)
class Record:
    """One record of a file: `body` (an NDJSON line to ingest) or `raw` text with an `error`."""

    line: int
    body: bytes | None = None
    raw: str | None = None
    error: str | None = None


@dataclass
class ReadOptions:
    """How to read files: the format, and defaults for formats that are converted to events.

    `client` and `pipeline` fill events (CSV, legacy) that do not name them; timestamps without
    an offset are read in `tz`; `strict` makes every non-blank legacy line a step line;
    `extra_columns` says what to do with CSV columns that are not envelope fields: 'error'
    refuses the file, 'data' puts them in the event's data, 'ignore' drops them.
    """

    format: str = "auto"
    client: str | None = None
    pipeline: str | None = None
    tz: str = "UTC"
    strict: bool = False
    extra_columns: str = "error"
    legacy: LegacyConverter | None = field(default=None, repr=False)


def dump(event: object) -> bytes:
    """An event as one compact JSON line."""
    try:
        return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from a \ud800 escape: keep it escaped
        return json.dumps(event, separators=(",", ":")).encode("ascii")


def detect_format(path: str, head: bytes) -> str:
    """The format of a file from its extension (.gz aside), else from its first bytes."""
    name = path[:-3] if path.endswith(".gz") else path
    suffix = Path(name).suffix.lower()
    if suffix in _EXTENSIONS:
        return _EXTENSIONS[suffix]
    text = head.removeprefix(_BOM).decode("utf-8", "replace").lstrip()
    if text.startswith("["):
        return "json"
    if text.startswith("{"):
        return "ndjson"
    first = text.splitlines()[0] if text else ""
    if re.match(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}", first):
        return "legacy"
    if "event_id" in first or ("," in first and "job_id" in first):
        return "csv"
    raise StepledgerError(f"{path}: cannot tell the format; use --format ndjson|json|csv|legacy")


class Source:
    """One input file (or '-' for standard input), read as records."""

    def __init__(self, path: str, options: ReadOptions) -> None:
        self.path = path
        self.label = "<stdin>" if path == "-" else path
        self.options = options
        self.skipped = 0            # lines that are not records (legacy chatter, comments)
        self._raw: BinaryIO
        if path == "-":
            self._raw = sys.stdin.buffer
            self.size: int | None = None
        else:
            try:
                self._raw = open(path, "rb")  # noqa: SIM115 - closed by close()
                self.size = Path(path).stat().st_size
            except OSError as exc:
                raise StepledgerError(f"cannot read {path}: {exc.strerror}") from None
        self._stream: BinaryIO = self._raw
        if path.endswith(".gz"):
            self._stream = gzip.GzipFile(fileobj=self._raw, mode="rb")  # type: ignore[assignment]
        self.format = options.format
        if self.format == "auto":
            if path == "-":
                raise StepledgerError("reading standard input needs --format")
            self.format = detect_format(path, self._peek())

    def _peek(self) -> bytes:
        try:
            peek = getattr(self._stream, "peek", None)
            return peek(4096)[:4096] if peek else b""
        except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
            self.close()
            raise StepledgerError(f"cannot read {self.label}: {exc}") from None

    @property
    def position(self) -> int | None:
        """Bytes of the file consumed so far (compressed bytes for .gz), when known."""
        try:
            return self._raw.tell()
        except (OSError, ValueError):
            return None

    def close(self) -> None:
        if self._stream is not self._raw:
            self._stream.close()
        if self._raw is not sys.stdin.buffer:
            self._raw.close()

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _text(self) -> TextIO:
        return io.TextIOWrapper(self._stream, encoding="utf-8-sig", errors="replace", newline="")

    def records(self) -> Iterator[Record]:
        try:
            if self.format == "ndjson":
                yield from ndjson_records(self._stream)
            elif self.format == "json":
                yield from json_records(self._text())
            elif self.format == "csv":
                yield from csv_records(self._text(), self.options, self.label)
            elif self.format == "legacy":
                converter = self.options.legacy or LegacyConverter(
                    pipeline=self.options.pipeline or "botimage", client=self.options.client,
                    tz=self.options.tz, strict=self.options.strict)
                yield from self._legacy(converter)
            else:
                raise StepledgerError(
                    f"unknown format {self.format!r}; use one of {', '.join(FORMATS)}")
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            raise StepledgerError(f"cannot read {self.label}: {exc}") from None

    def _legacy(self, converter: LegacyConverter) -> Iterator[Record]:
        # Lines end at \n only (a stray \r does not start a line), as `wc -l` counts them.
        for number, data in enumerate(self._stream, 1):
            if number == 1 and data.startswith(_BOM):
                data = data[len(_BOM):]
            line = data.decode("utf-8", "replace")
            if not converter.is_step_line(line):
                if line.strip() and not line.lstrip().startswith("#"):
                    self.skipped += 1
                continue
            try:
                yield Record(number, body=dump(converter.event(line)))
            except LegacyLineError as exc:
                yield Record(number, raw=line.rstrip("\r\n").translate(_NUL_FREE), error=str(exc))


# -- NDJSON -------------------------------------------------------------------------------------
def ndjson_records(stream: BinaryIO) -> Iterator[Record]:
    """Lines pass through untouched (the database parses them); blank lines are skipped."""
    for number, line in enumerate(stream, 1):
        if number == 1 and line.startswith(_BOM):
            line = line[len(_BOM):]
        text = line.strip()
        if not text:
            continue
        try:
            text.decode("utf-8")
        except UnicodeDecodeError:
            yield Record(number, raw=text.decode("utf-8", "replace").translate(_NUL_FREE),
                         error="not valid UTF-8 text")
            continue
        if b"\x00" in text:
            yield Record(number, raw=text.decode("utf-8").translate(_NUL_FREE),
                         error="not valid JSON: contains a NUL byte")
            continue
        yield Record(number, body=text)


# -- JSON arrays ----------------------------------------------------------------------------------
_RESYNC = re.compile(r"(?:\n[ \t]*|,[ \t\r\n]*)(?=\{)")


def json_records(text: TextIO) -> Iterator[Record]:
    """The elements of a JSON array (or a file of JSON values one after another).

    After a syntax error the reader resumes at the next object that starts a line or follows a
    comma; the broken text in between is one record, kept raw.
    """
    decoder = json.JSONDecoder()
    buf = ""
    pos = 0
    line = 1            # line number of buf[pos]
    eof = False
    in_array = False
    started = False

    def fill() -> bool:
        nonlocal buf, pos, eof
        if eof:
            return False
        chunk = text.read(_CHUNK)
        if not chunk:
            eof = True
            return False
        buf = buf[pos:] + chunk
        pos = 0
        return True

    def advance(to: int) -> None:
        nonlocal pos, line
        line += buf.count("\n", pos, to)
        pos = to

    while True:
        # skip whitespace and separators between elements
        while True:
            while pos < len(buf) and buf[pos] in " \t\r\n,":
                advance(pos + 1)
            if pos < len(buf) or not fill():
                break
        if pos >= len(buf):
            return
        if not started:
            started = True
            if buf[pos] == "[":
                in_array = True
                advance(pos + 1)
                continue
        if in_array and buf[pos] == "]":
            advance(pos + 1)
            in_array = False
            continue
        try:
            value, end = decoder.raw_decode(buf, pos)
            if end == len(buf) and not eof and fill():
                continue        # a number or literal may go on in the next chunk
        except json.JSONDecodeError as exc:
            if not eof and len(buf) - pos < MAX_JSON_RECORD and fill():
                continue        # maybe the element is only cut by the chunk boundary
            yield _broken_json(buf, pos, line, exc, in_array)
            resync = _RESYNC.search(buf, exc.pos if exc.pos > pos else pos + 1)
            advance(resync.end() if resync else len(buf))
            while resync is None and fill():
                # nothing to resume at yet: keep the broken text, piece by piece, and read on
                resync = _RESYNC.search(buf, 0)
                piece = buf[:resync.start() if resync else len(buf)].rstrip(" \t\r\n,")
                if piece.strip():
                    yield Record(line, raw=piece.translate(_NUL_FREE),
                                 error="not valid JSON: continuation of the broken text above")
                advance(resync.end() if resync else len(buf))
            continue
        yield Record(line, body=dump(value))
        advance(end)


def _broken_json(buf: str, pos: int, line: int, exc: json.JSONDecodeError,
                 in_array: bool) -> Record:
    resync = _RESYNC.search(buf, exc.pos if exc.pos > pos else pos + 1)
    raw = buf[pos:resync.start() if resync else len(buf)].rstrip(" \t\r\n,")
    if in_array and resync is None and raw.endswith("]"):
        raw = raw[:-1].rstrip(" \t\r\n,")
    at_line = line + buf.count("\n", pos, exc.pos)
    column = exc.pos - (buf.rfind("\n", 0, exc.pos) + 1) + 1
    return Record(line, raw=(raw or buf[pos:pos + 200]).translate(_NUL_FREE),
                  error=f"not valid JSON: {exc.msg} at line {at_line}, column {column}")


# -- CSV ------------------------------------------------------------------------------------------
_STRING_FIELDS = ("event_id", "client_id", "job_id", "pipeline", "step", "status", "source")
_ERROR_COLUMNS = {"error_code": "code", "error.code": "code", "error_message": "message",
                  "error.message": "message", "error_retryable": "retryable",
                  "error.retryable": "retryable"}
_ENVELOPE = {*_STRING_FIELDS, "occurred_at", "attempt", "units", "error", "data"}
_BOOLEANS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def _column_kind(name: str, extra_columns: str) -> str | None:
    if name in _ENVELOPE or name in _ERROR_COLUMNS:
        return name
    if name.startswith("data.") and len(name) > 5:
        return "data."
    if extra_columns == "data":
        return "extra"
    if extra_columns == "ignore":
        return None
    raise ValueError(name)


def csv_records(text: TextIO, options: ReadOptions, label: str) -> Iterator[Record]:
    """One event per row; columns are named after the envelope fields (docs/pipelines.md)."""
    consumed: list[str] = []

    def lines() -> Iterator[str]:
        for line in text:
            consumed.append(line)
            yield line

    reader = csv.reader(lines())
    try:
        header = next(reader)
    except StopIteration:
        return
    names = [h.strip() for h in header]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise StepledgerError(f"{label}: column(s) named twice: {', '.join(duplicates)}")
    kinds: list[str | None] = []
    unknown: list[str] = []
    for name in names:
        try:
            kinds.append(_column_kind(name, options.extra_columns))
        except ValueError:
            unknown.append(name)
    if unknown:
        raise StepledgerError(
            f"{label}: column(s) {', '.join(unknown)} are not envelope fields; rename them, or "
            "pass --extra-columns data (into the event's data) or --extra-columns ignore")
    if "step" not in names or "status" not in names:
        raise StepledgerError(f"{label}: a CSV of events needs at least the columns step and "
                              "status (see docs/pipelines.md)")
    zone = time_zone(options.tz)
    consumed.clear()
    start = reader.line_num + 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield Record(start, raw="".join(consumed).rstrip("\r\n").translate(_NUL_FREE),
                         error=f"not a valid CSV row: {exc}")
            consumed.clear()
            start = reader.line_num + 1
            continue
        raw = "".join(consumed).rstrip("\r\n")
        consumed.clear()
        number, start = start, reader.line_num + 1
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(names):
            yield Record(number, raw=raw.translate(_NUL_FREE),
                         error=f"the row has {len(row)} fields, the header has {len(names)}")
            continue
        yield Record(number, body=dump(_csv_event(names, kinds, row, options, zone)))


def _csv_event(names: list[str], kinds: list[str | None], row: list[str], options: ReadOptions,
               zone: object) -> dict[str, object]:
    """A CSV row as an event. Values that cannot be converted are kept as text, so that the
    database rejects them with the field's path and the reason."""
    event: dict[str, object] = {}
    error: dict[str, object] = {}
    data: dict[str, object] = {}
    for name, kind, cell in zip(names, kinds, row, strict=True):
        value = cell.strip()
        if kind is None or value == "":
            continue
        if kind in _STRING_FIELDS:
            event[kind] = value
        elif kind == "occurred_at":
            try:
                event[kind] = normalize_timestamp(value, zone)  # type: ignore[arg-type]
            except LegacyLineError:
                event[kind] = value
        elif kind == "attempt":
            event[kind] = int(value) if INTEGER.match(value) else value
        elif kind == "units":
            event[kind] = typed_value(value) if NUMBER.match(value) else value
        elif kind in ("error", "data"):
            try:
                event[kind] = json.loads(value)
            except ValueError:
                event[kind] = value
        elif kind in _ERROR_COLUMNS:
            key = _ERROR_COLUMNS[kind]
            error[key] = _BOOLEANS.get(value.lower(), value) if key == "retryable" else value
        elif kind == "data.":
            data[name[5:]] = typed_value(value)
        else:
            data[name] = typed_value(value)
    if error:
        base = event.get("error")
        event["error"] = {**base, **error} if isinstance(base, dict) else error
    if data:
        base = event.get("data")
        event["data"] = {**base, **data} if isinstance(base, dict) else data
    if "client_id" not in event and options.client:
        event["client_id"] = options.client
    if "pipeline" not in event and options.pipeline:
        event["pipeline"] = options.pipeline
    if "event_id" not in event:
        canonical = json.dumps(event, sort_keys=True, separators=(",", ":"))
        event["event_id"] = "csv:" + hashlib.sha256(canonical.encode()).hexdigest()[:40]
    return event
