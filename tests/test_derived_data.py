"""Derived data follows ingest within seconds, and the incremental refreshes are exact.

Usage lines, error statistics and step timings are tables that the refreshes rewrite only for the
client-months and client-days that ingest logged as changed (docs/adr/0016-rollups.md). Here:
through the real stack with its scheduler running, an ingest shows in GET /usage, an invoice draft
and GET /error_stats within 10 s; and after late events, retries and failures across days and
months, what the refreshes kept equals a recomputation from all history.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC
from decimal import Decimal
from typing import Any

import httpx
import psycopg

from billing_support import add_price, event, ingest, make_client, make_pipeline, refresh, uid
from stepledger.settings import Settings
from stepledger.stack import scheduler

D = Decimal
FRESH_WITHIN_S = 10.0


def _wait_until(condition: Callable[[], Any], deadline_s: float, what: str) -> float:
    """Seconds until `condition()` is truthy, polled until the deadline."""
    started = time.monotonic()
    last: Any = None
    while time.monotonic() - started < deadline_s:
        last = condition()
        if last:
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"{what} not seen within {deadline_s} s; last: {last!r}")


def test_usage_invoice_and_error_stats_follow_an_ingest_within_10_s(
        settings: Settings, su_conn: psycopg.Connection, api: Callable[..., httpx.Client],
        jwt_for: Callable[..., str], admin_token: str) -> None:
    assert scheduler.status(settings)["up"], "the stack's scheduler keeps derived data fresh"
    pipeline = make_pipeline(su_conn, ["a", "b"])
    client = make_client(su_conn)
    add_price(su_conn, pipeline, "a", "2", "2024-12-01T00:00:00Z")
    period = time.strftime("%Y-%m", time.gmtime())
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    first, retried = uid("job"), uid("job")
    reader = api(jwt_for("client", client))

    # Wait for the scheduler's refreshes of the client's setup (a new price logs a change), so
    # that the clock below measures the ingest alone.
    _wait_until(lambda: su_conn.execute(
        "select not exists (select 1 from ledger.billing_changes where client_id in (%s, ''))",
        [client]).fetchone()[0], 30, "the setup's refresh")

    ingest(settings.api_url, admin_token, [
        event(client, first, pipeline, "a", "completed", now, units=3),
        # a retry: the failed attempt counts in error statistics, the completed one is billed
        event(client, retried, pipeline, "a", "failed", now, attempt=1),
        event(client, retried, pipeline, "a", "completed", now, attempt=2, units=2),
        event(client, retried, pipeline, "b", "failed", now),
    ])
    ingested = time.monotonic()

    def usage() -> list[tuple[str, int, Decimal, bool]]:
        rows = reader.get("/usage", params={"client_id": f"eq.{client}",
                                            "period": f"eq.{period}"}).json()
        return [(r["step"], r["completed_steps"], D(str(r["amount"])), r["stale"]) for r in rows]

    def draft() -> tuple[str, Any, Any]:
        body = reader.post("/rpc/invoice", json={"client_id": client, "period": period}).json()
        return (body["source"], body["usage_amount"],
                [(line["step"], line["units"]) for line in body["lines"]])

    def error_stats() -> dict[str, tuple[int, int]]:
        rows = reader.get("/error_stats", params={"pipeline": f"eq.{pipeline}"}).json()
        return {r["step"]: (r["failures"], r["attempts"]) for r in rows}

    _wait_until(lambda: usage() == [("a", 2, D("10.00"), False)], FRESH_WITHIN_S, "usage")
    # The draft read from the refreshed usage lines, not computed live because they were stale.
    _wait_until(lambda: draft()[:2] == ("materialized", 10), FRESH_WITHIN_S, "the invoice draft")
    _wait_until(lambda: error_stats() == {"a": (1, 3), "b": (1, 1)}, FRESH_WITHIN_S,
                "error statistics")
    elapsed = time.monotonic() - ingested
    assert elapsed < FRESH_WITHIN_S, f"derived data {elapsed:.1f} s behind ingest"


# -- exactness: what the refreshes kept equals a recomputation from all history -------------------
# The error statistics are recomputed here in Python from the step runs, apart from the SQL that
# keeps them: the finished attempts of each client, UTC day of their end, pipeline, step, site and
# error code ('' for attempts that did not fail), and then all time.
RUNS = """
select client_id, finished_at, pipeline, step, coalesce(source, ''), status, error_code,
       error_retryable, error_message, job_id
  from ledger.step_runs
 where status <> 'started' and finished_at is not null and client_id = any(%(clients)s)
"""
OUTCOMES_KEPT = """
select client_id, day, pipeline, step, source, error_code, completed, failed, skipped, retryable,
       first_at, last_at, sample_message
  from ledger.step_outcomes_daily where client_id = any(%(clients)s)
"""
TOTALS_KEPT = """
select client_id, pipeline, step, source, error_code, completed, failed, skipped, retryable,
       first_at, last_at, sample_message
  from ledger.step_outcomes_total where client_id = any(%(clients)s)
"""


def _outcomes_from_history(conn: psycopg.Connection, clients: list[str]) -> list[tuple[Any, ...]]:
    runs: dict[tuple[Any, ...], list[tuple[Any, ...]]] = {}
    for client, finished, pipeline, step, source, status, code, retryable, message, job in \
            conn.execute(RUNS, {"clients": clients}):
        key = (client, finished.astimezone(UTC).date(), pipeline, step, source,
               (code or "") if status == "failed" else "")
        runs.setdefault(key, []).append((status, finished, retryable, message, job))
    cells = []
    for key, attempts in runs.items():
        failed = sorted((a for a in attempts if a[0] == "failed"), key=lambda a: (a[1], a[4]))
        cells.append((*key, sum(a[0] == "completed" for a in attempts), len(failed),
                      sum(a[0] == "skipped" for a in attempts), sum(bool(a[2]) for a in failed),
                      min(a[1] for a in attempts), max(a[1] for a in attempts),
                      failed[-1][3] if failed else None))
    return sorted(cells)


def _totals_from_daily(daily: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    days: dict[tuple[Any, ...], list[tuple[Any, ...]]] = {}
    for cell in daily:
        days.setdefault((*cell[:1], *cell[2:6]), []).append(cell)
    totals = []
    for key, cells in days.items():
        samples = sorted((c for c in cells if c[12] is not None), key=lambda c: c[11])
        totals.append((*key, *(sum(c[i] for c in cells) for i in (6, 7, 8, 9)),
                       min(c[10] for c in cells), max(c[11] for c in cells),
                       samples[-1][12] if samples else None))
    return sorted(totals)


TIMINGS_KEPT = """
select client_id, day, pipeline, step, attempts, completed, durations_s, queues_s
  from ledger.step_timings_daily where client_id = any(%(clients)s)
"""
ATTEMPTS = """
select client_id, job_id, pipeline, step, status, started_at, finished_at, step_index, attempt
  from ledger.step_runs where started_at is not null and client_id = any(%(clients)s)
"""


def _timings_from_history(conn: psycopg.Connection, clients: list[str]) -> list[tuple[Any, ...]]:
    """Per client, UTC day of the start, pipeline and step: attempts, completed ones, the sorted
    durations of completed attempts, and the sorted waits before each attempt since the job's
    previous attempt ended (none before a job's first)."""
    jobs: dict[tuple[str, str], list[tuple[Any, ...]]] = {}
    for row in conn.execute(ATTEMPTS, {"clients": clients}):
        jobs.setdefault((row[0], row[1]), []).append(row)
    cells: dict[tuple[Any, ...], list[Any]] = {}
    for attempts in jobs.values():
        ready_at = None
        for client, _, pipeline, step, status, started, finished, _, _ in sorted(
                attempts, key=lambda a: (a[5], a[7], a[8])):
            cell = cells.setdefault((client, started.astimezone(UTC).date(), pipeline, step),
                                    [0, 0, [], []])
            cell[0] += 1
            if status == "completed" and finished is not None:
                cell[1] += 1
                cell[2].append((finished - started).total_seconds())
            if ready_at is not None:
                cell[3].append(max(0.0, (started - ready_at).total_seconds()))
            if finished is not None:
                ready_at = finished if ready_at is None else max(ready_at, finished)
    return sorted((*key, attempts, completed, sorted(durations), sorted(waits))
                  for key, (attempts, completed, durations, waits) in cells.items())


USAGE_FROM_HISTORY = """
select u.* from unnest(%(clients)s::text[]) c(client_id)
 cross join lateral ledger._usage_lines(c.client_id, null, null) u
 order by 1, 2, 3, 4, 5, 6
"""
USAGE_KEPT = """
select * from ledger.usage_lines_monthly where client_id = any(%(clients)s)
 order by 1, 2, 3, 4, 5, 6
"""


def _assert_kept_equals_history(conn: psycopg.Connection, clients: list[str]) -> None:
    refresh(conn)
    conn.execute("select ledger.refresh_analytics()")  # waits for a running one, then refreshes
    args = {"clients": clients}
    daily = _outcomes_from_history(conn, clients)
    for kept, expected in ((conn.execute(USAGE_KEPT, args).fetchall(),
                            conn.execute(USAGE_FROM_HISTORY, args).fetchall()),
                           (sorted(conn.execute(OUTCOMES_KEPT, args).fetchall()), daily),
                           (sorted(conn.execute(TOTALS_KEPT, args).fetchall()),
                            _totals_from_daily(daily)),
                           (sorted(conn.execute(TIMINGS_KEPT, args).fetchall()),
                            _timings_from_history(conn, clients))):
        assert expected, "the history has rows of this kind"
        assert kept == expected


def test_refreshes_rewrite_only_what_changed_and_stay_exact(
        su_conn: psycopg.Connection, admin_token: str, settings: Settings,
        no_scheduler: None) -> None:
    # Refreshed by the test alone, so that it can count what one refresh rewrites.
    pipeline = make_pipeline(su_conn, ["a", "b", "c"])
    x, y = make_client(su_conn), make_client(su_conn)
    # graduated tiers on a: 1 per unit, 0.5 from the 4th unit; a default price on b that changes
    # mid-month
    add_price(su_conn, pipeline, "a", "1", "2025-01-01T00:00:00Z", tiers=[("3", "0.5")])
    add_price(su_conn, pipeline, "b", "2", "2025-01-01T00:00:00Z")
    add_price(su_conn, pipeline, "b", "3", "2025-01-20T00:00:00Z")
    jobs = {name: uid(name) for name in ("j1", "j2", "j3", "j4")}
    ingest(settings.api_url, admin_token, [
        event(x, jobs["j1"], pipeline, "a", "started", "2025-01-09T23:00:00Z"),
        event(x, jobs["j1"], pipeline, "a", "completed", "2025-01-10T01:00:00Z", units=2),
        event(x, jobs["j1"], pipeline, "b", "started", "2025-01-10T02:00:00Z"),
        event(x, jobs["j1"], pipeline, "b", "completed", "2025-01-10T03:00:00Z", units=1),
        event(x, jobs["j2"], pipeline, "a", "failed", "2025-01-15T00:00:00Z"),
        event(x, jobs["j2"], pipeline, "a", "completed", "2025-01-15T01:00:00Z", attempt=2,
              units=3),
        event(x, jobs["j2"], pipeline, "b", "completed", "2025-01-21T00:00:00Z", units=1),
        event(y, jobs["j3"], pipeline, "a", "completed", "2025-02-01T00:00:00Z", units=5),
        event(y, jobs["j3"], pipeline, "c", "skipped", "2025-02-01T01:00:00Z"),
    ])
    _assert_kept_equals_history(su_conn, [x, y])

    # Only the changed client-month and client-days are rewritten.
    ingest(settings.api_url, admin_token, [
        event(y, jobs["j4"], pipeline, "a", "completed", "2025-02-03T00:00:00Z", units=1)])
    written = refresh(su_conn)
    # y's February: step a's two tier bands, rewritten; nothing of x
    assert (written["month_ranges"], written["lines_removed"], written["lines_written"]) == \
        (1, 2, 2), written

    # Late events: j1's step a, completed on Jan 10, fails later in the same attempt (its bill
    # falls away and its outcome moves); a retry of j2's b completes in February (the bill moves
    # months); a started event arrives after its attempt ended.
    ingest(settings.api_url, admin_token, [
        event(x, jobs["j1"], pipeline, "a", "failed", "2025-01-12T00:00:00Z"),
        event(x, jobs["j2"], pipeline, "b", "completed", "2025-02-02T00:00:00Z", attempt=2,
              units=4),
        event(x, jobs["j2"], pipeline, "b", "started", "2025-01-20T23:00:00Z"),
        event(y, jobs["j3"], pipeline, "b", "failed", "2025-02-01T02:00:00Z"),
    ])
    _assert_kept_equals_history(su_conn, [x, y])

    # A backdated default price rewrites the months it reaches, for every client.
    add_price(su_conn, pipeline, "a", "7", "2025-01-25T00:00:00Z")
    _assert_kept_equals_history(su_conn, [x, y])
    january = su_conn.execute(
        "select step, sum(amount) from ledger.usage_lines_monthly where client_id = %s "
        "and period = '2025-01-01' group by step order by step", [x]).fetchall()
    # a: j2's 3 units (j1's bill fell away): all below the tier; b: j1 at 2
    assert january == [("a", D("3.00")), ("b", D("2.00"))]
