"""BotImage's legacy log lines, turned into v1 step events (docs/legacy-log-format.md).

A step line looks like

    2026-03-01T10:15:02.123Z INFO [st-mary] job=J-1 step 3/20 deidentification started
    2026-03-01 10:15:17,400 INFO [st-mary] job=J-1 step 3/20 deidentification completed units=240
    2026-03-01T10:16:00Z ERROR [st-mary] job=J-1 step 7/20 quality-control failed code=QC: blur

Every step line becomes one event whose `event_id` is derived from the line's text alone, so
loading a file twice, loading overlapping files, or tailing a log across restarts never counts a
transition twice. Lines that do not mention a job and a step (the program's other chatter) are
not step lines and are skipped; a step line that breaks the format is a bad line.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from stepledger.ingest.readers.values import INTEGER, NUMBER, is_slug, time_zone, typed_value

VERBS = ("started", "completed", "failed", "skipped")
DEFAULT_ERROR_CODE = "LEGACY"
EVENT_ID_PREFIX = "legacy:"

_TIMESTAMP = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})[Tt ](?P<time>\d{2}:\d{2}:\d{2})(?:[.,](?P<frac>\d{1,9}))?"
    r"(?P<offset>[Zz]|[+-]\d{2}:?\d{2})?")
_HEAD = re.compile(
    r"^\s*(?P<ts>\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:[.,]\d{1,9})?(?:[Zz]|[+-]\d{2}:?\d{2})?)"
    r"\s+(?:(?P<level>[A-Za-z]+)\s+)?(?:\[(?P<client>[^\]]*)\]\s+)?"
    r"job=(?P<job>\"(?:[^\"\\]|\\.)*\"|\S+)\s+"
    r"step\s+(?P<num>\S+?)(?:/(?P<total>\S+))?\s+"
    r"(?P<step>\"(?:[^\"\\]|\\.)*\"|\S+)\s+"
    r"(?P<verb>[A-Za-z]+)(?P<rest>(?:[\s:].*)?)$")
_LOOKS_LIKE_STEP_LINE = re.compile(r"\bjob=\S+.*\bstep\s+\S")
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
_TRUE = {"true", "yes", "1", "y"}
_FALSE = {"false", "no", "0", "n"}


class LegacyLineError(ValueError):
    """A step line that breaks the legacy format; the message says what and where."""


def slugify(name: str) -> str:
    """A step or pipeline name as a slug: 'Organ segmentation' -> 'organ-segmentation'."""
    slug = re.sub(r"[^a-z0-9_-]+", "-", name.strip().lower()).strip("-")
    return slug


def _unquote(token: str) -> str:
    if len(token) >= 2 and token[0] == token[-1] == '"':
        return json.loads(token)
    return token


def normalize_timestamp(text: str, zone: timezone | ZoneInfo = UTC) -> str:
    """An RFC 3339 timestamp with an offset; a timestamp without one is read in `zone`.

    Raises LegacyLineError for dates or times that do not exist.
    """
    m = _TIMESTAMP.fullmatch(text.strip())
    if m is None:
        raise LegacyLineError(f"{text!r} is not a timestamp (YYYY-MM-DDTHH:MM:SS[.fff][offset])")
    frac = m["frac"] or ""
    try:
        moment = datetime.fromisoformat(f"{m['date']}T{m['time']}")
    except ValueError:
        raise LegacyLineError(f"{text!r} is not a date and time that exists") from None
    offset = m["offset"]
    if offset is None:
        local = moment.replace(tzinfo=zone)
        delta = local.utcoffset() or timedelta(0)
        minutes = int(delta.total_seconds()) // 60
        offset = "Z" if minutes == 0 else \
            f"{'+' if minutes > 0 else '-'}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
    elif offset in ("z", "Z"):
        offset = "Z"
    else:
        digits = offset[1:].replace(":", "")
        if int(digits[:2]) > 23 or int(digits[2:]) > 59:
            raise LegacyLineError(f"{text!r} has an offset that does not exist")
        offset = f"{offset[0]}{digits[:2]}:{digits[2:]}"
    return f"{m['date']}T{m['time']}{'.' + frac if frac else ''}{offset}"


def _parse_rest(rest: str) -> tuple[dict[str, str], str | None]:
    """` key=value key="quoted value": message` -> ({key: value}, message)."""
    fields: dict[str, str] = {}
    i, n = 0, len(rest)
    while i < n:
        while i < n and rest[i] in " \t":
            i += 1
        if i >= n:
            break
        if rest[i] == ":":
            return fields, rest[i + 1:].strip()
        key = _KEY.match(rest, i)
        if key is None or key.end() >= n or rest[key.end()] != "=":
            word = rest[i:].split(None, 1)[0]
            raise LegacyLineError(
                f"expected key=value or ': message' after the status, found {word!r}")
        i = key.end() + 1
        if i < n and rest[i] == '"':
            quoted = re.compile(r'"(?:[^"\\]|\\.)*"').match(rest, i)
            if quoted is None:
                raise LegacyLineError(f"unterminated quoted value for {key.group()}")
            value = json.loads(quoted.group())
            i = quoted.end()
        else:
            end = i
            while end < n and rest[end] not in " \t":
                end += 1
            value = rest[i:end]
            i = end
            if value.endswith(":"):  # code=QC_MOTION: the message follows
                fields[key.group()] = value[:-1]
                return fields, rest[i:].strip()
        if key.group() in fields:
            raise LegacyLineError(f"{key.group()} is given twice")
        fields[key.group()] = value
    return fields, None


@dataclass
class StepLine:
    """One parsed step line, before attempt numbering."""

    occurred_at: str
    client_id: str
    job_id: str
    step: str
    step_number: int
    status: str
    fields: dict[str, str]
    message: str | None
    event_id: str


class AttemptCounter:
    """Numbers attempts when lines do not print them: attempt = 1 + failures of that step of that
    job seen before. Remembers the most recent `limit` steps that failed; its state is JSON, so
    `stepledger tail` keeps it across restarts."""

    def __init__(self, limit: int = 100_000, state: list[list[object]] | None = None) -> None:
        self.limit = limit
        self._failures: OrderedDict[tuple[str, str, str], int] = OrderedDict()
        for client, job, step, count in state or []:
            self._failures[(str(client), str(job), str(step))] = int(count)  # type: ignore[call-overload]

    def attempt(self, client: str, job: str, step: str, status: str) -> int:
        key = (client, job, step)
        failures = self._failures.get(key, 0)
        if status == "failed":
            self._failures[key] = failures + 1
            self._failures.move_to_end(key)
            while len(self._failures) > self.limit:
                self._failures.popitem(last=False)
        return failures + 1

    def record_explicit(self, client: str, job: str, step: str, attempt: int, status: str) -> None:
        """A line that printed attempt=N: later unnumbered lines continue from it."""
        failures = attempt if status == "failed" else attempt - 1
        key = (client, job, step)
        if failures > self._failures.get(key, 0):
            self._failures[key] = failures
            self._failures.move_to_end(key)

    def state(self) -> list[list[object]]:
        return [[c, j, s, n] for (c, j, s), n in self._failures.items()]


class LegacyConverter:
    """Turns legacy log lines into v1 events.

    `pipeline` is used when a line has no pipeline=...; `client` when a line has no [client];
    timestamps without an offset are read in `tz`. With `strict`, every non-blank line that is
    not a comment must be a step line.
    """

    def __init__(self, pipeline: str = "botimage", client: str | None = None, tz: str = "UTC",
                 strict: bool = False, attempts: AttemptCounter | None = None) -> None:
        self.pipeline = pipeline
        self.client = client
        self.zone = time_zone(tz)
        self.strict = strict
        self.attempts = attempts or AttemptCounter()

    def is_step_line(self, line: str) -> bool:
        """Whether `line` claims to be a step line (and so must parse, or is a bad line)."""
        text = line.strip()
        if not text or text.startswith("#"):
            return False
        return self.strict or _LOOKS_LIKE_STEP_LINE.search(text) is not None

    def parse(self, line: str) -> StepLine:
        text = line.strip()
        m = _HEAD.match(text)
        if m is None:
            raise LegacyLineError(
                "not a step line: expected '<timestamp> [LEVEL] [client] job=<job> "
                "step <n>[/<total>] <step> <started|completed|failed|skipped> ...'")
        occurred_at = normalize_timestamp(m["ts"], self.zone)
        client = m["client"] if m["client"] is not None else self.client
        if not client:
            raise LegacyLineError("no client: the line has no [client] and no --client was given")
        if not is_slug(client):
            raise LegacyLineError(f"client {client!r} is not a valid client id")
        job = _unquote(m["job"])
        if not job:
            raise LegacyLineError("empty job id")
        if not INTEGER.match(m["num"]) or int(m["num"]) < 1:
            raise LegacyLineError(f"step number {m['num']!r} is not a positive integer")
        number = int(m["num"])
        if m["total"] is not None:
            if not INTEGER.match(m["total"]):
                raise LegacyLineError(f"step total {m['total']!r} is not a positive integer")
            if number > int(m["total"]):
                raise LegacyLineError(f"step {number} of {m['total']} is past the last step")
        step = slugify(_unquote(m["step"]))
        if not is_slug(step):
            raise LegacyLineError(f"step name {m['step']!r} does not give a step key")
        verb = m["verb"].lower()
        if verb not in VERBS:
            raise LegacyLineError(
                f"unknown status {m['verb']!r}: use started, completed, failed or skipped")
        fields, message = _parse_rest(m["rest"])
        digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:40]
        return StepLine(occurred_at, client, job, step, number, verb, fields, message,
                        fields.pop("event", None) or EVENT_ID_PREFIX + digest)

    def event(self, line: str) -> dict[str, object]:
        """The v1 event for one step line; raises LegacyLineError for a bad line."""
        parsed = self.parse(line)
        fields = dict(parsed.fields)
        pipeline = slugify(fields.pop("pipeline", self.pipeline))
        event: dict[str, object] = {
            "event_id": parsed.event_id, "client_id": parsed.client_id, "job_id": parsed.job_id,
            "pipeline": pipeline, "step": parsed.step, "status": parsed.status,
            "occurred_at": parsed.occurred_at,
        }
        attempt_text = fields.pop("attempt", None)
        if attempt_text is not None:
            if not INTEGER.match(attempt_text) or int(attempt_text) < 1:
                raise LegacyLineError(f"attempt={attempt_text} is not a positive integer")
            attempt = int(attempt_text)
            self.attempts.record_explicit(parsed.client_id, parsed.job_id, parsed.step, attempt,
                                          parsed.status)
        else:
            attempt = self.attempts.attempt(parsed.client_id, parsed.job_id, parsed.step,
                                            parsed.status)
        event["attempt"] = attempt
        units = fields.pop("units", None)
        if units is not None:
            if not NUMBER.match(units) or float(units) < 0:
                raise LegacyLineError(f"units={units} is not a number >= 0")
            event["units"] = typed_value(units)
        code = fields.pop("code", None)
        retryable = fields.pop("retryable", None)
        if parsed.status == "failed":
            error: dict[str, object] = {
                "code": code or DEFAULT_ERROR_CODE,
                "message": parsed.message or "failed (the log line gives no error text)",
            }
            if retryable is not None:
                if retryable.lower() not in _TRUE | _FALSE:
                    raise LegacyLineError(f"retryable={retryable} is not yes or no")
                error["retryable"] = retryable.lower() in _TRUE
            event["error"] = error
        elif code is not None or retryable is not None:
            raise LegacyLineError(
                f"code= and retryable= belong on failed lines, not {parsed.status}")
        host, named_source = fields.pop("host", None), fields.pop("source", None)
        source = host or named_source
        if source:
            event["source"] = source
        data = {key: typed_value(value) for key, value in fields.items()}
        if parsed.message and parsed.status != "failed":
            data["message"] = parsed.message
        if data:
            event["data"] = data
        return event


def _quote_if_needed(value: str) -> str:
    return json.dumps(value) if (not value or re.search(r"[\s\"=:]", value)) else value


def format_line(event: dict[str, object], number: int, total: int | None = None,
                with_attempt: bool = True) -> str:
    """The legacy line a printf-logging program writes for `event` (step `number` of `total`):
    the inverse of LegacyConverter.event, used to convert programs and to test the reader."""
    status = str(event["status"])
    level = "ERROR" if status == "failed" else "INFO"
    parts = [str(event["occurred_at"]), level, f"[{event['client_id']}]",
             f"job={_quote_if_needed(str(event['job_id']))}",
             f"step {number}" + (f"/{total}" if total else ""), str(event["step"]), status]
    if with_attempt and "attempt" in event:
        parts.append(f"attempt={event['attempt']}")
    if "units" in event:
        parts.append(f"units={event['units']}")
    if event.get("source"):
        parts.append(f"host={_quote_if_needed(str(event['source']))}")
    data = event.get("data")
    if isinstance(data, dict):
        for key, value in data.items():
            if key != "message" and isinstance(value, str | int | float | bool):
                text = json.dumps(value) if isinstance(value, bool) else str(value)
                parts.append(f"{key}={_quote_if_needed(text)}")
    error = event.get("error")
    if isinstance(error, dict):
        parts.append(f"code={_quote_if_needed(str(error['code']))}")
        if "retryable" in error:
            parts.append(f"retryable={'yes' if error['retryable'] else 'no'}")
        return " ".join(parts) + ": " + str(error["message"])
    return " ".join(parts)
