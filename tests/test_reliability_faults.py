"""Faults under load: while the SDK sends ~3,000 events of realistic BotImage jobs with retries,
PostgREST and then PostgreSQL are killed with SIGKILL and restarted with the stack's own start
functions. Afterwards every event is stored exactly once, no step is billed twice, the invoice
equals an independent sum of units x price, and the vault holds an accepted row per event.

The scenario lives in bench/faults.py (which runs it at 100,000 events); this test runs it on a
stack of its own, so the kills never reach the session stack.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from bench.faults import drive, generate, own_stack, prepare, verify

from conftest import free_ports
from stepledger import stack
from stepledger.api_client import RetryPolicy
from stepledger.sdk import Tracker
from stepledger.sdk.spool import read_batch
from stepledger.settings import Settings

CLIENT = "faults-a"


@pytest.fixture(scope="module")
def own() -> Iterator[Settings]:
    with own_stack("stepledger-faults-test-") as settings:
        yield settings


def test_kill_9_of_postgrest_and_postgres_loses_and_doubles_nothing(own: Settings,
                                                                    tmp_path: Path) -> None:
    token = prepare(own, CLIENT)
    events = generate(CLIENT, 3000, seed=21, tag="t")
    assert 3000 <= len(events) < 3200
    assert {e["status"] for e in events} == {"started", "completed", "failed"}
    assert any(e["attempt"] > 1 and e["status"] == "completed" for e in events)  # re-billed

    run = drive(own, token, CLIENT, events, tmp_path / "spool", rate=250.0, faults=True)

    # Both faults happened while events were still being produced, and the SDK met each outage.
    assert [f.name for f in run.faults] == ["postgrest", "postgres"]
    assert all(0 < f.at_event < len(events) and f.retries_seen > 0 for f in run.faults), run
    status = stack.status(own)
    assert status["postgres"]["up"] and status["postgrest"]["ready"]  # type: ignore[index]
    with psycopg.connect(own.dsn("postgres")) as conn:
        recovered = conn.execute("select pg_postmaster_start_time() > now() - interval '10 min'"
                                 ).fetchone()
    assert recovered == (True,)  # the postmaster answering is the restarted one

    # What the SDK was told adds up: each event's last answer is "accepted", or "duplicate" when
    # a kill took the answer of a batch that was stored, and the SDK sent it again.
    assert run.rejected == 0
    assert run.accepted + run.duplicates == len(events), run
    checks = verify(own, CLIENT, events)
    assert checks["events"] == len(events)
    assert checks["vault_duplicates"] == run.duplicates
    assert checks["billed_steps"] > 0 and checks["invoices"]


def test_the_checks_see_a_lost_and_a_doubled_billing(own: Settings) -> None:
    """verify() must fail when the ledger lacks an event or bills a step the events do not."""
    events = generate(CLIENT, 3000, seed=21, tag="t")
    with pytest.raises(AssertionError, match="events stored"):
        verify(own, CLIENT, [*events, {**events[0], "event_id": "never-sent"}])
    more = [{**e, "units": 7777} if e["status"] == "completed" else e for e in events]
    with pytest.raises(AssertionError, match="billed steps differ"):
        verify(own, CLIENT, more)


def test_batches_stay_within_batch_size_while_the_api_is_away(tmp_path: Path) -> None:
    """Found by bench/faults.py at 100,000 events: while the sender waited out an outage the
    spool's open batch kept growing (10,670 events), the API refused it (413: over 10,000 per
    request) and the whole batch went to dead/. Batches are now sealed at batch_size by emit."""
    (port,) = free_ports(1)  # nothing listens there: every send fails and is retried
    tracker = Tracker(f"http://127.0.0.1:{port}", "no-token", client_id="c", pipeline="p",
                      spool_dir=tmp_path / "spool", batch_size=50, flush_interval_s=0.05,
                      fsync=False, retry=RetryPolicy(attempts=None, initial_s=0.05, max_s=0.2))
    try:
        for n in range(1234):
            tracker.emit({"event_id": f"e{n}", "step": "s", "status": "started"})
    finally:
        tracker.close(timeout_s=0.5)
    batches = sorted((tmp_path / "spool").glob("slot-*/batch-*.ndjson"))
    sizes = [len(read_batch(b)) for b in batches]
    assert sum(sizes) == 1234 and max(sizes) <= 50, sizes
