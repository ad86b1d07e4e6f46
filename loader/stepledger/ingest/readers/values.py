"""Text read from a file, as the values of an event: numbers, booleans, time zones, slugs.

Shared by the CSV reader (formats.py) and the legacy log reader (legacy.py).
"""

from __future__ import annotations

import functools
import json
import re
from datetime import UTC, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from stepledger import StepledgerError
from stepledger.settings import REPO_ROOT

INTEGER = re.compile(r"^[0-9]+$")
NUMBER = re.compile(r"^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?$")
ENVELOPE_SCHEMA = REPO_ROOT / "schemas" / "step_event.v1.json"


def typed_value(value: str) -> object:
    """A key=value value as JSON: integers, decimals, true/false, null, else the string."""
    if NUMBER.match(value):
        return int(value) if INTEGER.match(value) else float(value)
    low = value.lower()
    if low in ("true", "false"):
        return low == "true"
    if low == "null":
        return None
    return value


def time_zone(name: str) -> timezone | ZoneInfo:
    if name.upper() in ("UTC", "Z"):
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise StepledgerError(f"unknown time zone {name!r}; use e.g. UTC or Europe/Paris") from None


@functools.cache
def _slug_pattern() -> re.Pattern[str]:
    # The envelope's own rule (the database's slug domain checks the same pattern).
    schema = json.loads(ENVELOPE_SCHEMA.read_text())
    return re.compile(schema["properties"]["client_id"]["pattern"])


def is_slug(text: str) -> bool:
    """True when `text` is a valid client id, pipeline or step key (schemas/step_event.v1.json)."""
    return _slug_pattern().match(text) is not None
