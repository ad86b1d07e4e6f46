"""PostgreSQL for the local stack: the single node, or a Citus coordinator and its workers.

initdb on first use, the stack's settings (stepledger.conf) and pg_hba.conf written on every
start, pg_ctl to start and stop; the server runs as `settings.service_user`.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
from pathlib import Path

import psycopg

from stepledger import StepledgerError
from stepledger.db import ensure_database, set_login_passwords
from stepledger.settings import Settings
from stepledger.stack import citus
from stepledger.stack.processes import (
    START_TIMEOUT_S,
    STOP_TIMEOUT_S,
    as_service,
    is_root,
    log_hint,
    port_open,
    prepare_dirs,
    run_checked,
    service_env,
    service_ids,
    wait_for,
)

# Shards per distributed table in the local cluster: enough to land on every worker of a
# development cluster, few enough for a 2-core machine
# (production: docs/adr/0012-citus-distribution.md).
CITUS_SHARD_COUNT = 8


def pg_tool(settings: Settings, tool: str) -> Path:
    path = settings.pg_bindir / tool
    if not path.exists():
        raise StepledgerError(f"{path} not found; run scripts/bootstrap.sh")
    return path


def postgres_conf(settings: Settings) -> str:
    # Sized for a 2-core development box; durability settings stay at their safe defaults.
    return "\n".join([
        "# Written by stepledger on every start; edit stepledger.stack to change.",
        "listen_addresses = '127.0.0.1'",
        f"port = {settings.pg_port}",
        f"unix_socket_directories = '{_socket_dir(settings)}'",
        "max_connections = 100",
        "shared_buffers = 128MB",
        "work_mem = 16MB",
        "maintenance_work_mem = 128MB",
        "effective_cache_size = 1GB",
        "max_worker_processes = 4",
        "max_parallel_workers = 2",
        "max_parallel_workers_per_gather = 1",
        "max_parallel_maintenance_workers = 1",
        "random_page_cost = 1.1",
        "jit = off",
        "max_wal_size = 1GB",
        "password_encryption = 'scram-sha-256'",
        "timezone = 'UTC'",
        "log_timezone = 'UTC'",
        "log_min_duration_statement = 1000",
        "log_line_prefix = '%m [%p] %q%u@%d '",
        *(_citus_conf(settings) if settings.citus else []),
        "",
    ])


def _socket_dir(settings: Settings) -> Path:
    """The nodes of a Citus cluster listen in a directory only the service user can enter."""
    return Path(citus.node_host(settings)) if settings.citus else settings.run_dir


_CITUS_HBA_MARK = "# stepledger: Citus nodes"


def write_pg_hba(settings: Settings) -> None:
    """Citus: trust over the nodes' private socket directory, so the coordinator connects to
    the workers as any role (API roles, BI logins) without handing out passwords; TCP keeps
    scram-sha-256. The single node keeps initdb's file (scram everywhere); a home that was a
    Citus node gets that back."""
    hba = settings.pgdata / "pg_hba.conf"
    current = hba.read_text() if hba.exists() else ""
    if settings.citus:
        text = "\n".join([
            _CITUS_HBA_MARK + " (written on every start, see docs/adr/0012-citus-distribution.md)",
            "# Unix sockets live in a mode-700 directory of the service user: only that OS user",
            "# (which owns the data files anyway) and root can connect through them.",
            "local   all  all                 trust",
            "host    all  all  127.0.0.1/32   scram-sha-256",
            "host    all  all  ::1/128        scram-sha-256",
            "",
        ])
    elif _CITUS_HBA_MARK in current:
        text = "\n".join([
            "local   all  all                 scram-sha-256",
            "host    all  all  127.0.0.1/32   scram-sha-256",
            "host    all  all  ::1/128        scram-sha-256",
            "",
        ])
    else:
        return
    if text != current:
        hba.write_text(text)
        if is_root():
            os.chown(hba, *service_ids(settings))
        os.chmod(hba, 0o600)


def _citus_conf(settings: Settings) -> list[str]:
    """Every node of a Citus cluster loads the extension; the coordinator decides the shards."""
    return [
        "# Citus (docs/adr/0012-citus-distribution.md)",
        "shared_preload_libraries = 'citus'",
        "max_worker_processes = 8",  # Citus' maintenance daemon and its background tasks
        f"citus.shard_count = {CITUS_SHARD_COUNT}",
    ]


def postgres_running(settings: Settings) -> bool:
    if not (settings.pgdata / "PG_VERSION").exists():
        return False
    cmd = as_service(settings, [pg_tool(settings, "pg_ctl"), "status", "-D", settings.pgdata])
    return subprocess.run(cmd, env=service_env(settings), capture_output=True,
                          check=False).returncode == 0


def _init_cluster(settings: Settings) -> None:
    pwfile = settings.run_dir / "initdb.pw"
    pwfile.write_text(settings.password_for("postgres") + "\n")
    try:
        if is_root():
            os.chown(pwfile, *service_ids(settings))
        os.chmod(pwfile, 0o600)
        run_checked(
            as_service(settings, [
                pg_tool(settings, "initdb"), "-D", settings.pgdata, "-U", "postgres",
                "--pwfile", pwfile, "--auth-host=scram-sha-256", "--auth-local=scram-sha-256",
                "--encoding=UTF8", "--locale=C.UTF-8", "--data-checksums",
            ]),
            env=service_env(settings),
            what="initdb",
        )
    finally:
        pwfile.unlink(missing_ok=True)
    conf = settings.pgdata / "postgresql.conf"
    with conf.open("a") as fh:
        fh.write("\ninclude_if_exists = 'stepledger.conf'\n")


def start_postgres(settings: Settings) -> None:
    """initdb on first use, then start the server and wait until it accepts connections."""
    prepare_dirs(settings)
    if not (settings.pgdata / "PG_VERSION").exists():
        if settings.pgdata.exists() and any(settings.pgdata.iterdir()):
            raise StepledgerError(f"{settings.pgdata} is not empty and holds no cluster")
        _init_cluster(settings)
    if not postgres_running(settings):
        if port_open(settings.pg_port):
            raise StepledgerError(f"port {settings.pg_port} is already in use by another server; "
                                  "set STEPLEDGER_PG_PORT")
        local_conf = settings.pgdata / "stepledger.conf"
        local_conf.write_text(postgres_conf(settings))
        write_pg_hba(settings)
        if is_root():
            os.chown(local_conf, *service_ids(settings))
        log = settings.pg_log
        if not log.exists():
            log.touch()
        if is_root():
            os.chown(log, *service_ids(settings))
        cmd = [pg_tool(settings, "pg_ctl"), "start", "-D", settings.pgdata, "-l", log,
               "-w", "-t", str(int(START_TIMEOUT_S)), "-s"]
        proc = subprocess.run(as_service(settings, cmd), env=service_env(settings),
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise StepledgerError(f"PostgreSQL ({settings.node_name}) did not start"
                                  f"{log_hint(log)}")
    wait_for(lambda: _pg_accepts(settings), timeout=START_TIMEOUT_S,
              what=f"PostgreSQL ({settings.node_name})", log=settings.pg_log)
    ensure_database(settings)


def start_databases(settings: Settings) -> None:
    """The single node; or every worker, then the coordinator, joined into a Citus cluster."""
    existing = len(existing_workers(settings))
    if existing > settings.citus_workers:
        raise StepledgerError(
            f"{settings.home} holds a Citus cluster with {existing} worker(s): start it with "
            f"STEPLEDGER_CITUS_WORKERS={existing} (removing workers is not supported)")
    if settings.citus:
        citus.require_installed()
        for worker in settings.workers:
            start_postgres(worker)
    start_postgres(settings)
    if settings.citus:
        citus.form_cluster(settings)


def stop_databases(settings: Settings) -> None:
    """Stop the coordinator (or single node), then every worker directory that exists, so a
    stack started with more workers than the environment now says is still stopped whole."""
    stop_postgres(settings)
    for worker in existing_workers(settings):
        stop_postgres(worker)


def existing_workers(settings: Settings) -> list[Settings]:
    found: list[Settings] = []
    index = 1
    while True:
        worker = settings.worker(index) if index <= settings.citus_workers else \
            dataclasses.replace(settings, citus_workers=index).worker(index)
        if not (worker.pgdata / "PG_VERSION").exists():
            return found
        found.append(worker)
        index += 1


def _pg_accepts(settings: Settings) -> bool:
    try:
        with psycopg.connect(settings.dsn("postgres", "postgres"), connect_timeout=2):
            return True
    except psycopg.OperationalError:
        return False


def stop_postgres(settings: Settings) -> None:
    if not postgres_running(settings):
        return
    run_checked(as_service(settings, [pg_tool(settings, "pg_ctl"), "stop", "-D", settings.pgdata,
                                "-m", "fast", "-w", "-t", str(int(STOP_TIMEOUT_S)), "-s"]),
         env=service_env(settings), what="pg_ctl stop")


def sync_role_passwords(settings: Settings) -> None:
    """Give the stack's login roles their passwords from the secrets (roles come from migrate)."""
    with psycopg.connect(settings.dsn("postgres"), autocommit=True) as conn:
        set_login_passwords(conn, settings)


def role_exists(settings: Settings, role: str) -> bool:
    with psycopg.connect(settings.dsn("postgres"), autocommit=True) as conn:
        return conn.execute("select 1 from pg_roles where rolname = %s", (role,)).fetchone() \
            is not None


def postgres_pid(settings: Settings) -> int | None:
    try:
        return int((settings.pgdata / "postmaster.pid").read_text().splitlines()[0])
    except (FileNotFoundError, PermissionError, ValueError, IndexError):
        return None
