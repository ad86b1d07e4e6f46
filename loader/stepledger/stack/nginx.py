"""nginx for the local stack: serves web/ and is the gateway to PostgREST (/api/ and the API
port), configured from deploy/nginx/default.conf.template as the nginx image does it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from stepledger import StepledgerError
from stepledger.settings import Settings
from stepledger.stack.processes import (
    START_TIMEOUT_S,
    as_service,
    port_open,
    prepare_dirs,
    run_checked,
    server_pid,
    service_env,
    spawn_server,
    stop_server,
    wait_for,
    while_running,
)
from stepledger.stack.templates import render_template

NGINX_BIN_CANDIDATES = ("/usr/sbin/nginx", "/usr/bin/nginx")


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
    prepare_dirs(settings)
    site = settings.run_dir / "nginx-default.conf"
    site.write_text(render_template(settings.nginx_template.read_text(), nginx_env(settings)))
    main = settings.run_dir / "nginx.conf"
    main.write_text(_nginx_main_conf(settings, site))
    return main


def nginx_running(settings: Settings) -> bool:
    return server_pid(settings, "nginx", "nginx") is not None


def start_nginx(settings: Settings) -> None:
    """Serve web_dir at / and proxy /api/ to PostgREST; the API port is the gateway to it."""
    if nginx_running(settings):
        return
    for port, variable in ((settings.web_port, "STEPLEDGER_WEB_PORT"),
                           (settings.api_port, "STEPLEDGER_API_PORT")):
        if port_open(port):
            raise StepledgerError(f"port {port} is already in use; set {variable}")
    conf = render_nginx(settings)
    error_log = settings.log_dir / "nginx-error.log"
    base = [_nginx_bin(), "-c", os.fspath(conf), "-e", os.fspath(error_log),
            "-p", os.fspath(settings.run_dir)]
    run_checked(as_service(settings, [*base, "-t", "-q"]), env=service_env(settings),
         what="nginx configuration test")
    proc = spawn_server(settings, "nginx", base, service_env(settings))
    wait_for(lambda: port_open(settings.web_port) and port_open(settings.api_port),
              timeout=START_TIMEOUT_S, what="nginx", alive=while_running(proc), log=error_log)


def stop_nginx(settings: Settings) -> None:
    stop_server(settings, "nginx", "nginx")
