"""Jobs and steps: context managers that emit started, completed, failed and skipped events."""

from __future__ import annotations

import difflib
from types import TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stepledger.sdk.tracker import Tracker

MAX_CODE = 100        # envelope limits (schemas/step_event.v1.json)
MAX_MESSAGE = 10000


def error_of(exc: BaseException | str, code: str | None = None,
             retryable: bool | None = None) -> dict[str, object]:
    """The envelope's error object for an exception (or a message).

    code: the `code` argument, else the exception's `code` attribute when it is a string, else its
    class name. retryable: the argument, else the exception's `retryable` attribute when boolean.
    """
    if isinstance(exc, BaseException):
        own = getattr(exc, "code", None)
        code = code or (own if isinstance(own, str) and own else type(exc).__name__)
        message = str(exc) or type(exc).__name__
        if retryable is None and isinstance(getattr(exc, "retryable", None), bool):
            retryable = exc.retryable  # type: ignore[attr-defined]
    else:
        message = str(exc) or "failed"
        code = code or "FAILED"
    error: dict[str, object] = {"code": code[:MAX_CODE], "message": message[:MAX_MESSAGE]}
    if retryable is not None:
        error["retryable"] = retryable
    return error


class Job:
    """One job of a pipeline for one client. Attempts are numbered per step: the n-th time a step
    is run in this Job object is attempt n (or pass attempt= explicitly)."""

    def __init__(self, tracker: Tracker, job_id: str, client_id: str, pipeline: str,
                 source: str | None) -> None:
        self.tracker = tracker
        self.job_id = job_id
        self.client_id = client_id
        self.pipeline = pipeline
        self.source = source
        self._attempts: dict[str, int] = {}
        self._reported: set[str] = set()   # steps with at least one event from this object

    def __enter__(self) -> Job:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def step(self, step: str, *, units: float | None = None, attempt: int | None = None,
             data: dict[str, object] | None = None) -> Step:
        """A step to run as `with job.step(...)`: started on entry; completed on a normal exit,
        failed (with the exception as the error) when an exception leaves the block."""
        self._check_step(step)
        number = attempt if attempt is not None else self._attempts.get(step, 0) + 1
        self._attempts[step] = max(number, self._attempts.get(step, 0))
        return Step(self, step, number, units, data)

    def begin(self, step: str, **kwargs: object) -> Step:
        """Start a step now and finish it later with complete(), fail() or skip()."""
        handle = self.step(step, **kwargs)  # type: ignore[arg-type]
        handle.start()
        return handle

    def skip(self, step: str, reason: str | None = None) -> None:
        """Report a step this job does not need."""
        self.step(step).skip(reason)

    def skip_remaining(self, reason: str | None = None) -> list[str]:
        """End the job early: report every step of the pipeline that this job has not reported
        yet as `skipped` (the envelope's status for a step a job does not run; skipped steps
        count as done, so the job completes), with `data.reason` when a reason is given. Steps
        already started, completed, failed or skipped are left as they are. Returns the keys
        skipped. Needs the pipeline's steps from the API (TrackerError when it cannot say)."""
        from stepledger.sdk.tracker import TrackerError

        keys = self.tracker.step_keys(self.pipeline, required=True)
        if keys is None:  # required=True raises instead; kept for the type checker
            raise TrackerError(f"the steps of pipeline {self.pipeline!r} are unknown")
        remaining = [k for k in keys if k not in self._reported]
        for key in remaining:
            self.step(key).skip(reason)
        return remaining

    def _check_step(self, step: str) -> None:
        """A key the pipeline does not have raises at once, with the nearest keys."""
        keys = self.tracker.step_keys(self.pipeline)
        if keys is None or step in keys:
            return
        from stepledger.sdk.tracker import UnknownStepError

        close = difflib.get_close_matches(step, keys, n=3, cutoff=0.5)
        suggestion = (f"did you mean {' or '.join(repr(k) for k in close)}?" if close
                      else f"its steps are {', '.join(keys)}")
        raise UnknownStepError(f"pipeline {self.pipeline!r} has no step {step!r}; {suggestion}")

    def emit(self, step: str, status: str, attempt: int, **fields: object) -> dict[str, object]:
        event: dict[str, object] = {
            "client_id": self.client_id, "job_id": self.job_id, "pipeline": self.pipeline,
            "step": step, "status": status, "attempt": attempt,
        }
        if self.source:
            event["source"] = self.source
        event.update({k: v for k, v in fields.items() if v is not None})
        self._reported.add(step)
        return self.tracker.emit(event)


class Step:
    """One attempt of one step. Set `units` or `data` inside the block to report them."""

    def __init__(self, job: Job, step: str, attempt: int, units: float | None,
                 data: dict[str, object] | None) -> None:
        self.job = job
        self.step = step
        self.attempt = attempt
        self.units = units
        self.data: dict[str, object] = dict(data or {})
        self.started = False
        self.finished = False

    def start(self) -> Step:
        if not self.started:
            self.started = True
            self.job.emit(self.step, "started", self.attempt)
        return self

    def _finish(self, status: str, **fields: object) -> None:
        if self.finished:
            raise RuntimeError(f"step {self.step} attempt {self.attempt} is already finished")
        self.finished = True
        self.job.emit(self.step, status, self.attempt, **fields)

    def complete(self, units: float | None = None, data: dict[str, object] | None = None) -> None:
        if units is not None:
            self.units = units
        if data:
            self.data.update(data)
        self._finish("completed", units=self.units, data=self.data or None)

    def fail(self, error: BaseException | str, code: str | None = None,
             retryable: bool | None = None) -> None:
        self._finish("failed", error=error_of(error, code, retryable), data=self.data or None)

    def skip(self, reason: str | None = None) -> None:
        data = {**self.data, **({"reason": reason} if reason else {})}
        self._finish("skipped", data=data or None)

    def __enter__(self) -> Step:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool:
        if not self.finished:
            if exc is None:
                self.complete()
            else:
                self.fail(exc)
        return False  # the exception, if any, goes on
