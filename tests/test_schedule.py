"""Periodic work is written once, in the database (ledger.scheduled_tasks(),
db/functions/95_schedule/): the stack's scheduler runs that list, and pg_cron is given the same."""

from __future__ import annotations

import psycopg
import pytest

from stepledger.settings import Settings
from stepledger.stack import scheduler


def _listed(su_conn: psycopg.Connection) -> dict[str, float]:
    rows = su_conn.execute("select task, extract(epoch from every)::float8 "
                           "from ledger.scheduled_tasks()").fetchall()
    return dict(rows)


def test_the_scheduler_runs_the_databases_list_and_renders_pdfs(
        stack: Settings, su_conn: psycopg.Connection) -> None:
    listed = _listed(su_conn)
    assert {"refresh_usage", "refresh_analytics", "ensure_partitions", "bi_watchdog",
            "scan_stalled_jobs"} <= set(listed)
    with psycopg.connect(stack.dsn("stepledger_owner")) as conn:
        tasks = {t.name: t for t in scheduler.database_tasks(conn)}
        faster = {t.name: t for t in scheduler.database_tasks(conn, refresh_every_s=2.0)}
    assert set(tasks) == set(listed) | {"render_invoices"}
    assert {name: t.every_s for name, t in tasks.items() if name != "render_invoices"} == listed
    assert tasks["render_invoices"].every_s == 30.0
    # --refresh-every changes the refreshes only.
    assert faster["refresh_usage"].every_s == faster["refresh_analytics"].every_s == 2.0
    assert faster["bi_watchdog"].every_s == listed["bi_watchdog"]
    assert faster["render_invoices"].every_s == 2.0


def test_every_listed_command_runs(su_conn: psycopg.Connection) -> None:
    owner_only = su_conn.execute("select task, command from ledger.scheduled_tasks()").fetchall()
    for task, command in owner_only:
        with su_conn.transaction():
            su_conn.execute("set local role stepledger_owner")
            su_conn.execute(command)  # raises on a command that names nothing real
        assert task


@pytest.mark.parametrize(("every", "seconds_supported", "schedule"), [
    ("5 minutes", True, "*/5 * * * *"),
    ("1 minute", False, "*/1 * * * *"),
    ("1 hour", True, "0 */1 * * *"),
    ("5 seconds", True, "5 seconds"),
    ("15 seconds", False, "* * * * *"),
])
def test_pg_cron_gets_the_same_intervals(su_conn: psycopg.Connection, every: str,
                                         seconds_supported: bool, schedule: str) -> None:
    row = su_conn.execute("select ledger._cron_schedule(%s::interval, %s)",
                          [every, seconds_supported]).fetchone()
    assert row == (schedule,)


def test_only_the_owner_reads_the_list(stack: Settings) -> None:
    with psycopg.connect(stack.dsn("postgres"), autocommit=True) as conn:
        for role in ("client", "admin", "ingest", "anon", "bi_reader"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
                conn.execute(f"set local role {role}")
                conn.execute("select * from ledger.scheduled_tasks()")
