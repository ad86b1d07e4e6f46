"""`stepledger load` against the real stack: every format with malformed lines, idempotency,
the raw vault, the summary, tokens and exit codes."""

from __future__ import annotations

import gzip
import json
import os
import pty
import re
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from stepledger import stack
from stepledger.api_client import IngestClient, RetryPolicy
from stepledger.ingest.load import Loader, LoadOptions, LoadSummary
from stepledger.settings import Settings
from test_loader_support import (
    botimage_events,
    count,
    events_of,
    legacy_lines,
    new_tag,
    run_cli,
    wait_for,
    write_ndjson,
)

pytestmark = pytest.mark.usefixtures("loader_catalog")


@pytest.fixture
def admin_env(monkeypatch: pytest.MonkeyPatch, api_url: str,
              jwt_for: Callable[..., str]) -> str:
    token = jwt_for("admin")
    monkeypatch.setenv("STEPLEDGER_URL", api_url)
    monkeypatch.setenv("STEPLEDGER_TOKEN", token)
    return token


def vault(conn: psycopg.Connection, where: str, params: list[object]) -> list[dict[str, Any]]:
    cur = conn.cursor(row_factory=dict_row)
    return cur.execute(
        f"select client_id, channel, position, event_id, payload, raw_text, outcome, errors, "
        f"sender_role from ledger.vault where {where} order by received_at, vault_id",
        params).fetchall()


def summary_numbers(out: str) -> dict[str, int]:
    found = dict(re.findall(r"^  (accepted|duplicates|rejected|skipped)\s+([\d,]+)", out, re.M))
    return {k: int(v.replace(",", "")) for k, v in found.items()}


def rejected_lines(out: str, path: Path) -> dict[int, str]:
    return {int(m.group(1)): m.group(2)
            for m in re.finditer(rf"^  {re.escape(str(path))}:(\d+): (.*)$", out, re.M)}


# -- NDJSON ---------------------------------------------------------------------------------------
def test_ndjson_with_bad_lines_then_loading_again_adds_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], su_conn: psycopg.Connection,
        admin_env: str) -> None:
    tag = new_tag()
    events = botimage_events(tag, clients=("st-mary", "riverside"), jobs=4)
    lines = [json.dumps(e) for e in events]
    broken = f'{{"event_id": "{tag}-broken", "job_id": nope}}'
    lines.insert(5, broken)
    lines.insert(9, json.dumps({**events[0], "event_id": f"{tag}-nostep", "step": "no-such-step"}))
    lines.insert(12, "")
    lines.insert(20, json.dumps({**events[0], "event_id": f"{tag}-late", "status": "done"}))
    path = tmp_path / "events.ndjson"
    path.write_text("\n".join(lines) + "\n")

    code, out, err = run_cli(capsys, "load", str(path))
    assert code == 3, out + err
    assert summary_numbers(out) == {"accepted": len(events), "duplicates": 0, "rejected": 3}
    bad = rejected_lines(out, path)
    assert sorted(bad) == [6, 10, 21]
    assert bad[6].startswith("line 6 is not valid JSON")
    assert bad[10] == '/step: pipeline "botimage" has no step "no-such-step"'
    assert bad[21].startswith("/status:")
    assert events_of(su_conn, tag) == len(events)
    # the line that is not JSON is in the vault exactly as it was in the file
    [row] = vault(su_conn, "raw_text = %s", [broken])
    assert (row["outcome"], row["channel"], row["payload"]) == ("rejected", "ndjson", None)
    # the jobs are live: every job of the file is there with its events
    jobs = count(su_conn, "select count(*) from ledger.jobs where job_id like %s", [f"{tag}-%"])
    assert jobs == 8

    job_events = su_conn.execute("select sum(events) from ledger.jobs where job_id like %s",
                                 [f"{tag}-%"]).fetchone()
    code, out, _ = run_cli(capsys, "load", str(path))
    assert code == 3
    assert summary_numbers(out) == {"accepted": 0, "duplicates": len(events), "rejected": 3}
    assert events_of(su_conn, tag) == len(events)
    assert su_conn.execute("select sum(events) from ledger.jobs where job_id like %s",
                           [f"{tag}-%"]).fetchone() == job_events


def test_small_batches_in_parallel_give_the_same_answer(
        tmp_path: Path, su_conn: psycopg.Connection, api_url: str,
        jwt_for: Callable[..., str]) -> None:
    tag = new_tag()
    events = botimage_events(tag, jobs=5)
    lines = [json.dumps(e) for e in events]
    for at in (3, 17, 40, len(lines)):
        lines.insert(at, f"garbage {at}")
    path = tmp_path / "events.ndjson"
    path.write_text("\n".join(lines))  # no newline at the end either
    expected_bad = [i + 1 for i, line in enumerate(lines) if line.startswith("garbage")]
    with IngestClient(api_url, jwt_for("admin")) as client:
        summary = Loader(client, LoadOptions(batch_size=7, workers=3)).load([str(path)])
    assert (summary.records, summary.accepted, summary.rejected) == (len(lines), len(events), 4)
    assert [b.line for b in summary.bad_lines] == expected_bad
    assert events_of(su_conn, tag) == len(events)


# -- JSON arrays ----------------------------------------------------------------------------------
def test_json_array_with_a_broken_element(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          su_conn: psycopg.Connection, admin_env: str) -> None:
    tag = new_tag()
    events = botimage_events(tag, jobs=2)
    text = json.dumps(events[:10], indent=2)[:-2] + ',\n  {"event_id": "' + tag + \
        '-x", "units": 12,,}' + ",\n" + json.dumps(events[10:], indent=2)[1:]
    path = tmp_path / "export.json"
    path.write_text(text)
    broken_line = text[:text.index(f'"{tag}-x"')].count("\n") + 1

    code, out, _ = run_cli(capsys, "load", str(path))
    assert code == 3
    assert summary_numbers(out) == {"accepted": len(events), "duplicates": 0, "rejected": 1}
    assert list(rejected_lines(out, path)) == [broken_line]
    [row] = vault(su_conn, "raw_text like %s", [f'%"{tag}-x"%'])
    assert row["channel"] == "file" and row["position"] == broken_line
    assert row["raw_text"] == f'{{"event_id": "{tag}-x", "units": 12,,}}'
    assert row["errors"][0]["message"].startswith("not valid JSON: Expecting property name")
    assert row["errors"][0]["message"].endswith(f"(line {broken_line} of {path})")
    assert events_of(su_conn, tag) == len(events)

    code, out, _ = run_cli(capsys, "load", str(path))
    assert summary_numbers(out) == {"accepted": 0, "duplicates": len(events), "rejected": 1}


# -- CSV ------------------------------------------------------------------------------------------
def test_csv_export_with_bad_rows(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                  su_conn: psycopg.Connection, admin_env: str) -> None:
    tag = new_tag()
    rows = ["job_id,step,status,occurred_at,attempt,units,error_code,error_message,source"]
    rows += [f"{tag}-J1,dicom-intake,started,2026-11-02 10:00:00,1,,,,gpu1",
             f"{tag}-J1,dicom-intake,completed,2026-11-02 10:00:40,1,240,,,gpu1",
             f"{tag}-J1,integrity-check,started,2026-11-02 10:00:41,1,,,,gpu1",
             f"{tag}-J1,integrity-check,failed,2026-11-02 10:00:49,1,,CHECKSUM,"
             '"series 3,\nbad",gpu1',
             f"{tag}-J1,integrity-check,started,2026-11-02 10:01:00,two,,,,gpu1",
             f"{tag}-J1,integrity-check,completed",
             f"{tag}-J1,integrity-check,completed,2026-11-02 10:01:09,2,1,,,gpu1"]
    path = tmp_path / "export.csv"
    path.write_text("\n".join(rows) + "\n")

    code, out, _ = run_cli(capsys, "load", "--client", "riverside", "--pipeline", "botimage",
                           str(path))
    assert code == 3
    assert summary_numbers(out) == {"accepted": 5, "duplicates": 0, "rejected": 2}
    bad = rejected_lines(out, path)
    assert bad == {7: '/attempt: expected integer, got string "two"',
                   8: "the row has 3 fields, the header has 9 (line 8 of " + str(path) + ")"}
    runs = su_conn.execute(
        "select step, attempt, status, units, error_code, error_message from ledger.step_runs "
        "where client_id = 'riverside' and job_id = %s order by step_index, attempt",
        [f"{tag}-J1"]).fetchall()
    assert runs == [("dicom-intake", 1, "completed", 240, None, None),
                    ("integrity-check", 1, "failed", None, "CHECKSUM", "series 3,\nbad"),
                    ("integrity-check", 2, "completed", 1, None, None)]
    code, out, _ = run_cli(capsys, "load", "--client", "riverside", "--pipeline", "botimage",
                           str(path))
    assert summary_numbers(out) == {"accepted": 0, "duplicates": 5, "rejected": 2}


def test_csv_with_unknown_columns_is_refused_before_sending(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], admin_env: str) -> None:
    path = tmp_path / "export.csv"
    path.write_text("job_id,step,status,gpu_hours\nJ,report,completed,1.5\n")
    code, _, err = run_cli(capsys, "load", str(path))
    assert code == 1
    assert err.strip().splitlines() == [
        f"stepledger: {path}: column(s) gpu_hours are not envelope fields; rename them, or pass "
        "--extra-columns data (into the event's data) or --extra-columns ignore"]


# -- legacy logs ----------------------------------------------------------------------------------
def test_legacy_log_with_an_ingest_token_bound_to_its_client(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], su_conn: psycopg.Connection,
        monkeypatch: pytest.MonkeyPatch, api_url: str, api_token: Callable[..., str]) -> None:
    monkeypatch.setenv("STEPLEDGER_URL", api_url)
    monkeypatch.setenv("STEPLEDGER_TOKEN", api_token("st-mary"))
    tag = new_tag()
    events = botimage_events(tag, jobs=3)
    foreign = botimage_events(tag + "f", clients=("riverside",), jobs=1)[:2]
    lines = ["# BotImage 4.2 on st-mary-gpu1", "loading weights ... ok"]
    for n, line in enumerate(legacy_lines(events, with_attempt=False)):
        lines.append(line)
        if n % 10 == 0:
            lines.append(f"GPU memory: {n} MiB in use")
    bad_step_line = re.sub(r" step \d+/20 ", " step 99/20 ", lines[6])
    assert bad_step_line != lines[6]
    lines.insert(7, bad_step_line)
    lines += legacy_lines(foreign)
    path = tmp_path / "botimage.log"
    path.write_text("\n".join(lines) + "\n")
    chatter = sum(1 for line in lines if not line.startswith(("2", "#")))

    code, out, _ = run_cli(capsys, "load", str(path))
    assert code == 3
    numbers = summary_numbers(out)
    assert numbers == {"accepted": len(events), "duplicates": 0, "rejected": 3,
                       "skipped": chatter}
    bad = rejected_lines(out, path)
    assert bad[8].startswith("step 99 of 20 is past the last step")
    assert [bad[len(lines) - 1], bad[len(lines)]] == [
        '/client_id: this token may only write events for client "st-mary"'] * 2
    [row] = vault(su_conn, "raw_text = %s", [bad_step_line])
    assert (row["client_id"], row["channel"], row["position"], row["sender_role"]) == \
        ("st-mary", "file", 8, "ingest")
    assert events_of(su_conn, tag) == len(events)

    code, out, _ = run_cli(capsys, "load", str(path))
    assert summary_numbers(out)["duplicates"] == len(events)
    assert summary_numbers(out)["accepted"] == 0
    assert events_of(su_conn, tag) == len(events)


# -- several files, errors file, exit codes -------------------------------------------------------
def test_several_files_in_one_run_and_the_errors_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], su_conn: psycopg.Connection,
        admin_env: str) -> None:
    tag = new_tag()
    events = botimage_events(tag, clients=("northgate",), jobs=4)
    half = len(events) // 2
    first = write_ndjson(tmp_path / "a.ndjson", events[:half])
    second = tmp_path / "b.ndjson.gz"
    with gzip.open(second, "wt") as fh:
        fh.writelines(json.dumps(e) + "\n" for e in events[half:])
        fh.write("{oops\n")
    errors = tmp_path / "errors.ndjson"
    code, out, err = run_cli(capsys, "load", "--errors", str(errors), str(first), str(second))
    assert code == 3
    assert summary_numbers(out) == {"accepted": len(events), "duplicates": 0, "rejected": 1}
    assert "records from 2 file(s)" in out
    assert "100.0%" in err  # plain progress lines when stderr is not a terminal
    [bad] = [json.loads(line) for line in errors.read_text().splitlines()]
    assert (bad["file"], bad["line"]) == (str(second), len(events) - half + 1)
    assert events_of(su_conn, tag) == len(events)


def test_exit_codes_and_one_line_reasons(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch, api_url: str,
                                         jwt_for: Callable[..., str]) -> None:
    monkeypatch.setenv("STEPLEDGER_URL", api_url)
    tag = new_tag()
    path = write_ndjson(tmp_path / "ok.ndjson", botimage_events(tag, jobs=1))

    monkeypatch.setenv("STEPLEDGER_TOKEN", jwt_for("admin"))
    code, out, _ = run_cli(capsys, "load", "--quiet", str(path))
    assert code == 0 and summary_numbers(out)["rejected"] == 0

    code, _, err = run_cli(capsys, "load", str(tmp_path / "missing.ndjson"))
    assert (code, err.strip()) == (1, f"stepledger: cannot read {tmp_path}/missing.ndjson: "
                                      "no such file")

    monkeypatch.setenv("STEPLEDGER_TOKEN", "not-a-jwt")
    code, _, err = run_cli(capsys, "load", "--quiet", str(path))
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "HTTP 401" in err and "STEPLEDGER_TOKEN" in err

    monkeypatch.setenv("STEPLEDGER_TOKEN", jwt_for("client", "st-mary"))
    code, _, err = run_cli(capsys, "load", "--quiet", str(path))
    assert code == 1 and "HTTP 403" in err and len(err.strip().splitlines()) == 1

    code, _, err = run_cli(capsys, "load", "--batch-size", "0", str(path))
    assert (code, err.strip()) == (1, "stepledger: --batch-size must be between 1 and 10000")


def test_without_a_token_the_local_stacks_secret_is_used(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        settings: Settings, su_conn: psycopg.Connection) -> None:
    monkeypatch.delenv("STEPLEDGER_TOKEN", raising=False)
    monkeypatch.setenv("STEPLEDGER_HOME", str(settings.home))
    monkeypatch.setenv("STEPLEDGER_API_PORT", str(settings.api_port))
    tag = new_tag()
    path = write_ndjson(tmp_path / "ok.ndjson", botimage_events(tag, jobs=1))
    code, _, _ = run_cli(capsys, "load", "--quiet", str(path))
    assert code == 0
    assert events_of(su_conn, tag) > 0

    monkeypatch.setenv("STEPLEDGER_HOME", str(tmp_path / "nowhere"))
    code, _, err = run_cli(capsys, "load", "--quiet", str(path))
    assert code == 1
    assert err.startswith("stepledger: no API token: pass --token or set STEPLEDGER_TOKEN")
    assert not (tmp_path / "nowhere").exists()  # no secret was made up on the way


def test_convert_prints_the_events_without_sending(tmp_path: Path,
                                                   capfd: pytest.CaptureFixture[str],
                                                   su_conn: psycopg.Connection) -> None:
    tag = new_tag()
    events = botimage_events(tag, jobs=1)
    path = tmp_path / "run.log"
    path.write_text("\n".join([*legacy_lines(events), "2026-01-01T00:00:00Z [x] job=J step 1 a b"]))
    result = subprocess.run([sys.executable, "-m", "stepledger", "load", "--convert", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 3
    converted = [json.loads(line) for line in result.stdout.splitlines()]
    assert [{k: v for k, v in e.items() if k != "event_id"} for e in converted] == \
        [{k: v for k, v in e.items() if k != "event_id"} for e in events]
    assert result.stderr.strip() == f"{path}:{len(events) + 1}: unknown status 'b': use " \
                                    "started, completed, failed or skipped"
    assert events_of(su_conn, tag) == 0


def test_progress_bar_on_a_terminal(tmp_path: Path, api_url: str,
                                    jwt_for: Callable[..., str]) -> None:
    tag = new_tag()
    path = write_ndjson(tmp_path / "events.ndjson", botimage_events(tag, jobs=3))
    primary, secondary = pty.openpty()
    env = {**os.environ, "STEPLEDGER_URL": api_url, "STEPLEDGER_TOKEN": jwt_for("admin")}
    try:
        proc = subprocess.run([sys.executable, "-m", "stepledger", "load", str(path)],
                              stdout=subprocess.PIPE, stderr=secondary, env=env, timeout=60)
        os.close(secondary)
        chunks = []
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # EIO: the terminal is closed and drained
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(primary)
    tty = b"".join(chunks).decode()
    assert proc.returncode == 0, proc.stdout
    assert "\r\x1b[K" in tty and "100.0% [########################]" in tty
    assert re.search(r"records  [\d,]+/s  ETA 0:00", tty)
    assert b"accepted" in proc.stdout and b"\x1b" not in proc.stdout


def test_a_load_rides_out_an_api_restart(tmp_path: Path, settings: Settings, api_url: str,
                                         jwt_for: Callable[..., str],
                                         su_conn: psycopg.Connection) -> None:
    tag = new_tag()
    events = botimage_events(tag, jobs=2)
    path = write_ndjson(tmp_path / "events.ndjson", events)
    access_log = settings.log_dir / "nginx-access.log"
    seen = access_log.read_text().count('/rpc/ingest_ndjson HTTP/1.1" 502')
    result: list[object] = []
    stack.stop_postgrest(settings)
    try:
        with IngestClient(api_url, jwt_for("admin")) as client:
            loader = Loader(client, LoadOptions(batch_size=50, retry=RetryPolicy(
                attempts=None, initial_s=0.2, max_s=1.0)))
            thread = threading.Thread(target=lambda: result.append(loader.load([str(path)])))
            thread.start()
            wait_for(lambda: access_log.read_text().count(
                '/rpc/ingest_ndjson HTTP/1.1" 502') >= seen + 2, what="502s from the gateway")
            stack.start_postgrest(settings)
            thread.join(timeout=120)
    finally:
        stack.start_postgrest(settings)
    [summary] = result
    assert isinstance(summary, LoadSummary)
    assert (summary.accepted, summary.rejected) == (len(events), 0)
    assert events_of(su_conn, tag) == len(events)
