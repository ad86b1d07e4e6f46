"""The Tracker: spools events to disk and sends them in the background, retrying until stored."""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from stepledger import StepledgerError
from stepledger.api_client import IngestClient, RequestRefused, RetryPolicy, TransientError
from stepledger.ingest.credentials import api_credentials
from stepledger.sdk.job import Job
from stepledger.sdk.spool import Spool, read_batch

log = logging.getLogger("stepledger.sdk")
Rejected = Callable[[dict[str, object], list[dict[str, object]]], None]


class TrackerError(StepledgerError):
    """The API refused a batch (HTTP 4xx: token, permission, body): retrying cannot help. The
    batch is kept under the spool's dead/ directory; `dead` is its path."""

    def __init__(self, message: str, status: int | None = None, dead: Path | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.dead = dead


class UnknownStepError(TrackerError, ValueError):
    """A step key the pipeline does not have: raised by job.step(), before anything is sent."""


# The SDK's way to give a token, named in the hint of a refused one (not the CLI's --token).
SDK_TOKEN_ARGUMENT = "token= to Tracker(...)"
STEP_KEYS_TIMEOUT_S = 3.0       # asking the API for a pipeline's steps must not stall a pipeline
STEP_KEYS_RETRY_S = 60.0        # after a failed ask, steps go unchecked this long


class _Abandoned(Exception):
    """close() ran out of time while the API was away: stop retrying, leave events spooled."""


@dataclass
class TrackerStats:
    emitted: int = 0
    sent: int = 0          # events in batches the API stored (accepted + duplicates + rejected)
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    retries: int = 0
    refused_batches: int = 0


def default_spool_root(url: str, client_id: str | None) -> Path:
    """~/.local/state/stepledger/spool/<hash of URL and client>: the trackers of one host that
    write to the same API for the same client share a root, and adopt each other's leftovers."""
    base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    digest = hashlib.sha256(f"{url}\x1f{client_id or '*'}".encode()).hexdigest()[:12]
    return base / "stepledger" / "spool" / digest


def _timestamp(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise StepledgerError("the clock must return timezone-aware datetimes")
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Tracker:
    """Reports pipeline steps to stepledger.

    url, token: the API (default STEPLEDGER_URL and STEPLEDGER_TOKEN; on the stack's own host an
    operator token when neither is set). client_id, pipeline: defaults for jobs (also from
    STEPLEDGER_CLIENT and STEPLEDGER_PIPELINE). source: the host reported with each event
    (default: this host's name). spool_dir: where events wait (default STEPLEDGER_SPOOL, else
    ~/.local/state/stepledger/spool/<hash>). Batches go out when batch_size events wait or every
    flush_interval_s. fsync: write each event to the disk before emit() returns (a crash of the
    machine loses nothing; turn off for simulations). retry: backoff for network errors and 5xx,
    forever by default. clock: returns the aware datetime of each event (simulations).
    deterministic_ids: event ids derived from (client, job, step, attempt, status) instead of
    random, so that running the same job again counts nothing twice. on_rejected(event, errors):
    called for each event the API rejected (default: a warning in the log).
    """

    def __init__(self, url: str | None = None, token: str | None = None, *,
                 client_id: str | None = None, pipeline: str | None = None,
                 source: str | None = None, spool_dir: str | Path | None = None,
                 batch_size: int = 200, flush_interval_s: float = 1.0, fsync: bool = True,
                 timeout_s: float = 30.0, retry: RetryPolicy | None = None,
                 clock: Callable[[], datetime] | None = None, deterministic_ids: bool = False,
                 on_rejected: Rejected | None = None) -> None:
        self.url, token = api_credentials(url, token, SDK_TOKEN_ARGUMENT)
        self.client_id = client_id or os.environ.get("STEPLEDGER_CLIENT")
        self.pipeline = pipeline or os.environ.get("STEPLEDGER_PIPELINE")
        self.source = source if source is not None else socket.gethostname()[:200]
        root = spool_dir or os.environ.get("STEPLEDGER_SPOOL") or \
            default_spool_root(self.url, self.client_id)
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.retry = retry or RetryPolicy(attempts=None, initial_s=0.5, max_s=30.0)
        self.clock = clock or (lambda: datetime.now(UTC))
        self.deterministic_ids = deterministic_ids
        self.on_rejected = on_rejected or self._log_rejection
        self.stats = TrackerStats()
        self.spool = Spool(Path(root), fsync=fsync)
        self._client = IngestClient(self.url, token, timeout=timeout_s,
                                    token_argument=SDK_TOKEN_ARGUMENT)
        self._step_keys: dict[str, list[str]] = {}
        self._step_keys_unknown_until: dict[str, float] = {}
        self._cond = threading.Condition()
        self._wake = threading.Event()
        self._abandon = threading.Event()
        self._closing = False
        self._closed = False
        self._error: TrackerError | None = None
        self._next_orphan_check = 0.0
        self._orphans_wanted = 1        # orphan passes asked for (the first at start)
        self._orphans_done = 0          # orphan passes completed
        self._thread = threading.Thread(target=self._run, name="stepledger-sender", daemon=True)
        self._thread.start()
        atexit.register(self._at_exit)

    # -- public API -----------------------------------------------------------------------------
    def job(self, job_id: str, *, client_id: str | None = None, pipeline: str | None = None,
            source: str | None = None) -> Job:
        """A job to report steps of; raises the error of a refused batch, if one happened."""
        self.raise_error()
        client = client_id or self.client_id
        pipe = pipeline or self.pipeline
        if not client or not pipe:
            missing = "client_id" if not client else "pipeline"
            raise TrackerError(f"no {missing}: pass it to Tracker(...) or job(...), or set "
                               f"STEPLEDGER_{'CLIENT' if missing == 'client_id' else 'PIPELINE'}")
        return Job(self, job_id, client, pipe, source if source is not None else self.source)

    def step_keys(self, pipeline: str, required: bool = False) -> list[str] | None:
        """The pipeline's step keys in order (GET /rpc/step_keys, cached), or None when the API
        cannot say now (away, or the token refused: the sender reports that). required: raise
        a TrackerError instead of returning None."""
        if pipeline in self._step_keys:
            return self._step_keys[pipeline]
        reason = "asked too recently"
        if time.monotonic() >= self._step_keys_unknown_until.get(pipeline, 0.0):
            try:
                rows = self._client.get_json("/rpc/step_keys", "step keys",
                                             {"pipeline": pipeline}, STEP_KEYS_TIMEOUT_S)
            except RequestRefused as exc:
                if exc.code == "SL105":
                    raise TrackerError(f"unknown pipeline {pipeline!r}: register it with "
                                       "`stepledger pipeline add FILE.json`", exc.status) from None
                reason = str(exc)
            except TransientError as exc:
                reason = str(exc)
            else:
                keys = [str(r["step"]) for r in rows]  # type: ignore[union-attr, index]
                self._step_keys[pipeline] = keys
                return keys
            self._step_keys_unknown_until[pipeline] = time.monotonic() + STEP_KEYS_RETRY_S
            log.debug("steps of %s unknown (%s): step keys go unchecked", pipeline, reason)
        if required:
            raise TrackerError(f"the steps of pipeline {pipeline!r} are needed and the API "
                               f"cannot give them now ({reason})")
        return None

    def emit(self, event: dict[str, object]) -> dict[str, object]:
        """Spool one event (event_id and occurred_at are filled in when missing) and return it.
        When this returns, the event is on disk; it is sent in the background."""
        if self._closed:
            raise TrackerError("this tracker is closed")
        event = dict(event)
        event.setdefault("occurred_at", _timestamp(self.clock()))
        if "event_id" not in event:
            event = {"event_id": self._event_id(event), **event}
        self.spool.put(event)
        with self._cond:
            self.stats.emitted += 1
        if self.spool.active_count >= self.batch_size:
            # Seal here, not only in the sender: while it waits out an outage the batch must
            # not outgrow batch_size (and the API's 10,000 events per request).
            self.spool.seal()
            self._wake.set()
        return event

    def flush(self, timeout_s: float | None = None) -> bool:
        """Send everything emitted so far; True once the API stored it all, False when the
        timeout passed first (the events stay spooled and are sent later). Raises TrackerError
        when the API refused a batch."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        self.spool.seal()
        target = self.spool.slot.next_seq - 1
        with self._cond:
            self._orphans_wanted += 1
            wanted = self._orphans_wanted
        self._wake.set()
        with self._cond:
            while True:
                if self._error is not None:
                    break
                waiting = [p for p in self.spool.pending() if int(p.stem[6:]) <= target]
                if (not waiting and self._orphans_done >= wanted) or not self._thread.is_alive():
                    break
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                self._cond.wait(0.2 if remaining is None else min(0.2, remaining))
        self.raise_error()
        return not [p for p in self.spool.pending() if int(p.stem[6:]) <= target] \
            and self._orphans_done >= wanted

    def close(self, timeout_s: float = 30.0) -> bool:
        """Flush for at most timeout_s, then stop. Events not sent by then stay in the spool
        and are sent by the next Tracker on the same spool directory. True if all were sent."""
        if self._closed:
            return True
        try:
            done = self.flush(timeout_s)
        except TrackerError:
            done = False
            raise
        finally:
            self._closing = True
            self._abandon.set()
            self._wake.set()
            self._thread.join(timeout=max(5.0, timeout_s))
            left = self.spool.pending_events()
            self.spool.close()
            self._client.close()
            self._closed = True
            atexit.unregister(self._at_exit)
            if left:
                log.warning("%d events are still in the spool %s; the next tracker on it sends "
                            "them", left, self.spool.root)
        return done

    def raise_error(self) -> None:
        """Raise (once) the TrackerError of a batch the API refused."""
        with self._cond:
            error, self._error = self._error, None
        if error is not None:
            raise error

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.close()

    # -- internals ----------------------------------------------------------------------------
    def _event_id(self, event: dict[str, object]) -> str:
        if not self.deterministic_ids:
            return str(uuid.uuid4())
        key = "\x1f".join(str(event.get(k)) for k in
                          ("client_id", "job_id", "step", "attempt", "status"))
        return "sdk:" + hashlib.sha256(key.encode()).hexdigest()[:40]

    @staticmethod
    def _log_rejection(event: dict[str, object], errors: list[dict[str, object]]) -> None:
        log.warning("event %s (job %s, step %s) rejected: %s", event.get("event_id"),
                    event.get("job_id"), event.get("step"), json.dumps(errors)[:500])

    def _at_exit(self) -> None:
        try:
            self.close(timeout_s=5.0)
        except StepledgerError as exc:
            log.error("%s", exc)

    def _sleep(self, seconds: float) -> None:
        if self._abandon.wait(seconds):
            raise _Abandoned()

    def _run(self) -> None:
        while True:
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            try:
                if self.spool.active_count:
                    self.spool.seal()
                self._drain()
            except _Abandoned:
                return
            except Exception:  # the sender must survive anything; events stay spooled
                log.exception("stepledger: sending failed; retrying")
                if self._abandon.wait(1.0):
                    return
            finally:
                with self._cond:
                    self._cond.notify_all()
            if self._closing:
                return

    def _drain(self) -> None:
        for batch in self.spool.pending():
            self._send(batch)
        with self._cond:
            wanted = self._orphans_wanted
        if time.monotonic() >= self._next_orphan_check or self._orphans_done < wanted:
            self._next_orphan_check = time.monotonic() + 30.0
            with self.spool.orphans() as slots:
                for slot in slots:
                    log.info("sending %d batches left in %s by a process that stopped",
                             len(slot.batches()), slot.path)
                    for batch in slot.batches():
                        self._send(batch)
                    if slot.batches():
                        return          # refused or abandoned: try again on the next pass
            with self._cond:
                self._orphans_done = max(self._orphans_done, wanted)
                self._cond.notify_all()

    def _send(self, batch: Path) -> None:
        lines = read_batch(batch)
        if not lines:
            self.spool.acknowledge(batch)
            return

        def retrying(exc: TransientError, delay: float) -> None:
            self.stats.retries += 1
            log.warning("%s; %d events wait in the spool; retrying in %.1fs", exc, len(lines),
                        delay)

        try:
            result = self.retry.run(lambda: self._client.send_ndjson(b"\n".join(lines)),
                                    on_retry=retrying, sleep=self._sleep)
        except RequestRefused as exc:
            dead = self.spool.bury(batch, str(exc))
            self.stats.refused_batches += 1
            error = TrackerError(
                f"{exc}; the {len(lines)} events of that batch are kept in {dead}; once the "
                f"cause is fixed, send them with `stepledger load {dead}`", exc.status, dead)
            log.error("%s", error)
            with self._cond:
                self._error = error
                self._cond.notify_all()
            return
        except TransientError as exc:  # only with a finite retry policy
            log.error("%s; the batch stays in the spool", exc)
            self._abandon.wait(self.retry.max_s)
            return
        self.spool.acknowledge(batch)
        self.stats.sent += len(lines)
        self.stats.accepted += result.accepted
        self.stats.duplicates += result.duplicates
        self.stats.rejected += len(result.rejected)
        for item in result.rejected:
            index = int(item["index"])  # type: ignore[call-overload]  # 1-based line in the batch
            try:
                event = json.loads(lines[index - 1]) if 0 < index <= len(lines) else {}
            except ValueError:
                event = {}
            self.on_rejected(event, list(item.get("errors") or []))  # type: ignore[call-overload]
        with self._cond:
            self._cond.notify_all()
