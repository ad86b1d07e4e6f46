"""docs/erd.md is the entity-relationship diagram of the migrated database's catalog."""

from __future__ import annotations

import psycopg

from stepledger.schema.erd import current_erd, diagram, erd_path
from stepledger.settings import Settings


def test_the_committed_erd_matches_the_catalog(settings: Settings) -> None:
    assert current_erd(settings) == erd_path(settings).read_text(), \
        "docs/erd.md is out of date: run `stepledger erd` and review the diff"


def test_a_new_table_and_foreign_key_show_in_the_diagram(settings: Settings) -> None:
    """The diagram follows the catalog: a table added in a transaction that is rolled back
    appears with its keys and its link while the transaction lasts."""
    with psycopg.connect(settings.dsn("postgres")) as conn:
        conn.execute("create table ledger.erd_probe (probe_id bigint primary key, "
                     "client_id ledger.slug not null references ledger.clients, note text)")
        text = diagram(conn)
        conn.rollback()
    assert "    ledger_erd_probe {\n        int8 probe_id PK\n        slug client_id FK\n    }" \
        in text
    assert '    ledger_clients ||--o{ ledger_erd_probe : "client_id"' in text
    assert "erd_probe" not in current_erd(settings)
