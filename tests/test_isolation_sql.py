"""Row-level security in SQL, the way psql or a BI tool meets it: each API role becomes itself in a
rolled-back transaction (as PostgREST does), and a login that is neither PostgREST nor a BI login
cannot pick its own claims.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from auth_support import Tenants, prepared_tenants, unique
from stepledger.settings import Settings

TENANT_TABLES = ("ledger.jobs", "ledger.step_runs", "ledger.job_steps", "ledger.clients")


@pytest.fixture(scope="module")
def tenants(su_conn: psycopg.Connection, settings: Settings) -> Tenants:
    return prepared_tenants(su_conn, settings)


def _count(conn: psycopg.Connection, table: str, client_id: str) -> int:
    row = conn.execute(sql.SQL("select count(*) from {} where client_id = %s").format(
        sql.SQL(table)), [client_id]).fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.parametrize("table", TENANT_TABLES)
def test_client_role_reads_only_its_client(db: psycopg.Connection, as_user: Callable[..., Any],
                                           tenants: Tenants, table: str) -> None:
    with as_user(db, "client", tenants.a):
        mine, theirs = _count(db, table, tenants.a), _count(db, table, tenants.b)
    with as_user(db, "admin"):
        admin_theirs = _count(db, table, tenants.b)
    assert mine > 0 and theirs == 0
    assert admin_theirs > 0


@pytest.mark.parametrize("view", ["api.jobs", "api.step_runs", "reporting.jobs"])
def test_views_apply_the_callers_policies(db: psycopg.Connection, as_user: Callable[..., Any],
                                          tenants: Tenants, view: str) -> None:
    role = "bi_reader" if view.startswith("reporting") else "client"
    with as_user(db, role, tenants.a):
        theirs = _count(db, view, tenants.b)
        mine = _count(db, view, tenants.a)
    with as_user(db, "admin" if role == "client" else "bi_all_clients"):
        others_seen = _count(db, view, tenants.b)
    assert mine > 0 and theirs == 0 and others_seen > 0


@pytest.mark.parametrize(("role", "statement"), [
    ("client", "select count(*) from ledger.vault"),
    ("client", "select count(*) from ledger.events"),
    ("client", "select count(*) from api.api_tokens"),
    ("client", "select count(*) from auth.users"),
    ("ingest", "select count(*) from api.jobs"),
    ("ingest", "select count(*) from ledger.jobs"),
    ("anon", "select count(*) from api.jobs"),
    ("bi_reader", "select count(*) from api.jobs"),
    ("admin", "select token_hash from auth.api_tokens"),
    ("admin", "select count(*) from auth.secrets"),
])
def test_roles_are_refused_what_they_were_not_granted(db: psycopg.Connection,
                                                      as_user: Callable[..., Any],
                                                      tenants: Tenants, role: str,
                                                      statement: str) -> None:
    with as_user(db, role, tenants.a if role in ("client", "ingest", "bi_reader") else None), \
            pytest.raises(psycopg.errors.InsufficientPrivilege):
        db.execute(statement)


def test_admin_reads_what_others_are_refused(db: psycopg.Connection, as_user: Callable[..., Any],
                                             tenants: Tenants) -> None:
    with as_user(db, "admin"):
        vault = db.execute("select count(*) from ledger.vault where client_id = %s",
                           [tenants.b]).fetchone()
        tokens = db.execute("select count(*) from api.api_tokens where client_id = %s",
                            [tenants.a]).fetchone()
    assert vault and vault[0] > 0
    assert tokens and tokens[0] >= 1


@pytest.fixture
def plain_login(su_conn: psycopg.Connection, settings: Settings) -> Iterator[str]:
    """A login role that is a member of client but neither PostgREST's login nor a BI login."""
    name = unique("plain").replace("-", "_")
    password = unique("pw")
    su_conn.execute(sql.SQL("create role {} login password {} in role client").format(
        sql.Identifier(name), sql.Literal(password)))
    dsn = (f"postgresql://{name}:{password}@{settings.pg_host}:{settings.pg_port}/"
           f"{settings.dbname}")
    try:
        yield dsn
    finally:
        su_conn.execute(sql.SQL("drop role {}").format(sql.Identifier(name)))


def test_other_logins_cannot_choose_their_claims(plain_login: str, db: psycopg.Connection,
                                                 as_user: Callable[..., Any],
                                                 tenants: Tenants) -> None:
    claims = f'{{"role": "client", "client_id": "{tenants.b}"}}'
    with psycopg.connect(plain_login) as conn:
        conn.execute("set role client")
        conn.execute("select set_config('request.jwt.claims', %s, false)", [claims])
        seen = conn.execute("select count(*), auth.client_id() from api.jobs").fetchone()
    assert seen == (0, None)
    # the same claims set by a superuser session (as tests and operators do) do apply
    with as_user(db, "client", tenants.b):
        trusted = db.execute("select count(*), auth.client_id() from api.jobs").fetchone()
    assert trusted == (len(tenants.jobs_b), tenants.b)


def test_policies_call_the_helper_once_per_statement(db: psycopg.Connection,
                                                    as_user: Callable[..., Any],
                                                    tenants: Tenants) -> None:
    with as_user(db, "client", tenants.a):
        plan = "\n".join(r[0] for r in db.execute(
            "explain select * from ledger.jobs order by updated_at desc limit 50").fetchall())
    # (select auth.client_id()) becomes an InitPlan evaluated once, compared as a parameter
    assert "InitPlan" in plan and "$0" in plan, plan
