"""Processes the stack starts in the background, recorded in pid files under `settings.run_dir`.

One home for what the servers (stack.py: PostgREST, nginx) and the background workers
(`stepledger scheduler run`, `stepledger notify run`) share: the pid file, the guard against a
reused pid, starting a worker and waiting for its exec, stopping with SIGTERM then SIGKILL.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from stepledger import StepledgerError
from stepledger.config import Settings


def pid_file(settings: Settings, name: str) -> Path:
    return settings.run_dir / f"{name}.pid"


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None


def _alive_state(pid: int) -> str | None:
    """The process's state letter from /proc, or None when there is no such process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


def is_named(pid: int, exe_name: str) -> bool:
    """True if pid is alive and named `exe_name` (guards against pid reuse)."""
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except (FileNotFoundError, ProcessLookupError):
        return False
    state = _alive_state(pid)
    return state is not None and state != "Z" and comm == exe_name[:15]  # comm is truncated


def is_stepledger_command(pid: int, command: str) -> bool:
    """True if pid is a live `stepledger <command> run` process (guards against pid reuse)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (FileNotFoundError, ProcessLookupError):
        return False
    state = _alive_state(pid)
    return state is not None and state != "Z" and b"stepledger" in cmdline \
        and command.encode() in cmdline and b"run" in cmdline


def running_pid(settings: Settings, name: str, is_ours: Callable[[int], bool]) -> int | None:
    """The pid recorded in <name>.pid when that process is still ours; else None."""
    pid = read_pid(pid_file(settings, name))
    return pid if pid is not None and is_ours(pid) else None


def stop(settings: Settings, name: str, is_ours: Callable[[int], bool],
         timeout_s: float) -> bool:
    """SIGTERM the process recorded in <name>.pid (if it is ours), wait, then SIGKILL; remove
    the pid file. False when nothing of ours was running."""
    path = pid_file(settings, name)
    pid = running_pid(settings, name, is_ours)
    if pid is None:
        path.unlink(missing_ok=True)
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while is_ours(pid) and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reap it when it is our own child
        time.sleep(0.05)
    if is_ours(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    path.unlink(missing_ok=True)
    return True


def start_command(settings: Settings, command: str, args: list[str], env: dict[str, str],
                  what: str, timeout_s: float) -> int:
    """Start `stepledger <command> run ARGS` in the background as the invoking user unless it
    runs (pid file <command>.pid, log <command>.log); return its pid once it runs."""
    def is_ours(pid: int) -> bool:
        return is_stepledger_command(pid, command)

    pid = running_pid(settings, command, is_ours)
    if pid is not None:
        return pid
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    log_path = settings.log_dir / f"{command}.log"
    with open(log_path, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "stepledger", command, "run", *args],
                                env=env, cwd=settings.run_dir, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    pid_file(settings, command).write_text(f"{proc.pid}\n")
    # Until the exec has finished, /proc shows the parent's command line: wait for ours.
    deadline = time.monotonic() + timeout_s
    while not is_ours(proc.pid):
        if proc.poll() is not None:
            pid_file(settings, command).unlink(missing_ok=True)
            raise StepledgerError(f"{what} exited at start (see {log_path})")
        if time.monotonic() >= deadline:
            raise StepledgerError(f"{what} did not start (see {log_path})")
        time.sleep(0.01)
    return proc.pid
