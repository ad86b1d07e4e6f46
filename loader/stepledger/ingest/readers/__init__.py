"""Input files as records for `stepledger load` and `stepledger tail`, one reader per format:
formats.py (NDJSON, JSON arrays, CSV), legacy.py (BotImage's legacy log lines), values.py (text
as the values of an event)."""

from stepledger.ingest.readers.formats import (
    FORMATS,
    MAX_JSON_RECORD,
    ReadOptions,
    Record,
    Source,
    csv_records,
    detect_format,
    dump,
    json_records,
    ndjson_records,
)

__all__ = ["FORMATS", "MAX_JSON_RECORD", "ReadOptions", "Record", "Source", "csv_records",
           "detect_format", "dump", "json_records", "ndjson_records"]
