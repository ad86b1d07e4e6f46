"""Which deliveries the worker leases first (ledger.claim_webhook_deliveries): endpoints that
answer before endpoints that are failing, so that many slow, failing endpoints cannot take every
delivery slot from the ones that answer. In one transaction that is rolled back: the stack's
delivery worker never sees these rows."""

from __future__ import annotations

import uuid

import psycopg

SECRET = "whsec_" + "A" * 43 + "="


def _endpoint(conn: psycopg.Connection, client: str, failing: bool, deliveries: int) -> str:
    row = conn.execute(
        "insert into ledger.webhooks (client_id, url, events, secret, created_by, failing_since) "
        "values (%s, %s, '{job.failed}', %s, 'test', case when %s then now() end) "
        "returning webhook_id::text",
        [client, f"https://{uuid.uuid4().hex}.example/hook", SECRET, failing]).fetchone()
    assert row
    for _ in range(deliveries):
        conn.execute(
            "with m as (insert into ledger.notification_messages (client_id, event_type, body, "
            "                                                  dispatched_at) "
            "           values (%s, 'job.failed', '{}', now()) returning message_seq) "
            "insert into ledger.webhook_deliveries (webhook_id, client_id, message_seq) "
            "select %s, %s, m.message_seq from m", [client, row[0], client])
    return row[0]


def test_endpoints_that_answer_are_leased_before_failing_ones(su_conn: psycopg.Connection) -> None:
    client = f"claims-{uuid.uuid4().hex[:8]}"
    with su_conn.transaction(force_rollback=True):
        su_conn.execute("update ledger.notification_settings set per_endpoint_concurrency = 3")
        # Deliveries other tests left due would compete for the same slots: not due here.
        su_conn.execute("set local lock_timeout = '10s'")
        su_conn.execute("update ledger.webhook_deliveries set next_attempt_at = now() + "
                        "interval '1 day' where state = 'pending'")
        su_conn.execute("select ledger.add_client(%s, 'Claims', 'EUR')", [client])
        for _ in range(10):  # older deliveries to endpoints that time out
            _endpoint(su_conn, client, failing=True, deliveries=3)
        healthy = _endpoint(su_conn, client, failing=False, deliveries=3)
        # Slots for 13: every endpoint's first delivery, and then some.
        leased = [r[0] for r in su_conn.execute(
            "select webhook_id::text from ledger.claim_webhook_deliveries(13)").fetchall()]
        assert len(leased) == 13
        # All three of the healthy endpoint's deliveries (its concurrency), not one of them.
        assert leased.count(healthy) == 3, leased
        # Failing endpoints still get what is left, each within its own concurrency.
        failing = [w for w in leased if w != healthy]
        assert sorted(failing.count(w) for w in set(failing)) == [1] * 10  # rank order
