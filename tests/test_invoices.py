"""Real invoices: numbered per client (no global key), issue and due dates from the client's
payment terms, and a PDF printed from the same template as the HTML view, which the invoice's
client (and only it) downloads."""

from __future__ import annotations

import io
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pypdf
import pytest

from billing_support import event, finalize, ingest, make_client, make_pipeline, uid
from stacks import cli_env
from stepledger.settings import Settings


def pdf_text(content: bytes) -> str:
    reader = pypdf.PdfReader(io.BytesIO(content))
    return "\n".join(page.extract_text() for page in reader.pages)


def billed_client(su_conn: psycopg.Connection, api_url: str, admin: str, months: list[str],
                  terms: int | None = None) -> tuple[str, str]:
    pipeline = make_pipeline(su_conn, ["scan", "report"])
    client = make_client(su_conn)
    su_conn.execute("select ledger.add_price(%s, 'scan', 0.5, p_effective_from => '2020-01-01')",
                    [pipeline])
    if terms is not None:
        su_conn.execute("select ledger.update_client(%s, p_payment_terms_days => %s)",
                        [client, terms])
    ingest(api_url, admin, [event(client, uid("job"), pipeline, "scan", "completed",
                                  f"{month}-10T08:00:00Z", units=7) for month in months])
    return client, pipeline


@pytest.fixture
def admin(jwt_for: Callable[..., str]) -> str:
    return jwt_for("admin")


def test_invoices_are_numbered_per_client_with_issue_and_due_dates(
        su_conn: psycopg.Connection, api_url: str, admin: str) -> None:
    a, _ = billed_client(su_conn, api_url, admin, ["2025-01", "2025-02"], terms=45)
    b, _ = billed_client(su_conn, api_url, admin, ["2025-01"])
    first, second = finalize(su_conn, a, "2025-01"), finalize(su_conn, a, "2025-02")
    other = finalize(su_conn, b, "2025-01")
    assert [(i["number"], i["invoice_no"]) for i in (first, second, other)] == [
        (1, f"{a}-0001"), (2, f"{a}-0002"), (1, f"{b}-0001")]
    today = datetime.now(UTC).date().isoformat()
    assert (first["issued_on"], first["payment_terms_days"]) == (today, 45)
    assert (date.fromisoformat(first["due_on"]) - date.fromisoformat(today)).days == 45
    assert (date.fromisoformat(other["due_on"]) - date.fromisoformat(today)).days == 30
    # The same numbers in two clients: the keys are per client, as a Citus distribution needs.
    keys = su_conn.execute(
        "select array_agg(pg_get_indexdef(indexrelid) order by 1) from pg_index "
        "where indrelid = 'ledger.invoices'::regclass and indisunique").fetchone()
    assert keys is not None
    assert all("(client_id," in k for k in keys[0]), keys[0]


def test_the_draft_shows_payment_terms_and_no_number(su_conn: psycopg.Connection, api_url: str,
                                                     admin: str) -> None:
    client, _ = billed_client(su_conn, api_url, admin, ["2025-03"], terms=14)
    draft = httpx.post(f"{api_url}/rpc/invoice", json={"client_id": client, "period": "2025-03"},
                       headers={"Authorization": f"Bearer {admin}"}).json()
    assert (draft["status"], draft["number"], draft["due_on"], draft["payment_terms_days"]) == (
        "draft", None, None, 14)


def test_a_pdf_is_printed_from_the_invoice_template(
        su_conn: psycopg.Connection, api_url: str, admin: str, settings: Settings,
        cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path) -> None:
    client, pipeline = billed_client(su_conn, api_url, admin, ["2025-04"], terms=20)
    draft = cli("invoice", client, "2025-04", "--format", "pdf", "-o", str(tmp_path / "d.pdf"))
    assert draft.returncode == 0, draft.stderr
    text = pdf_text((tmp_path / "d.pdf").read_bytes())
    assert "Invoice (draft)" in text and "Payment terms 20 days from the issue date" in text

    done = cli("invoice", client, "2025-04", "--finalize", "--format", "pdf",
               "-o", str(tmp_path / "f.pdf"))
    assert done.returncode == 0, done.stderr
    assert f"invoice {client}-0001 of {client}" in done.stderr
    text = pdf_text((tmp_path / "f.pdf").read_bytes())
    for expected in (f"Invoice {client}-0001", f"Client {client} ({client})", "FINALIZED",
                     f"{pipeline} scan 1 7 0.5 3.50", "Total 3.50 EUR", "Issue date",
                     "Due date"):
        assert expected in text, (expected, text)
    # The same template as the HTML view: what one says, the other says.
    html = cli("invoice", client, "2025-04", "--format", "html")
    assert html.returncode == 0 and f"Invoice {client}-0001" in html.stdout
    # --finalize rendered the PDF the client downloads, with the same text.
    stored = su_conn.execute("select document from ledger.invoice_documents "
                             "where client_id = %s", [client]).fetchone()
    assert stored is not None and f"Invoice {client}-0001" in pdf_text(stored[0])

    assert "a PDF is binary" in subprocess.run(
        [sys.executable, "-c", "import pty, sys; pty.spawn(sys.argv[1:])", sys.executable, "-m",
         "stepledger", "invoice", client, "2025-04", "--format", "pdf"],
        env=cli_env(settings), capture_output=True, text=True, timeout=120).stdout


def wait_for_pdf(http: httpx.Client, client: str, period: str, timeout: float = 90.0
                 ) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        answer = http.get("/rpc/invoice_pdf", params={"client_id": client, "period": period},
                          headers={"Accept": "application/pdf"})
        if answer.status_code != 404 or time.monotonic() > deadline:
            return answer
        time.sleep(0.5)


def test_a_client_downloads_its_own_invoice_pdf_and_no_one_elses(
        su_conn: psycopg.Connection, api_url: str, admin: str, jwt_for: Callable[..., str],
        api_token: Callable[..., str]) -> None:
    mine, _ = billed_client(su_conn, api_url, admin, ["2025-05"])
    theirs, _ = billed_client(su_conn, api_url, admin, ["2025-05"])
    # Finalized over HTTP, as the web app's button does; the stack's scheduler renders the PDF.
    for client in (mine, theirs):
        answer = httpx.post(f"{api_url}/rpc/finalize_invoice",
                            json={"client_id": client, "period": "2025-05"},
                            headers={"Authorization": f"Bearer {admin}"}, timeout=60)
        assert answer.status_code == 200, answer.text

    def as_(token: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=api_url, headers=headers, timeout=60)

    with as_(jwt_for("client", mine)) as http:
        own = wait_for_pdf(http, mine, "2025-05")
        assert own.status_code == 200, own.text
        assert own.headers["content-type"] == "application/pdf"
        assert f"Invoice {mine}-0001" in pdf_text(own.content)
        # The other client's invoice exists (the admin gets it) but is as absent as a missing one.
        other = http.get("/rpc/invoice_pdf", params={"client_id": theirs, "period": "2025-05"},
                         headers={"Accept": "application/pdf"})
        assert (other.status_code, other.json()["code"]) == (404, "SL412")
        for client, period, code in ((mine, "2025-13", "SL405"), ("x' or 1=1 --", "2025-05",
                                                                   "SL412")):
            bad = http.get("/rpc/invoice_pdf", params={"client_id": client, "period": period},
                           headers={"Accept": "application/pdf"})
            assert bad.json()["code"] == code, bad.text
    with as_(admin) as http:
        assert wait_for_pdf(http, theirs, "2025-05").status_code == 200
    refused: dict[str, Any] = {}
    for who, token in (("ingest", api_token(mine)), ("anon", None)):
        with as_(token) as http:
            refused[who] = http.get("/rpc/invoice_pdf", params={"client_id": mine,
                                                                "period": "2025-05"},
                                    headers={"Accept": "application/pdf"}).status_code
    assert set(refused.values()) <= {401, 403}, refused


def test_a_stored_pdf_never_changes(su_conn: psycopg.Connection, api_url: str, admin: str
                                    ) -> None:
    client, _ = billed_client(su_conn, api_url, admin, ["2025-06"])
    finalize(su_conn, client, "2025-06")
    su_conn.execute("insert into ledger.invoice_documents (client_id, period, document, sha256, "
                    "rendered_by) values (%s, '2025-06-01', 'x', 'x', 'test') "
                    "on conflict do nothing", [client])
    with pytest.raises(psycopg.Error) as failure:
        su_conn.execute("update ledger.invoice_documents set document = 'y' "
                        "where client_id = %s", [client])
    assert failure.value.sqlstate == "SL409"


def test_one_render_run_renders_every_missing_pdf(settings: Settings, su_conn: psycopg.Connection,
                                                   api_url: str, admin: str) -> None:
    """`stepledger billing render-pdfs` (what the scheduler starts) renders every invoice still
    missing its PDF, not only the first: here two months of one client, finalized in a
    transaction the scheduler cannot see yet, so only this run can render them."""
    from stepledger.operator.billing.documents import render_missing

    client, _ = billed_client(su_conn, api_url, admin, ["2025-07", "2025-08"])
    with psycopg.connect(settings.dsn("postgres")) as conn:
        for month in ("2025-07", "2025-08"):
            finalize(conn, client, month)
        assert render_missing(conn, limit=None, client_id=client) == 2
        rendered = conn.execute("select to_char(period, 'YYYY-MM') from ledger.invoice_documents "
                                "where client_id = %s order by 1", [client]).fetchall()
        assert [r[0] for r in rendered] == ["2025-07", "2025-08"]
        conn.rollback()
