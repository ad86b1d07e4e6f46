"""The web app in a real browser: Debian's Chromium driven by Playwright, against the session
stack's nginx (static app + /api/ → PostgREST), with data loaded through the real API.

Screenshots of every main page at desktop and phone width go to .artifacts/web/ (or
$STEPLEDGER_ARTIFACTS/web/); the best are copied by hand into docs/screenshots/.
"""

from __future__ import annotations

import csv
import io
import itertools
import re
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import psycopg
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, expect, sync_playwright

from notify_support import Receiver, verify_signature
from stepledger.settings import Settings
from web_helpers import (
    CHROMIUM,
    CHROMIUM_ARGS,
    CLIENTS,
    DESKTOP,
    PHONE,
    WebData,
    WebUser,
    admin_http,
    axe_violations,
    job_events,
    load_web_data,
    login_answer,
    screenshot,
    session_script,
    wait_until,
)

pytestmark = pytest.mark.stack
# Live refresh polls every second in these tests; a loaded 2-core machine needs some margin.
expect.set_options(timeout=15_000)

SESSION_TOKEN = "JSON.parse(sessionStorage.getItem('stepledger.session')).token"
STEPS = ["dicom-intake", "integrity-check", "deidentification", "metadata-extraction",
         "series-selection", "format-conversion", "quality-control"]


# -- fixtures --------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def playwright_instance() -> Iterator[Playwright]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run `bash scripts/bootstrap.sh --test` (installs "
                    "Debian's chromium) or set STEPLEDGER_CHROMIUM")
    pw = sync_playwright().start()
    try:
        yield pw
    finally:
        pw.stop()


@pytest.fixture(scope="session")
def browser(playwright_instance: Playwright) -> Iterator[Browser]:
    browser = playwright_instance.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                                  headless=True)
    try:
        yield browser
    finally:
        browser.close()


@pytest.fixture(scope="session")
def web_data(stack: Settings, su_conn: psycopg.Connection,
             jwt_for: Callable[..., str]) -> WebData:
    return load_web_data(stack, su_conn, jwt_for)


@pytest.fixture(scope="session")
def admin_token(jwt_for: Callable[..., str]) -> str:
    """An operator token signed with the stack's secret, for reading the truth the UI must show."""
    return jwt_for("admin", sub="web-tests")


@pytest.fixture
def admin_api(stack: Settings, admin_token: str) -> Iterator[httpx.Client]:
    with admin_http(stack, admin_token) as http:
        yield http


class App:
    """Opens browser contexts on the web app, signed in or not, and keeps an eye on errors."""

    def __init__(self, browser: Browser, settings: Settings, data: WebData,
                 jwt_for: Callable[..., str]) -> None:
        self.browser = browser
        self.settings = settings
        self.data = data
        self.jwt_for = jwt_for
        self.contexts: list[BrowserContext] = []
        self.page_errors: list[str] = []

    @property
    def url(self) -> str:
        return self.settings.web_url

    def page(self, viewport: dict[str, int] = DESKTOP, timezone_id: str = "Europe/Paris",
             session: dict[str, Any] | None = None, email: str | None = None,
             poll_ms: int = 1000) -> Page:
        context = self.browser.new_context(viewport=viewport, timezone_id=timezone_id,
                                           locale="en-US", accept_downloads=True)
        context.set_default_timeout(20000)
        context.add_init_script(f"globalThis.STEPLEDGER_POLL_MS = {poll_ms};")
        if session is not None:
            context.add_init_script(session_script(session, email))
        self.contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda exc: self.page_errors.append(str(exc)))
        # The content security policy of the web server must not block anything the app does.
        page.on("console", lambda msg: self.page_errors.append(msg.text)
                if msg.type == "error" and "Content Security Policy" in msg.text else None)
        return page

    def signed_in(self, who: str, path: str = "/", **kwargs: Any) -> Page:
        """A page signed in as a fixture user (a token from POST /rpc/login), opened at `path`."""
        user = self.data.users[who]
        answer = login_answer(self.settings, user)
        page = self.page(session=answer, email=user.email, **kwargs)
        page.goto(f"{self.url}/#{path}")
        return page

    def close(self) -> None:
        for context in self.contexts:
            context.close()


@pytest.fixture
def app(browser: Browser, stack: Settings, web_data: WebData,
        jwt_for: Callable[..., str]) -> Iterator[App]:
    instance = App(browser, stack, web_data, jwt_for)
    try:
        yield instance
    finally:
        instance.close()
    assert not instance.page_errors, f"uncaught errors in the page: {instance.page_errors}"


def sign_in_with_form(page: Page, url: str, user: WebUser) -> None:
    page.goto(f"{url}/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_label("Email").fill(user.email)
    page.get_by_label("Password").fill(user.password)
    page.get_by_role("button", name="Sign in").click()


# -- sign-in and session ---------------------------------------------------------------------------
def test_client_signs_in_sees_only_its_jobs_and_the_failing_step_error(
        app: App, web_data: WebData, admin_api: httpx.Client) -> None:
    me, other = "lakeside", "hillcrest"
    page = app.page()
    sign_in_with_form(page, app.url, web_data.users[me])

    expect(page.get_by_role("heading", name="Jobs", exact=True)).to_be_visible()
    rows = page.locator("tr.job-row")
    expect(rows.first).to_be_visible()
    clients = set(rows.evaluate_all("rows => rows.map(r => r.dataset.client)"))
    assert clients == {me}

    # Counts per state are the client's own: they equal what the API says for this client.
    total = len(admin_api.get("/jobs", params={"client_id": f"eq.{me}", "select": "job_id"}).json())
    expect(page.locator('[data-state="total"]')).to_have_text(str(total))

    # Another client's job: invisible to this client, even searched for by id ...
    other_job = web_data.failed_jobs[other]
    page.get_by_label("Job ID starts with").fill(other_job)
    expect(page.get_by_text("No jobs match these filters")).to_be_visible()
    page.goto(f"{app.url}/#/jobs/{other}/{other_job}")
    expect(page.get_by_text("Job not found")).to_be_visible()
    # ... while an admin sees the same job.
    admin_page = app.signed_in("admin", f"/jobs/{other}/{other_job}")
    expect(admin_page.get_by_role("heading", name=other_job)).to_be_visible()
    expect(admin_page.locator(".failure")).to_be_visible()

    # Open our failed job from the list: the failing step's error comes first.
    mine = web_data.failed_jobs[me]
    page.goto(f"{app.url}/#/jobs?status=failed")
    page.get_by_label("Job ID starts with").fill(mine)
    page.get_by_role("link", name=mine).click()
    expect(page.get_by_role("heading", name=mine)).to_be_visible()

    runs = admin_api.get("/step_runs", params={
        "client_id": f"eq.{me}", "job_id": f"eq.{mine}", "status": "eq.failed",
        "order": "step_index.desc"}).json()
    failing = runs[0]
    steps = admin_api.get("/pipeline_steps", params={"pipeline": "eq.botimage",
                                                     "step": f"eq.{failing['step']}"}).json()
    failure = page.locator(".failure")
    expect(failure).to_contain_text(
        f"Failed at step {failing['step_index']} of 20: {steps[0]['title']}")
    expect(failure).to_contain_text(failing["error_code"])
    expect(failure).to_contain_text(failing["error_message"])
    # It is the first thing after the heading, before the summary and the timeline.
    order = page.evaluate(
        "() => [...document.querySelectorAll('.job-body > *')].map(n => n.className)")
    assert order[0].startswith("alert alert-error failure"), order
    step_item = page.locator(f"#step-{failing['step']}")
    expect(step_item).to_have_class(re.compile(r"\bstep-failing\b"))
    expect(step_item.locator(".attempt-error")).to_contain_text(failing["error_message"])


def test_wrong_password_is_refused_without_saying_which_part(app: App, web_data: WebData) -> None:
    page = app.page()
    user = web_data.users["harbourview"]
    wrong = WebUser(user.email, "not-the-password", "client", "harbourview")
    sign_in_with_form(page, app.url, wrong)
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("The email or password is not correct.")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('stepledger.session')") is None
    # Empty fields are caught before any request.
    page.get_by_label("Email").fill("")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_text("Enter your email address.")).to_be_visible()
    # The right password then works.
    page.get_by_label("Email").fill(user.email)
    page.get_by_label("Password").fill(user.password)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Jobs", exact=True)).to_be_visible()


def test_sign_out_and_back_needs_a_new_sign_in(app: App, web_data: WebData) -> None:
    page = app.signed_in("hillcrest", "/jobs")
    expect(page.locator("tr.job-row").first).to_be_visible()
    page.locator("a.job-link").first.click()
    expect(page.locator(".job-summary")).to_be_visible()
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.get_by_text("You have signed out.")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('stepledger.session')") is None
    page.go_back()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.locator("tr.job-row")).to_have_count(0)


def test_expired_session_returns_to_sign_in_with_a_message(
        app: App, jwt_for: Callable[..., str]) -> None:
    # Login tokens live 30 minutes; a token signed with the stack's secret that expires in a few
    # seconds shows what happens when one runs out while the page is open.
    expires = int(time.time()) + 4
    token = jwt_for("client", client_id="lakeside", exp=expires)
    answer = {"token": token, "role": "client", "client_id": "lakeside",
              "expires_at": datetime.fromtimestamp(expires, UTC).isoformat()}
    page = app.page(session=answer, email="lab@lakeside.example")
    page.goto(f"{app.url}/#/jobs?status=failed")
    expect(page.locator("tr.job-row").first).to_be_visible()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible(timeout=15000)
    expect(page.get_by_text("Your session has expired. Please sign in again.")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('stepledger.session')") is None
    # The page to return to is kept for after the next sign-in.
    assert "next=%2Fjobs%3Fstatus%3Dfailed" in page.url or "next=/jobs" in page.url, page.url


def test_a_token_the_server_refuses_also_returns_to_sign_in(
        app: App, jwt_for: Callable[..., str]) -> None:
    # Signed with another secret: PostgREST answers 401; the app must not show a raw error.
    import jwt as pyjwt

    forged = pyjwt.encode({"role": "admin", "exp": int(time.time()) + 600}, "x" * 48,
                          algorithm="HS256")
    answer = {"token": forged, "role": "admin", "client_id": None,
              "expires_at": datetime.fromtimestamp(time.time() + 600, UTC).isoformat()}
    page = app.page(session=answer, email="intruder@example.org")
    page.goto(f"{app.url}/#/jobs")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.locator(".login-messages")).not_to_be_empty()
    assert "Traceback" not in page.content() and "PGRST" not in page.inner_text("body")


def test_the_interface_shows_only_what_the_role_may_do(app: App) -> None:
    def nav_labels(page: Page) -> list[str]:
        links = page.get_by_role("navigation", name="Main").get_by_role("link")
        expect(links.first).to_be_visible()
        return links.evaluate_all("links => links.map(a => a.innerText.trim())")

    client = app.signed_in("lakeside", "/jobs")
    assert nav_labels(client) == ["Jobs", "Usage & invoices", "Alerts"]
    client.goto(f"{app.url}/#/prices")
    expect(client.get_by_role("heading", name="Not available")).to_be_visible()
    expect(client.get_by_role("heading", name="Add a price")).to_have_count(0)
    expect(client.get_by_label("Client", exact=True)).to_have_count(0)

    admin = app.signed_in("admin", "/clients")
    assert nav_labels(admin) == ["Overview", "Jobs", "Error hotspots", "Billing", "Price book",
                                 "API tokens", "Alerts"]
    # On a phone the labels are short, the accessible names stay whole.
    phone = app.signed_in("admin", "/clients", viewport=PHONE)
    assert nav_labels(phone) == ["Overview", "Jobs", "Hotspots", "Billing", "Price book", "Tokens",
                                 "Alerts"]
    expect(phone.get_by_role("link", name="Error hotspots")).to_be_visible()
    admin.goto(f"{app.url}/#/jobs")
    expect(admin.get_by_label("Client", exact=True)).to_be_visible()


# -- jobs ------------------------------------------------------------------------------------------
def test_filters_counts_and_paging_match_the_api(app: App, admin_api: httpx.Client) -> None:
    page = app.signed_in("admin", "/jobs")
    expect(page.locator("tr.job-row").first).to_be_visible()
    page.get_by_label("Client", exact=True).select_option("hillcrest")
    page.get_by_label("Status").select_option("open")
    expect(page).to_have_url(re.compile(r"client=hillcrest.*status=open|status=open.*client=hillcrest"))
    want = admin_api.get("/jobs", params={"client_id": "eq.hillcrest", "status": "neq.completed",
                                          "select": "job_id,status"}).json()
    assert want, "the fixture has open jobs"
    expect(page.locator("tr.job-row")).to_have_count(min(25, len(want)))
    statuses = set(page.locator("tr.job-row").evaluate_all(
        "rows => rows.map(r => r.className.match(/job-(\\w+)$/)[1])"))
    assert statuses <= {"running", "failed", "stalled"} and statuses
    failed = sum(1 for j in want if j["status"] == "failed")
    expect(page.locator('[data-state="failed"]')).to_have_text(str(failed))

    # Paging through every hillcrest job shows each once.
    page.get_by_role("button", name="Clear filters").first.click()
    page.get_by_label("Client", exact=True).select_option("hillcrest")
    every = admin_api.get("/jobs", params={"client_id": "eq.hillcrest", "select": "job_id"}).json()
    seen: list[str] = []
    while True:
        expect(page.locator(".pager-text")).to_contain_text(f"of {len(every)}")
        first = page.locator("tr.job-row").first.get_attribute("data-job")
        seen += page.locator("tr.job-row").evaluate_all("rows => rows.map(r => r.dataset.job)")
        nxt = page.get_by_role("button", name="Next")
        if nxt.is_disabled():
            break
        nxt.click()
        expect(page.locator("tr.job-row").first).not_to_have_attribute("data-job", first or "")
    assert sorted(seen) == sorted(j["job_id"] for j in every)

    # The job id filter is a prefix, and LIKE's wildcards in it are taken literally: "_" does
    # not stand for the "-" of "hillcrest-...".
    page.get_by_label("Job ID starts with").fill("hillcrest_")
    expect(page.get_by_text("No jobs match these filters")).to_be_visible()
    expect(page.locator('[data-state="total"]')).to_have_text("0")
    page.get_by_label("Job ID starts with").fill("hillcrest-failed")
    expect(page.locator("tr.job-row")).to_have_count(1)
    expect(page.locator('[data-state="total"]')).to_have_text("1")


def test_progress_advances_on_screen_while_a_pipeline_ingests(
        app: App, web_data: WebData, stack: Settings) -> None:
    job_id = f"lakeside-live-{uuid.uuid4().hex[:8]}"
    start = datetime.now(UTC) - timedelta(minutes=5)
    plan = [(s, st) for s in STEPS for st in ("started", "completed")]
    events = job_events("lakeside", job_id, start, plan)
    http = httpx.Client(base_url=stack.api_url, timeout=30.0,
                        headers={"Authorization": f"Bearer {web_data.ingest_token}",
                                 "Content-Type": "text/plain"})

    def send(batch: list[dict[str, Any]]) -> None:
        import json as _json
        answer = http.post("/rpc/ingest", content=_json.dumps(batch)).json()
        assert answer["accepted"] == len(batch), answer

    try:
        send(events[:4])  # two steps done
        page = app.signed_in("lakeside", f"/jobs?q={job_id}")
        row = page.locator(f'tr.job-row[data-job="{job_id}"]')
        expect(row.locator(".progress-text")).to_have_text("2 of 20 steps")
        page.evaluate("window.__notReloaded = true")
        detail = app.signed_in("lakeside", f"/jobs/lakeside/{job_id}")
        expect(detail.locator(".job-summary .progress-text")).to_have_text("2 of 20 steps")
        detail.evaluate("window.__notReloaded = true")

        send(events[4:11])  # three more completed, the sixth step started
        expect(row.locator(".progress-text")).to_have_text("5 of 20 steps")
        expect(row.locator('[role="progressbar"]')).to_have_attribute("aria-valuenow", "5")
        expect(detail.locator(".job-summary .progress-text")).to_have_text("5 of 20 steps")
        expect(detail.locator("#step-format-conversion .badge")).to_have_text(re.compile("Running"))

        send(events[11:])
        expect(row.locator(".progress-text")).to_have_text("7 of 20 steps")
        expect(detail.locator(".job-summary .progress-text")).to_have_text("7 of 20 steps")
        assert page.evaluate("window.__notReloaded") is True
        assert detail.evaluate("window.__notReloaded") is True
        expect(page.locator(".live-text")).to_contain_text("Live")
    finally:
        http.close()


def test_dates_are_shown_in_the_users_time_zone(app: App, admin_api: httpx.Client) -> None:
    job = admin_api.get("/jobs", params={"client_id": "eq.lakeside", "order": "started_at",
                                         "limit": 1}).json()[0]
    started = datetime.fromisoformat(job["started_at"])
    shown = {}
    for zone in ("Asia/Tokyo", "America/New_York"):
        page = app.signed_in("lakeside", f"/jobs/lakeside/{job['job_id']}", timezone_id=zone)
        fact = page.locator(".fact", has_text="Started").locator("time")
        expect(fact).to_have_attribute("datetime", re.compile(r"Z$"))
        local = started.astimezone(ZoneInfo(zone))
        want = f"{local:%b} {local.day}, {local.year}, {local:%I:%M %p}"
        expect(fact).to_have_text(want)
        shown[zone] = fact.inner_text()
    assert shown["Asia/Tokyo"] != shown["America/New_York"]


# -- admin -----------------------------------------------------------------------------------------
def test_admin_overview_counts_every_client(app: App, admin_api: httpx.Client) -> None:
    # Failures and revenue speak of the same period: jobs started in this billing month (UTC).
    now = datetime.now(UTC)
    period = now.strftime("%Y-%m")
    month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    admin_api.post("/rpc/refresh_usage", json={}).raise_for_status()
    page = app.signed_in("admin", "/clients")
    for client_id, name, _ in CLIENTS:
        row = page.locator(f'tr[data-client="{client_id}"]')
        expect(row).to_contain_text(name)
        jobs = admin_api.get("/jobs", params={
            "client_id": f"eq.{client_id}", "select": "status",
            "started_at": f"gte.{month_start.isoformat()}"}).json()
        expect(row.locator('td[data-label="Jobs"]')).to_have_text(str(len(jobs)))
        failed = sum(1 for j in jobs if j["status"] == "failed")
        expect(row.locator('td[data-label="Failed"]')).to_contain_text(str(failed))
    every = admin_api.get("/jobs", params={
        "select": "status", "started_at": f"gte.{month_start.isoformat()}"}).json()
    expect(page.locator('[data-stat="failed"] .stat-value')).to_have_text(
        str(sum(1 for j in every if j["status"] == "failed")))
    # One revenue card per currency, each the month's usage in that currency.
    usage = admin_api.get("/usage", params={"period": f"eq.{period}"}).json()
    for currency, symbol in (("EUR", "€"), ("GBP", "£")):
        amount = sum(Decimal(str(u["amount"])) for u in usage if u["currency"] == currency)
        card = page.locator(f'[data-stat="revenue-{currency}"]')
        expect(card.locator(".stat-value")).to_have_text(f"{symbol}{amount:,.2f}")
        expect(card.locator(".stat-label")).to_contain_text(currency)
    # The failed card opens the same jobs.
    page.locator('[data-stat="failed"]').click()
    expect(page).to_have_url(re.compile(f"month={period}.*status=failed"))
    expect(page.locator('[data-state="failed"]')).to_have_text(
        str(sum(1 for j in every if j["status"] == "failed")))
    # The same overview is not offered to a client.
    client = app.signed_in("hillcrest", "/clients")
    expect(client.get_by_role("heading", name="Not available")).to_be_visible()


def test_admin_adds_a_price_and_the_clients_draft_invoice_changes(
        app: App, web_data: WebData, admin_api: httpx.Client) -> None:
    client_id, step = "lakeside", "integrity-check"
    period = datetime.now(UTC).strftime("%Y-%m")
    before = admin_api.post("/rpc/invoice", json={"client_id": client_id, "period": period}).json()
    lines = [line for line in before["lines"] if line["kind"] == "usage" and line["step"] == step]
    units = sum(Decimal(str(line["units"])) for line in lines)
    amount_before = sum(Decimal(str(line["amount"])) for line in lines)
    assert units > 0, "the fixture completed integrity checks this month"

    client = app.signed_in(client_id, f"/usage?period={period}")
    total = client.locator(".invoice-amount")
    expect(total).not_to_be_empty()
    shown_before = total.inner_text()

    admin = app.signed_in("admin", "/prices")
    form = admin.locator("form", has=admin.get_by_role("button", name="Add price"))
    # Other pipelines may be registered (other tests): name the one meant.
    form.get_by_label("Pipeline").select_option("botimage")
    form.get_by_label("Step").select_option(step)
    form.get_by_label("Applies to").select_option(client_id)
    form.get_by_label("Unit price").fill("2.5")
    form.get_by_label("Currency").fill("EUR")
    month_start = datetime.now().replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    form.get_by_label("Effective from").fill(month_start.strftime("%Y-%m-%dT%H:%M"))
    form.get_by_role("button", name="Add price").click()
    expect(form.get_by_role("status")).to_contain_text("Price added")
    expect(admin.locator(f'tr[data-pipeline="botimage"][data-step="{step}"]'
                         f'[data-client="{client_id}"]').first).to_contain_text("2.50")

    after = admin_api.post("/rpc/invoice", json={"client_id": client_id, "period": period}).json()
    want = (Decimal(str(before["total"])) - amount_before
            + (units * Decimal("2.5")).quantize(Decimal("0.01")))
    assert Decimal(str(after["total"])) == want
    client.reload()
    expect(total).not_to_have_text(shown_before)
    line = client.locator(f'.table-invoice tr[data-step="{step}"]')
    expect(line).to_contain_text("€2.50")


def test_the_price_form_explains_what_is_wrong(app: App, web_data: WebData) -> None:
    page = app.signed_in("admin", "/prices")
    form = page.locator("form", has=page.get_by_role("button", name="Add price"))
    form.get_by_label("Unit price").fill("-3")
    form.get_by_role("button", name="Add price").click()
    expect(form.get_by_text("Use a number of 0 or more")).to_be_visible()
    expect(form.get_by_label("Unit price")).to_have_attribute("aria-invalid", "true")
    form.get_by_label("Unit price").fill("1.25")
    form.get_by_label("Currency").fill("E1")
    form.get_by_role("button", name="Add price").click()
    expect(form.get_by_text("Use a three-letter currency code")).to_be_visible()
    # A rule only the database knows (a client's prices are in its currency): its answer is
    # shown as a sentence, not a stack.
    form.get_by_label("Applies to").select_option("harbourview")
    expect(form.get_by_label("Currency")).to_have_value("GBP")
    form.get_by_label("Currency").fill("EUR")
    form.get_by_role("button", name="Add price").click()
    alert = form.get_by_role("alert")
    expect(alert).to_contain_text("The price was not added")
    expect(alert).to_contain_text('client "harbourview" is billed in GBP, not EUR')
    text = alert.inner_text()
    assert "Traceback" not in text and "{" not in text and "SL403" not in text


def test_admin_creates_a_token_once_uses_it_and_revokes_it(
        app: App, web_data: WebData, stack: Settings) -> None:
    page = app.signed_in("admin", "/tokens")
    name = f"web test token {uuid.uuid4().hex[:6]}"
    page.get_by_label("Name").fill(name)
    page.get_by_label("Writes for").select_option("harbourview")
    page.get_by_role("button", name="Create token").click()
    reveal = page.locator(".token-reveal")
    expect(reveal).to_contain_text("shown only this once")
    token = page.locator("#new-token-value").input_value()
    assert token.count(".") == 2

    event = job_events("harbourview", f"harbourview-tok-{uuid.uuid4().hex[:6]}",
                       datetime.now(UTC), [("dicom-intake", "started")])
    with httpx.Client(base_url=stack.api_url, timeout=30.0) as http:
        ok = http.post("/rpc/ingest", json=event, headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200 and ok.json()["accepted"] == 1, ok.text

        row = page.locator("tr", has_text=name)
        expect(row).to_contain_text("Harbourview Imaging")
        expect(row.locator(".badge")).to_have_text(re.compile("Active"))
        page.get_by_role("button", name="Done, I stored it").click()
        expect(page.locator("#new-token-value")).to_have_count(0)
        # Shown once: after a reload the list has the token's name, never the token.
        page.reload()
        expect(row).to_be_visible()
        assert token not in page.content()

        row.get_by_role("button", name=f"Revoke token {name}").click()
        dialog = page.get_by_role("dialog")
        expect(dialog).to_contain_text("stops working at once")
        dialog.get_by_role("button", name="Revoke token").click()
        expect(row.locator(".badge")).to_have_text(re.compile("Revoked"))
        refused = http.post("/rpc/ingest", json=event, headers={"Authorization": f"Bearer {token}"})
        assert refused.status_code == 401, refused.text


def test_alerts_page_endpoint_secret_once_test_send_email_opt_in_and_thresholds(
        app: App, web_data: WebData, su_conn: psycopg.Connection, admin_api: httpx.Client) -> None:
    # The receiver is on loopback: allow private targets for this test, as the operator would.
    (allowed,) = su_conn.execute("select allow_private_targets from ledger.notification_settings") \
        .fetchone()
    su_conn.execute("update ledger.notification_settings set allow_private_targets = true")
    receiver = Receiver()
    try:
        page = app.signed_in("lakeside", "/alerts")
        expect(page.get_by_role("heading", name="Alerts", exact=True)).to_be_visible()
        expect(page.get_by_text("No endpoints yet")).to_be_visible()
        page.get_by_label("URL").fill(receiver.url)
        page.get_by_label("Job completed").check()
        page.get_by_role("button", name="Add endpoint").click()
        expect(page.locator(".secret-reveal")).to_contain_text("shown only this once")
        secret = page.locator("#new-webhook-secret").input_value()
        assert secret.startswith("whsec_")
        row = page.locator("table.table-hooks tr", has_text=receiver.url)
        expect(row).to_contain_text("Job failed")
        expect(row).to_contain_text("Job completed")

        row.get_by_role("button", name=f"Send test to {receiver.url}").click()
        try:
            wait_until(lambda: bool(receiver.of_type("webhook.test")), 15, "the test delivery")
        except AssertionError:
            # Say where the message is: not queued, queued but not claimed, or attempted.
            state = su_conn.execute(
                "select d.state, d.attempts, d.next_attempt_at, d.lease_until, w.disabled_at, "
                "(select count(*) from ledger.webhook_deliveries x where x.state = 'pending') "
                "from ledger.webhooks w left join ledger.webhook_deliveries d using (webhook_id) "
                "where w.url = %s", [receiver.url]).fetchall()
            raise AssertionError(f"no test delivery within 15 s; deliveries: {state}") from None
        verify_signature(secret, receiver.of_type("webhook.test")[0])
        deliveries = page.locator("table.table-deliveries")

        def delivered() -> bool:
            page.get_by_role("button", name="Reload").click()
            return deliveries.locator("tr", has_text="Delivered").count() == 1
        wait_until(delivered, 15, "the delivery shown as delivered")
        expect(deliveries).to_contain_text("HTTP 200")

        # Shown once: after a reload, the endpoint is listed and the secret is nowhere.
        page.get_by_role("button", name="Done, I stored it").click()
        page.reload()
        expect(row).to_be_visible()
        assert secret not in page.content()

        # E-mail opt-in for the signed-in person.
        page.get_by_label("Job failed", exact=False).last.check()
        page.get_by_role("button", name="Save e-mail alerts").click()
        wait_until(lambda: su_conn.execute(
            "select s.events::text[] from ledger.email_subscriptions s join auth.users u using "
            "(user_id) where u.email = %s", [web_data.users["lakeside"].email]).fetchone()
            == (["job.failed"],), 10, "the opt-in stored")

        row.get_by_role("button", name=f"Delete {receiver.url}").click()
        page.get_by_role("dialog").get_by_role("button", name="Delete endpoint").click()
        expect(page.get_by_text("No endpoints yet")).to_be_visible()

        # Admins set usage thresholds per client.
        admin = app.signed_in("admin", "/alerts")
        expect(admin.get_by_role("heading", name="Usage thresholds")).to_be_visible()
        admin.get_by_label("Client", exact=True).select_option("harbourview")
        admin.get_by_label("Monthly amount").fill("1234.50")
        admin.get_by_role("button", name="Set threshold").click()
        expect(admin.locator("table.table-thresholds tr", has_text="Harbourview Imaging")) \
            .to_contain_text("1,234.50")
        alerts = admin_api.get("/usage_alerts", params={"client_id": "eq.harbourview"}).json()
        assert [(a["amount"], a["currency"]) for a in alerts] == [(1234.5, "GBP")]  # its currency
        # A client user has no threshold form.
        expect(page.get_by_role("heading", name="Usage thresholds")).to_have_count(0)
    finally:
        receiver.close()
        su_conn.execute("update ledger.notification_settings set allow_private_targets = %s",
                        [allowed])


def test_error_hotspots_show_the_steps_and_codes_that_fail_most(
        app: App, admin_api: httpx.Client) -> None:
    admin_api.post("/rpc/refresh_analytics", json={"max_age_s": 0})
    stats = admin_api.get("/error_stats", params={"order": "failures.desc,step_index"}).json()
    if not stats:
        pytest.fail("GET /error_stats is empty: the fixture has failures")
    page = app.signed_in("admin", "/errors?window=all")
    by_step = page.get_by_role("list", name="Failures by step")
    expect(by_step).to_be_visible()
    top = stats[0]
    title = admin_api.get("/pipeline_steps", params={
        "pipeline": f"eq.{top['pipeline']}", "step": f"eq.{top['step']}"}).json()[0]["title"]
    first = by_step.locator(".barlist-row").first
    expect(first.locator(".barlist-name")).to_have_text(title)
    expect(first.locator(".barlist-value")).to_have_text(f"{top['failures']} failures")
    expect(page.get_by_role("list", name="Failures by site")).to_be_visible()
    expect(page.locator(".table-codes code").first).to_have_text(re.compile(r"^[A-Z_]+$"))


def test_usage_and_invoice_csv_download(app: App, web_data: WebData,
                                       admin_api: httpx.Client) -> None:
    period = datetime.now(UTC).strftime("%Y-%m")
    admin_api.post("/rpc/refresh_usage", json={}).raise_for_status()
    page = app.signed_in("hillcrest", f"/usage?period={period}")
    expect(page.locator(".table-invoice")).to_be_visible()
    with page.expect_download() as info:
        page.get_by_role("button", name="Download invoice CSV").click()
    download = info.value
    assert download.suggested_filename == f"stepledger-invoice-hillcrest-{period}.csv"
    rows = list(csv.DictReader(io.StringIO(Path(download.path()).read_text())))
    shown = page.locator(".table-invoice tbody tr").count()
    assert len(rows) == shown > 0
    assert {r["currency"] for r in rows} == {"EUR"}
    titles = {s["step"]: s for s in httpx.get(
        f"{app.url}/api/pipeline_steps", params={"pipeline": "eq.botimage"},
        headers={"Authorization": f"Bearer {page.evaluate(SESSION_TOKEN)}"}).json()}
    usage_lines = [r for r in rows if r["kind"] == "usage"]
    assert usage_lines and all(r["step_title"] == titles[r["step"]]["title"] for r in usage_lines)
    assert {r["priced"] for r in usage_lines} <= {"true", "false"}
    indexes = [titles[r["step"]]["step_index"] for r in usage_lines]
    assert indexes == sorted(indexes), "invoice lines in pipeline order"

    # The usage CSV comes from the database: titles beside keys, pipeline order, true/false,
    # ISO 8601 instants with Z.
    with page.expect_download() as info:
        page.get_by_role("button", name="Usage CSV").click()
    text = Path(info.value.path()).read_text()
    usage = list(csv.DictReader(io.StringIO(text)))
    assert usage, text
    assert {"step", "step_title", "pipeline_title", "client_name", "step_index"} <= set(usage[0])
    assert all(r["step_title"] == titles[r["step"]]["title"] for r in usage)
    assert [int(r["step_index"]) for r in usage] == sorted(int(r["step_index"]) for r in usage)
    assert {r["stale"] for r in usage} <= {"true", "false"}
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", r["refreshed_at"])
               for r in usage), usage[0]["refreshed_at"]
    assert "+00" not in text and ",t," not in text and ",f," not in text


# -- quality: layout, accessibility, screenshots ---------------------------------------------------
ADMIN_PAGES = ["/clients", "/jobs", "/errors", "/billing", "/prices", "/tokens", "/alerts"]
CLIENT_PAGES = ["/jobs", "/usage", "/alerts"]
# Pages axe checks on top of the main ones: the states a page only shows with some data or filter.
AXE_EXTRA_ADMIN_PAGES = ["/billing?client=harbourview", "/prices?all=1", "/errors?window=all"]


def test_every_control_has_a_label_and_the_keyboard_reaches_everything(app: App) -> None:
    page = app.signed_in("admin", "/jobs")
    expect(page.locator("tr.job-row").first).to_be_visible()
    for path in ADMIN_PAGES:
        page.goto(f"{app.url}/#{path}")
        expect(page.locator("#page-title")).to_be_visible()
        page.wait_for_load_state("networkidle")
        unlabelled = page.evaluate("""() =>
            [...document.querySelectorAll('input, select, textarea, button')]
            .filter(el => !el.hidden && el.type !== 'hidden')
            .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                          && !(el.textContent || '').trim())
            .map(el => el.outerHTML.slice(0, 80))""")
        assert unlabelled == [], (path, unlabelled)
    # Tab from the top: the skip link first, then the brand, then the navigation.
    page.goto(f"{app.url}/#/jobs")
    page.reload()
    expect(page.locator("tr.job-row").first).to_be_visible()
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip-link"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    order = []
    page.reload()
    expect(page.locator("tr.job-row").first).to_be_visible()
    for _ in range(6):
        page.keyboard.press("Tab")
        order.append(page.evaluate("(document.activeElement.textContent || '').trim()"))
    assert "Overview" in order and "Jobs" in order, order
    # A job opens with the keyboard alone.
    link = page.locator("a.job-link").first
    link.focus()
    page.keyboard.press("Enter")
    expect(page.locator(".job-summary")).to_be_visible()


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_screenshots_and_no_horizontal_scrolling(
        app: App, web_data: WebData, admin_api: httpx.Client, viewport: dict[str, int]) -> None:
    suffix = "desktop" if viewport is DESKTOP else "phone"
    admin_api.post("/rpc/refresh_analytics", json={"max_age_s": 0}).raise_for_status()
    admin_api.post("/rpc/refresh_usage", json={}).raise_for_status()
    screenshot(sign_in_page(app, viewport), f"login-{suffix}")

    pages = [("admin", p) for p in ADMIN_PAGES] + [("lakeside", p) for p in CLIENT_PAGES]
    pages += [("lakeside", f"/jobs/lakeside/{web_data.failed_jobs['lakeside']}")]
    signed: dict[str, Page] = {}
    for who, path, page in each_page(app, pages, viewport, signed):
        name = "job-failed" if path.startswith("/jobs/") else path.strip("/")
        screenshot(page, f"{who if who == 'admin' else 'client'}-{name}-{suffix}")
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{path} scrolls sideways by {overflow}px at {viewport['width']}px"
    # Whole pages: the hotspots with their trends, and a drill-down into the jobs they count.
    admin = signed["admin"]
    admin.goto(f"{app.url}/#/errors?window=30")
    expect(admin.get_by_role("list", name="Jobs started per day")).to_be_visible()
    screenshot(admin, f"admin-errors-full-{suffix}", full_page=True)
    admin.get_by_role("list", name="Failures by step").locator(".barlist-name a").first.click()
    expect(admin.locator(".drill-note")).not_to_be_empty()
    expect(admin.locator("tr.job-row").first).to_be_visible()
    screenshot(admin, f"admin-jobs-drilldown-{suffix}")
    overflow = admin.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the drill-down scrolls sideways by {overflow}px"


# -- live job pages, retryable failures, steps not run (issue: job pages stop updating) ---------
def ingest(stack: Settings, token: str, events: list[dict[str, Any]]) -> None:
    with httpx.Client(base_url=stack.api_url, timeout=30.0) as http:
        answer = http.post("/rpc/ingest", json=events,
                           headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 200 and answer.json()["accepted"] == len(events), answer.text


def test_a_failed_job_page_stays_live_and_shows_a_retry_and_the_steps_not_run(
        app: App, web_data: WebData, stack: Settings, admin_api: httpx.Client) -> None:
    job_id = f"lakeside-retry-{uuid.uuid4().hex[:8]}"
    start = datetime.now(UTC) - timedelta(minutes=2)
    events = job_events("lakeside", job_id, start, [
        ("dicom-intake", "started"), ("dicom-intake", "completed"),
        ("integrity-check", "started"), ("integrity-check", "failed")])
    events[-1]["error"] = {"code": "NODE_LOST", "message": "worker lost", "retryable": True}
    ingest(stack, web_data.ingest_token, events)
    job = admin_api.get("/jobs", params={"job_id": f"eq.{job_id}"}).json()[0]
    assert job["status"] == "failed" and job["retry_expected"] is True
    # The database says which steps were not run; the page shows what it says.
    timeline = admin_api.post("/rpc/job_timeline", json={"job_id": job_id}).json()
    assert [s["state"] for s in timeline["steps"][:4]] == [
        "completed", "failed", "not_run", "not_run"], timeline["steps"][:4]

    page = app.signed_in("lakeside", f"/jobs/lakeside/{job_id}")
    summary_badge = page.locator(".job-summary .badge")
    # The contract status stays failed; the page says a retry is expected.
    expect(summary_badge).to_have_text(re.compile("Failed · retry expected"))
    later = page.locator("#step-deidentification")
    expect(later.locator(".badge")).to_have_text(re.compile("Not run"))
    expect(later).not_to_contain_text("Not started yet")
    expect(later).not_to_contain_text("Pending")
    page.evaluate("window.__notReloaded = true")

    # The retry arrives: the page follows without a reload, as the API does.
    retry = job_events("lakeside", job_id, start + timedelta(seconds=30),
                       [("integrity-check", "started"), ("integrity-check", "completed")])
    for n, event in enumerate(retry):
        event["attempt"] = 2
        event["event_id"] = f"{job_id}:retry:{n}"
    ingest(stack, web_data.ingest_token, retry[:1])
    expect(summary_badge).to_have_text(re.compile("Running"))
    expect(later.locator(".badge")).to_have_text(re.compile("Pending"))
    ingest(stack, web_data.ingest_token, retry[1:])
    expect(page.locator(".job-summary .progress-text")).to_have_text("2 of 20 steps")
    expect(page.locator("#step-integrity-check .attempt")).to_have_count(2)
    assert page.evaluate("window.__notReloaded") is True

    # A failure the pipeline did not mark retryable stays a plain failure.
    plain = f"lakeside-plain-{uuid.uuid4().hex[:8]}"
    ingest(stack, web_data.ingest_token, job_events("lakeside", plain, start, [
        ("dicom-intake", "started"), ("dicom-intake", "failed")]))
    page.goto(f"{app.url}/#/jobs/lakeside/{plain}")
    expect(page.locator(".job-summary .badge")).to_have_text(re.compile(r"Failed$"))
    # The jobs list says the same as the job page.
    page.goto(f"{app.url}/#/jobs?q=lakeside-retry")
    expect(page.locator(f'tr.job-row[data-job="{job_id}"] .badge')).to_have_text(
        re.compile("Running"))


def test_the_price_book_shows_every_currencys_default_in_force(
        app: App, admin_api: httpx.Client) -> None:
    # The fixture's defaults: one EUR and one GBP price per step, both in force since 2021.
    step = "report"
    rows = admin_api.get("/prices", params={
        "pipeline": "eq.botimage", "step": f"eq.{step}", "client_id": "is.null",
        "state": "eq.in force"}).json()
    assert {r["currency"] for r in rows} == {"EUR", "GBP"}, rows
    page = app.signed_in("admin", "/prices?client=-&pipeline=botimage")
    for _ in range(3):  # the same on every load
        shown = page.locator(f'tr[data-pipeline="botimage"][data-step="{step}"][data-client=""]')
        expect(shown.first).to_be_visible()
        in_force = shown.filter(has=page.locator(".tag", has_text="in force"))
        expect(in_force).to_have_count(2)
        prices = sorted(in_force.locator('td[data-label="Unit price"]').all_inner_texts())
        assert prices[0].startswith("£") and prices[1].startswith("€"), prices
        expect(shown.filter(has=page.locator(".tag", has_text="superseded"))).to_have_count(0)
        page.reload()


# -- formatting: durations, amounts, chart labels -------------------------------------------------
def test_durations_and_amounts_read_one_way(app: App) -> None:
    page = app.signed_in("lakeside", "/jobs")
    expect(page.locator("#page-title")).to_be_visible()
    shown = page.evaluate("""async () => {
        const f = await import('/js/format.js');
        const d = [0, 3.21, 9.96, 59.4, 59.6, 60, 119.5, 3599.6, 3600, 5400, 172800 + 1800]
          .map((s) => [s, f.duration(s)]);
        const m = [[862.7, f.money(862.7, 'EUR', { precision: 'compact' })],
                   [1512.3, f.money(1512.3, 'EUR', { precision: 'compact' })],
                   [999.6, f.money(999.6, 'EUR', { precision: 'compact' })],
                   [1512.3, f.money(1512.3, 'EUR')], [0.015, f.unitPrice(0.015, 'EUR')]];
        return { d, m };
    }""")
    durations = {s: text for s, text in shown["d"]}
    assert durations == {
        0: "0.0 s", 3.21: "3.2 s", 9.96: "10 s", 59.4: "59 s", 59.6: "1 min 00 s",
        60: "1 min 00 s", 119.5: "2 min 00 s", 3599.6: "1 h 00 min", 3600: "1 h 00 min",
        5400: "1 h 30 min", 174600: "2 d 1 h"}, durations
    assert [text for _, text in shown["m"]] == ["€863", "€1.5K", "€1,000", "€1,512.30", "€0.015"]
    assert not any(re.search(r"\b60 s\b", text) for text in durations.values())


def test_phone_chart_labels_do_not_collide(app: App, stack: Settings, web_data: WebData) -> None:
    page = app.signed_in("lakeside", "/usage", viewport=PHONE)
    chart = page.get_by_role("list", name=re.compile("Amount per month"))
    expect(chart).to_be_visible()
    boxes = page.evaluate("""() => [...document.querySelectorAll('.columns .column-value')]
        .filter((n) => n.offsetParent !== null && getComputedStyle(n).visibility !== 'hidden'
                       && n.textContent.trim())
        .map((n) => {
            const r = n.getBoundingClientRect();
            return [r.left, r.right, n.textContent];
        })""")
    for (_, a_right, a_text), (b_left, _, b_text) in itertools.pairwise(boxes):
        assert a_right <= b_left, f"{a_text!r} and {b_text!r} overlap on a phone"
    # The selected month's figure is written out in full under the chart.
    selected = page.locator(".columns-selected-text")
    expect(selected).to_be_visible()
    expect(selected).to_contain_text(re.compile(r"\d{4}: €[\d,]+\.\d\d$"))
    # Each month's button is named by what it shows, then its full figure.
    button = chart.get_by_role("button").last
    name = button.evaluate("b => b.textContent")
    assert button.inner_text().split()[0] in name


def test_the_token_form_makes_the_admin_choose_whom_a_token_writes_for(
        app: App, admin_api: httpx.Client) -> None:
    page = app.signed_in("admin", "/tokens")
    writes_for = page.get_by_label("Writes for")
    expect(writes_for).to_have_value("")
    name = f"no choice {uuid.uuid4().hex[:6]}"
    page.get_by_label("Name").fill(name)
    page.get_by_role("button", name="Create token").click()
    expect(page.get_by_text(
        "Choose the client this token writes for, or every client.")).to_be_visible()
    expect(writes_for).to_have_attribute("aria-invalid", "true")
    expect(page.locator(".token-reveal")).to_have_count(0)
    assert admin_api.get("/api_tokens", params={"name": f"eq.{name}"}).json() == []
    # Every client is an explicit choice.
    writes_for.select_option(label="Every client (writes for all of them)")
    page.get_by_role("button", name="Create token").click()
    expect(page.locator(".token-reveal")).to_contain_text("shown only this once")
    made = admin_api.get("/api_tokens", params={"name": f"eq.{name}"}).json()
    assert len(made) == 1 and made[0]["client_id"] is None
    # After a token is made, the form asks again.
    expect(writes_for).to_have_value("")


# -- accessibility: axe-core on every page, both roles, both sizes ---------------------------------
def sign_in_page(app: App, viewport: dict[str, int]) -> Page:
    """The sign-in page, shown."""
    page = app.page(viewport=viewport)
    page.goto(f"{app.url}/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    return page


def each_page(app: App, pages: list[tuple[str, str]], viewport: dict[str, int],
              signed: dict[str, Page]) -> Iterator[tuple[str, str, Page]]:
    """Open each (who, path) signed in as `who` (one browser page per person, kept in `signed`);
    yields (who, path, page) once the page has loaded."""
    for who, path in pages:
        if who not in signed:
            signed[who] = app.signed_in(who, path, viewport=viewport)
        page = signed[who]
        page.goto(f"{app.url}/#{path}")
        expect(page.locator("#page-title")).to_be_visible()
        page.wait_for_load_state("networkidle")
        expect(page.locator(".state-loading")).to_have_count(0)
        yield who, path, page


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_axe_finds_no_serious_violation_on_any_page(
        app: App, web_data: WebData, admin_api: httpx.Client, viewport: dict[str, int]) -> None:
    # The states the pages must show legibly too: a revoked token, a job with pending steps.
    made = admin_api.post("/rpc/create_api_token", json={
        "client_id": "lakeside", "name": f"axe revoked {uuid.uuid4().hex[:6]}", "scope": "ingest"})
    admin_api.post("/rpc/revoke_api_token", json={"token_id": made.json()["token_id"]}
                   ).raise_for_status()
    running = admin_api.get("/jobs", params={"client_id": "eq.lakeside", "status": "eq.running",
                                             "limit": 1}).json()
    failed_job = web_data.failed_jobs["lakeside"]
    pages = [("admin", p) for p in ADMIN_PAGES + AXE_EXTRA_ADMIN_PAGES]
    pages += [("admin", f"/jobs/lakeside/{failed_job}")]
    pages += [("lakeside", p) for p in CLIENT_PAGES]
    pages += [("lakeside", f"/jobs/lakeside/{failed_job}")]
    pages += [("lakeside", f"/jobs/lakeside/{j['job_id']}") for j in running]
    found: dict[str, list[str]] = {"login": axe_violations(sign_in_page(app, viewport))}
    for who, path, page in each_page(app, pages, viewport, {}):
        found[f"{who} {path}"] = axe_violations(page)
    problems = {where: v for where, v in found.items() if v}
    assert not problems, "\n".join(
        f"{where}: {line}" for where, v in problems.items() for line in v)


# -- drill-downs, search by error, trends, duration and retries ----------------------------------
def failed_codes(admin_api: httpx.Client, client_id: str, job_id: str) -> set[str]:
    runs = admin_api.get("/step_runs", params={
        "client_id": f"eq.{client_id}", "job_id": f"eq.{job_id}", "status": "eq.failed",
        "select": "error_code,error_message,step,source"}).json()
    return {r["error_code"] for r in runs}


def shown_jobs(page: Page) -> list[tuple[str, str]]:
    rows = page.locator("tr.job-row")
    expect(rows.first).to_be_visible()
    return rows.evaluate_all("rows => rows.map(r => [r.dataset.client, r.dataset.job])")


def test_an_error_hotspot_opens_the_jobs_that_failed_that_way(
        app: App, admin_api: httpx.Client) -> None:
    admin_api.post("/rpc/refresh_analytics", json={"max_age_s": 0}).raise_for_status()
    codes = admin_api.post("/rpc/error_codes", json={}).json()
    top = codes[0]
    title = admin_api.get("/pipeline_steps", params={
        "pipeline": f"eq.{top['pipeline']}", "step": f"eq.{top['step']}"}).json()[0]["title"]
    page = app.signed_in("admin", "/errors?window=all")
    # Other tests' pipelines have steps of the same title: then each link names its pipeline.
    if len({c["pipeline"] for c in sorted(codes, key=lambda c: -c["failures"])[:15]}) > 1:
        title = f"{title} ({top['pipeline']})"
    link = page.get_by_role("link", name=f"Jobs that failed with {top['error_code']} at {title}",
                            exact=True)
    link.click()
    expect(page.locator(".drill-note")).to_contain_text(top["error_code"])
    want = admin_api.post("/rpc/search_jobs", params={"select": "client_id,job_id,pipeline",
                                                      "pipeline": f"eq.{top['pipeline']}"},
                          json={"error_code": top["error_code"], "error_step": top["step"]},
                          headers={"Prefer": "count=exact"})
    total = int(want.headers["Content-Range"].split("/")[1])
    assert total >= 1
    expect(page.locator('[data-state="total"]')).to_have_text(str(total))
    for client_id, job_id in shown_jobs(page):
        assert top["error_code"] in failed_codes(admin_api, client_id, job_id), job_id

    # From a step's bar: the jobs that failed at that step.
    page.goto(f"{app.url}/#/errors?window=all")
    by_step = page.get_by_role("list", name="Failures by step")
    first = by_step.locator(".barlist-name a").first
    step_title = first.inner_text()
    first.click()
    expect(page.locator(".drill-note")).to_contain_text(f"failed at {step_title}")
    for client_id, job_id in shown_jobs(page):
        runs = admin_api.get("/step_runs", params={
            "client_id": f"eq.{client_id}", "job_id": f"eq.{job_id}", "status": "eq.failed",
            "select": "step"}).json()
        steps = admin_api.get("/pipeline_steps", params={"title": f"eq.{step_title}"}).json()
        assert {s["step"] for s in steps} & {r["step"] for r in runs}, job_id
    # "Show all jobs" leaves the drill-down.
    page.get_by_role("button", name="Show all jobs").click()
    expect(page.locator(".drill-note")).to_be_empty()


def test_jobs_can_be_searched_by_error_code_or_message_text(
        app: App, web_data: WebData, stack: Settings, admin_api: httpx.Client) -> None:
    job_id = f"lakeside-oom-{uuid.uuid4().hex[:8]}"
    events = job_events("lakeside", job_id, datetime.now(UTC) - timedelta(minutes=1),
                        [("dicom-intake", "started"), ("dicom-intake", "failed")])
    marker = uuid.uuid4().hex[:10]
    events[-1]["error"] = {"code": "DISK_FULL",
                           "message": f"no space left 100%_{marker} on /scratch"}
    ingest(stack, web_data.ingest_token, events)
    page = app.signed_in("lakeside", "/jobs")
    search = page.get_by_label("Error code or message")
    search.fill(f"100%_{marker}")          # LIKE's wildcards are taken literally
    expect(page.locator("tr.job-row")).to_have_count(1)
    expect(page.locator(f'tr.job-row[data-job="{job_id}"]')).to_be_visible()
    expect(page.locator('[data-state="failed"]')).to_have_text("1")
    search.fill(f"100%x{marker}")
    expect(page.get_by_text("No jobs match these filters")).to_be_visible()
    # By code: every job shown failed with it, as many as the API says.
    search.fill("DISK_FULL")
    expect(page.locator(f'tr.job-row[data-job="{job_id}"]')).to_be_visible()
    for client_id, shown in shown_jobs(page):
        assert client_id == "lakeside"
        runs = admin_api.get("/step_runs", params={
            "client_id": "eq.lakeside", "job_id": f"eq.{shown}", "status": "eq.failed",
            "select": "error_code,error_message"}).json()
        assert any("DISK_FULL" in (r["error_code"] or "") + (r["error_message"] or "")
                   for r in runs), shown
    # Another client does not find it.
    other = app.signed_in("hillcrest", f"/jobs?error_text={marker}")
    expect(other.get_by_text("No jobs match these filters")).to_be_visible()


def test_an_invoice_line_opens_the_jobs_it_bills(app: App, admin_api: httpx.Client) -> None:
    period = datetime.now(UTC).strftime("%Y-%m")
    invoice = admin_api.post("/rpc/invoice",
                             json={"client_id": "hillcrest", "period": period}).json()
    line = next(x for x in invoice["lines"] if x["kind"] == "usage" and x["step"] == "dicom-intake")
    page = app.signed_in("hillcrest", f"/usage?period={period}")
    page.locator('.table-invoice tr[data-step="dicom-intake"] a.line-jobs').click()
    expect(page.locator(".drill-note")).to_contain_text("billed in")
    # One billed completion per job: as many jobs as the line has completed steps.
    expect(page.locator('[data-state="total"]')).to_have_text(str(line["completed_steps"]))
    for client_id, job_id in shown_jobs(page):
        runs = admin_api.get("/step_runs", params={
            "client_id": f"eq.{client_id}", "job_id": f"eq.{job_id}", "step": "eq.dicom-intake",
            "status": "eq.completed", "select": "finished_at"}).json()
        assert runs and max(r["finished_at"] for r in runs)[:7] == period, job_id


def test_trends_show_failures_and_jobs_per_day(app: App, admin_api: httpx.Client) -> None:
    admin_api.post("/rpc/refresh_analytics", json={"max_age_s": 0}).raise_for_status()
    page = app.signed_in("admin", "/errors?window=30")
    failures = page.get_by_role("list", name="Failed attempts per day")
    expect(failures.locator(".column")).to_have_count(30)
    jobs = page.get_by_role("list", name="Jobs started per day")
    expect(jobs.locator(".column")).to_have_count(30)
    since = (datetime.now(UTC) - timedelta(days=29)).date().isoformat()
    by_day = admin_api.post("/rpc/error_stats_by_day", json={"since": since}).json()
    want = sum(r["failures"] for r in by_day)
    names = failures.locator(".column").evaluate_all("cs => cs.map(c => c.textContent)")
    assert sum(int(re.search(r"(\d+) failed attempts", n).group(1)) for n in names) == want
    started = admin_api.post("/rpc/jobs_by_day", json={"since": since}).json()
    names = jobs.locator(".column").evaluate_all("cs => cs.map(c => c.textContent)")
    assert [int(re.search(r"(\d+) jobs started", n).group(1)) for n in names] == [
        r["started"] for r in started]
    # Usage over time per pipeline on the client's usage page.
    client = app.signed_in("lakeside", "/usage")
    chart = client.get_by_role("list", name=re.compile("Completed steps per month · "))
    expect(chart.locator(".column")).to_have_count(12)


def test_the_job_list_shows_and_sorts_by_duration_and_retries(
        app: App, admin_api: httpx.Client) -> None:
    page = app.signed_in("admin", "/jobs?status=completed")
    page.get_by_label("Sort by").select_option("duration")
    expect(page).to_have_url(re.compile("sort=duration"))
    want = admin_api.get("/jobs", params={
        "status": "eq.completed", "order": "duration_s.desc,client_id,job_id", "limit": 25,
        "select": "client_id,job_id,duration_s,retries"}).json()
    expect(page.locator("tr.job-row").first).to_have_attribute("data-job", want[0]["job_id"])
    assert [j for _, j in shown_jobs(page)] == [w["job_id"] for w in want]
    first = page.locator("tr.job-row").first
    expect(first.locator("td.cell-duration")).not_to_have_text("—")
    page.get_by_label("Sort by").select_option("retries")
    most = admin_api.get("/jobs", params={"status": "eq.completed", "order": "retries.desc",
                                          "limit": 1, "select": "retries"}).json()[0]["retries"]
    expect(page.locator("tr.job-row").first.locator("td.cell-retries")).to_have_text(str(most))


def test_search_jobs_keeps_each_client_to_its_own_jobs_and_refuses_bad_input(
        stack: Settings, jwt_for: Callable[..., str], admin_api: httpx.Client,
        web_data: WebData, su_conn: psycopg.Connection) -> None:
    failed = web_data.failed_jobs["hillcrest"]
    code = failed_codes(admin_api, "hillcrest", failed).pop()
    as_admin = admin_api.post("/rpc/search_jobs", json={"error_code": code},
                              params={"client_id": "eq.hillcrest",
                                      "select": "client_id,job_id"}).json()
    assert failed in {j["job_id"] for j in as_admin}
    with httpx.Client(base_url=stack.api_url, timeout=30.0) as http:
        def call(token: str, body: dict[str, Any]) -> httpx.Response:
            return http.post("/rpc/search_jobs", json=body,
                             headers={"Authorization": f"Bearer {token}"})
        other = call(jwt_for("client", client_id="lakeside"), {"error_code": code})
        assert other.status_code == 200
        assert {j["client_id"] for j in other.json()} <= {"lakeside"}
        assert failed not in {j["job_id"] for j in other.json()}
        same = call(jwt_for("client", client_id="hillcrest"), {"error_code": code})
        assert failed in {j["job_id"] for j in same.json()}
        # An ingest token may not read jobs at all.
        assert call(jwt_for("ingest", client_id="hillcrest"), {"error_code": code}
                    ).status_code in (401, 403)
        # Bad input: one clear error each, with the SQLSTATE of a bad parameter.
        token = jwt_for("client", client_id="hillcrest")
        for body, code_want in (({}, "SL501"), ({"error_text": "x" * 201}, "SL501"),
                                ({"billed_step": "report"}, "SL501"),
                                ({"billed_period": "2026-13"}, "SL405"),
                                ({"error_code": "A", "failed_since": "2026-02-01",
                                  "failed_until": "2026-01-01"}, "SL501")):
            answer = call(token, body)
            assert answer.status_code == 400 and answer.json()["code"] == code_want, answer.text
        hostile = call(token, {"error_text": "'; drop table ledger.jobs; --"})
        assert hostile.status_code == 200 and hostile.json() == []
        days = http.post("/rpc/jobs_by_day", json={"since": "2020-01-01", "until": "2026-01-01"},
                         headers={"Authorization": f"Bearer {token}"})
        assert days.status_code == 400 and days.json()["code"] == "SL501"
    # A BI login reads reporting views, not the HTTP surface.
    with su_conn.transaction(force_rollback=True):
        su_conn.execute("set local role bi_reader")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            su_conn.execute("select * from api.search_jobs(error_code => 'X')")
