"""`stepledger user`, `token` and the demo's logins, run as the operator would run them."""

from __future__ import annotations

import re
import subprocess

import httpx
import psycopg
import pytest

from auth_support import add_client, login, unique
from stacks import one_line_error, run_cli_process
from stepledger.settings import Settings


def _cli(settings: Settings, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return run_cli_process(settings, *args, input=stdin)


@pytest.fixture(scope="module")
def client_id(su_conn: psycopg.Connection) -> str:
    return add_client(su_conn, unique("cli"))


def test_user_add_creates_a_user_who_can_log_in(settings: Settings, pgrst: httpx.Client,
                                                client_id: str) -> None:
    email = f"Reader@{client_id}.example"
    done = _cli(settings, "user", "add", "--email", email, "--password", "a good password",
                "--role", "client", "--client", client_id)
    assert done.returncode == 0, done.stderr
    assert f"user reader@{client_id}.example added" in done.stdout
    response = login(pgrst, email.lower(), "a good password")
    assert response.status_code == 200 and response.json()["client_id"] == client_id


def test_user_add_again_sets_the_password_and_adds_a_role(settings: Settings,
                                                          pgrst: httpx.Client,
                                                          client_id: str) -> None:
    email = f"lead@{client_id}.example"
    first = _cli(settings, "user", "add", "--email", email, "--password", "first password",
                 "--role", "client", "--client", client_id)
    assert first.returncode == 0, first.stderr
    second = _cli(settings, "user", "add", "--email", email, "--password", "-", "--role", "admin",
                  stdin="second password\n")
    assert second.returncode == 0, second.stderr
    assert "updated (roles admin, client" in second.stdout
    assert login(pgrst, email, "first password").status_code == 401
    assert login(pgrst, email, "second password", role="admin").json()["role"] == "admin"
    assert login(pgrst, email, "second password").json()["client_id"] == client_id


def test_user_disable_and_enable(settings: Settings, pgrst: httpx.Client, client_id: str) -> None:
    email = f"locum@{client_id}.example"
    assert _cli(settings, "user", "add", "--email", email, "--password", "a good password",
                "--role", "client", "--client", client_id).returncode == 0
    assert _cli(settings, "user", "disable", email).returncode == 0
    assert login(pgrst, email, "a good password").status_code == 401
    assert _cli(settings, "user", "enable", email).returncode == 0
    assert login(pgrst, email, "a good password").status_code == 200
    listed = _cli(settings, "user", "list")
    assert listed.returncode == 0 and email in listed.stdout


@pytest.mark.parametrize(("args", "reason"), [
    (["--email", "not-an-email", "--password", "a good password", "--role", "admin"],
     'invalid email "not-an-email"'),
    (["--email", "short@example.org", "--password", "short", "--role", "admin"],
     "at least 10 characters"),
    (["--email", "orphan@example.org", "--password", "a good password", "--role", "client"],
     "a client user must belong to a client"),
    (["--email", "lost@example.org", "--password", "a good password", "--role", "client",
      "--client", "no-such-client"], 'unknown client "no-such-client"'),
    (["--email", "long@example.org", "--password", "x" * 73, "--role", "admin"],
     "at most 72 bytes"),
])
def test_bad_user_add_fails_with_one_line(settings: Settings, args: list[str],
                                          reason: str) -> None:
    done = _cli(settings, "user", "add", *args)
    assert reason in one_line_error(done, status=1), done.stderr


def test_unknown_role_is_refused_by_the_cli(settings: Settings) -> None:
    done = _cli(settings, "user", "add", "--email", "x@example.org", "--password",
                "a good password", "--role", "ingest")
    assert done.returncode == 2 and "invalid choice" in done.stderr


@pytest.mark.parametrize(("args", "reason"), [
    (["token", "create", "--name", "x", "--client", "no-such-client"],
     'unknown client "no-such-client"'),
    (["token", "create", "--name", ""], "needs a name"),
    (["token", "revoke", "00000000-0000-4000-8000-000000000000"], "unknown API token"),
    (["token", "revoke", "not-a-uuid"], "is not a UUID"),
])
def test_bad_token_commands_fail_with_one_line(settings: Settings, args: list[str],
                                               reason: str) -> None:
    done = _cli(settings, *args)
    assert reason in one_line_error(done, status=1), done.stderr
    assert done.stdout == ""


def test_token_list_never_shows_tokens(settings: Settings, client_id: str) -> None:
    created = _cli(settings, "token", "create", "--client", client_id, "--name", "list me")
    assert created.returncode == 0, created.stderr
    listed = _cli(settings, "token", "list")
    assert listed.returncode == 0 and "list me" in listed.stdout
    assert created.stdout.strip() not in listed.stdout


def test_demo_prints_logins_that_work_and_revokes_its_loader_token(
        settings: Settings, pgrst: httpx.Client, su_conn: psycopg.Connection) -> None:
    done = _cli(settings, "demo", "--jobs", "3")
    assert done.returncode == 0, done.stderr
    assert re.search(r"demo loaded: .*?\b[1-9]\d* events accepted", done.stdout)
    logins = dict(re.findall(r"^\s+(\S+@\S+)\s+(\S+)\s+(?:admin|client)", done.stdout, re.M))
    assert set(logins) >= {"admin@botimage.example", "staff@st-mary.example"}
    admin = login(pgrst, "admin@botimage.example", logins["admin@botimage.example"]).json()
    assert admin["role"] == "admin"
    staff = login(pgrst, "staff@st-mary.example", logins["staff@st-mary.example"]).json()
    assert staff["role"] == "client" and staff["client_id"] == "st-mary"
    jobs = pgrst.get("/jobs", headers={"Authorization": f"Bearer {staff['token']}"}).json()
    assert jobs and {j["client_id"] for j in jobs} == {"st-mary"}
    token = su_conn.execute(
        "select revoked_at is not null, last_used_at is not null from auth.api_tokens "
        "where name = 'stepledger demo loader' order by created_at desc limit 1").fetchone()
    assert token == (True, True)  # the demo ingested with it, then revoked it
