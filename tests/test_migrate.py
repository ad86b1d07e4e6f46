"""The migration runner: a second run on an up-to-date database changes nothing, and takes no
lock on a live table."""

from __future__ import annotations

import dataclasses
import json
import shutil
import threading
from pathlib import Path

import psycopg
from psycopg import sql

from stepledger.schema.migrate import definitions_digest, migrate
from stepledger.schema.snapshot import schema_dump
from stepledger.settings import Settings


def test_second_migrate_changes_nothing(settings: Settings, su_conn: psycopg.Connection) -> None:
    before = schema_dump(settings)
    versions = su_conn.execute("select count(*) from ledger.code_versions").fetchone()
    result = migrate(settings)
    assert result["applied"] == []
    assert schema_dump(settings) == before
    assert su_conn.execute("select count(*) from ledger.code_versions").fetchone() == versions


def test_a_migrate_with_nothing_new_does_not_wait_behind_a_reader(settings: Settings) -> None:
    """Re-creating a policy takes an ACCESS EXCLUSIVE lock on its table; `stepledger up` migrates
    on every start, so a migrate with nothing new must not queue behind a live reader (and block
    every writer behind itself)."""
    migrate(settings)  # whatever an earlier test changed is applied now
    outcome: dict[str, object] = {}
    finished = threading.Event()

    def run() -> None:
        outcome.update(migrate(settings))
        finished.set()

    with psycopg.connect(settings.dsn("postgres")) as reader:
        reader.execute("select count(*) from ledger.jobs")  # holds its lock until rollback
        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        done_while_read = finished.wait(timeout=8)
        reader.rollback()
    worker.join(timeout=120)
    assert done_while_read, "migrate waited behind a reader of ledger.jobs"
    assert outcome["definitions"] == "unchanged"


def test_an_edit_by_hand_stays_until_reapply(settings: Settings,
                                            su_conn: psycopg.Connection) -> None:
    def comment() -> str:
        return su_conn.execute(
            "select obj_description('ledger.scheduled_tasks()'::regprocedure)").fetchone()[0]
    original = comment()
    su_conn.execute("comment on function ledger.scheduled_tasks() is 'edited by hand'")
    try:
        assert migrate(settings)["definitions"] == "unchanged"
        assert comment() == "edited by hand"
        assert migrate(settings, reapply=True)["definitions"] == "applied"
        assert comment() == original
    finally:
        su_conn.execute(sql.SQL("comment on function ledger.scheduled_tasks() is {}").format(
            sql.Literal(original)))


def test_the_digest_follows_every_applied_file(settings: Settings, tmp_path: Path) -> None:
    """A change to any file the idempotent phase applies, or to the topology, is applied."""
    for folder in ("db", "schemas"):
        shutil.copytree(settings.repo_root / folder, tmp_path / folder)
    copy = dataclasses.replace(settings, repo_root=tmp_path)
    assert definitions_digest(copy, False) == definitions_digest(settings, False)
    assert definitions_digest(settings, True) != definitions_digest(settings, False)
    for changed in ("db/policies/90_openapi.sql", "db/functions/00_common/10_auth_context.sql",
                    "schemas/step_event.v1.json"):
        before = definitions_digest(copy, False)
        with (tmp_path / changed).open("a") as f:
            f.write("\n")
        assert definitions_digest(copy, False) != before, changed
    other_secret = dataclasses.replace(copy, home=tmp_path / "home")  # generates its own secret
    assert definitions_digest(other_secret, False) != definitions_digest(copy, False)


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


def test_migrations_since_the_cluster_path_use_forms_a_coordinator_takes(
        settings: Settings) -> None:
    """A migration after 0090 (from which a database may be a distributed Citus cluster) runs on
    distributed tables there: no ALTER TABLE form the coordinator refuses (ADR 0012)."""
    from stepledger.stack import citus
    since = sorted((settings.repo_root / "db" / "migrations").glob("*.sql"))
    refused = {path.name: citus.alter_table_refusals(path.read_text()) for path in since
               if int(path.name.split("_", 1)[0]) > 90}
    assert len(refused) >= 3 and not any(refused.values()), refused
