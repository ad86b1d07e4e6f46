"""The Citus topology: a coordinator and two remote workers, started by the stack itself.

This stage needs Citus. When it is neither installed nor buildable from ../shared/citus/ (a user's
clone without ../shared), the whole module is skipped with one line saying why. With the source
beside the repository (CI), scripts/bootstrap.sh --test has built Citus, and any failure to start
the cluster fails these tests.

What it proves, on workers that are separate PostgreSQL clusters (not shards on the coordinator,
whose local execution would hide remote effects): the nodes, the distribution of the tenant
tables, routing of one client's queries to one worker, and the row-level-security behaviour that
docs/adr/0012-citus-distribution.md builds on.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import psycopg
import pytest
from bench.harness import revision_tree
from psycopg.conninfo import make_conninfo

import citus_contract
from auth_support import PASSWORD, add_user, ingest, login, unique
from notify_support import wait_for
from stacks import (
    BOTIMAGE_STEPS,
    cli_env,
    make_home,
    make_settings,
    register_catalog,
    throwaway_stack,
)
from stepledger import stack as stack_mod
from stepledger.settings import REPO_ROOT, Settings
from stepledger.stack import citus
from web_helpers import CHROMIUM, CHROMIUM_ARGS, DESKTOP

WORKERS = 2

if not citus.installed() and citus.source_dir(REPO_ROOT) is None:
    pytest.skip("Citus stage skipped: Citus is not installed and its source "
                f"(../shared/citus/{citus.CITUS_ARCHIVE}) is not beside the repository",
                allow_module_level=True)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Settings]:
    """A whole stack (coordinator, 2 workers, PostgREST, nginx, scheduler), migrated."""
    assert citus.installed(), (
        "Citus is not installed although its source is beside the repository: "
        "run scripts/build-citus.sh (make bootstrap-test does) and see its error")
    started = time.monotonic()
    with throwaway_stack("stepledger-citus-test-", pg_port=citus.free_port_block(WORKERS + 1),
                         citus_workers=WORKERS) as settings:
        print(f"citus stack with {WORKERS} workers up in {time.monotonic() - started:.1f}s")
        yield settings


@pytest.fixture(scope="module")
def coordinator(cluster: Settings) -> Iterator[psycopg.Connection]:
    with psycopg.connect(cluster.dsn("postgres"), autocommit=True) as conn:
        yield conn


def _worker(cluster: Settings, index: int) -> psycopg.Connection:
    """A superuser connection to a worker; as every psycopg connection, a context manager."""
    return psycopg.connect(cluster.worker(index).dsn("postgres"), autocommit=True)


def test_coordinator_and_workers_are_separate_clusters(cluster: Settings,
                                                       coordinator: psycopg.Connection) -> None:
    nodes = coordinator.execute(
        "select groupid, nodeport, noderole::text, isactive from pg_dist_node order by groupid"
    ).fetchall()
    assert nodes == [(0, cluster.pg_port, "primary", True),
                     (1, cluster.pg_port + 1, "primary", True),
                     (2, cluster.pg_port + 2, "primary", True)]
    health = coordinator.execute(
        "select bool_and(result) from citus_check_cluster_node_health()").fetchone()
    assert health == (True,)
    system_ids = {coordinator.execute(
        "select system_identifier from pg_control_system()").fetchone()}
    for index in (1, 2):
        with _worker(cluster, index) as conn:
            assert conn.execute("select extversion from pg_extension where extname = 'citus'"
                                ).fetchone() == ("13.2-1",)
            system_ids.add(conn.execute(
                "select system_identifier from pg_control_system()").fetchone())
            assert conn.execute("show port").fetchone() == (str(cluster.pg_port + index),)
    assert len(system_ids) == 3, "each node is its own PostgreSQL cluster"


def test_status_and_down_cover_the_workers(cluster: Settings) -> None:
    info = stack_mod.status(cluster)
    workers = info["postgres"]["citus_workers"]  # type: ignore[index]
    assert [(w["port"], w["up"]) for w in workers] == [(cluster.pg_port + 1, True),
                                                       (cluster.pg_port + 2, True)]


# -- row-level security on remote workers (docs/adr/0012-citus-distribution.md) -------------------
# A scratch tenant table, hash-distributed by client_id over both workers, with the policy shapes
# the ADR compares. Every query below runs as a non-superuser, so Citus opens its own connections
# to the workers as that role and the shards' policies are evaluated there.
CLIENTS = [f"tenant{i}" for i in range(1, 9)]


@pytest.fixture(scope="module")
def rls_table(coordinator: psycopg.Connection) -> Iterator[str]:
    coordinator.execute("drop schema if exists citus_rls cascade")
    coordinator.execute("create schema citus_rls")
    coordinator.execute("""
        create table citus_rls.facts (client_id text not null, n int not null,
                                      primary key (client_id, n))""")
    coordinator.execute("select create_distributed_table('citus_rls.facts', 'client_id', "
                        "shard_count => 4)")
    coordinator.execute("""insert into citus_rls.facts
                           select c, n from unnest(%s::text[]) c, generate_series(1, 10) n""",
                        [CLIENTS])
    coordinator.execute("alter table citus_rls.facts enable row level security")
    coordinator.execute("""
        create function citus_rls.guc_client_id() returns text language sql stable as
        $$ select nullif(current_setting('stepledger.client_id', true), '') $$""")
    coordinator.execute("""
        create function citus_rls.caller_client_id() returns text language sql stable as $$
          -- the GUC, unless the role carries a stored binding that the session no longer matches
          select case when b.bound is null
                        or b.bound = current_setting('stepledger.client_id', true)
                      then nullif(current_setting('stepledger.client_id', true), '') end
            from (select (select substr(c, length('stepledger.client_id=') + 1)
                            from pg_catalog.pg_db_role_setting s, unnest(s.setconfig) c
                           where s.setrole = (select oid from pg_catalog.pg_roles
                                               where rolname = current_user)
                             and s.setdatabase = 0
                             and c like 'stepledger.client\\_id=%') as bound) b
        $$""")
    for role, can_login in (("citus_rls_nologin", "nologin"), ("citus_rls_api", "login"),
                        ("citus_rls_bi", "login")):
        coordinator.execute(f"drop role if exists {role}")
        coordinator.execute(f"create role {role} {can_login}")
        coordinator.execute(f"grant usage on schema citus_rls to {role}")
        coordinator.execute(f"grant select on citus_rls.facts to {role}")
    coordinator.execute("alter role citus_rls_bi set stepledger.client_id = 'tenant2'")
    coordinator.execute("alter role citus_rls_bi password 'citus-rls-bi'")
    try:
        yield "citus_rls.facts"
    finally:
        coordinator.execute("drop schema citus_rls cascade")
        for role in ("citus_rls_nologin", "citus_rls_api", "citus_rls_bi"):
            coordinator.execute(f"drop role if exists {role}")


def _policy(conn: psycopg.Connection, using: str) -> None:
    conn.execute("drop policy if exists probe on citus_rls.facts")
    conn.execute(f"create policy probe on citus_rls.facts using ({using})")


def _as(conn: psycopg.Connection, role: str, *setup: str) -> list[tuple[object, ...]]:
    """Counts per client that `role` sees, in a transaction that runs `setup` first."""
    with conn.transaction(force_rollback=True):
        conn.execute(f"set local role {role}")
        for statement in setup:
            conn.execute(statement)
        return conn.execute("select client_id, count(*) from citus_rls.facts "
                            "group by 1 order by 1").fetchall()


def test_shards_of_the_scratch_table_are_on_both_workers(
        cluster: Settings, coordinator: psycopg.Connection, rls_table: str) -> None:
    ports = {r[0] for r in coordinator.execute(
        "select n.nodeport from pg_dist_shard s join pg_dist_placement p using (shardid) "
        "join pg_dist_node n using (groupid) where s.logicalrelid = %s::regclass",
        [rls_table]).fetchall()}
    assert ports == {cluster.pg_port + 1, cluster.pg_port + 2}


def test_a_nologin_role_cannot_reach_the_workers(coordinator: psycopg.Connection,
                                                 rls_table: str) -> None:
    _policy(coordinator, "true")
    with pytest.raises(psycopg.Error, match="not permitted to log in"):
        _as(coordinator, "citus_rls_nologin")
    assert len(_as(coordinator, "citus_rls_api")) == len(CLIENTS)


def test_set_config_is_not_seen_on_workers(coordinator: psycopg.Connection,
                                           rls_table: str) -> None:
    """What PostgREST does with the claims (set_config(..., true)) stays on the coordinator."""
    _policy(coordinator, "client_id = citus_rls.guc_client_id()")
    assert _as(coordinator, "citus_rls_api",
               "select set_config('stepledger.client_id', 'tenant1', true)") == []


def test_a_propagated_set_local_reaches_the_workers(coordinator: psycopg.Connection,
                                                   rls_table: str) -> None:
    _policy(coordinator, "client_id = citus_rls.guc_client_id()")
    propagate = "set local citus.propagate_set_commands = 'local'"
    assert _as(coordinator, "citus_rls_api", propagate,
               "set local stepledger.client_id = 'tenant1'") == [("tenant1", 10)]
    # issued by a function through EXECUTE, as a PostgREST pre-request function does
    assert _as(coordinator, "citus_rls_api", propagate,
               "do $$ begin execute 'set local stepledger.client_id = ''tenant3'''; end $$"
               ) == [("tenant3", 10)]


def test_subqueries_and_distributed_reads_in_policies_are_refused(
        coordinator: psycopg.Connection, rls_table: str) -> None:
    with pytest.raises(psycopg.Error):
        _policy(coordinator, "client_id = (select citus_rls.guc_client_id())")
    coordinator.execute("create table if not exists citus_rls.bindings "
                        "(rolname text primary key, client_id text not null)")
    if not coordinator.execute("select 1 from pg_dist_partition "
                               "where logicalrelid = 'citus_rls.bindings'::regclass").fetchone():
        coordinator.execute("select create_reference_table('citus_rls.bindings')")
    coordinator.execute("grant select on citus_rls.bindings to citus_rls_api")
    coordinator.execute("""
        create or replace function citus_rls.bound() returns text language sql stable as
        $$ select client_id from citus_rls.bindings where rolname = current_user $$""")
    _policy(coordinator, "client_id = citus_rls.bound()")
    with pytest.raises(psycopg.Error, match="distributed query from a query on a shard"):
        _as(coordinator, "citus_rls_api")


def test_a_bound_login_cannot_rebind_itself(cluster: Settings, coordinator: psycopg.Connection,
                                            rls_table: str) -> None:
    """A login bound to a client by its role default (only a superuser may store a placeholder
    setting) sees that client on every worker; SET, a propagated SET LOCAL or ALTER ROLE by the
    login itself does not give it another client's rows."""
    _policy(coordinator, "client_id = citus_rls.caller_client_id()")
    dsn = make_conninfo(cluster.dsn("postgres"), user="citus_rls_bi", password="citus-rls-bi")
    query = "select client_id, count(*) from citus_rls.facts group by 1 order by 1"
    with psycopg.connect(dsn, autocommit=True) as bi:
        assert bi.execute(query).fetchall() == [("tenant2", 10)]
        bi.execute("set stepledger.client_id = 'tenant1'")
        assert bi.execute(query).fetchall() in ([("tenant2", 10)], [])
        bi.execute("reset stepledger.client_id")
        with bi.transaction(force_rollback=True):
            bi.execute("set local citus.propagate_set_commands = 'local'")
            bi.execute("set local stepledger.client_id = 'tenant1'")
            assert bi.execute(query).fetchall() == []
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            bi.execute("alter role current_user set stepledger.client_id = 'tenant1'")
        assert bi.execute(query).fetchall() == [("tenant2", 10)]


def test_a_single_client_query_is_routed_to_one_worker(cluster: Settings,
                                                      coordinator: psycopg.Connection,
                                                      rls_table: str) -> None:
    _policy(coordinator, "client_id = citus_rls.caller_client_id()")
    owner = coordinator.execute(
        "select n.nodeport from pg_dist_placement p join pg_dist_node n using (groupid) "
        "where p.shardid = get_shard_id_for_distribution_column(%s, 'tenant1')",
        [rls_table]).fetchone()
    with coordinator.transaction(force_rollback=True):
        coordinator.execute("set local citus.propagate_set_commands = 'local'")
        coordinator.execute("set local role citus_rls_api")
        coordinator.execute("set local stepledger.client_id = 'tenant1'")
        plan = "\n".join(r[0] for r in coordinator.execute(
            "explain (costs off) select * from citus_rls.facts where client_id = 'tenant1'"))
    assert "Task Count: 1" in plan, plan
    assert owner is not None and f"port={owner[0]}" in plan, plan


def test_api_requests_carry_the_client_to_the_workers(cluster: Settings,
                                                      coordinator: psycopg.Connection,
                                                      rls_table: str) -> None:
    """Through PostgREST: auth.start_request's SET LOCAL reaches the workers, where the policy
    (auth.caller_client_id(), the product's function) shows each client its own rows."""
    _policy(coordinator, "client_id = auth.caller_client_id()")
    coordinator.execute("create view api.citus_probe with (security_invoker = true) as "
                        "select client_id, n from citus_rls.facts")
    coordinator.execute("grant usage on schema citus_rls to client")
    coordinator.execute("grant select on citus_rls.facts, api.citus_probe to client")
    try:
        coordinator.execute("notify pgrst, 'reload schema'")

        def rows(client_id: str) -> list[dict[str, object]]:
            token = jwt.encode({"role": "client", "client_id": client_id,
                                "exp": int(time.time()) + 600}, cluster.jwt_secret,
                               algorithm="HS256")
            response = httpx.get(f"{cluster.api_url}/citus_probe?select=client_id,n",
                                 headers={"Authorization": f"Bearer {token}"}, timeout=10)
            if response.status_code == 404:  # the schema cache is not reloaded yet
                return []
            assert response.status_code == 200, response.text
            return response.json()

        deadline = time.monotonic() + 30
        while not (seen := rows("tenant1")) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert {r["client_id"] for r in seen} == {"tenant1"} and len(seen) == 10
        # a client whose shard is on the other worker
        other = next(c for c in CLIENTS if _worker_port(coordinator, rls_table, c)
                     != _worker_port(coordinator, rls_table, "tenant1"))
        assert {r["client_id"] for r in rows(other)} == {other}
    finally:
        coordinator.execute("drop view api.citus_probe")
        coordinator.execute("revoke all on citus_rls.facts from client")
        coordinator.execute("revoke usage on schema citus_rls from client")
        coordinator.execute("notify pgrst, 'reload schema'")


def _worker_port(conn: psycopg.Connection, table: str, client_id: str) -> int:
    row = conn.execute(
        "select n.nodeport from pg_dist_placement p join pg_dist_node n using (groupid) "
        "where p.shardid = get_shard_id_for_distribution_column(%s, %s::text)",
        [table, client_id]).fetchone()
    assert row is not None
    return int(row[0])


def test_the_demo_runs_on_the_cluster(cluster: Settings) -> None:
    """`stepledger demo` (CLI, SDK through PostgREST, nginx) against the coordinator; a client
    login then sees only its own jobs through the web server's /api/."""
    env = {**os.environ,
           "STEPLEDGER_HOME": str(cluster.home), "STEPLEDGER_PG_PORT": str(cluster.pg_port),
           "STEPLEDGER_API_PORT": str(cluster.api_port),
           "STEPLEDGER_API_ADMIN_PORT": str(cluster.api_admin_port),
           "STEPLEDGER_POSTGREST_PORT": str(cluster.postgrest_port),
           "STEPLEDGER_WEB_PORT": str(cluster.web_port),
           "STEPLEDGER_CITUS_WORKERS": str(WORKERS)}
    demo = subprocess.run([sys.executable, "-m", "stepledger", "demo", "--jobs", "4"], env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    assert demo.returncode == 0, demo.stderr
    logins = dict(re.findall(r"^\s+(\S+@\S+)\s+(\S+)\s+(?:admin|client)", demo.stdout, re.M))
    with httpx.Client(base_url=f"{cluster.web_url}/api", timeout=30) as web:
        def jobs_of(email: str) -> list[dict[str, object]]:
            login = web.post("/rpc/login", json={"email": email, "password": logins[email]})
            assert login.status_code == 200, login.text
            answer = web.get("/jobs?select=client_id,job_id,progress",
                             headers={"Authorization": f"Bearer {login.json()['token']}"})
            assert answer.status_code == 200, answer.text
            return answer.json()
        mine = jobs_of("staff@st-mary.example")
        everyone = jobs_of("admin@botimage.example")
    assert mine and {j["client_id"] for j in mine} == {"st-mary"}
    assert len({j["client_id"] for j in everyone}) > 1
    assert {j["job_id"] for j in mine} == {j["job_id"] for j in everyone
                                           if j["client_id"] == "st-mary"}


def test_the_web_app_shows_a_client_its_jobs_from_the_workers(
        cluster: Settings, coordinator: psycopg.Connection) -> None:
    """Web smoke on the cluster: a client user signs in with the form in Chromium and sees its
    own jobs, as many as GET /jobs answers it, and no other client's; the app's GET /jobs names
    the client, which routes it to one worker (test_a_clients_jobs_are_read_from_one_worker)."""
    from playwright.sync_api import expect, sync_playwright

    client = "st-mary"
    if not coordinator.execute("select exists (select 1 from ledger.jobs where client_id = %s)",
                               [client]).fetchone()[0]:
        test_the_demo_runs_on_the_cluster(cluster)
    email = f"{unique('web')}@{client}.example"
    add_user(coordinator, email, ["client"], client)
    with httpx.Client(base_url=f"{cluster.web_url}/api", timeout=30) as web:
        token = login(web, email).json()["token"]
        total = len(web.get("/jobs", params={"select": "job_id"},
                            headers={"Authorization": f"Bearer {token}"}).json())
    assert total > 0
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                     headless=True)
        try:
            page = browser.new_context(viewport=DESKTOP, locale="en-US").new_page()
            page.set_default_timeout(20000)
            refused: list[str] = []  # said in the failure, if any
            page.on("response", lambda r: refused.append(f"{r.status} {r.url}: {r.text()}")
                    if "/api/" in r.url and r.status >= 400 else None)
            jobs_requests: list[str] = []
            page.on("request", lambda r: jobs_requests.append(r.url)
                    if "/api/jobs?" in r.url else None)
            page.goto(f"{cluster.web_url}/")
            page.get_by_label("Email").fill(email)
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            expect(page.get_by_role("heading", name="Jobs", exact=True)).to_be_visible()
            try:
                expect(page.locator("tr.job-row").first).to_be_visible()
            except AssertionError as exc:
                raise AssertionError(f"{exc}\nrefused requests: {refused}") from None
            expect(page.locator('[data-state="total"]')).to_have_text(str(total))
            shown = page.locator("tr.job-row").evaluate_all(
                "rows => rows.map(r => r.dataset.client)")
        finally:
            browser.close()
    assert set(shown) == {client}
    # the app names the client too, so the cluster reads one worker, not every shard
    assert jobs_requests and all(f"client_id=eq.{client}" in url for url in jobs_requests), \
        jobs_requests


# -- the product's schema, distributed (ADR 0012, Decision 3) ------------------------------------
def test_tenant_tables_are_distributed_by_client_and_colocated(
        coordinator: psycopg.Connection) -> None:
    kinds = citus.distribution(coordinator)
    for table in citus.REFERENCE_TABLES:
        assert kinds.get(table) == "reference", (table, kinds.get(table))
    colocation = {r[0]: r[1] for r in coordinator.execute(
        "select logicalrelid::regclass::text, colocationid from pg_dist_partition "
        " where partmethod = 'h'").fetchall()}
    for table in citus.DISTRIBUTED_TABLES:
        assert kinds.get(table) == "distributed by client_id", (table, kinds.get(table))
    assert len({colocation[t] for t in citus.DISTRIBUTED_TABLES}) == 1, colocation
    # the price book is a copy on every node, the monthly minimums live with the client's jobs
    assert (kinds.get("ledger.prices"), kinds.get("ledger.client_minimums")) == \
        ("reference", "distributed by client_id")
    assert colocation["ledger.client_minimums"] == colocation["ledger.jobs"], colocation
    # every unique key of a distributed table includes client_id (Citus refuses any other)
    keys = coordinator.execute(
        "select conrelid::regclass::text, conname, pg_get_constraintdef(oid) from pg_constraint "
        " where contype in ('p', 'u') and conrelid = any(%s::regclass[])",
        [list(citus.DISTRIBUTED_TABLES)]).fetchall()
    assert keys and all("client_id" in definition for _, _, definition in keys), keys


def test_a_test_runs_shards_landed_on_both_workers(cluster: Settings,
                                                   coordinator: psycopg.Connection) -> None:
    """The demo's clients (test_the_demo_runs_on_the_cluster, or loaded here) have their jobs
    on both workers."""
    if not coordinator.execute("select exists (select 1 from ledger.jobs)").fetchone()[0]:
        test_the_demo_runs_on_the_cluster(cluster)
    ports = {r[0] for r in coordinator.execute(
        "select distinct n.nodeport from (select distinct client_id from ledger.jobs) c "
        "  join pg_dist_placement p "
        "    on p.shardid = get_shard_id_for_distribution_column('ledger.jobs', c.client_id) "
        "  join pg_dist_node n using (groupid)").fetchall()}
    assert ports == {w.pg_port for w in cluster.workers}, ports


@contextlib.contextmanager
def _as_client(conn: psycopg.Connection, client_id: str) -> Iterator[None]:
    """A transaction, rolled back, as the role client bound to one client, as an API request
    runs: the client carried to the workers by a propagated SET LOCAL."""
    with conn.transaction(force_rollback=True):
        conn.execute("set local citus.propagate_set_commands = 'local'")
        conn.execute("set local role client")
        conn.execute(f"set local stepledger.client_id = '{client_id}'")
        yield


@pytest.mark.parametrize("relation", ["ledger.jobs", "api.jobs"])
def test_a_clients_jobs_are_read_from_one_worker(cluster: Settings,
                                                 coordinator: psycopg.Connection,
                                                 relation: str) -> None:
    """A client's jobs, as GET /jobs?client_id=eq.C reads them: the policy's client and the
    filter prune every table to the client's shard, on one worker. For api.jobs that holds
    because the steps' figures are joined on the whole key, not read in correlated subqueries
    (which Citus cannot prune: one task per shard)."""
    client = "st-mary"
    if not coordinator.execute("select exists (select 1 from ledger.jobs where client_id = %s)",
                               [client]).fetchone()[0]:
        test_the_demo_runs_on_the_cluster(cluster)
    owner = _worker_port(coordinator, "ledger.jobs", client)
    with _as_client(coordinator, client):
        plan = "\n".join(r[0] for r in coordinator.execute(
            f"explain (costs off) select * from {relation} where client_id = %s "
            "order by updated_at desc limit 50", [client]))
        seen = coordinator.execute(f"select distinct client_id from {relation} "
                                   "where client_id = any(%s)", [[client, "riverside"]]).fetchall()
    assert "Task Count: 1" in plan, plan
    assert f"port={owner}" in plan, plan
    assert seen == [(client,)], "the client's policy still holds"


def test_a_clients_usage_is_read_from_its_worker(cluster: Settings,
                                                coordinator: psycopg.Connection) -> None:
    """The usage lines are distributed with the facts, and a client's GET /usage?client_id=eq.C
    reads its lines and their staleness on the worker that holds C: the last refresh is read
    apart on the coordinator (a plain local table), not by a function per line (which could not
    run on a shard)."""
    client = "st-mary"
    assert citus.distribution(coordinator).get("ledger.usage_lines_monthly") == \
        "distributed by client_id"
    if not coordinator.execute("select exists (select 1 from ledger.usage_lines_monthly "
                               "where client_id = %s)", [client]).fetchone()[0]:
        test_the_demo_runs_on_the_cluster(cluster)
    wait_for(lambda: coordinator.execute("select ledger._usage_changes_pending()").fetchone()
             == (0,), 20, "the usage refresh")
    owner = _worker_port(coordinator, "ledger.usage_lines_monthly", client)
    with _as_client(coordinator, client):
        plan = "\n".join(r[0] for r in coordinator.execute(
            "explain (costs off) select * from api.usage where client_id = %s", [client]))
        rows = coordinator.execute("select distinct client_id, stale from api.usage "
                                   "where client_id = any(%s)", [[client, "riverside"]]).fetchall()
    # the statement's own tasks (after the subplans: the refresh read on the coordinator, every
    # client's unseen months on the shard of '')
    lines = plan.splitlines()
    assert "  Task Count: 1" in lines, plan
    main_task = "\n".join(lines[lines.index("  Task Count: 1"):])
    assert f"port={owner}" in main_task and "usage_lines_monthly" in main_task, plan
    assert rows == [(client, False)], "the client's policy holds, and the lines are current"


def test_the_contract_answers_as_on_a_single_node(cluster: Settings,
                                                  coordinator: psycopg.Connection,
                                                  stack: Settings,
                                                  su_conn: psycopg.Connection,
                                                  tmp_path: Path) -> None:
    """Ingest (duplicates, rejections, a token writing for another client), progress, usage and
    invoices, isolation over HTTP, webhooks and e-mail, the vault's and invoices' guarantees: the
    same answers from the 2-worker cluster as from the single node."""
    single = citus_contract.run(stack, su_conn, unique("ct"), tmp_path / "single")
    clustered = citus_contract.run(cluster, coordinator, unique("ct"), tmp_path / "cluster")
    assert single.answers["jobs of A"] and single.answers["invoice of A"]["lines"]
    assert single.answers["A asks for B's jobs"] == []
    assert single.answers["vault update"][0] == "SL205"
    assert single.answers["invoice update"][0] == "SL409"
    assert len(single.answers["e-mails received"]) == 1, single.answers["e-mails received"]
    # while the mail relay was down the e-mail waited for a retry, then went out once
    assert single.answers["e-mail while the relay is down"] == [
        "pending", True, "ConnectionRefusedError", 0]
    assert single.answers["e-mail once the relay is back"] == ["sent", True, None, 1]
    # usage is stale exactly where a change is not absorbed yet (a change of A, then of all)
    stale = {name: {r["stale"] for r in single.answers[f"usage of {name}"]} for name in (
        "A while its month is unseen", "B while its month is unseen",
        "B while every month is unseen", "A once seen", "B once seen")}
    assert stale == {"A while its month is unseen": {True}, "B while its month is unseen": {False},
                     "B while every month is unseen": {True}, "A once seen": {False},
                     "B once seen": {False}}, stale
    assert single.answers["usage alert crossed"], "the refresh announced A's month"
    # an admin's price and minimum are checked, attributed and logged once (on a cluster by the
    # coordinator, with the caller's claims), and hostile input is refused as before
    assert single.answers["price book rows logged once"] == {
        "price": [["pricing@A.example", "admin", "scheduled"], 1],
        "minimum": [["pricing@A.example", 5], 1]}, single.answers["price book rows logged once"]
    posted = single.answers["POST a price"]
    assert posted[0] == 201 and [(r["recorded_by"], r["recorded_role"], r["currency"])
                                 for r in posted[1]] == [("admin@T.example", "admin", "EUR")]
    assert {name: single.answers[f"POST {name}"][1]["code"] for name in (
        "a price of another currency", "a price of no step", "a price of bad tiers",
        "a price of a bad slug", "a minimum mid-month", "a minimum of no client",
        "a minimum of a bad slug", "a minimum without amount")} == {
        "a price of another currency": "SL403", "a price of no step": "SL401",
        "a price of bad tiers": "SL402", "a price of a bad slug": "23514",
        "a minimum mid-month": "SL411", "a minimum of no client": "SL404",
        "a minimum of a bad slug": "23514", "a minimum without amount": "SL411"}
    differ = {name: {"single node": answer, "cluster": clustered.answers.get(name)}
              for name, answer in single.answers.items() if clustered.answers.get(name) != answer}
    assert not differ, json.dumps(differ, indent=1, default=str)
    assert citus_contract.as_json(clustered) == citus_contract.as_json(single)
    # the two clients of the cluster's run landed on different workers or not, either way the
    # answers above came from the workers: the tenant tables hold nothing on the coordinator
    assert coordinator.execute(
        "select count(*) from ledger.jobs where client_id = %s", [clustered.a]).fetchone()[0]


def test_a_bi_login_sees_its_client_on_the_workers_and_cannot_forge_another(
        cluster: Settings, coordinator: psycopg.Connection) -> None:
    """A BI login bound to a client (stepledger bi-user add) reads only that client's rows from
    the distributed tables, whichever worker holds them; SET, a propagated SET LOCAL of another
    client, or ALTER ROLE do not give it another client's rows. An unbound login sees all."""
    tag = unique("bi")
    a, b = citus_contract.prepare(coordinator, tag)
    token = coordinator.execute("select auth.create_api_token(%s, 'bi', 'ingest', 'tests')",
                                [b]).fetchone()[0]["token"]
    with httpx.Client(base_url=cluster.api_url, timeout=60,
                      headers={"Authorization": f"Bearer {token}"}) as api:
        assert ingest(api, citus_contract._events(b, "job-1", "completed", 7)).status_code == 200
    env = {**os.environ, "STEPLEDGER_HOME": str(cluster.home),
           "STEPLEDGER_PG_PORT": str(cluster.pg_port), "STEPLEDGER_CITUS_WORKERS": str(WORKERS)}
    logins = {}
    prefix = f"bi_{tag.replace('-', '_')}"
    for name, client in ((f"{prefix}_a", a), (f"{prefix}_all", None)):
        args = [sys.executable, "-m", "stepledger", "bi-user", "add", name, "--password", "-"]
        done = subprocess.run(args + (["--client", client] if client else []), env=env,
                              input="bi-password-of-the-test\n", capture_output=True,
                              text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        logins[client] = make_conninfo(cluster.dsn("postgres"), user=name,
                                       password="bi-password-of-the-test")
    query = "select client_id, count(*) from ledger.jobs where client_id in (%s, %s) group by 1"
    with psycopg.connect(logins[a], autocommit=True) as bi:
        assert bi.execute(query, [a, b]).fetchall() == []  # a has no jobs, b's are not visible
        bi.execute(f"set stepledger.client_id = '{b}'")
        assert bi.execute(query, [a, b]).fetchall() == []
        bi.execute("reset stepledger.client_id")
        with bi.transaction(force_rollback=True):
            bi.execute("set local citus.propagate_set_commands = 'local'")
            bi.execute(f"set local stepledger.client_id = '{b}'")
            assert bi.execute(query, [a, b]).fetchall() == []
        with pytest.raises(psycopg.errors.InsufficientPrivilege), bi.transaction():
            bi.execute("set transaction read write")  # BI logins default to read-only
            bi.execute(f"alter role current_user set stepledger.client_id = '{b}'")
        assert bi.execute(query, [a, b]).fetchall() == []
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            bi.execute("select * from ledger.vault limit 1")
    with psycopg.connect(logins[None], autocommit=True) as bi:
        assert dict(bi.execute(query, [a, b]).fetchall()) == {b: 1}


def test_migrate_runs_again_on_the_distributed_schema(cluster: Settings) -> None:
    """`stepledger up` migrates on every start: the second run on a distributed schema (whose
    Citus local tables were renamed to their shards) re-applies everything and distributes
    nothing more."""
    from stepledger.schema import migrate as migrate_mod
    result = migrate_mod.migrate(cluster)
    assert result["citus"]["reference"] == [] and result["citus"]["distributed"] == []


# The forms of ALTER TABLE a migration may use on a cluster, and the verdict of the rule the
# migration runner checks pending migrations with (citus.alter_table_refusals).
ALTER_TABLE_FORMS = [
    "alter table ledger.jobs add column probe_a integer",
    "alter table ledger.jobs add column probe_a integer, add column probe_b integer",
    "alter table ledger.jobs add column probe_a integer check (probe_a > 0)",
    "alter table ledger.jobs add column probe_a integer constraint probe_a_positive "
    "check (probe_a > 0)",
    'alter table ledger.jobs add column "unique" integer',
    "alter table ledger.jobs add column probe_a text default 'check (unique)'",
    "alter table ledger.jobs add column probe_a integer references ledger.pipelines (pipeline)",
    "alter table ledger.jobs add constraint probe_check check (steps_done >= 0)",
    "alter table ledger.jobs alter column events set default 0, "
    "add constraint probe_check check (events >= 0)",
]


@pytest.mark.parametrize("statement", ALTER_TABLE_FORMS)
def test_the_alter_table_rule_is_what_the_coordinator_refuses(cluster: Settings,
                                                               coordinator: psycopg.Connection,
                                                               statement: str) -> None:
    """The runner's rule says exactly which forms the coordinator refuses on a distributed table,
    through the extended protocol (the runner's driver) or the simple one (psql, by hand), so a
    migration is refused before anything is applied, never halfway (ADR 0012)."""
    try:
        with coordinator.transaction(force_rollback=True):
            coordinator.execute("set local role stepledger_owner")
            coordinator.execute(statement)
        refused = ""
    except psycopg.Error as exc:
        refused = str(exc.diag.message_primary)
    by_hand = subprocess.run(["psql", cluster.dsn("stepledger_owner"), "-X", "-q",
                              "-v", "ON_ERROR_STOP=1",
                              "-c", "begin", "-c", statement, "-c", "rollback"],
                             capture_output=True, text=True, timeout=60)
    refused += by_hand.stderr if by_hand.returncode else ""
    assert bool(citus.alter_table_refusals(statement)) == bool(refused), refused


def test_migrate_refuses_a_migration_the_cluster_would_refuse(cluster: Settings,
                                                              tmp_path: Path) -> None:
    from stepledger import StepledgerError
    from stepledger.schema import migrate as migrate_mod
    pending = tmp_path / "9999_probe.sql"
    pending.write_text("alter table ledger.jobs add column probe integer check (probe > 0);\n")
    with pytest.raises(StepledgerError) as refused:
        migrate_mod._check_for_citus(cluster, [pending])
    assert "9999_probe.sql: ALTER TABLE ledger.jobs add column probe" in str(refused.value)
    assert "ADD CONSTRAINT name" in str(refused.value)


# -- a cluster distributed before migration 0160 ---------------------------------------------------
MINIMUMS_REBUILT = "db/migrations/0160_client_minimums_distributable.sql"


def _commit_adding(path: str) -> str | None:
    """The commit that added `path`; None when the history is not in this clone (a shallow one)."""
    added = subprocess.run(["git", "-C", str(REPO_ROOT), "log", "--format=%H", "--diff-filter=A",
                            "-1", "--", path], capture_output=True, text=True, check=False)
    if added.returncode != 0 or not added.stdout.strip():
        return None
    return added.stdout.strip()


def test_a_cluster_distributed_before_0160_upgrades() -> None:
    """A coordinator migrated by the code before migration 0160 (its tenant tables distributed,
    the price book and the minimums Citus local tables with their check triggers) is upgraded by
    `stepledger migrate`: the minimums distributed by client_id next to the jobs, with their rows
    and ids and new ids after them; the price book a reference table; both written by the
    owner's functions."""
    added = _commit_adding(MINIMUMS_REBUILT)
    if added is None:
        pytest.skip("the history before migration 0160 is not in this clone")
    with revision_tree(f"{added}^") as old:
        _upgrade_from(old)


def _upgrade_from(old: Path) -> None:
    home = make_home("stepledger-citus-upgrade-")
    settings = make_settings(home, pg_port=citus.free_port_block(WORKERS + 1),
                             citus_workers=WORKERS)
    minimums = "select minimum_id, client_id, monthly_minimum, recorded_by " \
               "from ledger.client_minimums order by minimum_id"
    try:
        stack_mod.start_databases(settings)
        migrated = subprocess.run(
            [sys.executable, "-m", "stepledger", "migrate"], capture_output=True, text=True,
            timeout=600, check=False,
            env={**cli_env(settings), "PYTHONPATH": str(old / "loader"),
                 "STEPLEDGER_REPO_ROOT": str(old), "STEPLEDGER_CITUS_WORKERS": str(WORKERS)})
        assert migrated.returncode == 0, migrated.stderr
        with psycopg.connect(settings.dsn("postgres"), autocommit=True) as conn:
            kinds = citus.distribution(conn)
            assert (kinds["ledger.jobs"], kinds["ledger.client_minimums"],
                    kinds["ledger.prices"]) == ("distributed by client_id", "citus local",
                                                "citus local")
            register_catalog(conn, ["up-a"])
            conn.execute("insert into ledger.client_minimums (client_id, monthly_minimum, "
                         "effective_from) values ('up-a', 100, '2026-01-01'), "
                         "('up-a', 150, '2026-03-01')")
            conn.execute("insert into ledger.prices (pipeline, step, client_id, unit_price, "
                         "effective_from) values ('botimage', %s, 'up-a', 0.5, '2026-01-01')",
                         [BOTIMAGE_STEPS[0]])
            before = conn.execute(minimums).fetchall()

        stack_mod.run_migrations(settings)
        with psycopg.connect(settings.dsn("postgres"), autocommit=True) as conn:
            kinds = citus.distribution(conn)
            assert (kinds["ledger.client_minimums"], kinds["ledger.prices"]) == \
                ("distributed by client_id", "reference")
            colocation = dict(conn.execute(
                "select logicalrelid::regclass::text, colocationid from pg_dist_partition "
                " where logicalrelid in ('ledger.jobs'::regclass, "
                "                        'ledger.client_minimums'::regclass)").fetchall())
            assert colocation["ledger.client_minimums"] == colocation["ledger.jobs"]
            assert conn.execute(minimums).fetchall() == before
            (added,) = conn.execute(
                "select ledger.add_client_minimum('up-a', 200, '2026-05-01')").fetchone()
            assert added > max(row[0] for row in before)
            assert conn.execute("select ledger.add_price('botimage', %s, 0.6, 'up-a')",
                                [BOTIMAGE_STEPS[0]]).fetchone()[0] > 1
            triggers = conn.execute(
                "select distinct tgname from pg_trigger where not tgisinternal and tgrelid in "
                "('ledger.prices'::regclass, 'ledger.client_minimums'::regclass)").fetchall()
            assert sorted(t for (t,) in triggers) == ["immutable_rows", "immutable_table"]
            # POST reaches the owner's functions through the views' triggers
            assert conn.execute(
                "select array_agg(tgname::text order by tgname) from pg_trigger "
                " where tgrelid in ('api.prices'::regclass, 'api.client_minimums'::regclass)"
            ).fetchone()[0] == ["add_client_minimum", "add_price"]
    finally:
        try:
            stack_mod.down(settings)
        finally:
            shutil.rmtree(home, ignore_errors=True)
