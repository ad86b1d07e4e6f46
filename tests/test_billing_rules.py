"""Contract §5, rule by rule, with amounts worked out by hand (docs/billing.md)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import psycopg

from billing_support import Books, event, uid

D = Decimal


def usage(document: dict[str, Any]) -> dict[tuple[str, Decimal], tuple[Decimal, Decimal, int]]:
    """(step, unit_price) -> (units, amount, completed_steps) of the usage lines."""
    out = {}
    for line in document["lines"]:
        if line["kind"] == "usage":
            key = (line["step"], D(str(line["unit_price"])).normalize())
            assert key not in out
            out[key] = (D(str(line["units"])), D(str(line["amount"])), line["completed_steps"])
    return out


def test_a_step_is_billed_once_at_its_latest_completed_attempt(books: Books) -> None:
    pipeline, client = books.priced_pipeline({"a": "0.10", "b": "1", "c": "0.5"})
    j1, j2 = uid("job"), uid("job")
    retried = event(client, j1, pipeline, "a", "completed", "2025-01-05T10:02:00Z", attempt=2,
                    units=4)
    first = [
        event(client, j1, pipeline, "a", "started", "2025-01-05T10:00:00Z"),
        event(client, j1, pipeline, "a", "failed", "2025-01-05T10:01:00Z"),
        retried,
        # b: two completions; the later attempt arrives first and still wins.
        event(client, j1, pipeline, "b", "completed", "2025-01-11T09:00:00Z", attempt=2, units=7),
        # c: skipped is never billed
        event(client, j1, pipeline, "c", "skipped", "2025-01-12T09:00:00Z"),
        event(client, j2, pipeline, "a", "completed", "2025-01-06T08:00:00Z", units=2),
        event(client, j2, pipeline, "b", "completed", "2025-01-07T08:00:00Z", units=5),
        # a failed later attempt does not take the completion of attempt 1 away
        event(client, j2, pipeline, "b", "failed", "2025-01-08T08:00:00Z", attempt=2),
    ]
    second = [
        event(client, j1, pipeline, "b", "completed", "2025-01-10T09:00:00Z", attempt=1, units=3),
        # the same event id again, other units: a duplicate, never counted
        {**retried, "units": 100},
    ]
    books.ingest(first)
    result = books.ingest(second)
    assert (result.accepted, result.duplicates) == (1, 1)

    document = books.invoice(client, "2025-01")
    assert usage(document) == {
        ("a", D("0.1")): (D(6), D("0.60"), 2),
        ("b", D("1")): (D(12), D("12.00"), 2),
    }
    assert document["total"] == D("12.60")
    assert document["status"] == "draft"
    assert document["currency"] == "EUR"


def test_duplicates_count_once_whatever_their_body(books: Books) -> None:
    pipeline, client = books.priced_pipeline({"a": "1"})
    job = uid("job")
    done = event(client, job, pipeline, "a", "completed", "2025-01-05T10:00:00Z", units=3)
    result = books.ingest([done, {**done, "units": 50}])
    assert (result.accepted, result.duplicates) == (1, 1)
    result = books.ingest([{**done, "units": 70, "attempt": 5}])
    assert (result.accepted, result.duplicates) == (0, 1)
    assert usage(books.invoice(client, "2025-01")) == {("a", D(1)): (D(3), D("3.00"), 1)}


def test_unpriced_completed_steps_are_billed_at_zero_and_listed(
        su_conn: psycopg.Connection, books: Books) -> None:
    pipeline, client = books.priced_pipeline({"a": "2", "b": None})
    # b is priced only from the 20th: the completion on the 10th has no price in force.
    books.add_price(pipeline, "b", "3", "2025-01-20T00:00:00Z")
    job = uid("job")
    books.ingest([
        event(client, job, pipeline, "a", "completed", "2025-01-10T00:00:00Z", units=2),
        event(client, job, pipeline, "b", "completed", "2025-01-10T00:00:01Z", units=4),
    ])
    document = books.invoice(client, "2025-01")
    assert usage(document) == {("a", D(2)): (D(2), D("4.00"), 1), ("b", D(0)): (D(4), D(0), 1)}
    unpriced = [ln for ln in document["lines"] if ln["priced"] is False]
    assert [ln["step"] for ln in unpriced] == ["b"]
    assert document["unpriced_steps"] == 1
    assert document["total"] == D("4.00")

    books.refresh()
    rows = su_conn.execute(
        "select step, completed_steps, units from reporting.unpriced_completed_steps "
        "where client_id = %s and period = '2025-01'", [client]).fetchall()
    assert rows == [("b", 1, D(4))]


def test_price_changed_in_the_middle_of_a_month(books: Books) -> None:
    pipeline = books.make_pipeline(["a"])
    plain, override = books.make_client(), books.make_client()
    books.add_price(pipeline, "a", "0.10", "2025-01-01T00:00:00Z")
    books.add_price(pipeline, "a", "0.20", "2025-01-15T12:00:00Z")
    # `override` gets its own price from the 18th: it beats the default from then on.
    books.add_price(pipeline, "a", "0.15", "2025-01-18T00:00:00Z", client_id=override)
    for client in (plain, override):
        books.ingest([
            event(client, uid("job"), pipeline, "a", "completed", "2025-01-10T00:00:00Z", units=10),
            event(client, uid("job"), pipeline, "a", "completed", "2025-01-15T11:59:59.999Z",
                  units=1),
            # exactly at effective_from: the new price is in force
            event(client, uid("job"), pipeline, "a", "completed", "2025-01-15T12:00:00Z", units=2),
            event(client, uid("job"), pipeline, "a", "completed", "2025-01-20T00:00:00Z", units=5),
        ])
    before = {("a", D("0.1")): (D(11), D("1.10"), 2)}
    assert usage(books.invoice(plain, "2025-01")) == {
        **before, ("a", D("0.2")): (D(7), D("1.40"), 2)}
    assert books.invoice(plain, "2025-01")["total"] == D("2.50")
    assert usage(books.invoice(override, "2025-01")) == {
        **before, ("a", D("0.2")): (D(2), D("0.40"), 1), ("a", D("0.15")): (D(5), D("0.75"), 1)}
    assert books.invoice(override, "2025-01")["total"] == D("2.25")


def test_a_clients_own_price_beats_a_newer_default(books: Books) -> None:
    pipeline = books.make_pipeline(["a"])
    client = books.make_client()
    books.add_price(pipeline, "a", "0.30", "2025-01-01T00:00:00Z", client_id=client)
    books.add_price(pipeline, "a", "0.50", "2025-01-05T00:00:00Z")
    # two rows with the same effective_from: the later recorded one wins
    books.add_price(pipeline, "a", "0.40", "2025-01-01T00:00:00Z", client_id=client)
    books.ingest([
        event(client, uid("job"), pipeline, "a", "completed", "2025-01-10T00:00:00Z", units=10)])
    assert usage(books.invoice(client, "2025-01")) == {("a", D("0.4")): (D(10), D("4.00"), 1)}


def test_lines_round_half_away_from_zero_and_the_total_adds_rounded_lines(books: Books) -> None:
    pipeline, client = books.priced_pipeline(dict.fromkeys(("a", "b", "c"), "0.005"))
    job = uid("job")
    books.ingest([
        event(client, job, pipeline, "a", "completed", "2025-01-10T00:00:00Z", units=1),
        event(client, job, pipeline, "b", "completed", "2025-01-10T00:00:01Z", units=1),
        # 5 x 0.005 = 0.025: half away from zero is 0.03 (banker's rounding would say 0.02)
        event(client, job, pipeline, "c", "completed", "2025-01-10T00:00:02Z", units=5),
    ])
    document = books.invoice(client, "2025-01")
    assert usage(document) == {
        ("a", D("0.005")): (D(1), D("0.01"), 1),
        ("b", D("0.005")): (D(1), D("0.01"), 1),
        ("c", D("0.005")): (D(5), D("0.03"), 1),
    }
    # rounding the sum (0.035) would give 0.04; the total is the sum of the rounded lines
    assert document["total"] == D("0.05")


def test_the_period_is_the_utc_month_of_the_billed_completion(books: Books) -> None:
    pipeline, client = books.priced_pipeline({"a": "1", "b": "1"}, "2024-12-01T00:00:00Z")
    j1, j2 = uid("job"), uid("job")
    books.ingest([
        # 00:30 on 1 February in Paris is 23:30 on 31 January in UTC: January
        event(client, j1, pipeline, "a", "completed", "2025-02-01T00:30:00+01:00", units=1),
        # 23:30 on 31 January at UTC-1 is 00:30 on 1 February in UTC: February
        event(client, j2, pipeline, "a", "completed", "2025-01-31T23:30:00-01:00", units=2),
        # a retry that completes again in February moves the step's bill to February
        event(client, j1, pipeline, "b", "completed", "2025-01-31T23:00:00Z", units=3),
        event(client, j1, pipeline, "b", "completed", "2025-02-01T01:00:00Z", attempt=2, units=4),
    ])
    assert usage(books.invoice(client, "2025-01")) == {("a", D(1)): (D(1), D("1.00"), 1)}
    assert usage(books.invoice(client, "2025-02")) == {
        ("a", D(1)): (D(2), D("2.00"), 1), ("b", D(1)): (D(4), D("4.00"), 1)}


def test_graduated_tiers_count_units_per_client_and_month(books: Books) -> None:
    pipeline = books.make_pipeline(["a"])
    first, second = books.make_client(), books.make_client()
    books.add_price(pipeline, "a", "1", "2025-01-01T00:00:00Z",
              tiers=[("10", "0.5"), ("20", "0.25")])
    for client in (first, second):
        books.ingest([
            event(client, uid("job"), pipeline, "a", "completed", "2025-01-02T00:00:00Z", units=6),
            # units 6..12: 4 at 1, 2 at 0.5
            event(client, uid("job"), pipeline, "a", "completed", "2025-01-03T00:00:00Z", units=6),
            # units 12..27: 8 at 0.5, 7 at 0.25
            event(client, uid("job"), pipeline, "a", "completed", "2025-01-04T00:00:00Z",
                  units=15),
            # February starts from zero again
            event(client, uid("job"), pipeline, "a", "completed", "2025-02-04T00:00:00Z", units=3),
        ])
        assert usage(books.invoice(client, "2025-01")) == {
            ("a", D(1)): (D(10), D("10.00"), 2),
            ("a", D("0.5")): (D(10), D("5.00"), 1),
            ("a", D("0.25")): (D(7), D("1.75"), 0),
        }
        assert usage(books.invoice(client, "2025-02")) == {("a", D(1)): (D(3), D("3.00"), 1)}


def test_prices_are_chosen_in_the_clients_currency(books: Books) -> None:
    pipeline = books.make_pipeline(["a"])
    pounds = books.make_client(currency="GBP")
    books.add_price(pipeline, "a", "1", "2025-01-01T00:00:00Z")  # EUR default
    books.ingest([
        event(pounds, uid("job"), pipeline, "a", "completed", "2025-01-10T00:00:00Z", units=2)])
    document = books.invoice(pounds, "2025-01")
    assert document["currency"] == "GBP"
    assert usage(document) == {("a", D(0)): (D(2), D(0), 1)}  # no GBP price: unpriced
    books.add_price(pipeline, "a", "0.8", "2025-01-01T00:00:00Z", currency="GBP")
    assert usage(books.invoice(pounds, "2025-01")) == {("a", D("0.8")): (D(2), D("1.60"), 1)}


def test_a_monthly_minimum_tops_up_a_small_month(books: Books) -> None:
    pipeline, client = books.priced_pipeline({"a": "1"})
    for month, amount in (("2025-01-01", "50"), ("2025-03-01", "0"), ("2025-04-01", "5")):
        books.set_minimum(client, D(amount), month)
    books.ingest([
        event(client, uid("job"), pipeline, "a", "completed", "2025-01-10T00:00:00Z",
              units=D("12.6")),
        event(client, uid("job"), pipeline, "a", "completed", "2025-04-10T00:00:00Z", units=8),
    ])

    def minimum_lines(period: str) -> list[Decimal]:
        return [ln["amount"] for ln in books.invoice(client, period)["lines"]
                if ln["kind"] == "minimum"]

    assert minimum_lines("2025-01") == [D("37.40")]
    assert books.invoice(client, "2025-01")["total"] == D("50.00")
    assert minimum_lines("2025-02") == [D(50)]  # nothing used: the whole minimum
    assert minimum_lines("2025-03") == []  # minimum ended
    assert minimum_lines("2025-04") == []  # usage 8.00 is above the minimum of 5
    assert books.invoice(client, "2025-04")["total"] == D("8.00")


def test_the_raw_event_recomputation_agrees_with_the_ingest_trigger(
        su_conn: psycopg.Connection, books: Books) -> None:
    """The charges kept by the ingest trigger equal a recomputation from the raw events."""
    pipeline, client = books.priced_pipeline({"a": None, "b": None})
    books.add_price(pipeline, "a", "0.7", "2025-01-01T00:00:00Z", tiers=[("3", "0.35")])
    job = uid("job")
    books.ingest([
        event(client, job, pipeline, "a", "completed", "2025-01-03T00:00:00Z", units=2),
        event(client, job, pipeline, "a", "completed", "2025-01-04T00:00:00Z", attempt=2,
              units=5),
        event(client, job, pipeline, "a", "failed", "2025-01-05T00:00:00Z", attempt=3),
        event(client, job, pipeline, "b", "completed", "2025-01-05T00:00:00Z", units=1),
        event(client, uid("job"), pipeline, "a", "completed", "2025-02-03T00:00:00Z", units=1),
    ])
    query = ("select period, pipeline, step, unit_price, priced, completed_steps, units, amount "
             "from ledger._usage_lines_of(%s, null, null, %s) order by 1, 2, 3, 4")
    live = su_conn.execute(query, [client, "job_steps"]).fetchall()
    assert live == su_conn.execute(query, [client, "events"]).fetchall()
    assert len(live) == 4


def test_the_worked_example_of_docs_billing(books: Books) -> None:
    """docs/billing.md, "A worked example": every figure there comes from this test."""
    pipeline = books.make_pipeline(["dicom-intake", "lesion-detection", "report"])
    client = books.make_client()
    books.add_price(pipeline, "lesion-detection", "2.50", "2025-01-01T00:00:00Z")
    books.add_price(pipeline, "lesion-detection", "2.75", "2026-01-15T12:00:00Z")
    books.add_price(pipeline, "dicom-intake", "0.02", "2025-01-01T00:00:00Z", client_id=client,
              tiers=[("10000", "0.015")])
    books.set_minimum(client, 250, "2026-01-01")
    a, b, c, late = "job-a", "job-b", "job-c", "job-d"
    b_done = event(client, b, pipeline, "lesion-detection", "completed", "2026-01-20T09:00:00Z")
    books.ingest([
        event(client, a, pipeline, "dicom-intake", "completed", "2026-01-10T08:00:00Z",
              units=6000),
        event(client, a, pipeline, "lesion-detection", "failed", "2026-01-10T08:30:00Z"),
        event(client, a, pipeline, "lesion-detection", "completed", "2026-01-10T08:45:00Z",
              attempt=2),
        event(client, a, pipeline, "report", "completed", "2026-01-10T09:00:00Z"),
        event(client, b, pipeline, "dicom-intake", "completed", "2026-01-20T08:00:00Z",
              units=6000),
        b_done,
        {**b_done},  # sent twice: a duplicate
        event(client, c, pipeline, "lesion-detection", "completed", "2026-01-15T11:00:00Z"),
    ], expect_rejected=0)
    january = books.invoice(client, "2026-01")
    assert [(ln["kind"], ln["step"], ln["units"], ln["unit_price"], ln["amount"],
             ln["completed_steps"]) for ln in january["lines"]] == [
        ("usage", "dicom-intake", 10000, D("0.02"), D("200.00"), 2),
        ("usage", "dicom-intake", 2000, D("0.015"), D("30.00"), 0),
        ("usage", "lesion-detection", 1, D("2.75"), D("2.75"), 1),
        ("usage", "lesion-detection", 2, D("2.5"), D("5.00"), 2),
        ("usage", "report", 1, 0, D("0.00"), 1),
        ("minimum", None, None, None, D("12.25"), None),
    ]
    assert (january["usage_amount"], january["total"]) == (D("237.75"), D("250.00"))
    frozen = books.finalize(client, "2026-01")
    books.ingest([
        event(client, late, pipeline, "lesion-detection", "completed", "2026-01-28T10:00:00Z")])
    assert books.invoice(client, "2026-01")["total"] == frozen["total"]
    february = books.invoice(client, "2026-02")
    assert [(ln["kind"], ln["for_period"], ln["step"], ln["units"], ln["amount"])
            for ln in february["lines"]] == [
        ("minimum", "2026-02", None, None, D(250)),
        ("adjustment", "2026-01", "lesion-detection", 1, D("2.75")),
        ("adjustment", "2026-01", None, None, D("-2.75")),
    ]
    assert february["total"] == D(250)
