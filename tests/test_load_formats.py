"""The readers of `stepledger load` on their own: every format, good and malformed input.

No stack needed: these check what the loader would send (the database's verdict on it is in
test_load.py).
"""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path
from typing import Any

import pytest

from stepledger import StepledgerError
from stepledger.ingest.load import reason_of
from stepledger.ingest.readers import (
    ReadOptions,
    Record,
    Source,
    csv_records,
    detect_format,
    json_records,
    ndjson_records,
)
from stepledger.ingest.readers.legacy import LegacyConverter, LegacyLineError, normalize_timestamp
from test_loader_support import botimage_events, legacy_lines, new_tag


def bodies(records: list[Record]) -> list[dict[str, Any]]:
    return [json.loads(r.body) for r in records if r.body is not None]


def bad(records: list[Record]) -> list[Record]:
    return [r for r in records if r.body is None]


# -- legacy logs ----------------------------------------------------------------------------------
def without_id(event: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k != "event_id"}


@pytest.mark.parametrize("with_attempt", [True, False])
def test_legacy_lines_turn_back_into_the_events_they_print(with_attempt: bool) -> None:
    events = botimage_events(new_tag(), clients=("st-mary", "riverside"), jobs=6, seed=11)
    assert any(e["status"] == "failed" for e in events)  # retries are in the sample
    converter = LegacyConverter()
    converted = [converter.event(line) for line in legacy_lines(events, with_attempt)]
    assert [without_id(e) for e in converted] == [without_id(e) for e in events]


def test_legacy_event_ids_come_from_the_line_alone() -> None:
    lines = legacy_lines(botimage_events(new_tag(), jobs=2))
    first = [LegacyConverter().event(line)["event_id"] for line in lines]
    again = [LegacyConverter().event(line)["event_id"] for line in lines]
    assert first == again
    assert len(set(first)) == len(first)
    assert all(str(i).startswith("legacy:") and len(str(i)) <= 128 for i in first)
    # surrounding whitespace does not change the event
    assert LegacyConverter().event("  " + lines[0] + " \r\n")["event_id"] == first[0]


def test_legacy_attempts_are_numbered_from_failures_when_lines_omit_them() -> None:
    head = "2026-03-01T10:00:0{}Z INFO [st-mary] job=J-1 step 3/20 deidentification"
    lines = [head.format(0) + " started", head.format(1) + " failed: timeout",
             head.format(2) + " started", head.format(3) + " failed code=PHI: text",
             head.format(4) + " started", head.format(5) + " completed units=12"]
    converter = LegacyConverter()
    converted = [converter.event(line) for line in lines]
    assert [e["attempt"] for e in converted] == [1, 1, 2, 2, 3, 3]
    assert converted[1]["error"] == {"code": "LEGACY", "message": "timeout"}
    assert converted[3]["error"] == {"code": "PHI", "message": "text"}
    assert converted[5]["units"] == 12


def test_legacy_line_fields() -> None:
    event = LegacyConverter(tz="Europe/Paris").event(
        '2026-07-01 10:15:17,400 WARN [riverside] job="study 42" step 7 "Quality Control" '
        'failed attempt=2 code=QC_MOTION retryable=yes host=node-1 qc_score=0.41 '
        'pipeline=botimage: motion artifacts: score 0.41')
    assert event == {
        "event_id": event["event_id"], "client_id": "riverside", "job_id": "study 42",
        "pipeline": "botimage", "step": "quality-control", "status": "failed",
        "occurred_at": "2026-07-01T10:15:17.400+02:00", "attempt": 2,
        "error": {"code": "QC_MOTION", "message": "motion artifacts: score 0.41",
                  "retryable": True},
        "source": "node-1", "data": {"qc_score": 0.41}}


def test_legacy_client_from_the_command_line() -> None:
    line = "2026-03-01T10:00:00Z INFO job=J-9 step 1 dicom-intake completed units=3"
    assert LegacyConverter(client="northgate").event(line)["client_id"] == "northgate"
    with pytest.raises(LegacyLineError, match="no client"):
        LegacyConverter().event(line)


@pytest.mark.parametrize(("line", "reason"), [
    ("2026-02-30T10:00:00Z INFO [st-mary] job=J step 1/20 dicom-intake started",
     "not a date and time that exists"),
    ("2026-03-01T25:00:00Z INFO [st-mary] job=J step 1/20 dicom-intake started",
     "not a date and time that exists"),
    ("2026-03-01T10:00:00+25:00 INFO [st-mary] job=J step 1/20 dicom-intake started",
     "offset that does not exist"),
    ("2026-03-01T10:00:00Z INFO [st-mary] job=J step 21/20 report completed",
     "past the last step"),
    ("2026-03-01T10:00:00Z INFO [st-mary] job=J step x/20 report completed",
     "not a positive integer"),
    ("2026-03-01T10:00:00Z INFO [st-mary] job=J step 2/20 report finished",
     "unknown status 'finished'"),
    ("2026-03-01T10:00:00Z INFO [St Mary] job=J step 2/20 report completed",
     "client 'St Mary' is not a valid client id"),
    ("2026-03-01T10:00:00Z INFO [St_Mary] job=J step 2/20 report completed",
     "not a valid client id"),
    ("2026-03-01T10:00:00Z INFO [st-mary] job=J step 2/20 report completed units=-3",
     "units=-3 is not a number"),
    ("2026-03-01T10:00:00Z INFO [st-mary] job=J step 2/20 report completed attempt=0",
     "attempt=0 is not a positive integer"),
    ("2026-03-01T10:00:00Z INFO [st-mary] job=J step 2/20 report completed code=X",
     "belong on failed lines"),
    ("2026-03-01T10:00:00Z INFO [st-mary] job=J step 2/20 report completed units",
     "expected key=value"),
    ('2026-03-01T10:00:00Z INFO [st-mary] job=J step 2/20 report completed note="open',
     "unterminated quoted value"),
    ("2026-03-01T10:00:00Z INFO [st-mary] job=J step 2/20 report completed units=1 units=2",
     "given twice"),
    ("2026-03-01T10:00:00Z INFO [st-mary] job=J step 2/20 report failed retryable=maybe",
     "retryable=maybe"),
    ("yesterday INFO [st-mary] job=J step 2/20 report completed", "not a step line"),
])
def test_legacy_bad_lines_say_why(line: str, reason: str) -> None:
    converter = LegacyConverter()
    assert converter.is_step_line(line)
    with pytest.raises(LegacyLineError, match=reason.replace("(", r"\(")):
        converter.event(line)


def test_legacy_chatter_is_skipped_and_strict_mode_rejects_it(tmp_path: Path) -> None:
    step = "2026-03-01T10:00:00Z INFO [st-mary] job=J step 1/20 dicom-intake started"
    log = tmp_path / "run.log"
    log.write_text(f"# BotImage 4.2\nloading models ... ok\n\n{step}\nGPU 0: 11.2 GiB free\n")
    with Source(str(log), ReadOptions()) as source:
        records = list(source.records())
        assert [r.line for r in records] == [4]
        assert source.skipped == 2
    with Source(str(log), ReadOptions(strict=True)) as source:
        records = list(source.records())
    assert [(r.line, r.body is None) for r in records] == [(2, True), (4, False), (5, True)]
    assert records[0].raw == "loading models ... ok"
    assert "not a step line" in str(records[0].error)


def test_timestamps_are_normalized() -> None:
    assert normalize_timestamp("2026-03-01 10:00:00") == "2026-03-01T10:00:00Z"
    assert normalize_timestamp("2026-03-01T10:00:00,5+0100") == "2026-03-01T10:00:00.5+01:00"
    assert normalize_timestamp("2026-03-01t10:00:00z") == "2026-03-01T10:00:00Z"
    with pytest.raises(StepledgerError, match="unknown time zone"):
        LegacyConverter(tz="Mars/Olympus")


# -- NDJSON ---------------------------------------------------------------------------------------
def test_ndjson_lines_pass_through_with_their_line_numbers() -> None:
    data = (b'\xef\xbb\xbf{"a": 1}\n\n  \n{"b": 2}\r\nnot json\n{"c": "\xff"}\n'
            b'{"d": "\x00"}\n{"e": 3}')
    records = list(ndjson_records(io.BytesIO(data)))
    assert [(r.line, r.body) for r in records if r.body] == [
        (1, b'{"a": 1}'), (4, b'{"b": 2}'), (5, b"not json"), (8, b'{"e": 3}')]
    assert [(r.line, r.error) for r in bad(records)] == [
        (6, "not valid UTF-8 text"), (7, "not valid JSON: contains a NUL byte")]
    assert bad(records)[0].raw == '{"c": "\ufffd"}'


# -- JSON arrays -----------------------------------------------------------------------------------
def test_json_array_with_a_broken_element_keeps_the_rest() -> None:
    text = ('[\n  {"event_id": "a"},\n  {"event_id": "b", "units": nope},\n'
            '  {"event_id": "c", "data": {"x": [1, {"y": 2}]}},\n  {"event_id": "d"\n]\n')
    records = list(json_records(io.StringIO(text)))
    assert [(r.line, json.loads(r.body)["event_id"]) for r in records if r.body] == [
        (2, "a"), (4, "c")]
    broken = bad(records)
    assert [(r.line, r.raw) for r in broken] == [
        (3, '{"event_id": "b", "units": nope}'), (5, '{"event_id": "d"')]
    assert broken[0].error == "not valid JSON: Expecting value at line 3, column 30"


def test_json_array_larger_than_the_read_chunk(tmp_path: Path) -> None:
    events = botimage_events(new_tag(), jobs=40)
    assert len(json.dumps(events)) > 3 * (1 << 16)
    path = tmp_path / "events.json"
    path.write_text(json.dumps(events, indent=2))
    with Source(str(path), ReadOptions()) as source:
        assert source.format == "json"
        records = list(source.records())
    assert bodies(records) == events
    lines = path.read_text().splitlines()
    assert all(lines[r.line - 1] == "  {" for r in records)


def test_json_values_one_after_another_and_a_single_object() -> None:
    assert bodies(list(json_records(io.StringIO('{"a": 1}\n{"b": 2} {"c": 3}')))) == [
        {"a": 1}, {"b": 2}, {"c": 3}]
    assert bodies(list(json_records(io.StringIO('  {"a": 1}  ')))) == [{"a": 1}]
    assert list(json_records(io.StringIO(" [ ] "))) == []


def test_json_number_cut_by_the_chunk_boundary_is_read_whole() -> None:
    text = "[" + " " * ((1 << 16) - 3) + "12345]"
    assert bodies(list(json_records(io.StringIO(text)))) == [12345]


# -- CSV ------------------------------------------------------------------------------------------
CSV_HEAD = ("event_id,client_id,job_id,pipeline,step,status,occurred_at,attempt,units,"
            "error_code,error_message,error_retryable,source,data.images,data\n")


def csv_of(text: str, **options: Any) -> list[Record]:
    return list(csv_records(io.StringIO(text), ReadOptions(**options), "t.csv"))


def test_csv_rows_become_events() -> None:
    records = csv_of(
        CSV_HEAD
        + "e1,st-mary,J1,botimage,dicom-intake,completed,2026-03-01 10:00:00,1,240,,,,gpu1,240,\n"
        + 'e2,st-mary,J1,botimage,integrity-check,failed,2026-03-01T10:01:00+01:00,2,,CHK,'
          '"checksum\nmismatch",yes,,,"{""series"": 3}"\n'
        + "\n"
        + "e3,st-mary,J1,botimage,report,completed,2026-03-01T10:02:00Z,two,1.5,,,,,,\n",
        tz="UTC")
    assert [r.line for r in records] == [2, 3, 6]
    assert bodies(records) == [
        {"event_id": "e1", "client_id": "st-mary", "job_id": "J1", "pipeline": "botimage",
         "step": "dicom-intake", "status": "completed", "occurred_at": "2026-03-01T10:00:00Z",
         "attempt": 1, "units": 240, "source": "gpu1", "data": {"images": 240}},
        {"event_id": "e2", "client_id": "st-mary", "job_id": "J1", "pipeline": "botimage",
         "step": "integrity-check", "status": "failed",
         "occurred_at": "2026-03-01T10:01:00+01:00", "attempt": 2,
         "error": {"code": "CHK", "message": "checksum\nmismatch", "retryable": True},
         "data": {"series": 3}},
        # a value that is not a number stays text: the database rejects it with its path
        {"event_id": "e3", "client_id": "st-mary", "job_id": "J1", "pipeline": "botimage",
         "step": "report", "status": "completed", "occurred_at": "2026-03-01T10:02:00Z",
         "attempt": "two", "units": 1.5}]


def test_csv_rows_with_the_wrong_number_of_fields_are_kept_raw() -> None:
    records = csv_of("step,status,job_id\ndicom-intake,started,J\nreport,completed\n"
                     "a,b,c,d\n")
    assert [(r.line, r.raw, r.error) for r in bad(records)] == [
        (3, "report,completed", "the row has 2 fields, the header has 3"),
        (4, "a,b,c,d", "the row has 4 fields, the header has 3")]


def test_csv_without_event_ids_derives_stable_ones_and_fills_defaults() -> None:
    text = "job_id,step,status,occurred_at\nJ,report,completed,2026-03-01T10:00:00Z\n"
    first = bodies(csv_of(text, client="northgate", pipeline="botimage"))
    again = bodies(csv_of(text, client="northgate", pipeline="botimage"))
    assert first == again
    assert first[0]["client_id"] == "northgate" and first[0]["pipeline"] == "botimage"
    assert str(first[0]["event_id"]).startswith("csv:")
    other = bodies(csv_of(text.replace("10:00", "10:01"), client="northgate",
                          pipeline="botimage"))
    assert other[0]["event_id"] != first[0]["event_id"]


def test_csv_columns_outside_the_envelope() -> None:
    text = "job_id,step,status,duration_s\nJ,report,completed,12.5\n"
    with pytest.raises(StepledgerError, match="duration_s are not envelope fields"):
        csv_of(text)
    assert bodies(csv_of(text, extra_columns="data"))[0]["data"] == {"duration_s": 12.5}
    assert "data" not in bodies(csv_of(text, extra_columns="ignore"))[0]
    with pytest.raises(StepledgerError, match="named twice: step"):
        csv_of("step,step,status\n")
    with pytest.raises(StepledgerError, match="at least the columns step and status"):
        csv_of("job_id,status\nJ,started\n")


# -- files ----------------------------------------------------------------------------------------
def test_formats_are_told_by_name_then_by_content(tmp_path: Path) -> None:
    assert detect_format("a.ndjson.gz", b"") == "ndjson"
    assert detect_format("a.jsonl", b"") == "ndjson"
    assert detect_format("a.CSV", b"") == "csv"
    assert detect_format("a.log", b"") == "legacy"
    assert detect_format("dump", b'\xef\xbb\xbf [{"a": 1}]') == "json"
    assert detect_format("dump", b'{"a": 1}\n') == "ndjson"
    assert detect_format("dump", b"2026-03-01 10:00:00 INFO ...") == "legacy"
    assert detect_format("dump", b"event_id,job_id,step,status\n") == "csv"
    with pytest.raises(StepledgerError, match="cannot tell the format"):
        detect_format("dump", b"hello")
    with pytest.raises(StepledgerError, match=r"cannot read .*missing\.ndjson"):
        Source(str(tmp_path / "missing.ndjson"), ReadOptions())


def test_gzip_files_are_read_on_the_fly(tmp_path: Path) -> None:
    events = botimage_events(new_tag(), jobs=2)
    path = tmp_path / "events.ndjson.gz"
    with gzip.open(path, "wt") as fh:
        fh.writelines(json.dumps(e) + "\n" for e in events)
    with Source(str(path), ReadOptions()) as source:
        assert bodies(list(source.records())) == events
        assert source.position == path.stat().st_size


def test_a_file_that_is_not_gzip_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "events.ndjson.gz"
    path.write_text('{"a": 1}\n')
    expected = r"cannot read .*events\.ndjson\.gz: Not a gzipped"
    with pytest.raises(StepledgerError, match=expected):
        Source(str(path), ReadOptions())
    with Source(str(path), ReadOptions(format="ndjson")) as source, \
            pytest.raises(StepledgerError, match=expected):
        list(source.records())


def test_rejections_are_counted_by_reason_without_their_particulars() -> None:
    assert reason_of([{"path": "/step", "message": 'pipeline "botimage" has no step "x"'}]) == \
        '/step: pipeline "…" has no step "…"'
    assert reason_of([{"path": "", "message": 'line 7 is not valid JSON: Token "x" is invalid'}]) \
        == "not valid JSON"
    assert reason_of([{"path": "", "message": "unknown status 'done' (line 3 of a.log)"}]) == \
        'unknown status "…"'
    assert reason_of([]) == "rejected"
