"""PostgREST for the local stack: deploy/postgrest.conf filled from the settings, one process
run as the service user, ready when its admin port answers /ready."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from stepledger import StepledgerError
from stepledger.settings import Settings, user_can_reach
from stepledger.stack.processes import (
    START_TIMEOUT_S,
    http_ok,
    is_root,
    needs_switch,
    port_open,
    prepare_dirs,
    server_pid,
    service_env,
    service_ids,
    spawn_server,
    stop_server,
    wait_for,
    while_running,
)


def postgrest_env(settings: Settings) -> dict[str, str]:
    """Values for every $(VAR) in deploy/postgrest.conf."""
    return {
        "STEPLEDGER_DB_URI": settings.dsn("authenticator"),
        "STEPLEDGER_JWT_SECRET": settings.jwt_secret,
        "STEPLEDGER_API_HOST": "127.0.0.1",
        "STEPLEDGER_POSTGREST_PORT": str(settings.postgrest_port),
        "STEPLEDGER_API_ADMIN_PORT": str(settings.api_admin_port),
        "STEPLEDGER_PUBLIC_API_URL": f"{settings.web_url}/api/",
    }


def _service_copy(settings: Settings, path: Path) -> Path:
    """`path` itself when the service user can read it, else a copy in run_dir."""
    if not needs_switch(settings) or user_can_reach(settings.service_user, path.parent):
        return path
    target = settings.run_dir / path.name
    shutil.copy2(path, target)
    if is_root():
        os.chown(target, *service_ids(settings))
    return target


def postgrest_running(settings: Settings) -> bool:
    return server_pid(settings, "postgrest", "postgrest") is not None


def start_postgrest(settings: Settings) -> None:
    """Start PostgREST with deploy/postgrest.conf; wait on its admin /ready."""
    prepare_dirs(settings)
    if not postgrest_running(settings):
        binary = settings.postgrest_bin
        if not binary.exists():
            raise StepledgerError(f"{binary} not found; run scripts/bootstrap.sh (npm ci)")
        for port in (settings.postgrest_port, settings.api_admin_port):
            if port_open(port):
                raise StepledgerError(f"port {port} is already in use; set STEPLEDGER_API_PORT "
                                      "(PostgREST uses it + 1 and + 2)")
        cmd = [os.fspath(_service_copy(settings, binary)),
               os.fspath(_service_copy(settings, settings.postgrest_conf))]
        env = service_env(settings, postgrest_env(settings))
        proc = spawn_server(settings, "postgrest", cmd, env)
        alive: Callable[[], bool] = while_running(proc)
    else:
        alive = lambda: postgrest_running(settings)  # noqa: E731
    log = settings.log_dir / "postgrest.log"
    url = f"{settings.api_admin_url}/ready"
    wait_for(lambda: http_ok(url), timeout=START_TIMEOUT_S, what="PostgREST",
              alive=alive, log=log)


def stop_postgrest(settings: Settings) -> None:
    stop_server(settings, "postgrest", "postgrest")
