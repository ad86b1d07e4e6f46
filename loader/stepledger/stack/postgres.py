"""The local stack: PostgreSQL, PostgREST and nginx as background processes of one home directory.

Every start/stop function is idempotent. Servers run as `settings.service_user` (PostgreSQL
refuses root); pid files in `settings.run_dir` record the processes we started, and `down` stops
only those.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pwd
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import httpx
import psycopg

from stepledger import StepledgerError, citus, processes
from stepledger.config import Settings, _user_can_reach
from stepledger.db import ensure_database, set_login_passwords

START_TIMEOUT_S = 60.0
# Shards per distributed table in the local cluster: enough to land on every worker of a
# development cluster, few enough for a 2-core machine
# (production: docs/adr/0012-citus-distribution.md).
CITUS_SHARD_COUNT = 8
STOP_TIMEOUT_S = 30.0
NGINX_BIN_CANDIDATES = ("/usr/sbin/nginx", "/usr/bin/nginx")
_TEMPLATE_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_CONF_VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


# -- helpers -------------------------------------------------------------------------------------
def _is_root() -> bool:
    return os.geteuid() == 0


def _service_ids(settings: Settings) -> tuple[int, int]:
    try:
        pw = pwd.getpwnam(settings.service_user)
    except KeyError:
        raise StepledgerError(
            f"OS user {settings.service_user!r} does not exist; run scripts/bootstrap.sh as root"
        ) from None
    if pw.pw_uid == 0:
        raise StepledgerError("the servers cannot run as root; set a non-root service user")
    return pw.pw_uid, pw.pw_gid


def _needs_switch(settings: Settings) -> bool:
    return _is_root() or pwd.getpwuid(os.geteuid()).pw_name != settings.service_user


def _as_service(settings: Settings, cmd: Sequence[str | os.PathLike[str]]) -> list[str]:
    """Prefix a command so it runs as the service user (runuser when we are root)."""
    args = [os.fspath(c) for c in cmd]
    if _is_root():
        return ["runuser", "-u", settings.service_user, "--", *args]
    if _needs_switch(settings):
        raise StepledgerError(
            f"running as {pwd.getpwuid(os.geteuid()).pw_name}, cannot start servers as "
            f"{settings.service_user}"
        )
    return args


def _service_env(settings: Settings, extra: dict[str, str] | None = None) -> dict[str, str]:
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


def _run(cmd: list[str], *, env: dict[str, str] | None = None, what: str) -> str:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        last = detail[-1] if detail else f"exit status {proc.returncode}"
        raise StepledgerError(f"{what} failed: {last}")
    return proc.stdout


def _make_service_dir(settings: Settings, path: Path, mode: int = 0o755) -> None:
    """Create a directory owned by the service user; parents traversable (0755)."""
    for parent in reversed(path.parents):
        if not parent.exists():
            parent.mkdir(mode=0o755)
    path.mkdir(mode=mode, exist_ok=True)
    if _is_root():
        uid, gid = _service_ids(settings)
        os.chown(path, uid, gid)
    os.chmod(path, mode)


def _prepare_dirs(settings: Settings) -> None:
    settings.home.mkdir(parents=True, exist_ok=True)
    if _is_root():
        os.chmod(settings.home, 0o755)
    for d in (settings.pgdata.parent, settings.run_dir, settings.log_dir):
        if d == settings.home:
            continue
        _make_service_dir(settings, d)
    if not settings.pgdata.exists():
        _make_service_dir(settings, settings.pgdata, mode=0o700)
    if settings.citus:
        _make_service_dir(settings, _socket_dir(settings), mode=0o700)
    (settings.run_dir / "nginx").mkdir(exist_ok=True)
    if _is_root():
        uid, gid = _service_ids(settings)
        os.chown(settings.run_dir / "nginx", uid, gid)


def _wait_for(check: Callable[[], bool], *, timeout: float, what: str,
              alive: Callable[[], bool] | None = None, log: Path | None = None) -> None:
    """Poll `check` until it is true or the deadline passes (or the process dies)."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        if check():
            return
        if alive is not None and not alive():
            raise StepledgerError(f"{what} exited during start-up{_log_hint(log)}")
        if time.monotonic() >= deadline:
            raise StepledgerError(f"{what} not ready after {timeout:.0f}s{_log_hint(log)}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)


def _log_hint(log: Path | None) -> str:
    if log is None or not log.exists():
        return ""
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    last = lines[-1].strip() if lines else ""
    return f" (see {log}: {last[:300]})" if last else f" (see {log})"


def _port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def _http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


# -- pid files -----------------------------------------------------------------------------------
def _running_pid(settings: Settings, name: str, exe_name: str) -> int | None:
    return processes.running_pid(settings, name, lambda pid: processes.is_named(pid, exe_name))


def _spawn(settings: Settings, name: str, cmd: list[str], env: dict[str, str]) -> subprocess.Popen:
    """Start a detached server as the service user; stdout/stderr to log_dir/<name>.log."""
    log_path = settings.log_dir / f"{name}.log"
    kwargs: dict[str, object] = {}
    if _is_root():
        uid, gid = _service_ids(settings)
        kwargs = {"user": uid, "group": gid, "extra_groups": []}
    with open(log_path, "ab") as log:
        if _is_root():
            os.chown(log_path, *_service_ids(settings))
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
    processes.pid_file(settings, name).write_text(f"{proc.pid}\n")
    return proc


def _stop_pid(settings: Settings, name: str, exe_name: str) -> bool:
    """SIGTERM the process recorded in <name>.pid (if it is ours), wait, then SIGKILL."""
    return processes.stop(settings, name, lambda pid: processes.is_named(pid, exe_name),
                          STOP_TIMEOUT_S)


def _reap(proc: subprocess.Popen) -> Callable[[], bool]:
    return lambda: proc.poll() is None


# -- PostgreSQL ----------------------------------------------------------------------------------
def _pg(settings: Settings, tool: str) -> Path:
    path = settings.pg_bindir / tool
    if not path.exists():
        raise StepledgerError(f"{path} not found; run scripts/bootstrap.sh")
    return path


def _postgres_conf(settings: Settings) -> str:
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


def _write_pg_hba(settings: Settings) -> None:
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
        if _is_root():
            os.chown(hba, *_service_ids(settings))
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
    cmd = _as_service(settings, [_pg(settings, "pg_ctl"), "status", "-D", settings.pgdata])
    return subprocess.run(cmd, env=_service_env(settings), capture_output=True,
                          check=False).returncode == 0


def _init_cluster(settings: Settings) -> None:
    pwfile = settings.run_dir / "initdb.pw"
    pwfile.write_text(settings.superuser_password + "\n")
    try:
        if _is_root():
            os.chown(pwfile, *_service_ids(settings))
        os.chmod(pwfile, 0o600)
        _run(
            _as_service(settings, [
                _pg(settings, "initdb"), "-D", settings.pgdata, "-U", "postgres",
                "--pwfile", pwfile, "--auth-host=scram-sha-256", "--auth-local=scram-sha-256",
                "--encoding=UTF8", "--locale=C.UTF-8", "--data-checksums",
            ]),
            env=_service_env(settings),
            what="initdb",
        )
    finally:
        pwfile.unlink(missing_ok=True)
    conf = settings.pgdata / "postgresql.conf"
    with conf.open("a") as fh:
        fh.write("\ninclude_if_exists = 'stepledger.conf'\n")


def start_postgres(settings: Settings) -> None:
    """initdb on first use, then start the server and wait until it accepts connections."""
    _prepare_dirs(settings)
    if not (settings.pgdata / "PG_VERSION").exists():
        if settings.pgdata.exists() and any(settings.pgdata.iterdir()):
            raise StepledgerError(f"{settings.pgdata} is not empty and holds no cluster")
        _init_cluster(settings)
    if not postgres_running(settings):
        if _port_open(settings.pg_port):
            raise StepledgerError(f"port {settings.pg_port} is already in use by another server; "
                                  "set STEPLEDGER_PG_PORT")
        local_conf = settings.pgdata / "stepledger.conf"
        local_conf.write_text(_postgres_conf(settings))
        _write_pg_hba(settings)
        if _is_root():
            os.chown(local_conf, *_service_ids(settings))
        log = settings.pg_log
        if not log.exists():
            log.touch()
        if _is_root():
            os.chown(log, *_service_ids(settings))
        cmd = [_pg(settings, "pg_ctl"), "start", "-D", settings.pgdata, "-l", log,
               "-w", "-t", str(int(START_TIMEOUT_S)), "-s"]
        proc = subprocess.run(_as_service(settings, cmd), env=_service_env(settings),
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise StepledgerError(f"PostgreSQL ({settings.node_name}) did not start"
                                  f"{_log_hint(log)}")
    _wait_for(lambda: _pg_accepts(settings), timeout=START_TIMEOUT_S,
              what=f"PostgreSQL ({settings.node_name})", log=settings.pg_log)
    ensure_database(settings)


def start_databases(settings: Settings) -> None:
    """The single node; or every worker, then the coordinator, joined into a Citus cluster."""
    existing = len(_existing_workers(settings))
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
    for worker in _existing_workers(settings):
        stop_postgres(worker)


def _existing_workers(settings: Settings) -> list[Settings]:
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
    _run(_as_service(settings, [_pg(settings, "pg_ctl"), "stop", "-D", settings.pgdata,
                                "-m", "fast", "-w", "-t", str(int(STOP_TIMEOUT_S)), "-s"]),
         env=_service_env(settings), what="pg_ctl stop")


def sync_role_passwords(settings: Settings) -> None:
    """Give the stack's login roles their passwords from the secrets (roles come from migrate)."""
    with psycopg.connect(settings.dsn("postgres"), autocommit=True) as conn:
        set_login_passwords(conn, settings)


def _role_exists(settings: Settings, role: str) -> bool:
    with psycopg.connect(settings.dsn("postgres"), autocommit=True) as conn:
        return conn.execute("select 1 from pg_roles where rolname = %s", (role,)).fetchone() \
            is not None


# -- PostgREST -----------------------------------------------------------------------------------
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
    if not _needs_switch(settings) or _user_can_reach(settings.service_user, path.parent):
        return path
    target = settings.run_dir / path.name
    shutil.copy2(path, target)
    if _is_root():
        os.chown(target, *_service_ids(settings))
    return target


def postgrest_running(settings: Settings) -> bool:
    return _running_pid(settings, "postgrest", "postgrest") is not None


def start_postgrest(settings: Settings) -> None:
    """Start PostgREST with deploy/postgrest.conf; wait on its admin /ready."""
    _prepare_dirs(settings)
    if not postgrest_running(settings):
        binary = settings.postgrest_bin
        if not binary.exists():
            raise StepledgerError(f"{binary} not found; run scripts/bootstrap.sh (npm ci)")
        for port in (settings.postgrest_port, settings.api_admin_port):
            if _port_open(port):
                raise StepledgerError(f"port {port} is already in use; set STEPLEDGER_API_PORT "
                                      "(PostgREST uses it + 1 and + 2)")
        cmd = [os.fspath(_service_copy(settings, binary)),
               os.fspath(_service_copy(settings, settings.postgrest_conf))]
        proc = _spawn(settings, "postgrest", cmd, _service_env(settings, postgrest_env(settings)))
        alive: Callable[[], bool] = _reap(proc)
    else:
        alive = lambda: postgrest_running(settings)  # noqa: E731
    log = settings.log_dir / "postgrest.log"
    url = f"{settings.api_admin_url}/ready"
    _wait_for(lambda: _http_ok(url), timeout=START_TIMEOUT_S, what="PostgREST",
              alive=alive, log=log)


def stop_postgrest(settings: Settings) -> None:
    _stop_pid(settings, "postgrest", "postgrest")


# -- nginx ---------------------------------------------------------------------------------------
def nginx_env(settings: Settings) -> dict[str, str]:
    """Values for every ${VAR} in deploy/nginx/default.conf.template."""
    return {
        "STEPLEDGER_WEB_HOST": "127.0.0.1",
        "STEPLEDGER_WEB_PORT": str(settings.web_port),
        "STEPLEDGER_API_HOST": "127.0.0.1",
        "STEPLEDGER_API_PORT": str(settings.api_port),
        "STEPLEDGER_API_UPSTREAM": f"127.0.0.1:{settings.postgrest_port}",
        "STEPLEDGER_WEB_ROOT": str(settings.web_dir.resolve()),
    }


def render_template(text: str, env: dict[str, str]) -> str:
    """envsubst as the nginx image does it: replace ${VAR} for defined names, keep nginx's $vars."""
    missing = sorted(template_variables(text) - set(env))
    if missing:
        raise StepledgerError(f"nginx template needs undefined variables: {', '.join(missing)}")
    return _TEMPLATE_VAR.sub(lambda m: env[m.group(1)], text)


def template_variables(text: str) -> set[str]:
    """${VAR} names in an nginx template (comments skipped)."""
    names: set[str] = set()
    for line in text.splitlines():
        if not line.lstrip().startswith("#"):
            names.update(_TEMPLATE_VAR.findall(line))
    return names


def conf_variables(text: str) -> set[str]:
    """$(VAR) names in a PostgREST config file (comments skipped)."""
    names: set[str] = set()
    for line in text.splitlines():
        if not line.lstrip().startswith("#"):
            names.update(_CONF_VAR.findall(line))
    return names


def _nginx_bin() -> str:
    for candidate in NGINX_BIN_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("nginx")
    if found is None:
        raise StepledgerError("nginx not found; run scripts/bootstrap.sh")
    return found


def _nginx_main_conf(settings: Settings, site_conf: Path) -> str:
    run, log = settings.run_dir, settings.log_dir
    temp = run / "nginx"
    return f"""# Written by stepledger on every start.
worker_processes 2;
pid {run}/nginx.master.pid;
error_log {log}/nginx-error.log warn;
daemon off;

events {{
    worker_connections 1024;
}}

http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    types {{ application/x-ndjson ndjson; }}
    access_log {log}/nginx-access.log;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 65;
    server_tokens off;
    client_body_temp_path {temp}/client_body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;

    include {site_conf};
}}
"""


def render_nginx(settings: Settings) -> Path:
    """Render the site template and the top-level nginx.conf into run_dir; return nginx.conf."""
    _prepare_dirs(settings)
    site = settings.run_dir / "nginx-default.conf"
    site.write_text(render_template(settings.nginx_template.read_text(), nginx_env(settings)))
    main = settings.run_dir / "nginx.conf"
    main.write_text(_nginx_main_conf(settings, site))
    return main


def nginx_running(settings: Settings) -> bool:
    return _running_pid(settings, "nginx", "nginx") is not None


def start_nginx(settings: Settings) -> None:
    """Serve web_dir at / and proxy /api/ to PostgREST; the API port is the gateway to it."""
    if nginx_running(settings):
        return
    for port, variable in ((settings.web_port, "STEPLEDGER_WEB_PORT"),
                           (settings.api_port, "STEPLEDGER_API_PORT")):
        if _port_open(port):
            raise StepledgerError(f"port {port} is already in use; set {variable}")
    conf = render_nginx(settings)
    error_log = settings.log_dir / "nginx-error.log"
    base = [_nginx_bin(), "-c", os.fspath(conf), "-e", os.fspath(error_log),
            "-p", os.fspath(settings.run_dir)]
    _run(_as_service(settings, [*base, "-t", "-q"]), env=_service_env(settings),
         what="nginx configuration test")
    proc = _spawn(settings, "nginx", base, _service_env(settings))
    _wait_for(lambda: _port_open(settings.web_port) and _port_open(settings.api_port),
              timeout=START_TIMEOUT_S, what="nginx", alive=_reap(proc), log=error_log)


def stop_nginx(settings: Settings) -> None:
    _stop_pid(settings, "nginx", "nginx")


# -- whole stack ---------------------------------------------------------------------------------
def run_migrations(settings: Settings) -> object:
    """stepledger.migrate.migrate, then the login roles' passwords; returns migrate's result."""
    try:
        from stepledger.migrate import migrate
    except ImportError as exc:
        raise StepledgerError(f"migrations are not available ({exc}); use --no-migrate") from None
    result = migrate(settings)
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
    if _role_exists(settings, "authenticator"):
        start_postgrest(settings)
    else:
        # PostgREST exits when its login role is missing: that role comes from migrate.
        warnings.append("PostgREST not started: role authenticator does not exist yet "
                        "(run `stepledger migrate`, then `stepledger up`)")
    start_nginx(settings)
    from stepledger import scheduler  # periodic database tasks: usage refresh, partitions
    scheduler.start(settings)
    from stepledger import notify  # notification delivery: webhooks and e-mail alerts
    notify.start(settings)
    return warnings


def down(settings: Settings) -> None:
    """Stop what `up` started, in reverse order. Harmless when already down."""
    from stepledger import notify, scheduler
    notify.stop(settings)
    scheduler.stop(settings)
    stop_nginx(settings)
    stop_postgrest(settings)
    stop_databases(settings)


def _process_user(settings: Settings, name: str, exe_name: str) -> str | None:
    pid = _running_pid(settings, name, exe_name)
    if pid is None:
        return None
    return pwd.getpwuid(Path(f"/proc/{pid}").stat().st_uid).pw_name


def _postgres_pid(settings: Settings) -> int | None:
    try:
        return int((settings.pgdata / "postmaster.pid").read_text().splitlines()[0])
    except (FileNotFoundError, PermissionError, ValueError, IndexError):
        return None


def status(settings: Settings) -> dict[str, object]:
    """Each component: up/down, where it listens, which OS user runs it."""
    pg_up = postgres_running(settings)
    pg_pid = _postgres_pid(settings) if pg_up else None
    pgrst_up = postgrest_running(settings)
    nginx_up = nginx_running(settings)
    notes: list[str] = []
    if not settings.home_reachable:
        notes.append(f"{settings.service_user} cannot reach {settings.home}; "
                     f"server data lives in {settings.pgdata.parent}")
    if nginx_up and not _user_can_reach(settings.service_user, settings.web_dir):
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
                for w in (settings.workers if settings.citus else _existing_workers(settings))
            ],
        },
        "postgrest": {
            "up": pgrst_up,
            "ready": pgrst_up and _http_ok(f"{settings.api_admin_url}/ready"),
            "url": settings.api_url,
            "port": settings.api_port,
            "internal_url": settings.postgrest_url,
            "admin_url": settings.api_admin_url,
            "pid": _running_pid(settings, "postgrest", "postgrest"),
            "user": _process_user(settings, "postgrest", "postgrest"),
        },
        "nginx": {
            "up": nginx_up,
            "url": settings.web_url,
            "api_url": f"{settings.web_url}/api/",
            "port": settings.web_port,
            "pid": _running_pid(settings, "nginx", "nginx"),
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
