"""The migration runner: a second run on an up-to-date database changes nothing."""

from __future__ import annotations

import json

import psycopg

from stepledger.config import Settings
from stepledger.migrate import migrate
from stepledger.snapshot import schema_dump


def test_second_migrate_changes_nothing(settings: Settings, su_conn: psycopg.Connection) -> None:
    before = schema_dump(settings)
    versions = su_conn.execute("select count(*) from ledger.code_versions").fetchone()
    result = migrate(settings)
    assert result["applied"] == []
    assert schema_dump(settings) == before
    assert su_conn.execute("select count(*) from ledger.code_versions").fetchone() == versions


def test_envelope_constraint_is_generated_from_the_schema_file(
    su_conn: psycopg.Connection, settings: Settings
) -> None:
    on_disk = json.loads((settings.repo_root / "schemas" / "step_event.v1.json").read_text())
    in_db = su_conn.execute("select ledger.step_event_v1_schema()::jsonb").fetchone()[0]
    assert in_db == on_disk
    predicate = su_conn.execute(
        "select ledger.step_event_v1_valid(%s::jsonb)", [json.dumps({"event_id": "x"})]).fetchone()
    assert predicate == (False,)


def test_monthly_partitions_exist_ahead(su_conn: psycopg.Connection) -> None:
    rows = su_conn.execute(
        """select parent.relname, count(*)
             from pg_inherits i
             join pg_class parent on parent.oid = i.inhparent
             join pg_namespace n on n.oid = parent.relnamespace and n.nspname = 'ledger'
            where parent.relname in ('vault', 'events')
            group by parent.relname"""
    ).fetchall()
    # last month, this month and three ahead, plus the default partition
    assert dict(rows) == {"vault": 6, "events": 6}
    assert su_conn.execute("select ledger.ensure_partitions()").fetchone() == (0,)
