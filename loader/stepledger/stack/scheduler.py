"""The stack's scheduler: periodic database housekeeping without pg_cron.

Tasks are SQL statements run as the schema owner on a fixed interval, and on demand when a
transaction sends `NOTIFY stepledger_scheduler, '<task name>'` (the price book does, so that
GET /usage catches up with a price change within seconds). Where pg_cron is installed the
database also schedules the usage refresh itself (db/functions/60_billing.sql); both may run,
since every task is idempotent and a refresh returns at once when another one is running.

`stepledger up` starts it in the background (`start`), `stepledger down` stops it (`stop`);
`stepledger scheduler run` runs it in the foreground.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import psycopg

from stepledger.settings import Settings
from stepledger.stack import processes

CHANNEL = "stepledger_scheduler"
PID_NAME = "scheduler"
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 15.0
# A burst of notifications (a price list loaded row by row) triggers one run, not one per row.
DEBOUNCE_S = 5.0
MAX_WAIT_S = 1.0  # how long one wait for notifications lasts; keeps SIGTERM handling prompt
BI_WATCHDOG_EVERY_S = 5.0  # a BI limit is enforced at most this late (docs/bi.md)

log = logging.getLogger("stepledger.scheduler")


@dataclass(frozen=True)
class Task:
    """An SQL statement (or a Python function of the connection, for work the database cannot
    do, such as rendering PDFs) run every `every_s` seconds and on
    `NOTIFY stepledger_scheduler, name`."""

    name: str
    sql: str | Callable[[psycopg.Connection], object]
    every_s: float
    # A task that usually has nothing to report (the BI watchdog) logs a run that returned null
    # only at debug level, so the log shows what it did, not that it ran.
    quiet_when_idle: bool = False


_renderer: subprocess.Popen[bytes] | None = None
RENDER_NICE = 10


def _render_invoices(conn: psycopg.Connection) -> object:
    """PDFs of finalized invoices that have none: rendered by `stepledger billing render-pdfs`
    in a child process at a lower CPU priority, so rendering never delays the SQL tasks; one
    child at a time, which renders until nothing is missing."""
    global _renderer
    if _renderer is not None and _renderer.poll() is None:
        return {"renderer": _renderer.pid, "state": "still rendering"}
    row = conn.execute("select count(*) from ledger.invoices i where not exists ("
                       "select from ledger.invoice_documents d "
                       "where d.client_id = i.client_id and d.period = i.period)").fetchone()
    missing = int(row[0]) if row else 0
    if not missing:
        return {"missing": 0}
    _renderer = subprocess.Popen(
        [sys.executable, "-m", "stepledger", "billing", "render-pdfs"],
        stdin=subprocess.DEVNULL, preexec_fn=lambda: os.nice(RENDER_NICE))
    return {"missing": missing, "renderer": _renderer.pid}


def stop_renderer() -> None:
    """Stop a running PDF renderer (the scheduler is stopping); what it did not render is
    rendered by the next scheduler."""
    if _renderer is not None and _renderer.poll() is None:
        _renderer.terminate()
        try:
            _renderer.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            _renderer.kill()


def default_tasks(refresh_every_s: float = 300.0) -> list[Task]:
    return [
        Task("refresh_usage", "select ledger.refresh_usage('scheduler')::text", refresh_every_s),
        # Error statistics and step timings (db/functions/70_analytics.sql); views refreshed
        # less than a minute ago are skipped, so an on-demand refresh is not repeated at once.
        Task("refresh_analytics", "select ledger.refresh_analytics(interval '1 minute')::text",
             refresh_every_s),
        Task("ensure_partitions", "select ledger.ensure_partitions()::text", 3600.0),
        # BI statements and idle BI transactions past their login's limits, which a BI session
        # can override for itself (db/bootstrap/40_bi_limits.sql, docs/bi.md).
        Task("bi_watchdog", "select watchdog.end_bi_sessions_past_limits()::text",
             BI_WATCHDOG_EVERY_S, quiet_when_idle=True),
        # One job.stalled per stall (db/functions/55_notifications.sql).
        Task("scan_stalled_jobs", "select ledger.scan_stalled_jobs()::text", 15.0),
        # PDFs of finalized invoices (ledger._finalize_invoice notifies; the short interval
        # catches invoices finalized while a renderer was finishing).
        Task("render_invoices", _render_invoices, min(refresh_every_s, 30.0)),
    ]


class Scheduler:
    """Runs tasks on their intervals and on notifications, reconnecting when the database goes."""

    def __init__(self, dsn: str, tasks: Sequence[Task],
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not tasks:
            raise ValueError("a scheduler needs at least one task")
        self.dsn = dsn
        self.tasks = {t.name: t for t in tasks}
        self.clock = clock
        self.stopping = False
        self.runs: dict[str, int] = {t.name: 0 for t in tasks}

    def stop(self, *_: object) -> None:
        self.stopping = True

    def run_task(self, conn: psycopg.Connection, task: Task) -> None:
        started = self.clock()
        try:
            if callable(task.sql):
                result = task.sql(conn)
            else:
                row = conn.execute(task.sql).fetchone()  # type: ignore[arg-type]
                result = row[0] if row else None
        except psycopg.OperationalError:
            raise
        except psycopg.Error as exc:
            log.error("task %s failed: %s", task.name, exc.diag.message_primary or exc)
            return
        except Exception:  # a renderer's own failure must not stop the other tasks
            log.exception("task %s failed", task.name)
            return
        self.runs[task.name] += 1
        level = logging.DEBUG if task.quiet_when_idle and result is None else logging.INFO
        log.log(level, "task %s done in %.0f ms: %s", task.name, (self.clock() - started) * 1000,
                result)

    def run(self, once: bool = False) -> None:
        """Run until stop() (or SIGTERM via install_signal_handlers); `once`: every task once."""
        backoff = 1.0
        while not self.stopping:
            try:
                with psycopg.connect(self.dsn, autocommit=True,
                                     application_name="stepledger scheduler") as conn:
                    backoff = 1.0
                    self._loop(conn, once)
                    return
            except psycopg.OperationalError as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                log.warning("database unavailable (%s); retrying in %.0f s", first, backoff)
                deadline = self.clock() + backoff
                while not self.stopping and self.clock() < deadline:
                    time.sleep(min(0.2, max(0.0, deadline - self.clock())))
                backoff = min(backoff * 2, 30.0)

    def _loop(self, conn: psycopg.Connection, once: bool) -> None:
        conn.execute(f"listen {CHANNEL}")
        now = self.clock()
        next_due = {name: now for name in self.tasks}
        requested: dict[str, float] = {}
        while not self.stopping:
            now = self.clock()
            for name, task in self.tasks.items():
                if next_due[name] <= now or (name in requested and requested[name] <= now):
                    self.run_task(conn, task)
                    next_due[name] = self.clock() + task.every_s
                    requested.pop(name, None)
            if once:
                return
            wake = min([*next_due.values(), *requested.values()])
            timeout = min(MAX_WAIT_S, max(0.0, wake - self.clock()))
            for notify in conn.notifies(timeout=timeout, stop_after=1):
                name = notify.payload.strip()
                if name in self.tasks and name not in requested:
                    requested[name] = self.clock() + DEBOUNCE_S
                    log.info("task %s requested by a notification", name)

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)


# -- background process for `stepledger up` / `down` -------------------------------------------
BACKGROUND = processes.BackgroundCommand(PID_NAME, "the scheduler", START_TIMEOUT_S,
                                        STOP_TIMEOUT_S)


def running_pid(settings: Settings) -> int | None:
    return BACKGROUND.running_pid(settings)


def start(settings: Settings, refresh_every_s: float | None = None) -> int:
    """Start `stepledger scheduler run` in the background unless it runs; return its pid.

    It runs as the invoking user: it is a database client, not a server, and it reads the owner's
    password from the stack's secrets.
    """
    return BACKGROUND.start(settings, [] if refresh_every_s is None
                            else ["--refresh-every", str(refresh_every_s)])


def stop(settings: Settings) -> bool:
    """SIGTERM the background scheduler (if ours and running), wait, then SIGKILL."""
    return BACKGROUND.stop(settings)


def status(settings: Settings) -> dict[str, object]:
    return BACKGROUND.status(settings)


def main_loop(settings: Settings, refresh_every_s: float, once: bool) -> None:
    """Foreground entry point (`stepledger scheduler run`)."""
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    scheduler = Scheduler(settings.dsn("stepledger_owner"), default_tasks(refresh_every_s))
    scheduler.install_signal_handlers()
    intervals = {t.name: t.every_s for t in scheduler.tasks.values()}
    log.info("scheduler started: %s", json.dumps(intervals))
    try:
        scheduler.run(once=once)
    finally:
        stop_renderer()
    log.info("scheduler stopped")
