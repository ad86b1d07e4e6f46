"""Limits of BI logins that the login cannot loosen (docs/bi.md "Limits").

Real PostgreSQL sessions of real BI logins made by `stepledger bi-user`, and the stack's real
scheduler, whose watchdog task ends BI statements and idle BI transactions past their limits.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Iterator

import psycopg
import pytest
from psycopg import errors

from auth_support import unique, wait_until
from stacks import one_line_error, run_cli_process
from stepledger.settings import Settings

PASSWORD = "bi-limits-password"
# A limit is enforced within the watchdog's interval after it is passed; the rest is slack for a
# loaded machine.
def _watchdog_slack_s(su_conn: psycopg.Connection) -> float:
    row = su_conn.execute("select extract(epoch from every)::float8 from ledger.scheduled_tasks() "
                          "where task = 'bi_watchdog'").fetchone()
    assert row, "the BI watchdog is not among the scheduled tasks"
    return row[0] + 15.0


def _cli(settings: Settings, *args: str, stdin: str | None = None,
         timeout: float = 60) -> subprocess.CompletedProcess:
    return run_cli_process(settings, *args, input=stdin, timeout=timeout)


@pytest.fixture
def bi_login(settings: Settings) -> Iterator[Callable[..., str]]:
    """Makes BI logins with `stepledger bi-user add NAME [limit options]`; drops them after."""
    made: list[str] = []

    def make(*limit_args: str) -> str:
        name = unique("bi_lim").replace("-", "_")
        done = _cli(settings, "bi-user", "add", name, "--password", "-", *limit_args,
                    stdin=PASSWORD + "\n")
        assert done.returncode == 0, done.stderr
        made.append(name)
        return name

    yield make
    with psycopg.connect(settings.dsn("postgres"), autocommit=True) as su:
        for name in made:
            # End what the test left open, so that the role can be dropped.
            su.execute("select pg_terminate_backend(pid, 5000) from pg_stat_activity "
                       "where usename = %s", [name])
            su.execute("select auth.drop_bi_login(%s)", [name])


def _connect(settings: Settings, name: str, autocommit: bool = True) -> psycopg.Connection:
    return psycopg.connect(host=settings.pg_host, port=settings.pg_port, dbname=settings.dbname,
                           user=name, password=PASSWORD, connect_timeout=10,
                           autocommit=autocommit)


def _ends(su_conn: psycopg.Connection, pid: int) -> list[tuple[str, str]]:
    return [(str(a), str(r)) for a, r in su_conn.execute(
        "select action, reason from auth.bi_session_ends where pid = %s order by end_id",
        [pid]).fetchall()]


def test_the_watchdog_cancels_a_statement_past_the_limit_whatever_the_session_set(
        settings: Settings, bi_login: Callable[..., str], su_conn: psycopg.Connection) -> None:
    name = bi_login("--statement-timeout", "2s")
    with _connect(settings, name) as conn:
        pid = conn.info.backend_pid
        conn.execute("set statement_timeout = 0")  # any session may: the role's is a default
        started = time.monotonic()
        with pytest.raises(errors.QueryCanceled):
            conn.execute("select pg_sleep(60)")
        elapsed = time.monotonic() - started
        assert 2.0 <= elapsed < 2.0 + _watchdog_slack_s(su_conn)
        # Cancelled, not terminated: the session goes on.
        assert conn.execute("select 1").fetchone() == (1,)
    # Recorded when the watchdog's statement commits, a moment after the cancel.
    assert wait_until(lambda: _ends(su_conn, pid) == [("cancel", "statement_timeout")])
    row = su_conn.execute("select rolname, query, time_limit from auth.bi_session_ends "
                          "where pid = %s", [pid]).fetchone()
    assert row is not None and row[0] == name and "pg_sleep(60)" in row[1]
    assert row[2].total_seconds() == 2
    # Operators see it with `stepledger bi-user ended`.
    shown = _cli(settings, "bi-user", "ended", "--last", "50")
    assert shown.returncode == 0, shown.stderr
    assert any(name in line and f"pid {pid}" in line and "cancel" in line
               for line in shown.stdout.splitlines()), shown.stdout


def test_a_statement_that_ignores_the_cancel_has_its_session_terminated(
        settings: Settings, bi_login: Callable[..., str], su_conn: psycopg.Connection) -> None:
    name = bi_login("--statement-timeout", "2s")
    conn = _connect(settings, name)
    try:
        pid = conn.info.backend_pid
        conn.execute("set statement_timeout = 0")
        # A tool that stops reading: the backend blocks sending rows and ignores a cancel.
        conn.pgconn.send_query(b"select generate_series(1, 10000000), repeat('x', 10000)")
        while conn.pgconn.flush() != 0:
            pass
        assert wait_until(lambda: su_conn.execute(
            "select wait_event from pg_stat_activity where pid = %s", [pid]).fetchone()
            == ("ClientWrite",))
        # Cancelled past the limit; the cancel does nothing, so terminated 10 s later.
        assert wait_until(lambda: _ends(su_conn, pid) == [("cancel", "statement_timeout"),
                                                           ("terminate", "statement_timeout")],
                          timeout=2.0 + 10.0 + _watchdog_slack_s(su_conn))
        assert wait_until(lambda: su_conn.execute(
            "select count(*) from pg_stat_activity where pid = %s", [pid]).fetchone() == (0,))
    finally:
        conn.close()


def test_an_idle_transaction_past_the_limit_is_ended_and_migrate_is_not_held(
        settings: Settings, bi_login: Callable[..., str], su_conn: psycopg.Connection) -> None:
    name = bi_login("--idle-timeout", "2s")
    conn = _connect(settings, name, autocommit=False)
    try:
        pid = conn.info.backend_pid
        conn.execute("set idle_in_transaction_session_timeout = 0")  # undo the role's default
        # Reading reporting.jobs holds locks on the view and the tables behind it until the
        # transaction ends; a migrate that re-applies re-creates that view and its tables'
        # policies.
        conn.execute("select count(*) from reporting.jobs").fetchone()
        started = time.monotonic()
        done = _cli(settings, "migrate", "--reapply", timeout=180)
        elapsed = time.monotonic() - started
        assert done.returncode == 0, done.stderr
        held_at_most = 2.0 + _watchdog_slack_s(su_conn) + 15.0
        assert elapsed < held_at_most, f"migrate was held for {elapsed:.1f} s"
        with pytest.raises(psycopg.OperationalError):
            conn.execute("select 1")
    finally:
        conn.close()
    assert wait_until(lambda: _ends(su_conn, pid) == [("terminate", "idle_in_transaction_timeout")])


def test_temp_file_limit_cannot_be_raised_and_a_spilling_sort_is_refused(
        settings: Settings, bi_login: Callable[..., str], su_conn: psycopg.Connection) -> None:
    name = bi_login("--temp-file-limit", "1MB")
    spill = ("select count(*) from (select g from generate_series(1, 300000) g "
             "order by g desc) s")
    with _connect(settings, name) as conn:
        assert conn.execute("show temp_file_limit").fetchone() == ("1MB",)
        conn.execute("set default_transaction_read_only = off")  # so that only rights refuse
        for attempt in ("set temp_file_limit = -1",
                        "alter role current_user set temp_file_limit = -1",
                        "alter role current_user reset temp_file_limit"):
            with pytest.raises(errors.InsufficientPrivilege):
                conn.execute(attempt)
        conn.execute("alter role current_user reset all")  # allowed, but keeps temp_file_limit
        conn.execute("set work_mem = '64kB'")
        with pytest.raises(errors.ConfigurationLimitExceeded, match="temp_file_limit"):
            conn.execute(spill)
    with _connect(settings, name) as again:
        assert again.execute("show temp_file_limit").fetchone() == ("1MB",)
    # The same sort, by a session without the limit, spills and succeeds.
    with psycopg.connect(settings.dsn("stepledger_owner")) as owner:
        owner.execute("set local work_mem = '64kB'")
        assert owner.execute(spill).fetchone() == (300000,)
        owner.rollback()


def test_bi_logins_cannot_create_temporary_tables(
        settings: Settings, bi_login: Callable[..., str]) -> None:
    name = bi_login()
    with _connect(settings, name) as conn:
        conn.execute("set default_transaction_read_only = off")
        with pytest.raises(errors.InsufficientPrivilege, match="temporary tables"):
            conn.execute("create temporary table scratch (x int)")
    with psycopg.connect(settings.dsn("stepledger_owner")) as owner:
        owner.execute("create temporary table scratch (x int) on commit drop")
        owner.rollback()
    with psycopg.connect(settings.dsn("postgres"), autocommit=True) as su:
        holders = {r for (r,) in su.execute(
            "select rolname from pg_roles where rolname = any(%s) "
            "and has_database_privilege(rolname, current_database(), 'temporary')",
            [["anon", "client", "admin", "ingest", "bi_reader", "bi_all_clients",
              "authenticator", "stepledger_owner", name]]).fetchall()}
    assert holders == {"stepledger_owner"}


def test_the_connection_limit_refuses_connection_n_plus_1(
        settings: Settings, bi_login: Callable[..., str]) -> None:
    name = bi_login("--connection-limit", "2")
    first, second = _connect(settings, name), _connect(settings, name)
    try:
        with pytest.raises(psycopg.OperationalError, match="too many connections for role"):
            _connect(settings, name)
        first.execute("set default_transaction_read_only = off")
        with pytest.raises(errors.InsufficientPrivilege):
            first.execute("alter role current_user connection limit -1")
        second.close()
        # A connection slot frees when the backend has exited, a moment after close.
        def third_connects() -> bool:
            try:
                _connect(settings, name).close()
            except psycopg.OperationalError:
                return False
            return True
        assert wait_until(third_connects, timeout=10)
    finally:
        first.close()
        second.close()


def test_the_watchdog_never_touches_other_sessions(
        settings: Settings, bi_login: Callable[..., str], su_conn: psycopg.Connection) -> None:
    canary_name = bi_login("--idle-timeout", "1s", "--statement-timeout", "1s")
    owner = psycopg.connect(settings.dsn("stepledger_owner"), application_name="bi-limits-owner")
    superuser = psycopg.connect(settings.dsn("postgres"), application_name="bi-limits-su")
    authenticator = psycopg.connect(settings.dsn("authenticator"), autocommit=True,
                                    application_name="bi-limits-authenticator")
    sleeping: dict[str, BaseException] = {}

    def sleep_as_authenticator() -> None:
        try:
            authenticator.execute("set statement_timeout = 0")
            authenticator.execute("select pg_sleep(120)")
        except psycopg.Error as exc:
            sleeping["error"] = exc

    sleeper = threading.Thread(target=sleep_as_authenticator)
    canary = _connect(settings, canary_name, autocommit=False)
    try:
        for conn in (owner, superuser):  # idle in a transaction, holding a lock
            conn.execute("select count(*) from ledger.jobs").fetchone()
        sleeper.start()
        others = [owner.info.backend_pid, superuser.info.backend_pid,
                  authenticator.info.backend_pid]
        assert wait_until(lambda: su_conn.execute(
            "select count(*) from pg_stat_activity where pid = any(%s) and "
            "state in ('idle in transaction', 'active')", [others]).fetchone() == (3,))
        canary_pid = canary.info.backend_pid
        canary.execute("set idle_in_transaction_session_timeout = 0")
        canary.execute("select 1").fetchone()
        # The scheduler's watchdog runs, and ends the BI canary...
        assert wait_until(lambda: bool(_ends(su_conn, canary_pid)),
                          timeout=_watchdog_slack_s(su_conn))
        # ... and so does the same function once more, now that every other session has been
        # idle or running longer than any limit of the canary.
        assert wait_until(lambda: su_conn.execute(
            "select count(*) from pg_stat_activity where pid = any(%s) "
            "and state_change < now() - interval '1.1 seconds'", [others]).fetchone() == (3,))
        with psycopg.connect(settings.dsn("stepledger_owner"), autocommit=True) as runner:
            runner.execute("select watchdog.end_bi_sessions_past_limits()")
        still = su_conn.execute(
            "select count(*) from pg_stat_activity where pid = any(%s) and "
            "((state = 'idle in transaction' and application_name in "
            "  ('bi-limits-owner', 'bi-limits-su')) "
            " or (state = 'active' and query like 'select pg_sleep(120)%%'))",
            [others]).fetchone()
        assert still == (3,)
        assert owner.execute("select 1").fetchone() == (1,)
        assert superuser.execute("select 1").fetchone() == (1,)
        assert sleeper.is_alive() and not sleeping
        assert su_conn.execute("select count(*) from auth.bi_session_ends where pid = any(%s)",
                               [others]).fetchone() == (0,)
    finally:
        su_conn.execute("select pg_cancel_backend(%s)", [authenticator.info.backend_pid])
        sleeper.join(timeout=30)
        for conn in (canary, owner, superuser, authenticator):
            conn.close()


def test_limits_reach_logins_made_before_them_and_come_back_after_a_reset(
        settings: Settings, bi_login: Callable[..., str], su_conn: psycopg.Connection) -> None:
    name = bi_login()
    # A login as the old `bi-user add` left it: statement_timeout and 10 connections only.
    su_conn.execute(f"alter role {name} reset idle_in_transaction_session_timeout")
    su_conn.execute(f"alter role {name} reset temp_file_limit")
    with _connect(settings, name) as conn:  # and one that reset its own defaults
        conn.execute("set default_transaction_read_only = off")
        conn.execute("alter role current_user reset statement_timeout")
    done = _cli(settings, "migrate", timeout=180)
    assert done.returncode == 0, done.stderr
    with _connect(settings, name) as conn:
        shown = [conn.execute(f"show {s}").fetchone()[0] for s in (
            "statement_timeout", "idle_in_transaction_session_timeout", "temp_file_limit")]
    assert shown == ["5min", "30s", "1GB"]


def test_limits_are_shown_and_changed_by_the_cli(settings: Settings,
                                                  bi_login: Callable[..., str]) -> None:
    name = bi_login("--statement-timeout", "90s", "--connection-limit", "3")
    shown = _cli(settings, "bi-user", "limits", name)
    assert shown.returncode == 0, shown.stderr
    assert "00:01:30" in shown.stdout and "connection limit    3" in shown.stdout
    changed = _cli(settings, "bi-user", "limits", name, "--idle-timeout", "2min",
                   "--temp-file-limit", "256MB")
    assert changed.returncode == 0, changed.stderr
    with _connect(settings, name) as conn:
        assert conn.execute("show idle_in_transaction_session_timeout").fetchone() == ("2min",)
        assert conn.execute("show temp_file_limit").fetchone() == ("256MB",)
        assert conn.execute("show statement_timeout").fetchone() == ("90s",)
        row = conn.execute("select rolconnlimit from pg_roles where rolname = current_user")
        assert row.fetchone() == (3,)
    listed = _cli(settings, "bi-user", "list")
    assert any(line.startswith(name) and "256 MB" in line for line in listed.stdout.splitlines())
    # `bi-user add` again (a new password) keeps the limits.
    again = _cli(settings, "bi-user", "add", name, "--password", "-", stdin=PASSWORD + "x\n")
    assert again.returncode == 0, again.stderr
    assert "00:01:30" in again.stdout and "256 MB" in again.stdout


@pytest.mark.parametrize(("args", "reason"), [
    (["--statement-timeout", "0s"], "the statement timeout must be between 1 second and 1 day"),
    (["--statement-timeout", "soon"], 'invalid statement timeout "soon"'),
    (["--idle-timeout", "2 days"], "the idle-in-transaction timeout must be between 1 second"),
    (["--temp-file-limit", "-1"], "the temporary file limit must be between 0"),
    (["--temp-file-limit", "lots"], 'invalid temporary file limit "lots"'),
    (["--connection-limit", "0"], "the connection limit must be between 1 and 100"),
])
def test_bad_limits_fail_with_one_line_and_create_nothing(
        settings: Settings, su_conn: psycopg.Connection, args: list[str], reason: str) -> None:
    name = unique("bi_bad").replace("-", "_")
    done = _cli(settings, "bi-user", "add", name, "--password", "-", *args,
                stdin=PASSWORD + "\n")
    assert reason in one_line_error(done, status=1), done.stderr
    assert su_conn.execute("select count(*) from pg_roles where rolname = %s",
                           [name]).fetchone() == (0,)
    unknown = _cli(settings, "bi-user", "limits", name, *args)
    assert unknown.returncode == 1 and "is not a BI login" in unknown.stderr


def test_the_watchdog_runs_with_the_least_privilege(
        settings: Settings, bi_login: Callable[..., str], su_conn: psycopg.Connection) -> None:
    row = su_conn.execute(
        """
        select pg_get_userbyid(p.proowner), p.prosecdef, p.proconfig,
               array(select r.rolname from pg_roles r
                      where has_function_privilege(r.oid, p.oid, 'execute') and not r.rolsuper
                        and r.rolname not like 'pg\\_%%' order by 1)
          from pg_proc p where p.oid = 'watchdog.end_bi_sessions_past_limits()'::regprocedure
        """).fetchone()
    assert row == ("bi_watchdog", True, ["search_path=pg_catalog, pg_temp"],
                   ["bi_watchdog", "stepledger_owner"])
    role = su_conn.execute(
        """
        select r.rolcanlogin, r.rolsuper,
               array(select g.rolname from pg_auth_members m join pg_roles g on g.oid = m.roleid
                      where m.member = r.oid order by 1),
               array(select u.rolname from pg_auth_members m join pg_roles u on u.oid = m.member
                      where m.roleid = r.oid)
          from pg_roles r where r.rolname = 'bi_watchdog'
        """).fetchone()
    assert role == (False, False, ["pg_read_all_stats", "pg_signal_backend"], [])
    name = bi_login()
    with _connect(settings, name) as conn:
        for statement in ("select watchdog.end_bi_sessions_past_limits()",
                          "select * from auth.bi_session_ends",
                          f"select auth.set_bi_limits('{name}', '1 day')"):
            with pytest.raises(errors.InsufficientPrivilege):
                conn.execute(statement)
    with psycopg.connect(settings.dsn("authenticator"), autocommit=True) as conn, \
            pytest.raises(errors.InsufficientPrivilege):
        conn.execute("select watchdog.end_bi_sessions_past_limits()")
