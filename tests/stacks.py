"""Throw-away local stacks for the tests and the benchmarks, and the catalog they start from.

One home for what both need: free ports, a fresh home the service user can traverse, a migrated
stack that is always stopped and removed, and the BotImage pipeline with a few clients. Only the
standard library, psycopg and the package, so `python -m bench` needs nothing of the test extra
(bench imports this module as `tests.stacks`, the tests as `stacks`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import psycopg

from stepledger import stack
from stepledger.settings import Settings

REPO = Path(__file__).resolve().parents[1]
PIPELINES = REPO / "schemas" / "pipelines"
BOTIMAGE_FILE = PIPELINES / "botimage.json"
BOTIMAGE: dict[str, Any] = json.loads(BOTIMAGE_FILE.read_text())
BOTIMAGE_STEPS: list[str] = [s["key"] for s in BOTIMAGE["steps"]]


def free_ports(count: int) -> list[int]:
    """Distinct free TCP ports on 127.0.0.1 (held open together so they differ)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def make_home(prefix: str) -> Path:
    """A fresh home under /tmp that the unprivileged service user can traverse."""
    home = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    home.chmod(0o755)
    return home


def make_settings(home: Path, **overrides: Any) -> Settings:
    """Settings for a stack in `home` on free ports; `overrides` win (e.g. pg_port, web_root)."""
    pg, api, admin, postgrest, web = free_ports(5)
    values: dict[str, Any] = {"pg_port": pg, "api_port": api, "api_admin_port": admin,
                              "postgrest_port": postgrest, "web_port": web}
    values.update(overrides)
    return Settings.from_env(home=home, **values)


@contextlib.contextmanager
def throwaway_stack(prefix: str, *, keep_home_env: str | None = None,
                    prepare_home: Callable[[Path], dict[str, Any]] | None = None,
                    **overrides: Any) -> Iterator[Settings]:
    """A migrated stack of its own on free ports in a fresh home; always stopped, and its home
    removed unless the environment variable `keep_home_env` is set. `prepare_home(home)` may fill
    the home before the start and return more settings overrides."""
    home = make_home(prefix)
    if prepare_home is not None:
        overrides = {**prepare_home(home), **overrides}
    settings = make_settings(home, **overrides)
    try:
        stack.up(settings, migrate=True)
        yield settings
    finally:
        try:
            stack.down(settings)
        finally:
            if not (keep_home_env and os.environ.get(keep_home_env)):
                shutil.rmtree(home, ignore_errors=True)


def cli_env(settings: Settings) -> dict[str, str]:
    """The environment that points the stepledger CLI at this stack (and at nothing else: other
    STEPLEDGER_ variables of the caller's environment are left out)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEPLEDGER_")}
    env.update({
        "STEPLEDGER_HOME": str(settings.home),
        "STEPLEDGER_PG_PORT": str(settings.pg_port),
        "STEPLEDGER_API_PORT": str(settings.api_port),
        "STEPLEDGER_API_ADMIN_PORT": str(settings.api_admin_port),
        "STEPLEDGER_POSTGREST_PORT": str(settings.postgrest_port),
        "STEPLEDGER_WEB_PORT": str(settings.web_port),
    })
    return env


def run_cli_process(settings: Settings, *args: str, timeout: float = 300,
                    **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """`python -m stepledger ARGS` against this stack in a process of its own; output captured
    as text, the exit status left to the caller (e.g. input= for its stdin)."""
    return subprocess.run([sys.executable, "-m", "stepledger", *args], env=cli_env(settings),
                          capture_output=True, text=True, timeout=timeout, check=False, **kwargs)


def one_line_error(proc: subprocess.CompletedProcess[str], status: int | None = None) -> str:
    """The CLI failed (with exit status `status` when given) and said why on one line of stderr,
    without a traceback; returns that line."""
    if status is None:
        assert proc.returncode != 0, proc.stdout
    else:
        assert proc.returncode == status, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def register_catalog(conn: psycopg.Connection, clients: Iterable[str | tuple[str, ...]] = (),
                     pipelines: Iterable[Path] = (BOTIMAGE_FILE,)) -> None:
    """Register the pipelines (BotImage unless told) and add the clients, each an id (named
    after itself) or (id, name) or (id, name, currency); both calls are idempotent."""
    for path in pipelines:
        conn.execute("select ledger.register_pipeline(%s::jsonb)", [path.read_text()])
    for client in clients:
        client_id, name, currency = ((client, client, "EUR") if isinstance(client, str)
                                     else (*client, "EUR")[:3])
        conn.execute("select ledger.add_client(%s, %s, %s)", [client_id, name, currency])
