"""The SDK and the pipeline's steps: a wrong step key fails in the pipeline's code with a
suggestion, a job can end early by skipping its remaining steps, and a refused token's hint names
the SDK's argument."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from conftest import free_ports
from stepledger import StepledgerError
from stepledger.sdk import Tracker, TrackerError, UnknownStepError
from test_loader_support import new_tag

pytestmark = pytest.mark.usefixtures("loader_catalog")



def test_a_wrong_step_key_raises_with_a_suggestion(make_tracker: Callable[..., Tracker]
                                                   ) -> None:
    tracker = make_tracker()
    with tracker.job(f"{new_tag()}-typo") as job:
        with pytest.raises(UnknownStepError) as caught, job.step("dicom-intak"):
            pass
        assert str(caught.value) == ("pipeline 'botimage' has no step 'dicom-intak'; "
                                     "did you mean 'dicom-intake'?")
        with pytest.raises(UnknownStepError, match="its steps are dicom-intake, "):
            job.skip("zzzzzzzz")
    assert tracker.stats.emitted == 0                   # nothing was sent for the wrong key
    with pytest.raises(TrackerError, match="unknown pipeline 'nope'"):
        tracker.job("J", pipeline="nope").step("x")


def test_skip_remaining_ends_the_job_and_it_completes(
        make_tracker: Callable[..., Tracker], su_conn: psycopg.Connection) -> None:
    tracker = make_tracker()
    job_id = f"{new_tag()}-early"
    with tracker.job(job_id) as job:
        for step in ("dicom-intake", "integrity-check"):
            with job.step(step, units=2):
                pass
        started = job.begin("deidentification")
        started.fail("no images left")
        skipped = job.skip_remaining("no series to analyse")
    assert tracker.flush(timeout_s=60)
    total = su_conn.execute("select count(*) from ledger.pipeline_steps "
                            "where pipeline = 'botimage'").fetchone()
    assert total is not None
    assert len(skipped) == total[0] - 3
    assert skipped[0] == "metadata-extraction" and "deidentification" not in skipped
    runs = dict(su_conn.execute(
        "select step, status from ledger.step_runs where job_id = %s", [job_id]).fetchall())
    assert {runs[k] for k in skipped} == {"skipped"}
    assert runs["deidentification"] == "failed"
    reasons = su_conn.execute(
        "select distinct data->>'reason' from ledger.events "
        "where job_id = %s and status = 'skipped'", [job_id]).fetchall()
    assert reasons == [("no series to analyse",)]
    assert tracker.stats.rejected == 0


def test_skip_remaining_after_every_step_completed_skips_nothing(
        make_tracker: Callable[..., Tracker], su_conn: psycopg.Connection) -> None:
    tracker = make_tracker()
    job_id = f"{new_tag()}-full"
    keys = tracker.step_keys("botimage")
    assert keys and keys[0] == "dicom-intake"
    with tracker.job(job_id) as job:
        for step in keys:
            with job.step(step):
                pass
        assert job.skip_remaining("done anyway") == []
    assert tracker.flush(timeout_s=60)
    assert su_conn.execute("select status, steps_done = steps_total from ledger.jobs "
                           "where job_id = %s", [job_id]).fetchone() == ("completed", True)


def test_without_the_api_steps_go_unchecked_and_nothing_is_lost(
        make_tracker: Callable[..., Tracker]) -> None:
    [port] = free_ports(1)
    tracker = make_tracker(url=f"http://127.0.0.1:{port}", token="any")
    with tracker.job(f"{new_tag()}-offline") as job:
        with job.step("dicom-intake"):
            pass
        with pytest.raises(TrackerError, match="are needed and the API cannot give them"):
            job.skip_remaining()
    assert tracker.spool.pending_events() == 2


def test_a_refused_token_names_the_sdk_argument(make_tracker: Callable[..., Tracker]) -> None:
    tracker = make_tracker(token="not.a.token")
    with tracker.job(f"{new_tag()}-token") as job, job.step("dicom-intake"):
        pass
    with pytest.raises(TrackerError) as caught:
        tracker.flush(timeout_s=30)
    message = str(caught.value)
    assert "HTTP 401" in message
    assert "pass token= to Tracker(...) or set STEPLEDGER_TOKEN" in message
    assert "--token" not in message


def test_no_token_at_all_names_the_sdk_argument(monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    monkeypatch.delenv("STEPLEDGER_TOKEN", raising=False)
    monkeypatch.delenv("STEPLEDGER_JWT_SECRET", raising=False)
    monkeypatch.setenv("STEPLEDGER_HOME", str(tmp_path / "nowhere"))
    with pytest.raises(StepledgerError) as caught:
        Tracker("http://127.0.0.1:9", client_id="st-mary", pipeline="botimage",
                spool_dir=tmp_path / "spool")
    assert "no API token: pass token= to Tracker(...) or set STEPLEDGER_TOKEN" in str(caught.value)
