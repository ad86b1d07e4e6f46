"""Job progress (contract §6) under the edge cases real pipelines produce.

Each scenario registers its own small pipeline and client inside a transaction that is rolled
back, ingests events through api.ingest as an admin, and reads api.jobs / api.step_runs.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

STEPS = ["fetch", "analyse", "report"]
# Recent enough that running jobs are not stalled (the pipelines' stall timeout is an hour),
# whole milliseconds so that it round-trips through the events unchanged.
T0 = (datetime.now(UTC) - timedelta(minutes=10)).replace(microsecond=0)
LONG_AGO = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def ts(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Scenario:
    """A pipeline, a client and helpers to send events and read progress, in one transaction."""

    def __init__(self, conn: psycopg.Connection, steps: list[str] | None = None,
                 stall_timeout: str = "1 hour") -> None:
        self.conn = conn
        tag = uuid.uuid4().hex[:8]
        self.pipeline = f"tp-{tag}"
        self.client = f"tc-{tag}"
        self.steps = list(steps or STEPS)
        self.stall_timeout = stall_timeout
        self.version = self.register(self.steps)
        conn.execute("select ledger.add_client(%s, %s)", (self.client, "Test client"))
        self.seq = 0

    def register(self, steps: list[str]) -> int:
        definition = {"pipeline": self.pipeline, "title": "Test pipeline",
                      "stall_timeout": self.stall_timeout,
                      "steps": [{"key": s, "title": s.title()} for s in steps]}
        result = self.conn.execute("select ledger.register_pipeline(%s::jsonb)",
                                   (json.dumps(definition),)).fetchone()[0]
        self.steps = list(steps)
        return int(result["version"])

    def event(self, job: str, step: str, status: str, at: datetime, attempt: int = 1,
              **extra: Any) -> dict[str, Any]:
        self.seq += 1
        body: dict[str, Any] = {"event_id": f"{job}:{self.seq}", "client_id": self.client,
                                "job_id": job, "pipeline": self.pipeline, "step": step,
                                "status": status, "occurred_at": ts(at), "attempt": attempt}
        if status == "failed":
            body["error"] = extra.pop("error", {"code": "E_TEST", "message": "it broke"})
        body.update(extra)
        return body

    def send(self, *events: dict[str, Any]) -> dict[str, Any]:
        """One batch through api.ingest, as an admin would send it."""
        self.conn.execute("select set_config('request.jwt.claims', %s, true)",
                          (json.dumps({"role": "admin"}),))
        self.conn.execute("set local role admin")
        try:
            result = self.conn.execute("select api.ingest(%s::jsonb)",
                                       (json.dumps(list(events)),)).fetchone()[0]
        finally:
            self.conn.execute("reset role")
        assert result["accepted"] == len(events), result
        return result

    def job(self, job: str) -> dict[str, Any]:
        with self.conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute("select * from api.jobs where client_id = %s and job_id = %s",
                              (self.client, job)).fetchone()
        assert row is not None, f"job {job} not found"
        return row

    def runs(self, job: str) -> dict[tuple[str, int], dict[str, Any]]:
        with self.conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute("select * from api.step_runs where client_id = %s and job_id = %s",
                               (self.client, job)).fetchall()
        return {(r["step"], r["attempt"]): r for r in rows}

    def complete_all(self, job: str, start: datetime, steps: list[str] | None = None) -> datetime:
        """Runs steps one after the other, 10 s each; returns the end time."""
        moment = start
        for step in steps or self.steps:
            self.send(self.event(job, step, "started", moment),
                      self.event(job, step, "completed", moment + timedelta(seconds=10)))
            moment += timedelta(seconds=12)
        return moment


@pytest.fixture
def scenario(db: psycopg.Connection) -> Callable[..., Scenario]:
    return lambda **kw: Scenario(db, **kw)


@pytest.fixture
def sc(scenario: Callable[..., Scenario]) -> Iterator[Scenario]:
    yield scenario()


# -- the happy path --------------------------------------------------------------------------------
def test_job_completes_when_every_step_is_done(sc: Scenario) -> None:
    end = sc.complete_all("j1", T0)
    job = sc.job("j1")
    assert (job["status"], job["steps_total"], job["steps_done"]) == ("completed", 3, 3)
    assert job["progress"] == 1
    assert job["started_at"] == T0
    assert job["finished_at"] == end - timedelta(seconds=2)
    assert job["last_error"] is None


def test_progress_is_live_after_each_batch(sc: Scenario) -> None:
    sc.send(sc.event("j1", "fetch", "started", T0))
    assert (sc.job("j1")["steps_done"], sc.job("j1")["status"]) == (0, "running")
    sc.send(sc.event("j1", "fetch", "completed", T0 + timedelta(seconds=5)))
    job = sc.job("j1")
    assert job["steps_done"] == 1
    assert float(job["progress"]) == pytest.approx(1 / 3, abs=1e-4)
    assert job["finished_at"] is None


# -- retries ---------------------------------------------------------------------------------------
def test_retry_keeps_every_attempt_and_the_latest_decides(sc: Scenario) -> None:
    sc.send(sc.event("j1", "fetch", "started", T0),
            sc.event("j1", "fetch", "failed", T0 + timedelta(seconds=3),
                     error={"code": "E_NET", "message": "timeout", "retryable": True}))
    job = sc.job("j1")
    assert job["status"] == "failed"
    assert job["last_error"] == "E_NET: timeout"
    assert job["last_error_step"] == "fetch"

    sc.send(sc.event("j1", "fetch", "started", T0 + timedelta(seconds=10), attempt=2))
    job = sc.job("j1")
    assert job["status"] == "running", "a new attempt reopens the step"
    assert job["finished_at"] is None
    assert job["last_error"] is None

    sc.send(sc.event("j1", "fetch", "completed", T0 + timedelta(seconds=20), attempt=2))
    runs = sc.runs("j1")
    assert set(runs) == {("fetch", 1), ("fetch", 2)}
    assert runs[("fetch", 1)]["status"] == "failed"
    assert runs[("fetch", 1)]["is_latest"] is False
    assert runs[("fetch", 1)]["error_code"] == "E_NET"
    assert float(runs[("fetch", 1)]["duration_s"]) == 3
    assert runs[("fetch", 2)]["status"] == "completed"
    assert runs[("fetch", 2)]["is_latest"] is True
    assert float(runs[("fetch", 2)]["duration_s"]) == 10
    assert sc.job("j1")["steps_done"] == 1


def test_retries_and_retry_expected_follow_every_batch(sc: Scenario) -> None:
    retryable = {"code": "E_NET", "message": "timeout", "retryable": True}
    sc.send(sc.event("j1", "fetch", "failed", T0, error=retryable))
    job = sc.job("j1")
    assert (job["retries"], job["retry_expected"]) == (0, True)
    sc.send(sc.event("j1", "fetch", "failed", T0 + timedelta(seconds=5), attempt=2,
                     error={"code": "E_BAD", "message": "corrupt input"}))
    job = sc.job("j1")
    assert (job["retries"], job["retry_expected"]) == (1, False), "the latest failure decides"
    sc.send(sc.event("j1", "fetch", "completed", T0 + timedelta(seconds=9), attempt=4),
            sc.event("j1", "analyse", "started", T0 + timedelta(seconds=10), attempt=2),
            sc.event("j1", "analyse", "failed", T0 + timedelta(seconds=12), attempt=2,
                     error=retryable))
    job = sc.job("j1")
    assert (job["status"], job["last_error_step"]) == ("failed", "analyse")
    assert (job["retries"], job["retry_expected"]) == (3 + 1, True)
    # a late event of a lower attempt changes neither
    sc.send(sc.event("j1", "fetch", "started", T0 + timedelta(seconds=1), attempt=3))
    job = sc.job("j1")
    assert (job["retries"], job["retry_expected"]) == (4, True)
    sc.send(sc.event("j1", "analyse", "completed", T0 + timedelta(seconds=20), attempt=3))
    job = sc.job("j1")
    assert (job["status"], job["retries"], job["retry_expected"]) == ("running", 5, False)


def test_a_page_of_jobs_reads_the_jobs_alone(db: psycopg.Connection) -> None:
    """GET /jobs costs the same however many steps and attempts a client has: the page reads the
    jobs (and the catalog), never the job steps or step runs (on a Citus cluster, one shard)."""
    plan = db.execute("explain (format json) select * from api.jobs "
                      "where client_id = 'st-mary' order by updated_at desc limit 50"
                      ).fetchone()[0]
    relations: set[str] = set()

    def walk(node: dict[str, Any]) -> None:
        if "Relation Name" in node:
            relations.add(node["Relation Name"])
        for child in node.get("Plans", []):
            walk(child)
    walk(plan[0]["Plan"])
    assert "jobs" in relations
    assert not relations & {"job_steps", "step_runs"}, relations


def test_a_failed_latest_attempt_fails_the_job(sc: Scenario) -> None:
    sc.send(sc.event("j1", "fetch", "started", T0),
            sc.event("j1", "fetch", "completed", T0 + timedelta(seconds=2)),
            sc.event("j1", "analyse", "started", T0 + timedelta(seconds=3)),
            sc.event("j1", "analyse", "failed", T0 + timedelta(seconds=9),
                     error={"code": "GPU_OOM", "message": "out of memory"}))
    job = sc.job("j1")
    assert job["status"] == "failed"
    assert job["finished_at"] == T0 + timedelta(seconds=9)
    assert job["steps_done"] == 1
    assert job["last_error"] == "GPU_OOM: out of memory"


# -- out of order and late events ------------------------------------------------------------------
def test_completed_before_started_across_batches(sc: Scenario) -> None:
    sc.send(sc.event("j1", "fetch", "completed", T0 + timedelta(seconds=30)))
    run = sc.runs("j1")[("fetch", 1)]
    assert (run["status"], run["started_at"], run["duration_s"]) == ("completed", None, None)
    sc.send(sc.event("j1", "fetch", "started", T0))
    run = sc.runs("j1")[("fetch", 1)]
    assert run["status"] == "completed", "a late started never reopens a finished attempt"
    assert run["started_at"] == T0
    assert float(run["duration_s"]) == 30
    assert sc.job("j1")["started_at"] == T0


def test_completed_before_started_in_one_batch(sc: Scenario) -> None:
    sc.send(sc.event("j1", "fetch", "completed", T0 + timedelta(seconds=7)),
            sc.event("j1", "fetch", "started", T0))
    run = sc.runs("j1")[("fetch", 1)]
    assert (run["status"], run["started_at"]) == ("completed", T0)
    assert float(run["duration_s"]) == 7


def test_between_terminal_events_the_later_occurrence_wins(sc: Scenario) -> None:
    # The later completion arrives first; the earlier failure arrives late and must not win.
    sc.send(sc.event("j1", "fetch", "started", T0),
            sc.event("j1", "fetch", "completed", T0 + timedelta(seconds=20)))
    sc.send(sc.event("j1", "fetch", "failed", T0 + timedelta(seconds=5)))
    assert sc.runs("j1")[("fetch", 1)]["status"] == "completed"
    assert sc.job("j1")["status"] == "running"
    # A failure that really happened later does win.
    sc.send(sc.event("j1", "fetch", "failed", T0 + timedelta(seconds=40)))
    assert sc.runs("j1")[("fetch", 1)]["status"] == "failed"
    assert sc.job("j1")["status"] == "failed"


def test_a_late_lower_attempt_never_displaces_a_higher_one(sc: Scenario) -> None:
    sc.send(sc.event("j1", "fetch", "started", T0 + timedelta(seconds=60), attempt=2),
            sc.event("j1", "fetch", "completed", T0 + timedelta(seconds=70), attempt=2))
    sc.send(sc.event("j1", "fetch", "started", T0, attempt=1),
            sc.event("j1", "fetch", "failed", T0 + timedelta(seconds=30), attempt=1))
    job = sc.job("j1")
    assert job["status"] == "running"
    assert job["steps_done"] == 1
    assert job["last_error"] is None
    runs = sc.runs("j1")
    assert runs[("fetch", 1)]["state"] == "failed"
    assert runs[("fetch", 2)]["is_latest"] is True


def test_late_events_do_not_move_updated_at_back(sc: Scenario) -> None:
    sc.send(sc.event("j1", "fetch", "started", T0 + timedelta(minutes=5)))
    sc.send(sc.event("j1", "fetch", "started", T0, attempt=1, source="late-host"))
    job = sc.job("j1")
    assert job["updated_at"] == T0 + timedelta(minutes=5)
    assert job["started_at"] == T0


# -- skipped steps ---------------------------------------------------------------------------------
def test_skipped_steps_count_as_done(sc: Scenario) -> None:
    sc.send(sc.event("j1", "fetch", "started", T0),
            sc.event("j1", "fetch", "completed", T0 + timedelta(seconds=5)),
            sc.event("j1", "analyse", "skipped", T0 + timedelta(seconds=6)))
    job = sc.job("j1")
    assert (job["steps_done"], job["status"]) == (2, "running")
    sc.send(sc.event("j1", "report", "skipped", T0 + timedelta(seconds=7)))
    job = sc.job("j1")
    assert (job["steps_done"], job["status"]) == (3, "completed")
    assert job["finished_at"] == T0 + timedelta(seconds=7)
    runs = sc.runs("j1")
    assert runs[("analyse", 1)]["state"] == "skipped"
    assert runs[("analyse", 1)]["ended_at"] == T0 + timedelta(seconds=6)


# -- a pipeline that gains steps -------------------------------------------------------------------
def test_jobs_count_the_steps_of_the_version_they_run(sc: Scenario) -> None:
    sc.send(sc.event("old", "fetch", "started", T0))
    assert sc.register(["fetch", "analyse", "qa", "report"]) == 2

    # A job started under version 1 completes with the three steps it knows.
    sc.complete_all("old", T0, ["fetch", "analyse", "report"])
    old = sc.job("old")
    assert (old["status"], old["steps_total"], old["steps_done"], old["pipeline_version"]) == \
        ("completed", 3, 3, 1)

    # A job started after version 2 needs all four.
    sc.complete_all("new", T0 + timedelta(hours=1), ["fetch", "analyse", "report"])
    new = sc.job("new")
    assert (new["status"], new["steps_total"], new["steps_done"], new["pipeline_version"]) == \
        ("running", 4, 3, 2)
    sc.send(sc.event("new", "qa", "skipped", T0 + timedelta(hours=2)))
    assert sc.job("new")["status"] == "completed"


def test_an_old_job_that_runs_a_new_step_moves_to_the_new_version(sc: Scenario) -> None:
    sc.send(sc.event("mid", "fetch", "started", T0),
            sc.event("mid", "fetch", "completed", T0 + timedelta(seconds=5)))
    sc.register(["fetch", "analyse", "qa", "report"])
    sc.send(sc.event("mid", "qa", "started", T0 + timedelta(seconds=6)),
            sc.event("mid", "qa", "completed", T0 + timedelta(seconds=9)))
    job = sc.job("mid")
    assert (job["pipeline_version"], job["steps_total"], job["steps_done"]) == (2, 4, 2)
    assert float(job["progress"]) == 0.5
    sc.complete_all("mid", T0 + timedelta(minutes=1), ["analyse", "report"])
    job = sc.job("mid")
    assert (job["status"], job["steps_done"], float(job["progress"])) == ("completed", 4, 1.0)


# -- attempts left started -------------------------------------------------------------------------
def test_started_attempts_are_closed_when_the_job_fails(sc: Scenario) -> None:
    fail_at = T0 + timedelta(seconds=30)
    sc.send(sc.event("j1", "fetch", "started", T0),
            sc.event("j1", "analyse", "started", T0 + timedelta(seconds=1)),
            sc.event("j1", "report", "started", T0 + timedelta(seconds=2)),
            sc.event("j1", "report", "failed", fail_at))
    assert sc.job("j1")["status"] == "failed"
    runs = sc.runs("j1")
    for step in ("fetch", "analyse"):
        assert runs[(step, 1)]["status"] == "started", "the recorded status stays as reported"
        assert runs[(step, 1)]["state"] == "abandoned"
        assert runs[(step, 1)]["ended_at"] == fail_at
    assert runs[("report", 1)]["state"] == "failed"


def test_a_started_attempt_superseded_by_a_retry_is_abandoned(sc: Scenario) -> None:
    retry_at = T0 + timedelta(minutes=3)
    sc.send(sc.event("j1", "fetch", "started", T0),
            sc.event("j1", "fetch", "started", retry_at, attempt=2))
    runs = sc.runs("j1")
    assert runs[("fetch", 1)]["state"] == "abandoned"
    assert runs[("fetch", 1)]["ended_at"] == retry_at
    assert runs[("fetch", 2)]["state"] == "running"
    assert runs[("fetch", 2)]["ended_at"] is None
    assert sc.job("j1")["status"] == "running"


def test_a_running_attempt_reads_as_running(sc: Scenario) -> None:
    now = datetime.now(UTC)
    sc.send(sc.event("j1", "fetch", "started", now - timedelta(minutes=5)))
    run = sc.runs("j1")[("fetch", 1)]
    assert (run["state"], run["ended_at"]) == ("running", None)


# -- stalled jobs ----------------------------------------------------------------------------------
def test_stalled_after_the_pipelines_timeout_without_an_event(sc: Scenario) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    last = now - timedelta(minutes=90)  # the pipeline's stall timeout is one hour
    sc.send(sc.event("stuck", "fetch", "started", last - timedelta(minutes=1)),
            sc.event("stuck", "fetch", "completed", last - timedelta(seconds=30)),
            sc.event("stuck", "analyse", "started", last))
    sc.send(sc.event("busy", "fetch", "started", now - timedelta(minutes=20)))

    stuck, busy = sc.job("stuck"), sc.job("busy")
    assert stuck["status"] == "stalled"
    assert stuck["stalls_at"] == last + timedelta(hours=1)
    assert busy["status"] == "running"
    assert busy["stalls_at"] == now - timedelta(minutes=20) + timedelta(hours=1)
    run = sc.runs("stuck")[("analyse", 1)]
    assert run["state"] == "stalled"
    assert run["ended_at"] == last, "a stalled bar ends at the job's last sign of life"

    # A late event that happened long ago does not revive it; a new one does.
    sc.send(sc.event("stuck", "fetch", "started", last - timedelta(minutes=1), attempt=1))
    assert sc.job("stuck")["status"] == "stalled"
    sc.send(sc.event("stuck", "analyse", "completed", now - timedelta(seconds=5)))
    job = sc.job("stuck")
    assert job["status"] == "running"
    assert sc.runs("stuck")[("analyse", 1)]["state"] == "completed"


def test_stall_timeout_is_the_pipelines_own(scenario: Callable[..., Scenario]) -> None:
    quick = scenario(stall_timeout="5 minutes")
    now = datetime.now(UTC)
    quick.send(quick.event("j1", "fetch", "started", now - timedelta(minutes=10)))
    assert quick.job("j1")["status"] == "stalled"


def test_finished_jobs_never_stall(sc: Scenario) -> None:
    sc.complete_all("done", LONG_AGO)  # far past the timeout
    sc.send(sc.event("bad", "fetch", "failed", LONG_AGO))
    assert sc.job("done")["status"] == "completed"
    assert sc.job("bad")["status"] == "failed"
    assert sc.job("done")["stalls_at"] is None


# -- the change stamp ------------------------------------------------------------------------------
def test_every_change_stamps_the_transaction(sc: Scenario) -> None:
    sc.send(sc.event("j1", "fetch", "started", T0))
    xid = sc.conn.execute("select pg_current_xact_id()::text::bigint").fetchone()[0]
    stamp = sc.conn.execute("select changed_xid from ledger.jobs where client_id = %s "
                            "and job_id = 'j1'", (sc.client,)).fetchone()[0]
    assert stamp == xid
