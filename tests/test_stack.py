"""The local stack itself: start, idempotency, routing through nginx, stop.

These tests run their own stack (own home, ports and web root) so that stopping it does not
disturb the session stack the other tests share.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from stacks import run_cli_process, throwaway_stack
from stepledger import StepledgerError, stack
from stepledger.settings import Settings
from stepledger.stack import processes

INDEX_HTML = "<!doctype html><title>stepledger test root</title><p>served by nginx</p>\n"


def _test_web_root(home: Path) -> dict[str, Path]:
    web_root = home / "web"
    web_root.mkdir(mode=0o755)
    (web_root / "index.html").write_text(INDEX_HTML)
    (web_root / "index.html").chmod(0o644)
    return {"web_root": web_root}


@pytest.fixture(scope="module")
def own() -> Iterator[Settings]:
    with throwaway_stack("stepledger-stacktest-", prepare_home=_test_web_root) as settings:
        yield settings


def _components_up(info: dict) -> dict[str, bool]:
    return {name: info[name]["up"] for name in ("postgres", "postgrest", "nginx")}


def test_status_reports_all_up(own: Settings) -> None:
    info = stack.status(own)
    assert _components_up(info) == {"postgres": True, "postgrest": True, "nginx": True}
    assert info["postgrest"]["ready"] is True
    assert info["nginx"]["url"] == own.web_url
    assert info["postgres"]["port"] == own.pg_port


def test_up_twice_is_harmless(own: Settings) -> None:
    before = stack.status(own)
    stack.up(own, migrate=True)
    after = stack.status(own)
    assert _components_up(after) == {"postgres": True, "postgrest": True, "nginx": True}
    for name in ("postgres", "postgrest", "nginx"):
        assert after[name]["pid"] == before[name]["pid"], f"{name} was restarted"


def test_servers_run_as_non_root(own: Settings) -> None:
    info = stack.status(own)
    for name in ("postgres", "postgrest", "nginx"):
        pid = info[name]["pid"]
        assert pid, name
        assert Path(f"/proc/{pid}").stat().st_uid != 0, f"{name} runs as root"
        assert info[name]["user"] == own.service_user


def test_postgres_accepts_the_superuser_and_has_the_database(own: Settings) -> None:
    with psycopg.connect(own.dsn("postgres")) as conn:
        row = conn.execute("select current_database(), current_setting('port')").fetchone()
    assert row == (own.dbname, str(own.pg_port))


def test_postgres_refuses_a_wrong_password(own: Settings) -> None:
    dsn = f"postgresql://postgres:wrong@{own.pg_host}:{own.pg_port}/{own.dbname}"
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(dsn, connect_timeout=5)


def test_postgrest_ready(own: Settings) -> None:
    assert httpx.get(f"{own.api_admin_url}/ready", timeout=5).status_code == 200


def test_nginx_serves_the_web_root(own: Settings) -> None:
    response = httpx.get(f"{own.web_url}/", timeout=5)
    assert response.status_code == 200
    assert response.text == INDEX_HTML
    assert httpx.get(f"{own.web_url}/no-such-file.js", timeout=5).status_code == 404


def test_nginx_proxies_api_to_postgrest(own: Settings) -> None:
    direct = httpx.get(f"{own.api_url}/", timeout=5)
    proxied = httpx.get(f"{own.web_url}/api/", timeout=5)
    assert direct.status_code == proxied.status_code == 200
    assert proxied.headers["content-type"].startswith(("application/openapi+json",
                                                       "application/json"))
    assert proxied.json() == direct.json()
    # The OpenAPI document points clients at the public /api/ URL.
    assert proxied.json()["host"] == f"127.0.0.1:{own.web_port}"


def test_nginx_gzips_json(own: Settings) -> None:
    response = httpx.get(f"{own.web_url}/api/", headers={"Accept-Encoding": "gzip"}, timeout=5)
    assert response.headers.get("content-encoding") == "gzip"


def test_nginx_rate_limits_login(own: Settings) -> None:
    codes = []
    with httpx.Client(base_url=own.web_url, timeout=5) as client:
        for _ in range(40):
            codes.append(client.post("/api/rpc/login", json={}).status_code)
    assert 429 in codes
    assert codes[0] != 429


def test_cli_status_sees_the_stack(own: Settings) -> None:
    proc = run_cli_process(own, "status", timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = {line.split()[0]: line for line in proc.stdout.splitlines() if line.strip()}
    for name in ("postgres", "postgrest", "nginx"):
        assert lines[name].split()[1] == "up"


def test_down_stops_everything(own: Settings) -> None:
    pids = {name: stack.status(own)[name]["pid"] for name in ("postgres", "postgrest", "nginx")}
    stack.down(own)
    info = stack.status(own)
    assert _components_up(info) == {"postgres": False, "postgrest": False, "nginx": False}
    for name, pid in pids.items():
        assert not _alive(pid), f"{name} (pid {pid}) still running"
    for port in (own.pg_port, own.api_port, own.postgrest_port, own.web_port):
        assert not processes.port_open(port)
    stack.down(own)  # again: harmless


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


# -- settings (no servers needed) ----------------------------------------------------------------
def test_secrets_are_generated_once_and_private(tmp_path: Path) -> None:
    first = Settings.from_env(home=tmp_path)
    second = Settings.from_env(home=tmp_path)
    assert len(first.jwt_secret) >= 32
    assert first.jwt_secret == second.jwt_secret
    assert first.password_for("postgres") != first.password_for("authenticator")
    for name in ("jwt_secret", "superuser_password", "authenticator_password"):
        mode = stat.S_IMODE((tmp_path / "secrets" / name).stat().st_mode)
        assert mode == 0o600, name


def test_settings_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEPLEDGER_PG_PORT", "6543")
    monkeypatch.setenv("STEPLEDGER_API_PORT", "4000")
    monkeypatch.delenv("STEPLEDGER_API_ADMIN_PORT", raising=False)
    monkeypatch.delenv("STEPLEDGER_POSTGREST_PORT", raising=False)
    monkeypatch.setenv("STEPLEDGER_WEB_PORT", "9090")
    s = Settings.from_env(home=tmp_path)
    assert (s.pg_port, s.api_port, s.api_admin_port, s.postgrest_port, s.web_port) == \
        (6543, 4000, 4001, 4002, 9090)
    assert s.dsn().startswith("postgresql://postgres:")
    assert s.dsn().endswith("@127.0.0.1:6543/stepledger")
    assert Settings.from_env(home=tmp_path, api_port=5000).api_admin_port == 5001
    assert Settings.from_env(home=tmp_path, api_port=5000).postgrest_port == 5002
    monkeypatch.setenv("STEPLEDGER_PG_PORT", "not-a-port")
    with pytest.raises(StepledgerError):
        Settings.from_env(home=tmp_path)


def test_cli_reports_bad_input_on_one_line(tmp_path: Path) -> None:
    env = dict(os.environ, STEPLEDGER_HOME=str(tmp_path), STEPLEDGER_PG_PORT="nope")
    proc = subprocess.run([sys.executable, "-m", "stepledger", "status"], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode != 0
    assert proc.stderr.strip().count("\n") == 0
    assert "STEPLEDGER_PG_PORT" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_wait_for_respects_its_deadline() -> None:
    started = time.monotonic()
    with pytest.raises(StepledgerError, match="not ready"):
        processes.wait_for(lambda: False, timeout=0.3, what="nothing")
    assert time.monotonic() - started < 5


# -- the shared session fixtures other tests build on ------------------------------------------
def test_session_fixtures_work_together(db, as_user, api, jwt_for, web_url) -> None:
    with as_user(db, "client", client_id="acme", email="a@example.org"):
        row = db.execute("select current_user, "
                         "current_setting('request.jwt.claims', true)::jsonb").fetchone()
    assert row[0] == "client"
    assert row[1]["client_id"] == "acme" and row[1]["role"] == "client"
    assert db.execute("select current_user").fetchone()[0] == "postgres"
    assert api().get("/").status_code == 200
    assert api(jwt_for("admin")).get("/").status_code == 200
    assert api("not-a-token").get("/").status_code == 401
    assert httpx.get(f"{web_url}/api/", timeout=5).status_code == 200
