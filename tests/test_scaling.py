"""The Citus scale-out plan stays possible (docs/scaling.md).

Every table or materialized view that holds a `client_id` is classified: distributed by client
(then `client_id` must lead its primary key and every unique constraint or index, as Citus
requires) or kept whole on every node as a reference table. A new tenant table that is in neither
list fails here, so each one gets a decision.
"""

from __future__ import annotations

import psycopg

DISTRIBUTED = {
    "ledger.vault", "ledger.vault_bodies", "ledger.events", "ledger.event_ids", "ledger.step_runs",
    "ledger.job_steps", "ledger.jobs", "ledger.invoices", "ledger.invoice_lines",
    "ledger.invoice_documents", "ledger.billing_changes", "ledger.analytics_changes",
    "ledger.usage_lines_monthly", "ledger.step_outcomes_daily", "ledger.step_outcomes_total",
    "ledger.step_timings_daily", "ledger.usage_alerts", "ledger.job_stall_notices",
}
# Small tables read by every tenant's queries; client_id is nullable or not the key there.
REFERENCE = {
    "ledger.clients", "ledger.prices", "ledger.client_minimums",
    "auth.users", "auth.api_tokens", "auth.bi_logins",
    # notifications: whole on the coordinator, where the worker reads them (docs/scaling.md)
    "ledger.webhooks", "ledger.notification_messages", "ledger.webhook_deliveries",
    "ledger.webhook_attempts", "ledger.email_deliveries",
}
# Keys of distributed tables that are global today and become per-client on Citus
# (docs/scaling.md, "Caveats"). Any key not listed here must start with client_id. (Invoice
# numbers were the last one: they are numbered per client since migration 0070.)
GLOBAL_KEYS_TO_REWORK: set[tuple[str, tuple[str, ...]]] = set()
# Distributed tables without a primary key (none today: ledger.events keeps events_pkey, which
# starts with client_id, ADR 0014).
WITHOUT_PRIMARY_KEY: set[str] = set()

TENANT_RELATIONS = """
select n.nspname || '.' || c.relname
  from pg_class c join pg_namespace n on n.oid = c.relnamespace
 where n.nspname in ('ledger', 'auth', 'reporting') and c.relkind in ('r', 'p', 'm')
   and not c.relispartition
   and exists (select from pg_attribute a
                where a.attrelid = c.oid and a.attname = 'client_id' and not a.attisdropped)
"""

UNIQUE_KEYS = """
select i.indrelid::regclass::text,
       array(select a.attname::text from unnest(i.indkey) with ordinality k(attnum, ord)
               join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum
              order by k.ord),
       i.indisprimary
  from pg_index i
 where i.indisunique and i.indrelid = any(%s::regclass[])
"""


def test_every_tenant_relation_is_classified(su_conn: psycopg.Connection) -> None:
    found = {r[0] for r in su_conn.execute(TENANT_RELATIONS).fetchall()}
    assert found - DISTRIBUTED - REFERENCE == set(), "classify these in docs/scaling.md"
    assert found >= DISTRIBUTED | REFERENCE, "listed here but gone from the schema"
    assert set() == DISTRIBUTED & REFERENCE


def test_distributed_tables_lead_every_key_with_client_id(su_conn: psycopg.Connection) -> None:
    keys = su_conn.execute(UNIQUE_KEYS, [sorted(DISTRIBUTED)]).fetchall()
    with_primary = {table for table, _, primary in keys if primary}
    matviews = {r[0] for r in su_conn.execute(
        "select schemaname || '.' || matviewname from pg_matviews").fetchall()}
    assert DISTRIBUTED - matviews - WITHOUT_PRIMARY_KEY <= with_primary, \
        "a distributed table needs a primary key"
    assert not WITHOUT_PRIMARY_KEY & with_primary, "it has a primary key again: drop the exception"
    wrong = sorted((table, tuple(cols)) for table, cols, _ in keys
                   if (table, tuple(cols)) not in GLOBAL_KEYS_TO_REWORK
                   and cols[:1] != ["client_id"])
    assert wrong == []
    assert {t for t, c, _ in keys if t in matviews} == matviews & DISTRIBUTED, \
        "each materialized view needs a unique key (refresh concurrently, and Citus rollups)"


def test_the_listed_exceptions_still_exist(su_conn: psycopg.Connection) -> None:
    keys = {(t, tuple(c)) for t, c, _ in su_conn.execute(UNIQUE_KEYS, [sorted(DISTRIBUTED)])}
    assert keys >= GLOBAL_KEYS_TO_REWORK, "an exception was fixed: remove it from the list"


def test_every_tenant_relation_has_row_level_security(su_conn: psycopg.Connection) -> None:
    rows = su_conn.execute(
        "select n.nspname || '.' || c.relname, c.relrowsecurity from pg_class c "
        "join pg_namespace n on n.oid = c.relnamespace "
        "where c.relkind in ('r', 'p') and n.nspname || '.' || c.relname = any(%s)",
        [sorted(DISTRIBUTED | REFERENCE)]).fetchall()
    assert [name for name, rls in rows if not rls] == []
