"""The write path (docs/adr/0014-write-path.md): ingest derives step runs, job steps, jobs, the
billing change log and the job notifications in statements of its own, with no trigger that reads
other rows, so every path that stores events (ingest, NDJSON, replay, the loader) derives the
same, and a tenant table can be distributed (ADR 0012)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import psycopg

from stepledger.stack.citus import DISTRIBUTED_TABLES
from test_progress import LONG_AGO, T0, Scenario

# The tables ingest writes; a user trigger on them may only see its own row.
WRITTEN_BY_INGEST = ("ledger.events", "ledger.event_ids", "ledger.step_runs", "ledger.job_steps",
                     "ledger.jobs", "ledger.billing_changes", "ledger.notification_messages")


def test_no_trigger_on_a_tenant_table_reads_a_transition_table(su_conn: psycopg.Connection) -> None:
    tables = sorted(set(DISTRIBUTED_TABLES) | set(WRITTEN_BY_INGEST))
    rows = su_conn.execute(
        "select t.tgrelid::regclass::text, t.tgname from pg_trigger t"
        " where not t.tgisinternal and t.tgrelid = any(%s::regclass[])"
        "   and (t.tgnewtable is not null or t.tgoldtable is not null)", [tables]).fetchall()
    assert rows == [], f"triggers that read transition tables: {rows}"
    # And nothing fires on the inserts and updates ingest makes to its own tables.
    rows = su_conn.execute(
        "select t.tgrelid::regclass::text, t.tgname from pg_trigger t"
        " where not t.tgisinternal and t.tgrelid = any(%s::regclass[])"
        "   and t.tgtype & (4 | 16) <> 0", [list(WRITTEN_BY_INGEST[:5])]).fetchall()
    assert rows == [], f"insert/update triggers on the tables ingest writes: {rows}"


def _outbox(db: psycopg.Connection, client: str) -> list[tuple[str, str]]:
    return [tuple(r) for r in db.execute(
        "select event_type, body->'data'->>'job_id' from ledger.notification_messages"
        " where client_id = %s order by message_seq", [client]).fetchall()]


def _changes(db: psycopg.Connection, client: str) -> list[tuple[date, date]]:
    return [tuple(r) for r in db.execute(
        "select period_from, period_to from ledger.billing_changes"
        " where client_id = %s and reason = 'completion' order by change_id", [client]).fetchall()]


def test_ingest_derives_everything_itself(db: psycopg.Connection) -> None:
    """With every user trigger of the written tables disabled, one batch still yields the job,
    its steps, the billing change and the notification: ingest does not rely on a trigger."""
    for table in WRITTEN_BY_INGEST:
        db.execute(f"alter table {table} disable trigger user")
    sc = Scenario(db)
    sc.send(sc.event("j1", "fetch", "started", T0),
            sc.event("j1", "fetch", "failed", T0 + timedelta(seconds=3)))
    job = sc.job("j1")
    assert (job["status"], job["steps_done"], job["last_error_step"]) == ("failed", 0, "fetch")
    assert _outbox(db, sc.client) == [("job.failed", "j1")]
    sc.complete_all("j1", T0 + timedelta(seconds=5))
    assert sc.job("j1")["status"] == "completed"
    assert _outbox(db, sc.client) == [("job.failed", "j1"), ("job.recovered", "j1"),
                                      ("job.completed", "j1")]
    month = date(T0.year, T0.month, 1)
    assert set(_changes(db, sc.client)) == {(month, month)}
    assert db.execute("select count(*) from ledger.job_steps where client_id = %s"
                      " and completed_at is not null", [sc.client]).fetchone()[0] == 3


def test_late_and_out_of_order_events_move_progress_and_billing(db: psycopg.Connection) -> None:
    sc = Scenario(db, steps=["fetch"])
    jan_end = datetime(2026, 1, 31, 23, 59, tzinfo=UTC)
    feb = datetime(2026, 2, 1, 0, 30, tzinfo=UTC)
    # A job of January: attempt 1 completes on 31 January; only its completion arrives first.
    sc.send(sc.event("old", "fetch", "completed", jan_end, units=2))
    assert _changes(db, sc.client) == [(date(2026, 1, 1), date(2026, 1, 1))]
    # Attempt 2 completes in February, its completion before its start: the billed completion
    # moves from January to February, and both months are logged.
    sc.send(sc.event("old", "fetch", "completed", feb, attempt=2, units=5))
    sc.send(sc.event("old", "fetch", "started", feb - timedelta(minutes=10), attempt=2))
    assert sorted(set(_changes(db, sc.client))) == [(date(2026, 1, 1), date(2026, 1, 1)),
                                                   (date(2026, 2, 1), date(2026, 2, 1))]
    runs = sc.runs("old")
    assert runs[("fetch", 2)]["status"] == "completed"
    assert runs[("fetch", 2)]["started_at"] == feb - timedelta(minutes=10)
    billed = db.execute("select billed_attempt, billed_units, completed_at from ledger.job_steps"
                        " where client_id = %s and job_id = 'old'", [sc.client]).fetchone()
    assert billed == (2, 5, feb)
    before = len(_changes(db, sc.client))
    # Late news of attempt 1 (its start, a duplicate-free second completion an hour earlier)
    # changes nothing billed: no change is logged.
    sc.send(sc.event("old", "fetch", "started", LONG_AGO),
            sc.event("old", "fetch", "completed", jan_end - timedelta(hours=1)))
    assert len(_changes(db, sc.client)) == before
    billed = db.execute("select billed_attempt, completed_at from ledger.job_steps"
                        " where client_id = %s and job_id = 'old'", [sc.client]).fetchone()
    assert billed == (2, feb)
    job = sc.job("old")
    assert (job["status"], job["started_at"], job["events"]) == ("completed", LONG_AGO, 5)


def test_replay_derives_like_ingest(db: psycopg.Connection) -> None:
    """A rejected event accepted on replay (after its step was registered) folds into progress
    and billing as if it had arrived now."""
    sc = Scenario(db, steps=["fetch"])
    sc.conn.execute("select set_config('request.jwt.claims', %s, true)",
                    (json.dumps({"role": "admin"}),))
    event = sc.event("r1", "report", "completed", T0)
    answer = db.execute("select api.ingest(%s::jsonb)", [json.dumps([event])]).fetchone()[0]
    assert answer["accepted"] == 0 and len(answer["rejected"]) == 1
    sc.register(["fetch", "report"])
    db.execute("set local role admin")
    db.execute("select api.replay(client_id => %s)", [sc.client])
    db.execute("reset role")
    assert db.execute("select latest_status, completed_at from ledger.job_steps"
                      " where client_id = %s and job_id = 'r1' and step = 'report'",
                      [sc.client]).fetchone() == ("completed", T0)
    assert sc.job("r1")["steps_done"] == 1
    month = date(T0.year, T0.month, 1)
    assert _changes(db, sc.client) == [(month, month)]


def _billed(db: psycopg.Connection, client: str, job: str) -> tuple[object, ...]:
    return tuple(db.execute(
        "select latest_attempt, latest_status, billed_attempt, billed_units, completed_at"
        "  from ledger.job_steps where client_id = %s and job_id = %s", [client, job]).fetchone())


def test_a_billed_attempt_that_fails_later_falls_back_to_the_one_before(
        db: psycopg.Connection) -> None:
    """Between terminal events of one attempt the later occurred_at wins, so a billed attempt can
    stop being completed: the bill falls back to the highest other completed attempt."""
    sc = Scenario(db, steps=["fetch"])
    jan = datetime(2026, 1, 20, 10, 0, tzinfo=UTC)
    feb = datetime(2026, 2, 3, 10, 0, tzinfo=UTC)
    sc.send(sc.event("d", "fetch", "completed", jan, units=3))
    sc.send(sc.event("d", "fetch", "completed", feb, attempt=2, units=5))
    assert _billed(db, sc.client, "d") == (2, "completed", 2, 5, feb)
    sc.send(sc.event("d", "fetch", "failed", feb + timedelta(minutes=1), attempt=2))
    assert _billed(db, sc.client, "d") == (2, "failed", 1, 3, jan)
    assert sc.job("d")["status"] == "failed"
    # February lost its completion, January regained one: both are logged again
    assert _changes(db, sc.client)[-2:] in ([(date(2026, 1, 1),) * 2, (date(2026, 2, 1),) * 2],
                                            [(date(2026, 2, 1),) * 2, (date(2026, 1, 1),) * 2])
    sc.send(sc.event("d", "fetch", "completed", feb + timedelta(minutes=2), attempt=2, units=7))
    assert _billed(db, sc.client, "d") == (2, "completed", 2, 7, feb + timedelta(minutes=2))
    # In one batch: attempt 2 fails later, and attempt 3 starts while attempt 1 is re-reported.
    sc.send(sc.event("d", "fetch", "failed", feb + timedelta(minutes=3), attempt=2),
            sc.event("d", "fetch", "started", feb + timedelta(minutes=4), attempt=3),
            sc.event("d", "fetch", "completed", jan + timedelta(minutes=5), units=4))
    assert _billed(db, sc.client, "d") == (3, "started", 1, 4, jan + timedelta(minutes=5))


def test_progress_matches_a_recomputation_from_the_events(db: psycopg.Connection) -> None:
    """Whatever the batches, job steps equal what the raw events say (the billing reference
    ledger._charges_from_events recomputes billed completions from ledger.events alone)."""
    sc = Scenario(db, steps=["fetch", "report"])
    moments = [T0 + timedelta(seconds=s) for s in range(0, 600, 7)]
    events = []
    for i, moment in enumerate(moments):
        step = ("fetch", "report")[i % 2]
        status = ("started", "completed", "failed", "completed", "skipped")[i % 5]
        events.append(sc.event(f"m{i % 4}", step, status, moment, attempt=1 + i % 3, units=i))
    # out of order, in uneven batches
    shuffled = events[::-1][:20] + events[:-20][::3] + [e for e in events[:-20]
                                                         if e not in events[:-20][::3]]
    for start in range(0, len(shuffled), 9):
        sc.send(*shuffled[start:start + 9])
    live = db.execute(
        "select job_id, step, completed_at, billed_units from ledger.job_steps"
        " where client_id = %s and completed_at is not null order by 1, 2", [sc.client]).fetchall()
    reference = db.execute(
        "select job_id, step, completed_at, units from ledger._charges_from_events(%s, null, null)"
        " order by 1, 2", [sc.client]).fetchall()
    assert live == reference and live


def test_one_batch_of_two_clients_with_the_same_job_id(db: psycopg.Connection) -> None:
    """A single node folds a batch of several clients at once: jobs, steps, statuses before the
    batch and job messages stay each client's own, even when the clients use the same job id."""
    a, b = Scenario(db, steps=["fetch", "report"]), Scenario(db, steps=["fetch", "report"])
    a.send(a.event("shared", "fetch", "started", T0),
           a.event("shared", "fetch", "failed", T0 + timedelta(seconds=3)),
           b.event("shared", "fetch", "started", T0),
           b.event("shared", "fetch", "completed", T0 + timedelta(seconds=3)),
           b.event("shared", "report", "completed", T0 + timedelta(seconds=6)))
    assert (a.job("shared")["status"], b.job("shared")["status"]) == ("failed", "completed")
    assert _outbox(db, a.client) == [("job.failed", "shared")]
    assert _outbox(db, b.client) == [("job.completed", "shared")]
    # Each job's status before the next batch is its own client's: client a recovers, client b's
    # completed job takes a late event and announces nothing.
    later = T0 + timedelta(seconds=10)
    a.send(a.event("shared", "fetch", "completed", later, attempt=2),
           a.event("shared", "report", "completed", later + timedelta(seconds=2)),
           b.event("shared", "report", "started", T0 + timedelta(seconds=4)))
    assert (a.job("shared")["status"], b.job("shared")["status"]) == ("completed", "completed")
    assert _outbox(db, a.client) == [("job.failed", "shared"), ("job.recovered", "shared"),
                                     ("job.completed", "shared")]
    assert _outbox(db, b.client) == [("job.completed", "shared")]
    for sc, steps in ((a, 2), (b, 2)):
        assert db.execute("select count(*) from ledger.job_steps where client_id = %s"
                          " and job_id = 'shared' and completed_at is not null",
                          [sc.client]).fetchone()[0] == steps
