"""Shared fixtures: one real local stack (PostgreSQL, PostgREST, nginx) for the whole session.

Fixtures
- stack / settings: the running stack's `Settings` (session)
- su_conn: autocommit superuser connection to the stepledger database (session)
- db: superuser connection inside a transaction that is rolled back after the test
- api_url / web_url: PostgREST base URL / nginx base URL
- jwt_for(role, client_id=None, **claims): HS256 token signed with the stack's secret; an ingest
  token is also recorded in auth.api_tokens, as the database records the tokens it issues
- api(token=None): httpx.Client on api_url, with Authorization when a token is given
- pgrst: httpx.Client on PostgREST itself, past the gateway
- admin_token / admin: an operator token / an httpx client on PostgREST with it
- books: the billing helpers (tests/billing_support.py) on su_conn and admin_token
- cli(*args): the stepledger CLI in a process of its own against the stack
- api_token(client_id=None): an ingest API token issued by auth.create_api_token
- loader_catalog: BotImage and the loader tests' clients (st-mary, riverside, northgate),
  registered once for each module that asks (`pytestmark = pytest.mark.usefixtures(...)`)
- make_tracker(**kwargs): an SDK Tracker on the stack (BotImage, st-mary), closed after the test
- as_user(conn, role, client_id=None, **claims): context manager "becoming" an API role
  inside the current transaction
"""

from __future__ import annotations

import contextlib
import functools
import json
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import psycopg
import pytest

from billing_support import Books
from stacks import free_ports as free_ports  # for the tests that import it from here
from stacks import run_cli_process, throwaway_stack
from stepledger.sdk import Tracker, TrackerError
from stepledger.settings import Settings
from stepledger.stack import scheduler
from test_loader_support import register_catalog as register_loader_catalog


@pytest.fixture(scope="session")
def stack() -> Iterator[Settings]:
    """The local stack, migrated, on free ports in a throw-away home; always stopped at the end."""
    with throwaway_stack("stepledger-test-", keep_home_env="STEPLEDGER_KEEP_TEST_HOME") as settings:
        yield settings


@pytest.fixture(scope="session")
def settings(stack: Settings) -> Settings:
    return stack


@pytest.fixture(scope="session")
def su_conn(stack: Settings) -> Iterator[psycopg.Connection]:
    with psycopg.connect(stack.dsn("postgres"), autocommit=True) as conn:
        yield conn


@pytest.fixture
def no_scheduler(stack: Settings) -> Iterator[None]:
    """The stack's scheduler stopped for the test, so that no background refresh of usage or
    error statistics comes between two of its reads; started again afterwards."""
    scheduler.stop(stack)
    try:
        yield
    finally:
        scheduler.start(stack)


@pytest.fixture
def db(stack: Settings) -> Iterator[psycopg.Connection]:
    """Superuser connection in a transaction rolled back after the test."""
    with psycopg.connect(stack.dsn("postgres")) as conn:
        try:
            yield conn
        finally:
            conn.rollback()


@pytest.fixture(scope="session")
def api_url(stack: Settings) -> str:
    return stack.api_url


@pytest.fixture(scope="session")
def web_url(stack: Settings) -> str:
    return stack.web_url


@pytest.fixture(scope="session")
def jwt_for(stack: Settings, su_conn: psycopg.Connection) -> Callable[..., str]:
    def make(role: str, client_id: str | None = None, **claims: Any) -> str:
        payload: dict[str, Any] = {"role": role, "exp": int(time.time()) + 3600}
        if client_id is not None:
            payload["client_id"] = client_id
        if role == "ingest":
            payload["jti"] = str(uuid.uuid4())
        payload.update(claims)
        token = jwt.encode(payload, stack.jwt_secret, algorithm="HS256")
        if role == "ingest":
            _register_api_token(su_conn, token, payload)
        return token
    return make


def _register_api_token(conn: psycopg.Connection, token: str, claims: dict[str, Any]) -> None:
    """Record an ingest token as auth.create_api_token would, so that auth.pre_request accepts
    it (it refuses ingest tokens the database did not issue). Tokens whose jti is not a UUID, or
    whose client does not exist, stay unknown and are refused."""
    conn.execute(
        """
        insert into auth.api_tokens (token_id, client_id, name, scope, token_hash, created_by)
        select t.id::uuid, c.client_id, 'tests', 'ingest', sha256(convert_to(%(token)s, 'UTF8')),
               'tests'
          from (select %(jti)s as id) t
          left join ledger.clients c on c.client_id = %(client)s
         where t.id ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
           and (%(client)s::text is null or c.client_id is not null)
        on conflict do nothing
        """, {"token": token, "jti": str(claims.get("jti", "")), "client": claims.get("client_id")})


@pytest.fixture
def api(api_url: str) -> Iterator[Callable[..., httpx.Client]]:
    """Factory of httpx clients on PostgREST; all are closed after the test."""
    clients: list[httpx.Client] = []

    def make(token: str | None = None, **kwargs: Any) -> httpx.Client:
        headers = dict(kwargs.pop("headers", {}) or {})
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        client = httpx.Client(base_url=api_url, headers=headers, timeout=30.0, **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def pgrst(stack: Settings) -> Iterator[httpx.Client]:
    """PostgREST without the gateway: what the database itself answers (no login rate limit)."""
    with httpx.Client(base_url=stack.postgrest_url, timeout=30.0) as client:
        yield client


@pytest.fixture
def admin_token(jwt_for: Callable[..., str]) -> str:
    """An operator (admin) token signed with the stack's secret."""
    return jwt_for("admin")


@pytest.fixture
def admin(api: Callable[..., httpx.Client], admin_token: str) -> httpx.Client:
    """An httpx client on PostgREST with the operator's token."""
    return api(admin_token)


@pytest.fixture
def books(su_conn: psycopg.Connection, api_url: str, admin_token: str) -> Books:
    return Books(su_conn, api_url, admin_token)


@pytest.fixture(scope="session")
def cli(stack: Settings) -> Callable[..., subprocess.CompletedProcess[str]]:
    """cli(*args): `python -m stepledger ARGS` against the session stack, output captured."""
    return functools.partial(run_cli_process, stack)


@pytest.fixture(scope="session")
def api_token(su_conn: psycopg.Connection) -> Callable[..., str]:
    """Ingest API tokens made by auth.create_api_token, for one client or (None) every client."""
    def make(client_id: str | None = None, name: str = "tests") -> str:
        if client_id is not None:  # a token is bound to an existing client
            su_conn.execute("insert into ledger.clients (client_id, name) values (%s, %s) "
                            "on conflict do nothing", (client_id, client_id))
        row = su_conn.execute("select auth.create_api_token(%s, %s, 'ingest', 'tests')",
                              (client_id, name)).fetchone()
        assert row is not None
        return str(row[0]["token"])
    return make


@pytest.fixture(scope="module")
def loader_catalog(su_conn: psycopg.Connection) -> None:
    register_loader_catalog(su_conn)


@pytest.fixture
def make_tracker(api_url: str, api_token: Callable[..., str], tmp_path: Path
                 ) -> Iterator[Callable[..., Tracker]]:
    """make_tracker(**kwargs): an SDK Tracker on the stack, for BotImage and st-mary unless told,
    with an ingest token of that client and a spool of its own under tmp_path; all are closed
    after the test."""
    made: list[Tracker] = []

    def make(**kwargs: Any) -> Tracker:
        kwargs.setdefault("spool_dir", tmp_path / f"spool{len(made)}")
        kwargs.setdefault("pipeline", "botimage")
        kwargs.setdefault("client_id", "st-mary")
        kwargs.setdefault("flush_interval_s", 0.1)
        url = kwargs.pop("url", api_url)
        token = kwargs.pop("token", api_token(kwargs["client_id"]))
        tracker = Tracker(url, token, **kwargs)
        made.append(tracker)
        return tracker
    yield make
    for tracker in made:
        with contextlib.suppress(TrackerError):
            tracker.close(timeout_s=5)


@contextlib.contextmanager
def _as_user(conn: psycopg.Connection, role: str, client_id: str | None = None,
             **claims: Any) -> Iterator[psycopg.Connection]:
    """Become `role` with these JWT claims for the rest of the current transaction."""
    payload: dict[str, Any] = {"role": role, **claims}
    if client_id is not None:
        payload["client_id"] = client_id
    conn.execute("select set_config('request.jwt.claims', %s, true)", (json.dumps(payload),))
    conn.execute("select set_config('role', %s, true)", (role,))
    try:
        yield conn
    finally:
        # Back to the session user, unless the transaction already failed (rollback resets it).
        if conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS:
            conn.execute("reset role")
            conn.execute("select set_config('request.jwt.claims', '', true)")


@pytest.fixture(scope="session")
def as_user() -> Callable[..., contextlib.AbstractContextManager[psycopg.Connection]]:
    return _as_user


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Everything that uses the stack shares the one session stack.
    for item in items:
        if "stack" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.stack)
