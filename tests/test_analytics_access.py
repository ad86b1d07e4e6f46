"""The analytics objects grant exactly what tests/access/analytics.yaml says, to every API role."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
import yaml

MATRIX = yaml.safe_load((Path(__file__).parent / "access" / "analytics.yaml").read_text())
ROLES = ("anon", "client", "admin", "ingest", "bi_reader")
RELATION_PRIVILEGES = ("select", "insert", "update", "delete")


def granted(conn: psycopg.Connection, obj: str, role: str) -> set[str]:
    if "(" in obj:
        ok = conn.execute("select has_function_privilege(%s, %s::regprocedure, 'execute')",
                          (role, obj)).fetchone()[0]
        return {"execute"} if ok else set()
    return {p for p in RELATION_PRIVILEGES
            if conn.execute("select has_table_privilege(%s, %s::regclass, %s)",
                            (role, obj, p)).fetchone()[0]}


@pytest.mark.parametrize("obj", sorted(MATRIX))
def test_privileges_match_the_matrix(su_conn: psycopg.Connection, obj: str) -> None:
    wanted = MATRIX[obj] or {}
    assert set(wanted) <= set(ROLES), f"unknown role in {obj}"
    for role in ROLES:
        assert granted(su_conn, obj, role) == set(wanted.get(role, [])), (obj, role)


def test_every_analytics_function_is_in_the_matrix(su_conn: psycopg.Connection) -> None:
    """A new api function of this area cannot slip in without a line in the matrix."""
    rows = su_conn.execute(
        "select p.oid::regprocedure::text from pg_proc p "
        "where p.pronamespace = 'api'::regnamespace and p.proname = any(%s)",
        (["job_counts", "job_changes", "job_timeline", "step_durations", "error_stats_window",
          "error_stats_by_day", "error_stats_by_source", "error_codes", "refresh_analytics"],),
    ).fetchall()
    listed = {k.replace(" ", "") for k in MATRIX}
    names = {r[0].replace("timestamp with time zone", "timestamptz").replace(" ", "")
             for r in rows}
    assert names and names <= listed, names - listed
