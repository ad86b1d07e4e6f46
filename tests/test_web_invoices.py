"""Invoices in the browser: an admin finalizes last month's invoice from the billing page, and the
client downloads its PDF from the usage page, at desktop and phone sizes."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg
import pypdf
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from billing_support import event, ingest, make_client, make_pipeline, uid
from stepledger.settings import Settings
from web_helpers import CHROMIUM, CHROMIUM_ARGS, DESKTOP, PHONE, screenshot, session_script

pytestmark = pytest.mark.stack
expect.set_options(timeout=20_000)


def in_own_thread(scenario: Callable[[Browser], None]) -> None:
    """Run a browser scenario on a thread of its own: Playwright's sync API refuses to start in
    a thread where another test module's Playwright (tests/test_web.py) is running."""
    def run() -> None:
        if not Path(CHROMIUM).exists():
            pytest.fail(f"{CHROMIUM} is missing: run `bash scripts/bootstrap.sh --test`")
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                         headless=True)
            try:
                scenario(browser)
            finally:
                browser.close()
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(run).result()


def last_month() -> str:
    first = datetime.now(UTC).replace(day=1)
    return (first - timedelta(days=1)).strftime("%Y-%m")


def open_page(browser: Browser, settings: Settings, token: str, role: str, client: str | None,
              path: str, viewport: dict[str, int], errors: list[str]) -> Page:
    answer = {"token": token, "role": role, "client_id": client,
              "expires_at": (datetime.now(UTC) + timedelta(hours=1)).isoformat()}
    context = browser.new_context(viewport=viewport, locale="en-US", accept_downloads=True)
    context.add_init_script(session_script(answer, f"{role}@invoices.example"))
    page = context.new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{settings.web_url}/#{path}")
    return page


def downloaded_pdf_text(page: Page) -> tuple[str, str]:
    with page.expect_download() as info:
        page.get_by_role("button", name="Download PDF").click()
    download = info.value
    content = Path(download.path()).read_bytes()
    assert content.startswith(b"%PDF")
    text = "\n".join(p.extract_text() for p in pypdf.PdfReader(io.BytesIO(content)).pages)
    return download.suggested_filename, text


def wait_for_pdf(api_url: str, token: str, client: str, period: str) -> None:
    deadline = time.monotonic() + 90
    while httpx.get(f"{api_url}/rpc/invoice_pdf", params={"client_id": client, "period": period},
                    headers={"Authorization": f"Bearer {token}", "Accept": "application/pdf"},
                    timeout=30).status_code != 200:
        assert time.monotonic() < deadline, "the scheduler did not render the PDF"
        time.sleep(0.5)


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_admin_finalizes_and_the_client_downloads_the_pdf(
        settings: Settings, su_conn: psycopg.Connection, api_url: str,
        jwt_for: Callable[..., str], viewport: dict[str, int]) -> None:
    in_own_thread(lambda browser: finalize_and_download(browser, settings, su_conn, api_url,
                                                        jwt_for, viewport))


def finalize_and_download(browser: Browser, settings: Settings, su_conn: psycopg.Connection,
                          api_url: str, jwt_for: Callable[..., str],
                          viewport: dict[str, int]) -> None:
    period = last_month()
    pipeline = make_pipeline(su_conn, ["scan"])
    client = make_client(su_conn)
    su_conn.execute("select ledger.add_price(%s, 'scan', 1.25, p_effective_from => '2020-01-01')",
                    [pipeline])
    admin = jwt_for("admin", sub="invoice-tests")
    ingest(api_url, admin, [event(client, uid("job"), pipeline, "scan", "completed",
                                  f"{period}-15T10:00:00Z", units=4)])
    errors: list[str] = []
    size = "phone" if viewport == PHONE else "desktop"

    page = open_page(browser, settings, admin, "admin", None,
                     f"/billing?period={period}&client={client}", viewport, errors)
    page.get_by_role("button", name="Finalize invoice").click()
    dialog = page.locator("dialog")
    expect(dialog).to_contain_text("never changes again")
    dialog.get_by_role("button", name="Finalize invoice").click()
    expect(page.locator(".invoice")).to_contain_text(f"Invoice {client}-0001, finalized")
    expect(page.get_by_role("button", name="Finalize invoice")).to_have_count(0)
    expect(page.locator(".invoice-dates")).to_contain_text("due")
    wait_for_pdf(api_url, admin, client, period)
    name, text = downloaded_pdf_text(page)
    assert name == f"{client}-0001.pdf" and f"Invoice {client}-0001" in text
    screenshot(page, f"billing-finalized-{size}")

    mine = jwt_for("client", client)
    page = open_page(browser, settings, mine, "client", client, f"/usage?period={period}",
                     viewport, errors)
    expect(page.get_by_role("button", name="Finalize invoice")).to_have_count(0)
    name, text = downloaded_pdf_text(page)
    assert name == f"{client}-0001.pdf"
    assert "Total 5.00 EUR" in text and "FINALIZED" in text
    screenshot(page, f"usage-invoice-pdf-{size}")

    # This month is not over: no finalize button for it.
    page = open_page(browser, settings, admin, "admin", None,
                     f"/billing?period={datetime.now(UTC):%Y-%m}&client={client}", viewport,
                     errors)
    expect(page.locator(".invoice")).to_be_visible()
    expect(page.get_by_role("button", name="Finalize invoice")).to_have_count(0)
    assert errors == []

