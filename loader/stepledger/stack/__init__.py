"""The local stack: PostgreSQL, PostgREST and nginx as background processes of one home directory,
with the scheduler and the notification worker beside them.

One module per process (postgres.py, postgrest.py, nginx.py, scheduler.py; citus.py forms a
cluster of PostgreSQL nodes; processes.py is what they share). This module starts and stops
them in order and reports on them. Every start/stop function is idempotent. Servers run as
`settings.service_user` (PostgreSQL refuses root); pid files in `settings.run_dir` record the
processes we started, and `down` stops only those.
"""

from __future__ import annotations

import contextlib
import pwd
from collections.abc import Iterator
from pathlib import Path

from stepledger.operator import notify
from stepledger.settings import Settings, user_can_reach
from stepledger.stack import scheduler
from stepledger.stack.nginx import (
    nginx_env,
    nginx_running,
    render_nginx,
    start_nginx,
    stop_nginx,
)
from stepledger.stack.postgres import (
    existing_workers,
    postgres_pid,
    postgres_running,
    role_exists,
    start_databases,
    start_postgres,
    stop_databases,
    stop_postgres,
    sync_role_passwords,
)
from stepledger.stack.postgrest import (
    postgrest_env,
    postgrest_running,
    start_postgrest,
    stop_postgrest,
)
from stepledger.stack.processes import (
    http_ok,
    server_pid,
)
from stepledger.stack.templates import conf_variables, render_template, template_variables

__all__ = [
    "conf_variables", "down", "nginx_env", "nginx_running", "postgres_running", "postgrest_env",
    "postgrest_running", "render_nginx", "render_template", "run_migrations", "running",
    "start_databases", "start_nginx", "start_postgres", "start_postgrest", "status",
    "stop_databases", "stop_nginx", "stop_postgres", "stop_postgrest", "sync_role_passwords",
    "template_variables", "up",
]


# -- whole stack ---------------------------------------------------------------------------------
def run_migrations(settings: Settings, reapply: bool = False) -> object:
    """Migrate (stepledger.schema.migrate), then the login roles' passwords; migrate's result."""
    from stepledger.schema.migrate import migrate  # here: the migration runner uses stack.citus

    result = migrate(settings, reapply=reapply)
    sync_role_passwords(settings)
    return result


def up(settings: Settings, migrate: bool = True) -> list[str]:
    """Start PostgreSQL, migrate, start PostgREST and nginx. Harmless when already up.

    Returns warnings for the operator (e.g. PostgREST skipped because the schema is missing).
    """
    warnings: list[str] = []
    start_databases(settings)
    if migrate:
        run_migrations(settings)
    else:
        sync_role_passwords(settings)
    if role_exists(settings, "authenticator"):
        start_postgrest(settings)
    else:
        # PostgREST exits when its login role is missing: that role comes from migrate.
        warnings.append("PostgREST not started: role authenticator does not exist yet "
                        "(run `stepledger migrate`, then `stepledger up`)")
    start_nginx(settings)
    scheduler.start(settings)  # periodic database tasks: usage refresh, partitions
    notify.start(settings)  # notification delivery: webhooks and e-mail alerts
    return warnings


def down(settings: Settings) -> None:
    """Stop what `up` started, in reverse order. Harmless when already down."""
    notify.stop(settings)
    scheduler.stop(settings)
    stop_nginx(settings)
    stop_postgrest(settings)
    stop_databases(settings)


def _process_user(settings: Settings, name: str, exe_name: str) -> str | None:
    pid = server_pid(settings, name, exe_name)
    if pid is None:
        return None
    return pwd.getpwuid(Path(f"/proc/{pid}").stat().st_uid).pw_name


def status(settings: Settings) -> dict[str, object]:
    """Each component: up/down, where it listens, which OS user runs it."""
    pg_up = postgres_running(settings)
    pg_pid = postgres_pid(settings) if pg_up else None
    pgrst_up = postgrest_running(settings)
    nginx_up = nginx_running(settings)
    notes: list[str] = []
    if not settings.home_reachable:
        notes.append(f"{settings.service_user} cannot reach {settings.home}; "
                     f"server data lives in {settings.pgdata.parent}")
    if nginx_up and not user_can_reach(settings.service_user, settings.web_dir):
        notes.append(f"{settings.service_user} cannot read {settings.web_dir}")
    return {
        "home": str(settings.home),
        "service_user": settings.service_user,
        "postgres": {
            "up": pg_up,
            "url": f"postgresql://{settings.pg_host}:{settings.pg_port}/{settings.dbname}",
            "port": settings.pg_port,
            "pgdata": str(settings.pgdata),
            "pid": pg_pid,
            "user": pwd.getpwuid(Path(f"/proc/{pg_pid}").stat().st_uid).pw_name
            if pg_pid and Path(f"/proc/{pg_pid}").exists() else None,

            "citus_workers": [
                {"node": w.node_name, "up": postgres_running(w), "port": w.pg_port,
                 "pgdata": str(w.pgdata)}
                for w in (settings.workers if settings.citus else existing_workers(settings))
            ],
        },
        "postgrest": {
            "up": pgrst_up,
            "ready": pgrst_up and http_ok(f"{settings.api_admin_url}/ready"),
            "url": settings.api_url,
            "port": settings.api_port,
            "internal_url": settings.postgrest_url,
            "admin_url": settings.api_admin_url,
            "pid": server_pid(settings, "postgrest", "postgrest"),
            "user": _process_user(settings, "postgrest", "postgrest"),
        },
        "nginx": {
            "up": nginx_up,
            "url": settings.web_url,
            "api_url": f"{settings.web_url}/api/",
            "port": settings.web_port,
            "pid": server_pid(settings, "nginx", "nginx"),
            "user": _process_user(settings, "nginx", "nginx"),
        },
        "logs": str(settings.log_dir),
        "notes": notes,
    }


@contextlib.contextmanager
def running(settings: Settings, migrate: bool = True) -> Iterator[Settings]:
    """`up` for the duration of a with-block; always `down` afterwards."""
    try:
        up(settings, migrate=migrate)
        yield settings
    finally:
        down(settings)
