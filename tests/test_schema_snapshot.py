"""db/schema.snapshot is what a fresh migration produces: schema changes show up in review."""

from __future__ import annotations

import difflib

from stepledger.schema.snapshot import fresh_schema, snapshot_path
from stepledger.settings import Settings


def test_the_committed_snapshot_matches_a_fresh_migration(settings: Settings) -> None:
    expected = snapshot_path(settings).read_text()
    actual = fresh_schema(settings)
    if actual != expected:
        diff = "".join(list(difflib.unified_diff(
            expected.splitlines(keepends=True), actual.splitlines(keepends=True),
            "db/schema.snapshot", "fresh migration"))[:80])
        raise AssertionError("db/schema.snapshot is out of date; run `stepledger schema-snapshot` "
                             "and review the diff:\n" + diff)
