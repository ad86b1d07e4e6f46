"""The pipeline SDK against the real stack: steps as context managers, the API going away
mid-run (gateway down, PostgREST down), a crashed process, refused tokens, rejected events."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from conftest import free_ports
from stepledger import stack
from stepledger.api_client import IngestClient
from stepledger.sdk import Tracker, TrackerError
from stepledger.sdk.spool import Spool, read_batch
from stepledger.settings import Settings
from test_loader_support import count, new_tag, run_cli, wait_for

pytestmark = pytest.mark.usefixtures("loader_catalog")


class GpuOutOfMemory(Exception):
    code = "GPU_OOM"
    retryable = True


def runs(conn: psycopg.Connection, job_id: str) -> list[tuple[Any, ...]]:
    return conn.execute(
        "select step, attempt, status, units, error_code, error_message, error_retryable "
        "from ledger.step_runs where job_id = %s order by step_index, attempt",
        [job_id]).fetchall()


def events_of_job(conn: psycopg.Connection, job_id: str) -> int:
    return count(conn, "select count(*) from ledger.events where job_id = %s", [job_id])


def test_steps_report_their_start_end_and_errors(make_tracker: Callable[..., Tracker],
                                                 su_conn: psycopg.Connection) -> None:
    tracker = make_tracker()
    job_id = f"{new_tag()}-study"
    with tracker.job(job_id) as job:
        with job.step("dicom-intake", units=240) as step:
            step.data["images"] = 240
        for _ in range(3):
            try:
                with job.step("integrity-check") as step:
                    if step.attempt == 1:
                        raise GpuOutOfMemory("CUDA out of memory (needed 11.2 GiB)")
                break
            except GpuOutOfMemory:
                continue
        with pytest.raises(ValueError, match="burned-in text"), job.step("deidentification"):
            raise ValueError("burned-in text")
        job.skip("metadata-extraction", reason="not needed for MG")
        running = job.begin("series-selection")
    assert tracker.flush(timeout_s=30)
    assert runs(su_conn, job_id) == [
        ("dicom-intake", 1, "completed", 240, None, None, None),
        ("integrity-check", 1, "failed", None, "GPU_OOM", "CUDA out of memory (needed 11.2 GiB)",
         True),
        ("integrity-check", 2, "completed", 1, None, None, None),
        ("deidentification", 1, "failed", None, "ValueError", "burned-in text", None),
        ("metadata-extraction", 1, "skipped", None, None, None, None),
        ("series-selection", 1, "started", None, None, None, None)]
    running.complete(units=2)
    assert tracker.flush(timeout_s=30)
    assert runs(su_conn, job_id)[-1][:4] == ("series-selection", 1, "completed", 2)
    data = su_conn.execute("select data, source from ledger.events "
                           "where job_id = %s and step = 'dicom-intake' and status = 'completed'",
                           [job_id]).fetchone()
    assert data == ({"images": 240}, tracker.source)
    assert tracker.stats.accepted == tracker.stats.emitted == 11
    assert tracker.spool.pending_events() == 0


def emit_steps(tracker: Tracker, job_id: str, steps: list[str]) -> None:
    with tracker.job(job_id) as job:
        for step in steps:
            with job.step(step, units=3):
                pass


STEPS = ["dicom-intake", "integrity-check", "deidentification", "metadata-extraction",
         "series-selection", "format-conversion"]


@pytest.mark.parametrize("component", ["gateway", "postgrest"])
def test_api_stopped_mid_run_then_everything_once(
        component: str, make_tracker: Callable[..., Tracker], settings: Settings,
        su_conn: psycopg.Connection) -> None:
    stop, start = {"gateway": (stack.stop_nginx, stack.start_nginx),
                   "postgrest": (stack.stop_postgrest, stack.start_postgrest)}[component]
    tracker = make_tracker(batch_size=5)
    job_id = f"{new_tag()}-outage"
    emit_steps(tracker, job_id, STEPS[:2])
    assert tracker.flush(timeout_s=30)
    assert events_of_job(su_conn, job_id) == 4
    stop(settings)
    try:
        with tracker.job(job_id) as job:
            for step in STEPS[2:]:
                with job.step(step, units=3):
                    pass
        assert not tracker.flush(timeout_s=1.0)       # the API is away: nothing is lost
        wait_for(lambda: tracker.stats.retries >= 2, what="retries with backoff")
        assert tracker.spool.pending_events() == 8
        assert events_of_job(su_conn, job_id) == 4
    finally:
        start(settings)
    assert tracker.flush(timeout_s=120)
    assert tracker.spool.pending_events() == 0
    assert events_of_job(su_conn, job_id) == 12
    assert count(su_conn, "select count(distinct event_id) from ledger.events where job_id = %s",
                 [job_id]) == 12
    assert su_conn.execute("select steps_done, events from ledger.jobs where job_id = %s",
                           [job_id]).fetchone() == (6, 12)


CRASHING_PIPELINE = textwrap.dedent("""
    import os, sys
    from stepledger.sdk import Tracker
    url, token, spool, job_id = sys.argv[1:5]
    tracker = Tracker(url, token, client_id="riverside", pipeline="botimage", spool_dir=spool,
                      flush_interval_s=0.05)
    with tracker.job(job_id) as job:
        for step in ("dicom-intake", "integrity-check", "deidentification"):
            with job.step(step, units=5):
                pass
    assert not tracker.flush(timeout_s=0.5)   # nobody listens on that port
    print(tracker.spool.pending_events(), flush=True)
    os._exit(9)                                # die without closing anything
""")


def test_a_crashed_pipeline_loses_nothing(tmp_path: Path, api_token: Callable[..., str],
                                          make_tracker: Callable[..., Tracker],
                                          su_conn: psycopg.Connection) -> None:
    job_id = f"{new_tag()}-crash"
    spool = tmp_path / "spool"
    dead_url = f"http://127.0.0.1:{free_ports(1)[0]}"
    token = api_token("riverside")
    result = subprocess.run([sys.executable, "-c", CRASHING_PIPELINE, dead_url, token,
                             str(spool), job_id], capture_output=True, text=True, timeout=120)
    assert result.returncode == 9, result.stderr
    assert result.stdout.strip() == "6"
    left = sorted(spool.glob("slot-*/batch-*.ndjson"))
    assert left and sum(len(read_batch(p)) for p in left) == 6
    assert events_of_job(su_conn, job_id) == 0

    # the next pipeline on this host sends what the dead one left
    tracker = make_tracker(client_id="riverside", spool_dir=spool, token=token)
    assert tracker.flush(timeout_s=60)
    assert events_of_job(su_conn, job_id) == 6
    assert not list(spool.glob("slot-*/batch-*.ndjson"))


def test_a_batch_sent_before_a_crash_is_stored_once(tmp_path: Path, api_url: str,
                                                    api_token: Callable[..., str],
                                                    make_tracker: Callable[..., Tracker],
                                                    su_conn: psycopg.Connection) -> None:
    job_id = f"{new_tag()}-sent"
    root = tmp_path / "spool"
    token = api_token("st-mary")
    # a process spools a batch, sends it, and dies before it can forget it
    spool = Spool(root)
    for n, step in enumerate(STEPS):
        spool.put({"event_id": f"{job_id}-{n}", "client_id": "st-mary", "job_id": job_id,
                   "pipeline": "botimage", "step": step, "status": "completed",
                   "occurred_at": f"2026-11-04T10:0{n}:00Z"})
    batch = spool.seal()
    assert batch is not None
    with IngestClient(api_url, token) as client:
        assert client.send_ndjson(b"\n".join(read_batch(batch))).accepted == 6
    spool.close()

    tracker = make_tracker(spool_dir=root, token=token)
    assert tracker.flush(timeout_s=60)
    assert (tracker.stats.accepted, tracker.stats.duplicates) == (0, 6)
    assert events_of_job(su_conn, job_id) == 6


def test_a_refused_token_is_a_clear_error_and_the_events_are_kept(
        tmp_path: Path, make_tracker: Callable[..., Tracker], api_url: str,
        api_token: Callable[..., str], capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch, su_conn: psycopg.Connection) -> None:
    job_id = f"{new_tag()}-refused"
    tracker = make_tracker(token="expired.or.wrong")
    emit_steps(tracker, job_id, STEPS[:2])
    with pytest.raises(TrackerError) as caught:
        tracker.flush(timeout_s=30)
    error = caught.value
    assert error.status == 401
    assert "HTTP 401" in str(error) and "stepledger token create" in str(error)
    assert "token= to Tracker(...)" in str(error) and "--token" not in str(error)
    assert error.dead is not None and error.dead.parent.name == "dead"
    assert len(read_batch(error.dead)) == 4
    assert "HTTP 401" in error.dead.with_suffix(".reason").read_text()
    assert tracker.flush(timeout_s=5)                # raised once: the pipeline goes on
    # once the token is fixed, the kept batch loads as it is
    monkeypatch.setenv("STEPLEDGER_URL", api_url)
    monkeypatch.setenv("STEPLEDGER_TOKEN", api_token("st-mary"))
    code, out, _ = run_cli(capsys, "load", "--quiet", str(error.dead))
    assert code == 0, out
    assert events_of_job(su_conn, job_id) == 4


def test_rejected_events_are_reported_not_retried(make_tracker: Callable[..., Tracker],
                                                  su_conn: psycopg.Connection) -> None:
    seen: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
    tracker = make_tracker(on_rejected=lambda event, errors: seen.append((event, errors)))
    job_id = f"{new_tag()}-rejected"
    emit_steps(tracker, job_id, ["dicom-intake"])
    # job.step() refuses an unknown key itself (test_sdk_steps.py); emit() sends what it gets.
    for status in ("started", "completed"):
        tracker.emit({"client_id": "st-mary", "job_id": job_id, "pipeline": "botimage",
                      "step": "no-such-step", "status": status, "attempt": 1})
    assert tracker.flush(timeout_s=30)
    assert [(e["step"], e["status"]) for e, _ in seen] == [("no-such-step", "started"),
                                                          ("no-such-step", "completed")]
    assert seen[0][1] == [{"path": "/step", "message":
                           'pipeline "botimage" has no step "no-such-step"'}]
    assert (tracker.stats.accepted, tracker.stats.rejected) == (2, 2)
    assert tracker.spool.pending_events() == 0
    assert events_of_job(su_conn, job_id) == 2


def test_deterministic_ids_make_a_rerun_count_nothing_twice(
        make_tracker: Callable[..., Tracker], su_conn: psycopg.Connection, tmp_path: Path) -> None:
    job_id = f"{new_tag()}-rerun"
    for n in range(2):
        tracker = make_tracker(deterministic_ids=True, spool_dir=tmp_path / f"spool{n}")
        emit_steps(tracker, job_id, STEPS[:3])
        assert tracker.close(timeout_s=30)
    assert (tracker.stats.accepted, tracker.stats.duplicates) == (0, 6)
    assert events_of_job(su_conn, job_id) == 6


def test_a_tracker_needs_a_client_and_a_pipeline(make_tracker: Callable[..., Tracker],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STEPLEDGER_PIPELINE", raising=False)
    tracker = make_tracker(pipeline=None)
    with pytest.raises(TrackerError, match="no pipeline"):
        tracker.job("J")
    assert tracker.job("J", pipeline="botimage").pipeline == "botimage"


# -- the spool on its own ---------------------------------------------------------------------
def test_spool_slots_are_per_process_and_torn_lines_are_dropped(tmp_path: Path) -> None:
    first, second = Spool(tmp_path), Spool(tmp_path)
    assert first.slot.path != second.slot.path
    first.put({"event_id": "a"})
    with open(first.slot.active, "ab") as fh:
        fh.write(b'{"event_id": "torn')          # a crash in the middle of a write
    batch = first.seal()
    assert batch is not None and read_batch(batch) == [b'{"event_id":"a"}']
    second.close()
    assert not (tmp_path / "slot-1").exists()       # an empty slot goes away
    with first.orphans() as orphans:
        assert orphans == []                         # slot-1 is gone, slot-0 is ours
    first.close()
    assert (tmp_path / "slot-0").exists()            # it still holds a batch
    third = Spool(tmp_path)
    assert third.slot.path == tmp_path / "slot-0"
    assert [p.name for p in third.pending()] == [batch.name]
    third.close()
    assert json.loads(read_batch(batch)[0]) == {"event_id": "a"}
    assert os.access(tmp_path / "slot-0" / "lock", os.R_OK)
