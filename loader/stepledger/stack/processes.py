"""How the stack runs its processes: as the service user, recorded in pid files under
`settings.run_dir`, started and awaited, stopped with SIGTERM then SIGKILL.

One home for what the servers (postgres.py, postgrest.py, nginx.py) and the background workers
(`stepledger scheduler run`, `stepledger notify run`) share: the service user and its
directories, the pid file, the guard against a reused pid, starting a process and waiting for
it, stopping it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from stepledger import StepledgerError
from stepledger.settings import Settings
from stepledger.stack import citus

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0


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



@dataclass(frozen=True)
class BackgroundCommand:
    """`stepledger <command> run` kept in the background of the stack (the scheduler, the
    notification worker): started and stopped with the stack, found again by its pid file."""

    command: str
    what: str                       # for messages: "the scheduler"
    start_timeout_s: float
    stop_timeout_s: float
    # STEPLEDGER_<NAME> variables passed on when set (secrets given through the environment,
    # as compose does, stay there; else the process reads home/secrets).
    passed_on: tuple[str, ...] = ("OWNER_PASSWORD",)

    def is_ours(self, pid: int) -> bool:
        return is_stepledger_command(pid, self.command)

    def running_pid(self, settings: Settings) -> int | None:
        return running_pid(settings, self.command, self.is_ours)

    def start(self, settings: Settings, args: Sequence[str] = ()) -> int:
        """Start it unless it runs; its pid."""
        return start_command(settings, self.command, list(args), self.environment(settings),
                             self.what, self.start_timeout_s)

    def stop(self, settings: Settings) -> bool:
        """SIGTERM it (if ours and running), wait, then SIGKILL."""
        return stop(settings, self.command, self.is_ours, self.stop_timeout_s)

    def status(self, settings: Settings) -> dict[str, object]:
        pid = self.running_pid(settings)
        return {"up": pid is not None, "pid": pid,
                "log": str(settings.log_dir / f"{self.command}.log")}

    def environment(self, settings: Settings) -> dict[str, str]:
        """The caller's environment without its STEPLEDGER_ and PG variables, then the stack's
        settings and the variables passed on."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("STEPLEDGER_", "PG"))}
        env.update({
            "STEPLEDGER_HOME": str(settings.home),
            "STEPLEDGER_REPO_ROOT": str(settings.repo_root),
            "STEPLEDGER_PG_HOST": settings.pg_host,
            "STEPLEDGER_PG_PORT": str(settings.pg_port),
            "STEPLEDGER_API_PORT": str(settings.api_port),
            "STEPLEDGER_WEB_PORT": str(settings.web_port),
        })
        for name in self.passed_on:
            value = os.environ.get(f"STEPLEDGER_{name}")
            if value:
                env[f"STEPLEDGER_{name}"] = value
        return env

# -- servers run as the service user ---------------------------------------------------------------
def is_root() -> bool:
    return os.geteuid() == 0


def service_ids(settings: Settings) -> tuple[int, int]:
    try:
        pw = pwd.getpwnam(settings.service_user)
    except KeyError:
        raise StepledgerError(
            f"OS user {settings.service_user!r} does not exist; run scripts/bootstrap.sh as root"
        ) from None
    if pw.pw_uid == 0:
        raise StepledgerError("the servers cannot run as root; set a non-root service user")
    return pw.pw_uid, pw.pw_gid


def needs_switch(settings: Settings) -> bool:
    return is_root() or pwd.getpwuid(os.geteuid()).pw_name != settings.service_user


def as_service(settings: Settings, cmd: Sequence[str | os.PathLike[str]]) -> list[str]:
    """Prefix a command so it runs as the service user (runuser when we are root)."""
    args = [os.fspath(c) for c in cmd]
    if is_root():
        return ["runuser", "-u", settings.service_user, "--", *args]
    if needs_switch(settings):
        raise StepledgerError(
            f"running as {pwd.getpwuid(os.geteuid()).pw_name}, cannot start servers as "
            f"{settings.service_user}"
        )
    return args


def service_env(settings: Settings, extra: dict[str, str] | None = None) -> dict[str, str]:
    """A clean environment: no inherited PG* variables that would redirect pg_ctl or libpq."""
    env = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "HOME": str(settings.run_dir),
        "TZ": "UTC",
    }
    env.update(extra or {})
    return env


def run_checked(cmd: list[str], *, env: dict[str, str] | None = None, what: str) -> str:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        last = detail[-1] if detail else f"exit status {proc.returncode}"
        raise StepledgerError(f"{what} failed: {last}")
    return proc.stdout


def make_service_dir(settings: Settings, path: Path, mode: int = 0o755) -> None:
    """Create a directory owned by the service user; parents traversable (0755)."""
    for parent in reversed(path.parents):
        if not parent.exists():
            parent.mkdir(mode=0o755)
    path.mkdir(mode=mode, exist_ok=True)
    if is_root():
        uid, gid = service_ids(settings)
        os.chown(path, uid, gid)
    os.chmod(path, mode)


def prepare_dirs(settings: Settings) -> None:
    settings.home.mkdir(parents=True, exist_ok=True)
    if is_root():
        os.chmod(settings.home, 0o755)
    for d in (settings.pgdata.parent, settings.run_dir, settings.log_dir):
        if d == settings.home:
            continue
        make_service_dir(settings, d)
    if not settings.pgdata.exists():
        make_service_dir(settings, settings.pgdata, mode=0o700)
    if settings.citus:
        make_service_dir(settings, Path(citus.node_host(settings)), mode=0o700)
    (settings.run_dir / "nginx").mkdir(exist_ok=True)
    if is_root():
        uid, gid = service_ids(settings)
        os.chown(settings.run_dir / "nginx", uid, gid)


def wait_for(check: Callable[[], bool], *, timeout: float, what: str,
              alive: Callable[[], bool] | None = None, log: Path | None = None) -> None:
    """Poll `check` until it is true or the deadline passes (or the process dies)."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        if check():
            return
        if alive is not None and not alive():
            raise StepledgerError(f"{what} exited during start-up{log_hint(log)}")
        if time.monotonic() >= deadline:
            raise StepledgerError(f"{what} not ready after {timeout:.0f}s{log_hint(log)}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)


def log_hint(log: Path | None) -> str:
    if log is None or not log.exists():
        return ""
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    last = lines[-1].strip() if lines else ""
    return f" (see {log}: {last[:300]})" if last else f" (see {log})"


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def server_pid(settings: Settings, name: str, exe_name: str) -> int | None:
    return running_pid(settings, name, lambda pid: is_named(pid, exe_name))


def spawn_server(settings: Settings, name: str, cmd: list[str],
                 env: dict[str, str]) -> subprocess.Popen:
    """Start a detached server as the service user; stdout/stderr to log_dir/<name>.log."""
    log_path = settings.log_dir / f"{name}.log"
    kwargs: dict[str, object] = {}
    if is_root():
        uid, gid = service_ids(settings)
        kwargs = {"user": uid, "group": gid, "extra_groups": []}
    with open(log_path, "ab") as log:
        if is_root():
            os.chown(log_path, *service_ids(settings))
        proc = subprocess.Popen(
            cmd,
            env=env,
            cwd=settings.run_dir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **kwargs,  # type: ignore[arg-type]
        )
    pid_file(settings, name).write_text(f"{proc.pid}\n")
    return proc


def stop_server(settings: Settings, name: str, exe_name: str) -> bool:
    """SIGTERM the process recorded in <name>.pid (if it is ours), wait, then SIGKILL."""
    return stop(settings, name, lambda pid: is_named(pid, exe_name),
                          STOP_TIMEOUT_S)


def while_running(proc: subprocess.Popen) -> Callable[[], bool]:
    return lambda: proc.poll() is None
