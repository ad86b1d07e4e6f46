"""BI logins through psql: created by `stepledger bi-user add`, bound to one client or to all, and
held to the same row-level security as the API whatever they try from their session.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
import pytest

from auth_support import Tenants, prepared_tenants
from stacks import one_line_error, run_cli_process
from stepledger.settings import Settings


@dataclass
class BiLogin:
    name: str
    password: str


def _psql_bin(settings: Settings) -> str:
    candidate = settings.pg_bindir / "psql"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("psql")
    assert found, "psql is needed for the BI tests"
    return found


def _cli(settings: Settings, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return run_cli_process(settings, *args, input=stdin, timeout=60)


@pytest.fixture(scope="module")
def tenants(su_conn: psycopg.Connection, settings: Settings) -> Tenants:
    return prepared_tenants(su_conn, settings)


@pytest.fixture(scope="module")
def psql(settings: Settings) -> Callable[..., subprocess.CompletedProcess]:
    binary = _psql_bin(settings)

    def run(login: BiLogin, *statements: str) -> subprocess.CompletedProcess:
        command = [binary, "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", settings.pg_host,
                   "-p", str(settings.pg_port), "-U", login.name, "-d", settings.dbname]
        for statement in statements:
            command += ["-c", statement]
        env = {**os.environ, "PGPASSWORD": login.password, "PGCONNECT_TIMEOUT": "10"}
        env.pop("PGSERVICE", None)
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60,
                              check=False)
    return run


def _add(settings: Settings, name: str, client: str | None) -> BiLogin:
    password = f"bi-password-{name}"
    args = ["bi-user", "add", name, "--password", "-"]
    if client:
        args += ["--client", client]
    done = _cli(settings, *args, stdin=password + "\n")
    assert done.returncode == 0, done.stderr
    assert password not in done.stdout  # a given password is not echoed
    return BiLogin(name, password)


@pytest.fixture(scope="module")
def bound(settings: Settings, tenants: Tenants) -> BiLogin:
    return _add(settings, f"bi_{tenants.a.replace('-', '_')}", tenants.a)


@pytest.fixture(scope="module")
def everyone(settings: Settings, tenants: Tenants) -> BiLogin:
    return _add(settings, f"bi_all_{tenants.b.replace('-', '_')}", None)


def _lines(done: subprocess.CompletedProcess) -> list[str]:
    assert done.returncode == 0, done.stderr
    return [line for line in done.stdout.splitlines() if line]


def _owner_count(su_conn: psycopg.Connection, client_id: str) -> int:
    row = su_conn.execute("select count(*) from reporting.jobs where client_id = %s",
                          [client_id]).fetchone()
    assert row is not None
    return int(row[0])


def test_bound_login_sees_only_its_client(psql: Callable[..., subprocess.CompletedProcess],
                                          bound: BiLogin, tenants: Tenants,
                                          su_conn: psycopg.Connection) -> None:
    visible = _lines(psql(bound, "select distinct client_id from jobs order by 1"))
    assert visible == [tenants.a]
    other = _lines(psql(bound, f"select count(*) from jobs where client_id = '{tenants.b}'"))
    assert other == ["0"]
    # the owner (who is not subject to row-level security) sees the other client's jobs
    assert _owner_count(su_conn, tenants.b) == len(tenants.jobs_b)
    mine = _lines(psql(bound, "select count(*) from reporting.jobs"))
    assert mine == [str(len(tenants.jobs_a))]


def test_bound_login_cannot_choose_other_claims_or_roles(
        psql: Callable[..., subprocess.CompletedProcess], bound: BiLogin,
        tenants: Tenants) -> None:
    spoof = (f"select set_config('request.jwt.claims', "
             f"'{{\"role\": \"admin\", \"client_id\": \"{tenants.b}\"}}', false)")
    after = _lines(psql(bound, spoof, "select distinct client_id from jobs"))
    assert after[-1] == tenants.a and len(after) == 2
    as_group = _lines(psql(bound, "set role bi_reader", "select distinct client_id from jobs"))
    assert as_group == ["SET", tenants.a]
    for role in ("client", "admin", "bi_all_clients", "stepledger_owner", "authenticator"):
        refused = psql(bound, f"set role {role}")
        assert refused.returncode != 0 and "permission denied" in refused.stderr, role


@pytest.mark.parametrize("statement", [
    "select count(*) from ledger.vault",
    "select count(*) from ledger.events",
    "select count(*) from ledger.event_ids",
    "select * from auth.secrets",
    "select * from auth.users",
    "select * from auth.api_tokens",
    "select * from auth.bi_logins",
    "select count(*) from api.jobs",
    "select api.ingest('[]'::text)",
    "select auth.add_user('x@example.org', 'correct horse battery', '{admin}')",
    "select auth.create_api_token(null, 'bi', 'ingest', 'bi')",
])
def test_bound_login_reaches_nothing_else(psql: Callable[..., subprocess.CompletedProcess],
                                          bound: BiLogin, statement: str) -> None:
    done = psql(bound, statement)
    assert done.returncode != 0
    assert "permission denied" in done.stderr, done.stderr


def test_bound_login_cannot_write(psql: Callable[..., subprocess.CompletedProcess],
                                  bound: BiLogin, tenants: Tenants,
                                  su_conn: psycopg.Connection) -> None:
    before = _owner_count(su_conn, tenants.a)
    read_only = psql(bound, f"delete from ledger.jobs where client_id = '{tenants.a}'")
    assert read_only.returncode != 0 and "read-only transaction" in read_only.stderr
    forced = psql(bound, "set default_transaction_read_only = off",
                  f"delete from ledger.jobs where client_id = '{tenants.a}'")
    assert forced.returncode != 0 and "permission denied" in forced.stderr
    assert _owner_count(su_conn, tenants.a) == before


def test_all_clients_login_sees_every_client(psql: Callable[..., subprocess.CompletedProcess],
                                             everyone: BiLogin, tenants: Tenants) -> None:
    visible = _lines(psql(everyone, "select distinct client_id from jobs where client_id in "
                                    f"('{tenants.a}', '{tenants.b}') order by 1"))
    assert visible == sorted([tenants.a, tenants.b])
    denied = psql(everyone, "select count(*) from ledger.vault")
    assert denied.returncode != 0 and "permission denied" in denied.stderr


def test_rebinding_and_removing_a_login(psql: Callable[..., subprocess.CompletedProcess],
                                        settings: Settings, tenants: Tenants) -> None:
    login = _add(settings, f"bi_move_{tenants.a.replace('-', '_')}", tenants.a)
    assert _lines(psql(login, "select distinct client_id from jobs")) == [tenants.a]
    moved = _add(settings, login.name, tenants.b)
    assert _lines(psql(moved, "select distinct client_id from jobs")) == [tenants.b]
    removed = _cli(settings, "bi-user", "remove", login.name)
    assert removed.returncode == 0, removed.stderr
    gone = psql(moved, "select 1")
    assert gone.returncode != 0 and "authentication failed" in gone.stderr


@pytest.mark.parametrize(("args", "reason"), [
    (["bi-user", "add", "authenticator", "--password", "a long enough password"],
     'role "authenticator" exists and is not a BI login'),
    (["bi-user", "add", "Bad-Name", "--password", "a long enough password"],
     "invalid BI login name"),
    (["bi-user", "add", "bi_nobody", "--client", "no-such-client",
      "--password", "a long enough password"], 'unknown client "no-such-client"'),
    (["bi-user", "add", "bi_short", "--password", "short"], "at least 12 characters"),
    (["bi-user", "remove", "authenticator"], '"authenticator" is not a BI login'),
])
def test_bad_bi_user_commands_fail_with_one_line(settings: Settings, args: list[str],
                                                 reason: str) -> None:
    done = _cli(settings, *args)
    assert reason in one_line_error(done, status=1), done.stderr


def test_generated_password_is_printed_once_and_works(
        psql: Callable[..., subprocess.CompletedProcess], settings: Settings,
        tenants: Tenants) -> None:
    name = f"bi_gen_{tenants.a.replace('-', '_')}"
    done = _cli(settings, "bi-user", "add", name, "--client", tenants.a)
    assert done.returncode == 0, done.stderr
    [password] = [line.split()[1] for line in done.stdout.splitlines()
                  if line.strip().startswith("password")]
    assert len(password) >= 20
    assert _lines(psql(BiLogin(name, password), "select current_user")) == [name]
    wrong = psql(BiLogin(name, password + "x"), "select 1")
    assert wrong.returncode != 0
