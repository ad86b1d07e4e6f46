"""`stepledger backup` / `stepledger restore` round trip on a stack of its own (restore drops the
database, so it must not touch the session stack)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg
import pytest

from stacks import run_cli_process as cli
from stacks import throwaway_stack
from stepledger import stack
from stepledger.ingest.credentials import operator_token
from stepledger.settings import Settings

TABLES = ["ledger.vault", "ledger.events", "ledger.jobs", "ledger.prices", "ledger.invoices",
          "auth.users", "auth.api_tokens"]


@pytest.fixture(scope="module")
def own() -> Iterator[Settings]:
    with throwaway_stack("stepledger-backup-") as settings:
        yield settings


def fingerprint(settings: Settings) -> dict[str, tuple[int, str]]:
    with psycopg.connect(settings.dsn("postgres")) as conn:
        return {t: conn.execute(f"select count(*), md5(coalesce(string_agg(x::text, '|' order by "
                                f"x::text), '')) from {t} x").fetchone() for t in TABLES}


def test_backup_and_restore_keep_everything(own: Settings, tmp_path: Path) -> None:
    demo = cli(own, "demo")
    assert demo.returncode == 0, demo.stderr
    last_month = (datetime.now(UTC).replace(day=1) - timedelta(days=1)).strftime("%Y-%m")
    for args in (("price", "set", "botimage", "report", "2.50", "--from", "2020-01-01"),
                 ("invoice", "st-mary", last_month, "--finalize")):
        done = cli(own, *args)
        assert done.returncode == 0, done.stderr
    with psycopg.connect(own.dsn("postgres"), autocommit=True) as conn:
        conn.execute("select ledger.refresh_usage('test: backup')")
    before = fingerprint(own)
    assert all(count > 0 for count, _ in before.values()), before
    dump = tmp_path / "stepledger.dump"
    made = cli(own, "backup", str(dump))
    assert made.returncode == 0, made.stderr
    assert dump.stat().st_size > 0

    # Change things after the backup: the restore must bring back the state of the dump.
    with psycopg.connect(own.dsn("stepledger_owner"), autocommit=True) as conn:
        conn.execute("select ledger.add_client('after-backup', 'After')")
        conn.execute("update auth.users set disabled_at = now()")
    assert fingerprint(own)["auth.users"] != before["auth.users"]

    done = cli(own, "restore", str(dump))
    assert done.returncode == 0, done.stderr
    assert fingerprint(own) == before
    # The API serves the restored data (PostgREST reconnects on its own).
    token = operator_token(own.jwt_secret)
    response = httpx.get(f"{own.api_url}/jobs?select=job_id", timeout=30,
                         headers={"Authorization": f"Bearer {token}", "Prefer": "count=exact"})
    assert response.status_code in (200, 206), response.text
    assert int(response.headers["content-range"].split("/")[1]) == before["ledger.jobs"][0]


def test_restore_of_a_missing_or_bad_file_fails_with_a_reason(own: Settings,
                                                              tmp_path: Path) -> None:
    missing = cli(own, "restore", str(tmp_path / "nope.dump"))
    assert missing.returncode == 1 and "no such backup file" in missing.stderr
    junk = tmp_path / "junk.dump"
    junk.write_text("not a dump")
    bad = cli(own, "restore", str(junk))
    assert bad.returncode == 1 and "reading" in bad.stderr
    assert stack.status(own)["postgres"]["up"]  # nothing was dropped
