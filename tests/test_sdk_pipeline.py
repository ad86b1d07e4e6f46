"""The mock BotImage pipeline (stepledger demo-pipeline) drives the SDK like the real program."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from stepledger.demo.mock_pipeline import VirtualClock, run_history, run_live
from stepledger.sdk import Tracker
from test_loader_support import new_tag, run_cli

pytestmark = pytest.mark.usefixtures("loader_catalog")


@pytest.fixture
def clients(su_conn: psycopg.Connection) -> list[str]:
    tag = new_tag()
    made = [f"mp-{tag}-{n}" for n in range(2)]
    for client in made:
        su_conn.execute("select ledger.add_client(%s, %s)", [client, f"Mock {client}"])
    return made


def job_statuses(conn: psycopg.Connection, clients: list[str]) -> dict[str, int]:
    rows = conn.execute("select status, count(*) from api.jobs where client_id = any(%s) "
                        "group by status", [clients]).fetchall()
    return {status: n for status, n in rows}


def test_history_on_a_virtual_clock(clients: list[str], api_url: str, tmp_path: Path,
                                    jwt_for: Callable[..., str],
                                    su_conn: psycopg.Connection) -> None:
    now = datetime.now(UTC)
    with Tracker(api_url, jwt_for("admin"), pipeline="botimage", spool_dir=tmp_path / "s1",
                 clock=VirtualClock(now), deterministic_ids=True, fsync=False,
                 batch_size=500) as tracker:
        summary = run_history(tracker, clients, 12, now=now, seed=5)
        assert tracker.flush(timeout_s=60)
    assert sum(summary.jobs.values()) == 24
    assert summary.jobs["running"] == 4 and summary.jobs["stalled"] == 2
    assert tracker.stats.accepted == summary.events and tracker.stats.rejected == 0
    # what the pipeline says happened is what the ledger shows
    assert job_statuses(su_conn, clients) == dict(summary.jobs)
    retried = su_conn.execute(
        "select count(*) from ledger.step_runs where client_id = any(%s) and attempt > 1",
        [clients]).fetchone()
    skipped = su_conn.execute(
        "select count(*) from ledger.step_runs where client_id = any(%s) and status = 'skipped'",
        [clients]).fetchone()
    assert retried is not None and retried[0] > 0
    assert skipped is not None and skipped[0] > 0
    # running the same history again counts nothing twice
    with Tracker(api_url, jwt_for("admin"), pipeline="botimage", spool_dir=tmp_path / "s2",
                 clock=VirtualClock(now), deterministic_ids=True, fsync=False) as again:
        run_history(again, clients, 12, now=now, seed=5)
        assert again.flush(timeout_s=60)
    assert (again.stats.accepted, again.stats.duplicates) == (0, summary.events)


def test_live_jobs_in_parallel(clients: list[str], api_url: str, tmp_path: Path,
                               jwt_for: Callable[..., str], su_conn: psycopg.Connection) -> None:
    with Tracker(api_url, jwt_for("admin"), pipeline="botimage", spool_dir=tmp_path / "s",
                 flush_interval_s=0.1) as tracker:
        summary = run_live(tracker, clients, 2, speed=20000, seed=3)
        assert tracker.flush(timeout_s=60)
    assert sum(summary.jobs.values()) == 4
    assert set(summary.jobs) <= {"completed", "failed"}
    assert job_statuses(su_conn, clients) == dict(summary.jobs)


def test_demo_pipeline_command(clients: list[str], capsys: pytest.CaptureFixture[str],
                               monkeypatch: pytest.MonkeyPatch, api_url: str,
                               jwt_for: Callable[..., str], tmp_path: Path) -> None:
    monkeypatch.setenv("STEPLEDGER_URL", api_url)
    monkeypatch.setenv("STEPLEDGER_TOKEN", jwt_for("admin"))
    code, out, err = run_cli(capsys, "demo-pipeline", "--clients", ",".join(clients), "--jobs",
                             "1", "--speed", "20000", "--spool", str(tmp_path / "spool"))
    assert code == 0, err
    assert "2 jobs" in out and "0 rejected" in out
    code, _, err = run_cli(capsys, "demo-pipeline", "--clients", "", "--jobs", "1")
    assert (code, err.strip()) == (1, "stepledger: give at least one client and --jobs >= 1")
