"""The billing commands: `stepledger price`, `stepledger invoice`, `stepledger billing` (§4b)."""

from __future__ import annotations

import csv
import html.parser
import io
import json
import subprocess
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from billing_support import event, ingest, invoice, make_client, make_pipeline, uid
from stacks import one_line_error
from stepledger.db import loads

D = Decimal


@pytest.fixture
def setup(su_conn: psycopg.Connection, api_url: str, jwt_for: Callable[..., str]
          ) -> dict[str, str]:
    pipeline = make_pipeline(su_conn, ["a", "b"])
    client = make_client(su_conn)
    ingest(api_url, jwt_for("admin"), [
        event(client, uid("job"), pipeline, "a", "completed", "2025-01-10T00:00:00Z", units=1500),
        event(client, uid("job"), pipeline, "b", "completed", "2025-01-11T00:00:00Z", units=1),
    ])
    return {"pipeline": pipeline, "client": client}


def test_price_set_adds_rows_and_records_the_tool(
        cli: Callable[..., subprocess.CompletedProcess[str]], su_conn: psycopg.Connection,
        setup: dict[str, str]) -> None:
    pipeline, client = setup["pipeline"], setup["client"]
    done = cli("price", "set", pipeline, "a", "0.02", "--from", "2025-01-01",
               "--tier", "1000:0.01", "--note", "volume deal")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("stepledger: price ")
    done = cli("price", "set", pipeline, "b", "4.5", "--client", client,
               "--from", "2025-01-01T00:00:00+01:00")
    assert done.returncode == 0, done.stderr
    rows = su_conn.execute(
        "select step, client_id, unit_price, currency, effective_from::text, tiers::text, note, "
        "recorded_via from ledger.prices where pipeline = %s order by price_id",
        [pipeline]).fetchall()
    assert [r[:7] for r in rows] == [
        ("a", None, D("0.02"), "EUR", "2025-01-01 00:00:00+00",
         '[{"from_units": 1000, "unit_price": 0.01}]', "volume deal"),
        ("b", client, D("4.5"), "EUR", "2024-12-31 23:00:00+00", "[]", None),
    ]
    assert all(r[7].startswith("stepledger price set (") for r in rows)
    document = invoice(su_conn, client, "2025-01")
    assert document["total"] == D("29.50")  # 1000 x 0.02 + 500 x 0.01 + 1 x 4.5

    listed = cli("price", "list", "--pipeline", pipeline, "--json")
    assert listed.returncode == 0, listed.stderr
    assert [(r["step"], r["unit_price"], r["until"]) for r in loads(listed.stdout)] == \
        [("a", D("0.02"), None), ("b", D("4.5"), None)]
    text = cli("price", "list", "--pipeline", pipeline)
    assert text.returncode == 0 and text.stdout.count("\n") == 2
    assert "tiers 1000+:0.01" in text.stdout


@pytest.mark.parametrize(("args", "reason"), [
    (["price", "set", "{pipeline}", "a", "cheap"], "is not a number"),
    (["price", "set", "{pipeline}", "a", "-1"], "must be a number >= 0"),
    (["price", "set", "{pipeline}", "a", "1", "--tier", "1000"], "FROM_UNITS:UNIT_PRICE"),
    (["price", "set", "{pipeline}", "a", "1", "--tier", "0:1"], "above 0"),
    (["price", "set", "{pipeline}", "a", "1", "--from", "next tuesday"], "--from"),
    (["price", "set", "{pipeline}", "zz", "1"], 'has no step "zz"'),
    (["price", "set", "{pipeline}", "a", "1", "--client", "nobody-here"], "unknown client"),
    (["price", "set", "{pipeline}", "a", "1", "--client", "{client}", "--currency", "GBP"],
     "is billed in EUR"),
    (["price", "set", "{pipeline}", "a", "1", "--tier", "10:1", "--tier", "5:1"],
     "must be greater than"),
    (["price", "minimum", "{client}", "10", "--from", "2025-01-15"], "is not a month"),
    (["price", "minimum", "nobody-here", "10", "--from", "2025-01"], "unknown client"),
    (["invoice", "{client}", "2025-1"], "is not a month"),
    (["invoice", "nobody-here", "2025-01"], "unknown client"),
    (["invoice", "{client}", "2999-01", "--finalize"], "not over yet"),
])
def test_bad_input_exits_non_zero_with_one_line(
        cli: Callable[..., subprocess.CompletedProcess[str]], setup: dict[str, str],
        args: list[str], reason: str) -> None:
    proc = cli(*[a.format(**setup) for a in args])
    assert reason in one_line_error(proc)


def test_invoice_renders_json_csv_and_html(
        cli: Callable[..., subprocess.CompletedProcess[str]], su_conn: psycopg.Connection,
        setup: dict[str, str], tmp_path: Path) -> None:
    pipeline, client = setup["pipeline"], setup["client"]
    assert cli("price", "set", pipeline, "a", "0.015", "--from", "2025-01-01").returncode == 0
    assert cli("price", "minimum", client, "30", "--from", "2025-01").returncode == 0
    expected = invoice(su_conn, client, "2025-01")
    assert expected["total"] == D("30")

    as_json = cli("invoice", client, "2025-01")
    assert as_json.returncode == 0, as_json.stderr
    document = loads(as_json.stdout)
    # generated_at and source (materialized or live) depend on when the scheduler's refresh
    # after the price change ran; the document is the same either way.
    assert {k: v for k, v in document.items() if k not in ("generated_at", "source")} == \
        {k: v for k, v in expected.items() if k not in ("generated_at", "source")}
    assert list(document)[:4] == ["client_id", "period", "status", "currency"]

    as_csv = cli("invoice", client, "2025-01", "--format", "csv")
    assert as_csv.returncode == 0, as_csv.stderr
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert [(r["kind"], r["step"], r["units"], r["unit_price"], r["amount"]) for r in rows] == [
        ("usage", "a", "1500", "0.015", "22.50"),
        ("usage", "b", "1", "0", "0.00"),
        ("minimum", "", "", "", "7.50"),
        ("usage_amount", "", "", "", "22.50"),
        ("minimum_amount", "", "", "", "7.50"),
        ("adjustments_amount", "", "", "", "0"),
        ("total", "", "", "", "30.00"),
    ]

    target = tmp_path / "invoice.html"
    as_html = cli("invoice", client, "2025-01", "--format", "html", "--output", str(target))
    assert as_html.returncode == 0, as_html.stderr
    assert "written to" in as_html.stderr
    page = target.read_text()
    cells = _cells(page)
    assert [pipeline, "a", "1", "1500", "0.015", "22.50"] in _rows(cells, 6)
    assert "30.00 EUR" in page and "draft" in page
    assert page.count("<tr") >= 4


def test_invoice_finalize_from_the_command_line(
        cli: Callable[..., subprocess.CompletedProcess[str]], setup: dict[str, str]) -> None:
    client = setup["client"]
    done = cli("invoice", client, "2025-01", "--finalize", "--format", "json")
    assert done.returncode == 0, done.stderr
    document = loads(done.stdout)
    assert document["status"] == "finalized"
    assert document["finalized_by"] == "stepledger_owner"
    again = cli("invoice", client, "2025-01", "--finalize")
    assert "already finalized" in one_line_error(again)
    shown = cli("invoice", client, "2025-01", "--format", "html")
    assert shown.returncode == 0 and f"{client}-0001" in shown.stdout


def test_billing_refresh_and_status(cli: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    done = cli("billing", "refresh")
    assert done.returncode in (0, 4), done.stderr  # 4: the scheduler was refreshing just then
    result = json.loads(done.stdout)
    assert "refreshed" in result
    status = cli("billing", "status")
    assert status.returncode == 0, status.stderr
    info = json.loads(status.stdout)
    assert {"refreshed_at", "pending_changes", "age_s"} <= set(info)


class _Cells(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.cells: list[str] = []
        self._in = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "td":
            self._in = True
            self.cells.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._in = False

    def handle_data(self, data: str) -> None:
        if self._in:
            self.cells[-1] += data


def _cells(page: str) -> list[str]:
    parser = _Cells()
    parser.feed(page)
    return [c.split("(no price")[0].strip() for c in parser.cells]


def _rows(cells: list[str], width: int) -> list[list[str]]:
    return [cells[i:i + width] for i in range(0, len(cells) - width + 1)]
