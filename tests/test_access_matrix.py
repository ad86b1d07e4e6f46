"""The access matrix from the catalog against the intended one (tests/access/*.yaml), and the
rules every object must follow whichever area adds it: no grants to PUBLIC, row-level security
and an indexed client_id on every tenant table, security_invoker views, no materialized view
open to tenants, pinned search_path on security definer functions, comments on the HTTP surface.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import httpx
import psycopg
import pytest

import access_matrix

TENANT_ROLES = ("anon", "client", "ingest", "bi_reader")
CLIENT_POLICY = re.compile(r"\(\s*SELECT auth\.client_id\(\)")
OUR_SCHEMAS = list(access_matrix.SCHEMAS)


def test_the_files_are_well_formed(su_conn: psycopg.Connection) -> None:
    _, problems = access_matrix.load_files(conn=su_conn)
    assert problems == []


def test_the_catalog_matches_the_intended_matrix(su_conn: psycopg.Connection) -> None:
    diff = access_matrix.differences(access_matrix.intended(su_conn),
                                     access_matrix.actual(su_conn))
    assert diff == [], "access matrix differs:\n" + "\n".join(diff)


def test_the_comparison_catches_a_new_endpoint_and_a_new_grant(
        db: psycopg.Connection, su_conn: psycopg.Connection) -> None:
    # The same computation inside a transaction that adds what a careless change would add.
    want = access_matrix.intended(su_conn)
    db.execute("create function api.sneaky() returns int language sql as 'select 1'")
    db.execute("create table ledger.sneaky (client_id text primary key)")
    db.execute("grant select on ledger.jobs to ingest")
    diff = access_matrix.differences(want, access_matrix.actual(db))
    assert any(line.startswith("api.sneaky(): exists but is in no") for line in diff), diff
    assert any(line.startswith("ledger.sneaky: exists but is in no") for line in diff), diff
    assert any(line.startswith("ledger.jobs: intended") and "ingest" in line for line in diff), diff
    # a new function is executable by PUBLIC unless revoked: every role shows it
    sneaky = access_matrix.actual(db)["api.sneaky()"]
    assert sneaky["anon"] == ["execute"]


def test_short_entries_aliases_and_other_documents(tmp_path: Path,
                                                   su_conn: psycopg.Connection) -> None:
    (tmp_path / "area.yaml").write_text(
        "'api.job_counts(text, timestamptz, timestamptz, text, text)': "
        "{client: [execute], admin: [execute]}\n"
        "api.jobs: {admin: [select], client: [select]}\n"
        "auth.api_tokens: {admin: [select]}\n"
        "endpoints:\n  - {name: x, path: /x}\n")
    want, problems = access_matrix.load_files(tmp_path, conn=su_conn)
    assert problems == []
    assert set(want) == {
        "api.job_counts(text,timestamp with time zone,timestamp with time zone,text,text)",
        "api.jobs", "auth.api_tokens"}
    have = access_matrix.actual(su_conn)
    # short entries compare privilege names only: admin's column grant on api_tokens is "select"
    assert access_matrix.differences(want, {k: have[k] for k in want}) == []
    want["api.jobs"] = {"admin": ["select"]}
    [line] = access_matrix.differences(want, {k: have[k] for k in want})
    assert line.startswith("api.jobs: intended") and "client" in line
    # an object in two files must be described the same way in both
    (tmp_path / "same.yaml").write_text("api.jobs: {kind: view, security_invoker: true, "
                                        "client: [select], admin: [select]}\n")
    merged, problems = access_matrix.load_files(tmp_path, conn=su_conn)
    assert problems == [] and merged["api.jobs"]["kind"] == "view"
    (tmp_path / "bad.yaml").write_text("api.step_runs: {security_invoker: true}\n"
                                       "ledger.x: [1]\napi.jobs: {admin: [select]}\n")
    _, problems = access_matrix.load_files(tmp_path, conn=su_conn)
    assert any("flags need a kind" in p for p in problems)
    assert any("ledger.x: an entry is a mapping" in p for p in problems)
    assert "api.jobs: area.yaml and bad.yaml disagree" in problems


def test_nothing_is_granted_to_public(su_conn: psycopg.Connection) -> None:
    rows = su_conn.execute(
        """
        select 'relation ' || c.oid::regclass::text from pg_class c
          join pg_namespace n on n.oid = c.relnamespace, aclexplode(c.relacl) a
         where n.nspname = any(%(s)s) and a.grantee = 0
        union all
        select 'function ' || p.oid::regprocedure::text from pg_proc p
          join pg_namespace n on n.oid = p.pronamespace,
               aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
         where n.nspname = any(%(f)s) and a.grantee = 0
           and not exists (select from pg_depend d where d.classid = 'pg_proc'::regclass
                            and d.objid = p.oid and d.deptype = 'e')
        union all
        select 'schema ' || n.nspname from pg_namespace n, aclexplode(n.nspacl) a
         where n.nspname = any(%(s)s) and a.grantee = 0
        """, {"s": OUR_SCHEMAS, "f": list(access_matrix.FUNCTION_SCHEMAS)}).fetchall()
    assert rows == []


def test_bi_all_clients_and_bi_logins_hold_no_grants_of_their_own(
        su_conn: psycopg.Connection) -> None:
    # bi_all_clients only inherits bi_reader: its wider reach comes from its policies, never
    # from a grant; BI logins only inherit their group's.
    direct = su_conn.execute(
        """
        select c.oid::regclass::text from pg_class c join pg_namespace n on n.oid = c.relnamespace,
               aclexplode(c.relacl) a
         where n.nspname = any(%s) and (a.grantee = 'bi_all_clients'::regrole
               or a.grantee in (select b.rolname::regrole from auth.bi_logins b))
        """, [OUR_SCHEMAS]).fetchall()
    assert direct == []
    differing = su_conn.execute(
        """
        select c.oid::regclass::text from pg_class c join pg_namespace n on n.oid = c.relnamespace
         where n.nspname = any(%s) and c.relkind in ('r', 'p', 'v', 'm')
           and has_any_column_privilege('bi_all_clients', c.oid, 'select')
               <> has_any_column_privilege('bi_reader', c.oid, 'select')
        """, [OUR_SCHEMAS]).fetchall()
    assert differing == []
    readable = su_conn.execute("select has_table_privilege('bi_all_clients', 'reporting.jobs', "
                               "'select')").fetchone()
    assert readable == (True,)


def test_partitions_have_no_grants(su_conn: psycopg.Connection) -> None:
    rows = su_conn.execute(
        "select c.oid::regclass::text from pg_class c where c.relispartition "
        "and c.relacl is not null "
        "and exists (select from aclexplode(c.relacl) a where a.grantee <> c.relowner)").fetchall()
    partitions = su_conn.execute("select count(*) from pg_class where relispartition").fetchone()
    assert partitions and partitions[0] > 0  # the rule is checked against real partitions
    assert rows == []


def _tenant_tables(conn: psycopg.Connection) -> list[tuple[int, str]]:
    return conn.execute(
        """
        select c.oid, c.oid::regclass::text from pg_class c
          join pg_namespace n on n.oid = c.relnamespace
         where c.relkind in ('r', 'p') and not c.relispartition
           and n.nspname not in ('pg_catalog', 'information_schema', 'public', 'pg_toast')
           and exists (select from pg_attribute a where a.attrelid = c.oid
                        and a.attname = 'client_id' and not a.attisdropped)
         order by 2
        """).fetchall()


def tenant_table_problems(conn: psycopg.Connection) -> list[str]:
    """Tenant tables without row-level security or without an index led by client_id."""
    problems = []
    for oid, name in _tenant_tables(conn):
        rls = conn.execute("select relrowsecurity from pg_class where oid = %s", [oid]).fetchone()
        if not (rls and rls[0]):
            problems.append(f"{name}: row-level security is off")
        leading = conn.execute(
            """
            select count(*) from pg_index i
              join pg_attribute a on a.attrelid = i.indrelid and a.attnum = i.indkey[0]
             where i.indrelid = %s and a.attname = 'client_id'
            """, [oid]).fetchone()
        if not (leading and leading[0]):
            problems.append(f"{name}: no index starts with client_id")
    return problems


def policy_problems(conn: psycopg.Connection) -> list[str]:
    """Tenant tables a tenant role may read other than through a client_id policy."""
    problems = []
    for oid, name in _tenant_tables(conn):
        for role in TENANT_ROLES:
            can_read = conn.execute("select has_any_column_privilege(%s, %s::oid, 'select')",
                                    [role, oid]).fetchone()
            if not (can_read and can_read[0]):
                continue
            schema, table = name.split(".")
            policies = conn.execute(
                """
                select policyname, permissive, coalesce(qual, '') from pg_policies
                 where schemaname = %s and tablename = %s and cmd in ('SELECT', 'ALL')
                   and (%s = any(roles) or 'public' = any(roles))
                """, [schema, table, role]).fetchall()
            if not policies:
                problems.append(f"{name}: {role} may select but no policy applies to it")
            for policy, permissive, qual in policies:
                if permissive == "PERMISSIVE" and not CLIENT_POLICY.search(qual):
                    problems.append(f"{name}: policy {policy} for {role} does not compare "
                                    f"client_id with (select auth.client_id()): {qual}")
    return problems


def test_every_tenant_table_has_row_level_security_and_an_index_on_client_id(
        su_conn: psycopg.Connection) -> None:
    tables = {name for _, name in _tenant_tables(su_conn)}
    assert {"ledger.jobs", "ledger.vault", "auth.api_tokens"} <= tables
    assert tenant_table_problems(su_conn) == []


def test_tenant_roles_read_tenant_tables_only_through_a_client_id_policy(
        su_conn: psycopg.Connection) -> None:
    assert policy_problems(su_conn) == []


def test_the_tenant_rules_catch_a_careless_table(db: psycopg.Connection) -> None:
    db.execute("create table ledger.careless (client_id text, n int)")
    db.execute("grant select on ledger.careless to client")
    db.execute("create table ledger.leaky (client_id text primary key)")
    db.execute("alter table ledger.leaky enable row level security")
    db.execute("create policy select_everything on ledger.leaky for select to bi_reader "
               "using (true)")
    db.execute("grant select on ledger.leaky to bi_reader")
    assert set(tenant_table_problems(db)) == {"ledger.careless: row-level security is off",
                                              "ledger.careless: no index starts with client_id"}
    problems = policy_problems(db)
    assert "ledger.careless: client may select but no policy applies to it" in problems
    leaky = "ledger.leaky: policy select_everything for bi_reader"
    assert any(p.startswith(leaky) for p in problems)
    assert len(problems) == 2


def test_views_of_the_api_and_reporting_run_as_the_caller(su_conn: psycopg.Connection) -> None:
    rows = su_conn.execute(
        """
        select c.oid::regclass::text from pg_class c join pg_namespace n on n.oid = c.relnamespace
         where n.nspname in ('api', 'reporting') and c.relkind = 'v'
           and not coalesce((select option_value in ('true', 'on', '1')
                               from pg_options_to_table(c.reloptions)
                              where option_name = 'security_invoker'), false)
        """).fetchall()
    views = su_conn.execute("select count(*) from pg_views where schemaname = 'api'").fetchone()
    assert views and views[0] >= 3
    assert rows == []


def test_no_materialized_view_is_open_to_tenant_roles(su_conn: psycopg.Connection) -> None:
    rows = su_conn.execute(
        """
        select c.oid::regclass::text, r from pg_class c, unnest(%s::text[]) r
         where c.relkind = 'm' and has_table_privilege(r, c.oid, 'select')
        """, [list(TENANT_ROLES)]).fetchall()
    assert rows == []


def test_security_definer_functions_pin_their_search_path(su_conn: psycopg.Connection) -> None:
    rows = su_conn.execute(
        """
        select p.oid::regprocedure::text, p.proconfig from pg_proc p
          join pg_namespace n on n.oid = p.pronamespace
         where p.prosecdef and n.nspname not in ('pg_catalog', 'information_schema')
           and not coalesce('search_path=pg_catalog, pg_temp' = any(p.proconfig), false)
        """).fetchall()
    count = su_conn.execute("select count(*) from pg_proc where prosecdef").fetchone()
    assert count and count[0] >= 8
    assert rows == []


def test_every_object_of_the_http_surface_and_reporting_has_a_comment(
        su_conn: psycopg.Connection) -> None:
    rows = su_conn.execute(
        """
        select c.oid::regclass::text from pg_class c join pg_namespace n on n.oid = c.relnamespace
         where n.nspname in ('api', 'reporting') and c.relkind in ('r', 'p', 'v', 'm', 'f')
           and obj_description(c.oid, 'pg_class') is null
        union all
        select p.oid::regprocedure::text from pg_proc p
          join pg_namespace n on n.oid = p.pronamespace
         where n.nspname in ('api', 'reporting') and obj_description(p.oid, 'pg_proc') is null
        """).fetchall()
    assert rows == []


def test_openapi_describes_the_endpoints_each_role_may_use(
        api: Callable[..., httpx.Client], jwt_for: Callable[..., str],
        su_conn: psycopg.Connection) -> None:
    admin = api(jwt_for("admin")).get("/")
    assert admin.status_code == 200
    paths = admin.json()["paths"]
    # RPC endpoints: api functions, except computed relationships (one argument, a row of api)
    functions = [name for (name,) in su_conn.execute(
        """
        select distinct p.proname from pg_proc p join pg_namespace n on n.oid = p.pronamespace
         where n.nspname = 'api' and has_function_privilege('admin', p.oid, 'execute')
           and not (p.pronargs = 1 and p.proargtypes[0] in
                    (select c.reltype from pg_class c where c.relnamespace = n.oid))
        """).fetchall()]
    assert {"login", "create_api_token", "revoke_api_token", "ingest"} <= set(functions)
    for name in functions:
        post = paths[f"/rpc/{name}"]["post"]
        assert post.get("summary") or post.get("description"), name
    assert paths["/api_tokens"]["get"].get("summary")
    # anon sees only what it may use: logging in
    anon = api().get("/").json()["paths"]
    assert "/rpc/login" in anon
    assert not any(p in anon for p in ("/jobs", "/step_runs", "/api_tokens", "/rpc/ingest",
                                       "/rpc/create_api_token"))


@pytest.mark.parametrize("role", ["anon", "client", "ingest", "bi_reader", "authenticator"])
def test_no_tenant_role_can_read_the_secret_or_the_users(su_conn: psycopg.Connection,
                                                         role: str) -> None:
    for table in ("auth.secrets", "auth.users", "auth.sessions", "auth.login_failures",
                  "auth.bi_logins"):
        row = su_conn.execute("select has_any_column_privilege(%s, %s::regclass, 'select')",
                              [role, table]).fetchone()
        assert row == (False,), (role, table)
    hashes = su_conn.execute("select has_column_privilege(%s, 'auth.api_tokens', 'token_hash', "
                             "'select')", [role]).fetchone()
    assert hashes == (False,)
    admin_hash = su_conn.execute("select has_column_privilege('admin', 'auth.api_tokens', "
                                 "'token_hash', 'select'), has_column_privilege('admin', "
                                 "'auth.api_tokens', 'token_id', 'select')").fetchone()
    assert admin_hash == (False, True)
