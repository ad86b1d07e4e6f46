"""Jobs and step runs stay live through retries, out-of-order arrival and stalls (contract §6)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest

from stacks import BOTIMAGE_STEPS, register_catalog

STEPS = BOTIMAGE_STEPS


@pytest.fixture(scope="module", autouse=True)
def catalog(su_conn: psycopg.Connection) -> None:
    register_catalog(su_conn, [("st-mary", "St Mary's Hospital")])


class Job:
    """Sends events for one fresh job and reads it back through the API."""

    def __init__(self, http: httpx.Client, start: datetime) -> None:
        self.http = http
        self.job_id = f"job-{uuid.uuid4().hex[:10]}"
        self.start = start
        self.n = 0

    def send(self, step: str, status: str, minute: float, **extra: Any) -> None:
        self.n += 1
        moment = self.start + timedelta(minutes=minute)
        body = {
            "event_id": f"{self.job_id}:{self.n}",
            "client_id": "st-mary",
            "job_id": self.job_id,
            "pipeline": "botimage",
            "step": step,
            "status": status,
            "occurred_at": moment.isoformat().replace("+00:00", "Z"),
            **extra,
        }
        answer = self.http.post("/rpc/ingest", json=body).json()
        assert answer["accepted"] == 1, answer

    def row(self) -> dict[str, Any]:
        rows = self.http.get("/jobs", params={"job_id": f"eq.{self.job_id}"}).json()
        assert len(rows) == 1
        return rows[0]

    def runs(self) -> list[dict[str, Any]]:
        return self.http.get(
            "/step_runs",
            params={
                "client_id": "eq.st-mary",
                "job_id": f"eq.{self.job_id}",
                "order": "step_index,attempt",
            },
        ).json()


NOW = datetime.now(UTC).replace(microsecond=0)
FAIL = {"code": "GPU_OOM", "message": "CUDA out of memory"}


def test_a_retry_that_succeeds_clears_the_failure(admin: httpx.Client) -> None:
    job = Job(admin, NOW - timedelta(minutes=30))
    job.send(STEPS[0], "started", 0)
    job.send(STEPS[0], "failed", 1, error=FAIL)
    assert job.row()["status"] == "failed"
    assert job.row()["last_error"] == "GPU_OOM: CUDA out of memory"
    job.send(STEPS[0], "started", 2, attempt=2)
    assert job.row()["status"] == "running"  # a later attempt exists
    job.send(STEPS[0], "completed", 3, attempt=2, units=12)
    row = job.row()
    assert (row["status"], row["steps_done"], row["last_error"]) == ("running", 1, None)
    runs = job.runs()
    assert [(r["attempt"], r["status"], r["is_latest"]) for r in runs] == [
        (1, "failed", False),
        (2, "completed", True),
    ]
    assert runs[0]["error_code"] == "GPU_OOM" and runs[1]["units"] == 12
    assert runs[1]["duration_s"] == 60


def test_completed_before_started_keeps_completed(admin: httpx.Client) -> None:
    job = Job(admin, NOW - timedelta(minutes=30))
    job.send(STEPS[0], "completed", 5, units=3)
    run = job.runs()[0]
    assert (run["status"], run["started_at"]) == ("completed", None)
    job.send(STEPS[0], "started", 1)
    run = job.runs()[0]
    assert run["status"] == "completed"
    assert run["duration_s"] == 240
    assert job.row()["steps_done"] == 1


def test_all_steps_done_completes_the_job(admin: httpx.Client) -> None:
    job = Job(admin, NOW - timedelta(hours=1))
    for i, step in enumerate(STEPS):
        job.send(step, "skipped" if step == "prior-comparison" else "completed", i)
    row = job.row()
    assert (row["status"], row["steps_done"], row["progress"]) == ("completed", 20, 1)
    assert row["finished_at"] is not None


def test_a_quiet_running_job_is_stalled_after_the_pipeline_timeout(admin: httpx.Client) -> None:
    job = Job(admin, NOW - timedelta(hours=5))  # BotImage's stall timeout is 2 hours
    job.send(STEPS[0], "started", 0)
    job.send(STEPS[0], "completed", 1)
    assert job.row()["status"] == "stalled"
    fresh = Job(admin, NOW - timedelta(minutes=10))
    fresh.send(STEPS[0], "started", 0)
    assert fresh.row()["status"] == "running"


def test_jobs_support_filters_ordering_paging_and_csv(admin: httpx.Client) -> None:
    for _ in range(3):
        Job(admin, NOW - timedelta(minutes=20)).send(STEPS[0], "started", 0)
    page = admin.get(
        "/jobs",
        params={"status": "eq.running", "order": "updated_at.desc", "limit": 2, "offset": 1},
    )
    assert page.status_code == 200 and len(page.json()) == 2
    csv = admin.get(
        "/jobs",
        params={"select": "job_id,status,progress", "limit": 2},
        headers={"Accept": "text/csv"},
    )
    assert csv.headers["content-type"].startswith("text/csv")
    assert csv.text.splitlines()[0] == "job_id,status,progress"
