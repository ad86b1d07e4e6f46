"""The stack's scheduler: periodic database housekeeping without pg_cron.

Tasks are SQL statements run as the schema owner on a fixed interval, and on demand when a
transaction sends `NOTIFY stepledger_scheduler, '<task name>'` (the price book does, so that
GET /usage catches up with a price change within seconds). What runs and how often is written
once, in the database (`ledger.scheduled_tasks()`, db/functions/95_schedule/); where pg_cron is
installed the database runs the same list itself. Both may run, since every task is idempotent
and a refresh returns at once when another one is running. Rendering invoice PDFs is the one
task of this process alone: the database cannot render them.

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
# Tasks whose interval `--refresh-every` replaces (tests and demos refresh more often).
REFRESH_TASKS = ("refresh_usage", "refresh_analytics")
# How often the PDF renderer looks for finalized invoices without a document.
RENDER_EVERY_S = 30.0

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


def database_tasks(conn: psycopg.Connection, refresh_every_s: float | None = None) -> list[Task]:
    """The periodic work the database lists (ledger.scheduled_tasks()), and the PDF renderer;
    `refresh_every_s` replaces the interval of the refresh tasks."""
    rows = conn.execute("select task, command, extract(epoch from every)::float8 "
                        "from ledger.scheduled_tasks()").fetchall()
    tasks = [Task(name, command, refresh_every_s if refresh_every_s and name in REFRESH_TASKS
                  else every_s,
                  # The BI watchdog and the refreshes usually have nothing to report.
                  quiet_when_idle=name in ("bi_watchdog", *REFRESH_TASKS))
             for name, command, every_s in rows]
    # PDFs of finalized invoices (ledger._finalize_invoice notifies; the interval catches
    # invoices finalized while a renderer was finishing).
    return [*tasks, Task("render_invoices", _render_invoices,
                         min(refresh_every_s or RENDER_EVERY_S, RENDER_EVERY_S))]


class Scheduler:
    """Runs tasks on their intervals and on notifications, reconnecting when the database goes."""

    def __init__(self, dsn: str, tasks: Sequence[Task] | Callable[[psycopg.Connection],
                                                                  Sequence[Task]],
                 clock: Callable[[], float] = time.monotonic) -> None:
        """`tasks`: the tasks, or a function that reads them from the database once connected."""
        if not callable(tasks) and not tasks:
            raise ValueError("a scheduler needs at least one task")
        self.dsn = dsn
        self._read_tasks = tasks if callable(tasks) else None
        self.tasks = {} if callable(tasks) else {t.name: t for t in tasks}
        self.clock = clock
        self.stopping = False
        self.runs: dict[str, int] = {name: 0 for name in self.tasks}

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
        if self._read_tasks is not None and not self.tasks:
            self.tasks = {t.name: t for t in self._read_tasks(conn)}
            self.runs = {name: 0 for name in self.tasks}
            log.info("tasks: %s", json.dumps({t.name: t.every_s for t in self.tasks.values()}))
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


def main_loop(settings: Settings, refresh_every_s: float | None, once: bool) -> None:
    """Foreground entry point (`stepledger scheduler run`)."""
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    scheduler = Scheduler(settings.dsn("stepledger_owner"),
                          lambda conn: database_tasks(conn, refresh_every_s))
    scheduler.install_signal_handlers()
    log.info("scheduler started")
    try:
        scheduler.run(once=once)
    finally:
        stop_renderer()
    log.info("scheduler stopped")
