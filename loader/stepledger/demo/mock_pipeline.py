"""A mock BotImage pipeline that reports through the SDK, as the real program would.

Each job runs the 20 steps in order with realistic durations; a step can fail with its typical
error, transient failures are retried (up to 3 attempts), the comparison with prior studies is
skipped when a patient has none, and some jobs end failed, or stop mid-way (still running, or
stalled on a machine that died).

Two clocks: `virtual` runs the jobs of the past weeks instantly on a simulated clock (what
`stepledger demo` does to fill the ledger with history), `realtime` runs jobs now, the clients in
parallel, with step durations divided by `speed`, so the web app shows progress live.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from stepledger.demo import simulate
from stepledger.demo.simulate import BOTIMAGE_STEPS, SITES
from stepledger.sdk import Job, Tracker

MAX_ATTEMPTS = 3
UNITS_PER_IMAGE = ("dicom-intake", "deidentification", "quality-control")


class StepFailure(Exception):
    """What a BotImage step raises; the SDK reports `code`, the message and `retryable`."""

    def __init__(self, code: str, message: str, retryable: bool) -> None:
        super().__init__(message)
        self.code = code
        self.retryable = retryable


class VirtualClock:
    """A clock the pipeline advances itself: `work(s)` moves it on instead of sleeping."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def work(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class WallClock:
    """The real clock; `work(s)` sleeps s / speed seconds."""

    def __init__(self, speed: float, stop: threading.Event | None = None) -> None:
        self.speed = speed
        self.stop = stop or threading.Event()

    def __call__(self) -> datetime:
        return datetime.now(UTC)

    def work(self, seconds: float) -> None:
        self.stop.wait(seconds / self.speed)


@dataclass
class JobPlan(simulate.JobPlan):
    seed: int               # of the job's own random choices


@dataclass
class RunSummary:
    jobs: Counter[str] = field(default_factory=Counter)
    events: int = 0


def plan_history(clients: Sequence[str], jobs_per_client: int, now: datetime, days: int = 14,
                 seed: int = 7) -> list[JobPlan]:
    """A few weeks of jobs per client: mostly completed, some failed, a few running or stalled."""
    rng = random.Random(seed)
    plans = []
    for client in clients:
        for n in range(jobs_per_client):
            if n >= jobs_per_client - 2:
                outcome, start = "running", now - timedelta(minutes=rng.uniform(5, 40))
            elif n == jobs_per_client - 3:
                outcome, start = "stalled", now - timedelta(hours=rng.uniform(5, 20))
            else:
                outcome = "failed" if rng.random() < 0.12 else "completed"
                start = now - timedelta(days=rng.uniform(0.3, days))
            plans.append(JobPlan(client, f"{client}-{start:%Y%m%d}-{n:04d}", start, outcome,
                                 rng.randrange(1 << 30)))
    return plans


def run_job(job: Job, plan: JobPlan, work: Callable[[float], None],
            now: Callable[[], datetime] | None = None) -> str:
    """Run the 20 steps of one study as BotImage does; returns how the job ended.

    `now`, in virtual time, is the present: a job that reaches it is still running.
    """
    rng = random.Random(plan.seed)
    images = rng.choice([120, 240, 300, 480, 512, 960])
    stop_at = len(BOTIMAGE_STEPS)
    if plan.outcome in ("running", "stalled"):
        stop_at = rng.randrange(3, len(BOTIMAGE_STEPS) - 2)
    fail_at = rng.randrange(2, len(BOTIMAGE_STEPS)) if plan.outcome == "failed" else -1
    clock = job.tracker.clock
    for index, (step, seconds, p_fail, code, message) in enumerate(BOTIMAGE_STEPS):
        duration = max(1.0, rng.gauss(seconds, seconds / 4))
        if index >= stop_at or (now is not None and clock() + timedelta(seconds=duration) > now()):
            job.begin(step)            # the machine is still at it (or died at it)
            return "running" if plan.outcome != "stalled" else "stalled"
        if step == "prior-comparison" and rng.random() < 0.3:
            job.skip(step, reason="no prior study for this patient")
            continue
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                with job.step(step) as current:
                    work(duration if attempt == 1 else duration * rng.uniform(0.5, 1.0))
                    if index == fail_at:
                        raise StepFailure(code, message, retryable=False)
                    if rng.random() < p_fail * 3 and attempt < MAX_ATTEMPTS:
                        raise StepFailure(code, message, retryable=True)
                    current.units = images if step in UNITS_PER_IMAGE else 1
                    if step == "dicom-intake":
                        current.data.update(images=images, series=rng.randint(1, 6),
                                            modality=rng.choice(["CT", "MR", "MG"]))
                    elif step == "lesion-detection":
                        current.data.update(lesions_found=rng.randint(0, 4),
                                            max_confidence=round(rng.random(), 3))
                break
            except StepFailure as failure:
                if not failure.retryable:
                    return "failed"
                work(rng.uniform(5, 60))   # back off before the next attempt
        work(rng.uniform(0.5, 5))
    return "completed"


def run_history(tracker: Tracker, clients: Sequence[str], jobs_per_client: int,
                now: datetime | None = None, seed: int = 7) -> RunSummary:
    """Jobs of the past two weeks on a virtual clock (the tracker must use `clock`)."""
    now = now or datetime.now(UTC)
    clock = tracker.clock
    if not isinstance(clock, VirtualClock):
        raise TypeError("run_history needs a Tracker(clock=VirtualClock(...))")
    summary = RunSummary()
    before = tracker.stats.emitted
    for plan in plan_history(clients, jobs_per_client, now, seed=seed):
        clock.now = plan.start
        job = tracker.job(plan.job_id, client_id=plan.client_id,
                          source=random.Random(plan.seed).choice(
                              SITES.get(plan.client_id, [f"{plan.client_id}-node"])))
        summary.jobs[run_job(job, plan, clock.work, now=lambda: now)] += 1
    summary.events = tracker.stats.emitted - before
    return summary


def run_live(tracker: Tracker, clients: Sequence[str], jobs_per_client: int, speed: float,
             seed: int = 7, stop: threading.Event | None = None) -> RunSummary:
    """Jobs now, on the wall clock: one thread per client, its jobs one after another."""
    stop = stop or threading.Event()
    clock = WallClock(speed, stop)
    summary = RunSummary()
    lock = threading.Lock()
    before = tracker.stats.emitted
    rng = random.Random(seed)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")

    def client_jobs(client: str, seeds: list[int]) -> None:
        for n, job_seed in enumerate(seeds):
            if stop.is_set():
                return
            roll = random.Random(job_seed).random()
            outcome = "failed" if roll < 0.12 else "completed"
            plan = JobPlan(client, f"{client}-live-{stamp}-{n:04d}", datetime.now(UTC),
                           outcome, job_seed)
            sites = SITES.get(client, [f"{client}-node"])
            job = tracker.job(plan.job_id, client_id=client,
                              source=random.Random(job_seed).choice(sites))
            ended = run_job(job, plan, clock.work)
            with lock:
                summary.jobs[ended] += 1

    threads = [threading.Thread(target=client_jobs, name=f"botimage-{client}",
                                args=(client, [rng.randrange(1 << 30)
                                               for _ in range(jobs_per_client)]))
               for client in clients]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            while thread.is_alive():
                thread.join(0.5)
    except KeyboardInterrupt:
        stop.set()
        for thread in threads:
            thread.join()
    summary.events = tracker.stats.emitted - before
    return summary


def job_seconds(speed: float = 1.0) -> float:
    """Typical wall time of one job at `speed`."""
    return sum(s[1] for s in BOTIMAGE_STEPS) / speed
