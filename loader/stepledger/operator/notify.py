"""The notification delivery worker: signed webhooks (Standard Webhooks) and e-mail alerts.

The database decides everything that is a rule (db/functions/70_notifications/): which endpoints
and people get a message, the retry schedule, what is final, when an endpoint is disabled, which
addresses are refused. This process only moves bytes: it fans out new outbox messages, leases due
deliveries, sends them and records each attempt. A lease runs out when the worker dies, so a kill
-9 mid-delivery loses nothing (the delivery is sent again: at least once).

`stepledger up` starts it in the background (`start`), `stepledger down` stops it (`stop`);
`stepledger notify run` runs it in the foreground. Operator settings, from the environment:
  STEPLEDGER_WEBHOOK_ALLOW_PRIVATE=1  allow http and loopback/private targets (tests, intranets)
  STEPLEDGER_SMTP_URL                 smtp://[user:password@]host:port[?from=addr&starttls=1]
                                      (or smtps://): e-mail alerts on; unset: off
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import functools
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import signal
import smtplib
import socket
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit

import httpx
import psycopg

from stepledger import StepledgerError
from stepledger.settings import Settings
from stepledger.stack import processes

CHANNEL = "stepledger_notifications"
PID_NAME = "notify"
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 15.0
MAX_IN_FLIGHT = 32          # deliveries sent at once, all endpoints together
EXCERPT_BYTES = 1024        # read at most this much of a response; 200 characters are kept
MAX_IDLE_WAIT_S = 1.0       # a missed notification costs at most this long
USER_AGENT = "stepledger-webhooks/1"

log = logging.getLogger("stepledger.notify")


# -- signing (Standard Webhooks) -----------------------------------------------------------------
def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64 HMAC-SHA256 of "id.timestamp.body">` keyed by the base64 part of whsec_…."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def webhook_headers(secret: str, message_id: str, body: bytes,
                    timestamp: int | None = None) -> dict[str, str]:
    ts = int(time.time()) if timestamp is None else timestamp
    return {"webhook-id": message_id, "webhook-timestamp": str(ts),
            "webhook-signature": sign(secret, message_id, ts, body),
            "content-type": "application/json", "user-agent": USER_AGENT}


# -- operator settings ---------------------------------------------------------------------------
def allow_private_from_env() -> bool:
    return os.environ.get("STEPLEDGER_WEBHOOK_ALLOW_PRIVATE", "").strip().lower() in (
        "1", "true", "yes", "on")


@dataclass(frozen=True)
class SmtpTarget:
    host: str
    port: int
    tls: bool           # smtps: TLS from the start
    starttls: bool
    username: str | None
    password: str | None
    sender: str

    @classmethod
    def parse(cls, url: str) -> SmtpTarget:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise StepledgerError(f"STEPLEDGER_SMTP_URL must be smtp://host:port or smtps://…, "
                                  f"not {parts.scheme or '(none)'}://")
        query = parse_qs(parts.query)
        sender = query.get("from", [f"stepledger@{parts.hostname}"])[0]
        return cls(host=parts.hostname, port=parts.port or (465 if parts.scheme == "smtps" else 25),
                   tls=parts.scheme == "smtps",
                   starttls=query.get("starttls", ["0"])[0] in ("1", "true", "yes"),
                   username=unquote(parts.username) if parts.username else None,
                   password=unquote(parts.password) if parts.password else None, sender=sender)


def smtp_from_env() -> SmtpTarget | None:
    url = os.environ.get("STEPLEDGER_SMTP_URL", "").strip()
    return SmtpTarget.parse(url) if url else None


def sync_settings(settings: Settings) -> None:
    """Write the operator's switches into the database, where the rules read them."""
    smtp = smtp_from_env()  # refuses a malformed URL before anything starts
    with psycopg.connect(settings.dsn("stepledger_owner"), autocommit=True) as conn, \
            contextlib.suppress(psycopg.errors.UndefinedTable):  # not migrated yet
        conn.execute(
            "update ledger.notification_settings set allow_private_targets = %s, "
            "email_enabled = %s, public_web_url = %s, updated_at = now()",
            (allow_private_from_env(), smtp is not None,
             os.environ.get("STEPLEDGER_PUBLIC_WEB_URL") or settings.web_url))


# -- sending -------------------------------------------------------------------------------------
class TargetRefused(Exception):
    """The URL's host resolves to an address webhooks may not reach."""


# Name lookups run on threads of their own, as many as deliveries may be in flight: a host whose
# resolver is slow (seconds per lookup) never makes another endpoint's lookup wait in line, as it
# would on asyncio's small shared default executor.
_LOOKUPS = concurrent.futures.ThreadPoolExecutor(max_workers=MAX_IN_FLIGHT,
                                                 thread_name_prefix="stepledger-dns")


async def _addresses(host: str, port: int) -> list[str]:
    """The addresses of a URL's host: an IP literal as it is, a name through the resolver."""
    with contextlib.suppress(ValueError):
        return [str(ipaddress.ip_address(host))]
    lookup = functools.partial(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
    infos = await asyncio.get_running_loop().run_in_executor(_LOOKUPS, lookup)
    return sorted({str(info[4][0]) for info in infos})


async def _pinned_request(url: str, allow_private: bool,
                          check_addresses: Any) -> tuple[str, dict[str, str], dict[str, Any]]:
    """Resolve the host once, refuse blocked addresses, and return a URL aimed at the checked
    address (so a second DNS answer cannot send the request elsewhere), the Host header, and
    the TLS server name for certificate checks."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        addresses = await _addresses(host, port)
    except socket.gaierror as exc:
        raise TargetRefused(f"cannot resolve {host}: {exc.strerror}") from None
    if not addresses:
        raise TargetRefused(f"{host} has no address")
    if not allow_private:
        blocked = await check_addresses(addresses)
        if blocked:
            raise TargetRefused(f"{host} resolves to {blocked}, a loopback, private, link-local "
                                "or reserved address")
    address = ipaddress.ip_address(addresses[0])
    netloc = f"[{address}]" if address.version == 6 else str(address)
    if parts.port:
        netloc += f":{parts.port}"
    pinned = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
    host_header = host if not parts.port else f"{host}:{parts.port}"
    if ":" in host and not host.startswith("["):
        host_header = f"[{host}]" + (f":{parts.port}" if parts.port else "")
    extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
    return pinned, {"host": host_header}, extensions


def _format_email(event_type: str, body: dict[str, Any]) -> tuple[str, str]:
    data = body.get("data") or {}
    what = {"job.failed": "failed", "job.stalled": "stalled"}.get(event_type, event_type)
    subject = f"[stepledger] job {data.get('job_id')} of {data.get('client_id')} {what}"
    if data.get("step"):
        subject += f" at {data.get('step_title') or data.get('step')}"
    lines = [f"Job {data.get('job_id')} ({data.get('pipeline')}) of client {data.get('client_id')} "
             f"is {data.get('status')}.", ""]
    for key in ("step", "step_title", "attempt", "error_code", "error_message", "occurred_at"):
        if data.get(key) is not None:
            lines.append(f"{key}: {data[key]}")
    if data.get("url"):
        lines += ["", f"Job page: {data['url']}"]
    lines += ["", "You receive this because you opted in to e-mail alerts on the Alerts page."]
    return subject[:200], "\n".join(lines)


def send_email(target: SmtpTarget, recipient: str, subject: str, text: str,
               timeout: float = 20.0) -> None:
    message = EmailMessage()
    message["From"] = target.sender
    message["To"] = recipient
    message["Subject"] = subject
    message.set_content(text)
    smtp_class = smtplib.SMTP_SSL if target.tls else smtplib.SMTP
    with smtp_class(target.host, target.port, timeout=timeout) as smtp:
        if target.starttls:
            smtp.starttls()
        if target.username:
            smtp.login(target.username, target.password or "")
        smtp.send_message(message)


class Worker:
    """Fans out, leases, sends and records, until stop()."""

    def __init__(self, dsn: str, smtp: SmtpTarget | None = None,
                 max_in_flight: int = MAX_IN_FLIGHT) -> None:
        self.dsn = dsn
        self.smtp = smtp
        self.max_in_flight = max_in_flight
        self.stopping = False
        self._wake: asyncio.Event | None = None
        self._in_flight: set[asyncio.Task[None]] = set()
        self._results: psycopg.AsyncConnection | None = None
        self._results_lock: asyncio.Lock | None = None
        self._http: httpx.AsyncClient | None = None

    def stop(self, *_: object) -> None:
        self.stopping = True
        if self._wake is not None:
            self._wake.set()

    async def run(self) -> None:
        self._wake = asyncio.Event()
        self._results_lock = asyncio.Lock()
        backoff = 1.0
        # No redirects, no keep-alive (connections are aimed at checked addresses), no proxies
        # from the environment: the request goes where the checks said.
        self._http = httpx.AsyncClient(follow_redirects=False, trust_env=False,
                                       limits=httpx.Limits(max_connections=self.max_in_flight,
                                                           max_keepalive_connections=0))
        try:
            while not self.stopping:
                try:
                    await self._connected()
                    backoff = 1.0
                except psycopg.OperationalError as exc:
                    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                    log.warning("database unavailable (%s); retrying in %.0f s", first, backoff)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), timeout=backoff)
                    backoff = min(backoff * 2, 30.0)
        finally:
            if self._in_flight:  # let sends under way finish (their leases would cover them)
                await asyncio.wait(self._in_flight, timeout=STOP_TIMEOUT_S - 5)
            await self._http.aclose()

    async def _connected(self) -> None:
        assert self._wake is not None
        connect = psycopg.AsyncConnection.connect
        async with await connect(self.dsn, autocommit=True,
                                 application_name="stepledger notify") as control, \
                await connect(self.dsn, autocommit=True,
                              application_name="stepledger notify listen") as listener, \
                await connect(self.dsn, autocommit=True,
                              application_name="stepledger notify results") as results:
            self._results = results
            await listener.execute(f"listen {CHANNEL}")
            listening = asyncio.create_task(self._listen(listener))
            try:
                while not self.stopping:
                    if listening.done():
                        listening.result()  # the listener's connection broke: reconnect
                    started = await self._round(control)
                    row = await (await control.execute(
                        "select ledger.next_notification_due()")).fetchone()
                    wait = min(MAX_IDLE_WAIT_S, float(row[0]) if row else MAX_IDLE_WAIT_S)
                    if not started or len(self._in_flight) >= self.max_in_flight:
                        # Due work that could not start waits for a free slot (an endpoint at
                        # its concurrency limit): a finishing delivery wakes us, else a second.
                        wait = MAX_IDLE_WAIT_S
                    if wait > 0:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._wake.wait(), timeout=wait)
                    self._wake.clear()
            finally:
                listening.cancel()
                with contextlib.suppress(asyncio.CancelledError, psycopg.Error):
                    await listening
                if self._in_flight:
                    await asyncio.wait(self._in_flight, timeout=STOP_TIMEOUT_S - 5)
                self._results = None

    async def _listen(self, listener: psycopg.AsyncConnection) -> None:
        assert self._wake is not None
        async for _ in listener.notifies():
            self._wake.set()

    async def _round(self, control: psycopg.AsyncConnection) -> int:
        """Fan out new messages, start what is due; returns how many things were done."""
        cur = await control.execute("select ledger.dispatch_notifications(500)")
        row = await cur.fetchone()
        done = int(row[0]) if row else 0
        free = self.max_in_flight - len(self._in_flight)
        if free <= 0:
            return done
        cur = await control.execute("select * from ledger.claim_webhook_deliveries(%s)", (free,))
        for row in await cur.fetchall():
            self._spawn(self._deliver(*row))
            done += 1
        free = self.max_in_flight - len(self._in_flight)
        if self.smtp is not None and free > 0:
            cur = await control.execute("select * from ledger.claim_email_deliveries(%s)",
                                        (min(free, 10),))
            for row in await cur.fetchall():
                self._spawn(self._email(*row))
                done += 1
        return done

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._in_flight.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._in_flight.discard(t)
            if self._wake is not None:
                self._wake.set()  # a slot is free
            if not t.cancelled() and t.exception() is not None:
                log.error("delivery task failed: %r", t.exception())
        task.add_done_callback(done)

    async def _query(self, query: str, params: tuple[Any, ...]) -> Any:
        assert self._results is not None and self._results_lock is not None
        async with self._results_lock:
            row = await (await self._results.execute(query, params)).fetchone()  # type: ignore[arg-type]
        return row[0] if row else None

    async def _blocked_address(self, addresses: list[str]) -> str | None:
        return await self._query(
            "select a from unnest(%s::inet[]) a where ledger.webhook_address_blocked(a) limit 1",
            (addresses,))

    async def _deliver(self, delivery_id: Any, attempt: int, webhook_id: Any, url: str,
                       secret: str, message_id: str, body: str, timeout_s: float,
                       allow_private: bool) -> None:
        assert self._http is not None
        started = datetime.now(UTC)
        t0 = time.monotonic()
        status: int | None = None
        error: str | None = None
        excerpt: str | None = None
        payload = body.encode()
        try:
            target, host, extensions = await _pinned_request(url, allow_private,
                                                              self._blocked_address)
            headers = {**webhook_headers(secret, message_id, payload), **host}
            async with asyncio.timeout(timeout_s):
                async with self._http.stream("POST", target, content=payload, headers=headers,
                                             timeout=timeout_s, extensions=extensions) as response:
                    status = response.status_code
                    chunk = b""
                    async for part in response.aiter_raw():
                        chunk += part
                        if len(chunk) >= EXCERPT_BYTES:
                            break
                    excerpt = chunk[:EXCERPT_BYTES].decode("utf-8", "replace")[:200] or None
        except TargetRefused as exc:
            error = f"refused: {exc}"
        except (TimeoutError, httpx.TimeoutException):
            status, error = None, f"timeout after {timeout_s:g} s"
        except httpx.HTTPError as exc:
            status, error = None, f"{type(exc).__name__}: {exc}"[:500]
        except OSError as exc:
            status, error = None, f"connection error: {exc}"[:500]
        latency_ms = (time.monotonic() - t0) * 1000
        outcome = await self._query(
            "select ledger.record_webhook_attempt(%s::uuid, %s::integer, %s::timestamptz, "
            "%s::integer, %s::numeric, %s::text, %s::text)",
            (delivery_id, attempt, started, status, latency_ms, error, excerpt))
        log.info("delivery %s attempt %s to %s: %s (%s, %.0f ms)", delivery_id, attempt,
                 webhook_id, outcome, status if status is not None else error, latency_ms)

    async def _email(self, email_delivery_id: Any, attempt: int, recipient: str,
                     event_type: str, body: dict[str, Any]) -> None:
        assert self.smtp is not None
        subject, text = _format_email(event_type, body)
        error: str | None = None
        try:
            await asyncio.to_thread(send_email, self.smtp, recipient, subject, text)
        except (smtplib.SMTPException, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
        outcome = await self._query(
            "select ledger.record_email_attempt(%s::uuid, %s::integer, %s::text)",
            (email_delivery_id, attempt, error))
        log.info("e-mail %s attempt %s: %s", email_delivery_id, attempt, outcome)


# -- background process for `stepledger up` / `down` -------------------------------------------
BACKGROUND = processes.BackgroundCommand(
    PID_NAME, "the notification worker", START_TIMEOUT_S, STOP_TIMEOUT_S,
    passed_on=("OWNER_PASSWORD", "SMTP_URL", "WEBHOOK_ALLOW_PRIVATE"))


def running_pid(settings: Settings) -> int | None:
    return BACKGROUND.running_pid(settings)


def start(settings: Settings) -> int:
    """Write the operator's settings, then start `stepledger notify run` in the background
    unless it runs; return its pid."""
    sync_settings(settings)
    return BACKGROUND.start(settings)


def stop(settings: Settings) -> bool:
    """SIGTERM the background worker (if ours and running), wait, then SIGKILL."""
    return BACKGROUND.stop(settings)


def status(settings: Settings) -> dict[str, object]:
    return BACKGROUND.status(settings)


def main_loop(settings: Settings) -> None:
    """Foreground entry point (`stepledger notify run`)."""
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # our own line says more, once
    worker = Worker(settings.dsn("stepledger_owner"), smtp_from_env())
    loop = asyncio.new_event_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)
    log.info("notification worker started: %s",
             json.dumps({"email": worker.smtp is not None,
                         "allow_private": allow_private_from_env()}))
    try:
        loop.run_until_complete(worker.run())
    finally:
        loop.close()
    log.info("notification worker stopped")
