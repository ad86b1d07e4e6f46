"""The billing objects grant exactly what tests/access/billing.yaml says, no more, no less."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

MATRIX = Path(__file__).with_name("access") / "billing.yaml"
ROLES = ("anon", "client", "admin", "ingest", "bi_reader")
RELATION_PRIVILEGES = ("select", "insert", "update", "delete", "truncate")


def _matrix() -> dict[str, dict[str, list[str]]]:
    data: Any = yaml.safe_load(MATRIX.read_text())
    assert isinstance(data, dict)
    return data


def _granted(conn: psycopg.Connection, obj: str, role: str, privilege: str) -> bool:
    if "(" in obj:
        query = "select has_function_privilege(%s, %s, %s)"
    elif privilege in ("select", "insert", "update"):
        query = "select has_any_column_privilege(%s, %s, %s)"
    else:
        query = "select has_table_privilege(%s, %s, %s)"
    row = conn.execute(query, [role, obj, privilege]).fetchone()
    assert row is not None
    return bool(row[0])


@pytest.mark.parametrize("obj", sorted(_matrix()))
def test_privileges_match_the_matrix(su_conn: psycopg.Connection, obj: str) -> None:
    allowed = _matrix()[obj]
    assert set(allowed) <= set(ROLES), f"{obj}: unknown roles {set(allowed) - set(ROLES)}"
    privileges = ("execute",) if "(" in obj else RELATION_PRIVILEGES
    actual = {role: [p for p in privileges if _granted(su_conn, obj, role, p)] for role in ROLES}
    expected = {role: [p for p in privileges if p in allowed.get(role, [])] for role in ROLES}
    assert actual == expected


BILLING_RELATIONS = ["ledger.prices", "ledger.client_minimums", "ledger.invoices",
                     "ledger.invoice_lines", "ledger.billing_changes", "ledger.billing_refreshes",
                     "ledger.usage_lines_monthly"]


def test_every_billing_object_is_in_the_matrix(su_conn: psycopg.Connection) -> None:
    """Every billing table, and every view built on one (directly or not), must be listed."""
    rows = su_conn.execute("""
        with recursive built_on(oid) as (
          select unnest(%s::regclass[])::oid
          union
          select r.ev_class
            from built_on b
            join pg_depend d on d.refobjid = b.oid and d.classid = 'pg_rewrite'::regclass
            join pg_rewrite r on r.oid = d.objid
           where r.ev_class <> b.oid
        )
        select n.nspname || '.' || c.relname
          from built_on b join pg_class c on c.oid = b.oid
          join pg_namespace n on n.oid = c.relnamespace
    """, [BILLING_RELATIONS]).fetchall()
    found = {r[0] for r in rows}
    assert {"api.usage", "reporting.minimum_commitments"} <= found  # the walk works
    missing = found - set(_matrix())
    assert not missing, f"not in tests/access/billing.yaml: {sorted(missing)}"
