"""Helpers of the notification tests: a real HTTP receiver and a real SMTP server on 127.0.0.1,
the stack's worker restarted to reach them, and signature checks.

The receiver records every request with the moment it arrived; what it answers is chosen per
test (a status code, a slow answer, a request held until the test releases it, a redirect).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as email_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast

from stacks import free_ports
from stepledger.operator import notify
from stepledger.settings import Settings


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float                                   # time.monotonic() on arrival

    def json(self) -> dict[str, Any]:
        return json.loads(self.body)


@dataclass
class Answer:
    status: int = 200
    body: bytes = b"ok"
    headers: dict[str, str] = field(default_factory=dict)
    hold: threading.Event | None = None         # wait for this before answering
    hold_timeout: float = 60.0


class Receiver:
    """A threaded HTTP server on 127.0.0.1:<free port>; `answer(request_number)` decides."""

    def __init__(self, answer: Callable[[int], Answer] | None = None) -> None:
        self.requests: list[Received] = []
        self.answer = answer or (lambda n: Answer())
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                with receiver._lock:
                    receiver.requests.append(Received(self.path, {k.lower(): v for k, v in
                                                                  self.headers.items()},
                                                      body, time.monotonic()))
                    number = len(receiver.requests)
                answer = receiver.answer(number)
                if answer.hold is not None:
                    answer.hold.wait(answer.hold_timeout)
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(answer.body)))
                self.end_headers()
                with contextlib.suppress(OSError):  # the worker gave up (timeout) or was killed
                    self.wfile.write(answer.body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def of_type(self, event_type: str, **data: Any) -> list[Received]:
        """Requests whose body has this type and whose data has these values."""
        out = []
        with self._lock:
            requests = list(self.requests)
        for r in requests:
            try:
                body = r.json()
            except ValueError:
                continue
            if body.get("type") == event_type and all(
                    (body.get("data") or {}).get(k) == v for k, v in data.items()):
                out.append(r)
        return out

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll until `check()` is truthy; return it, or fail with `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        time.sleep(interval)


def verify_signature(secret: str, request: Received) -> None:
    """Checks a Standard Webhooks signature with hmac alone (not the code under test)."""
    key = base64.b64decode(secret.split("_", 1)[1])
    msg_id = request.headers["webhook-id"]
    timestamp = request.headers["webhook-timestamp"]
    signed = msg_id.encode() + b"." + timestamp.encode() + b"." + request.body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    signatures = [s.split(",", 1)[1] for s in request.headers["webhook-signature"].split(" ")
                  if s.startswith("v1,")]
    assert expected in signatures, (request.headers, expected)
    assert abs(int(timestamp) - time.time()) < 300, "webhook-timestamp is not the time of sending"


class SmtpServer:
    """A real SMTP server process (aiosmtpd) on loopback that writes each message to a maildir;
    it can be stopped and started again on the same port, as a mail relay that goes down."""

    def __init__(self, directory: Path) -> None:
        (self.port,) = free_ports(1)
        directory.mkdir(parents=True, exist_ok=True)
        self.mailbox = directory / "box"        # a maildir: one file per message in new/
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """STEPLEDGER_SMTP_URL for this server."""
        return f"smtp://127.0.0.1:{self.port}?from=alerts@stepledger.test"

    def mails_to(self, recipient: str) -> list[EmailMessage]:
        new = self.mailbox / "new"
        messages = [cast(EmailMessage, message_from_bytes(path.read_bytes(), policy=email_policy))
                    for path in (sorted(new.glob("*")) if new.exists() else [])]
        return [m for m in messages if m["To"] == recipient]

    def start(self) -> None:
        proc = self._proc = subprocess.Popen(
            [sys.executable, "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{self.port}",
             "-c", "aiosmtpd.handlers.Mailbox", str(self.mailbox)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

        def accepting() -> bool:
            if proc.poll() is not None:
                assert proc.stderr is not None
                raise AssertionError(f"the SMTP server ended: {proc.stderr.read().decode()}")
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", self.port)) == 0
        wait_for(accepting, 15, "the SMTP server accepts connections")

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(10)
            self._proc = None

    @contextlib.contextmanager
    def down(self) -> Iterator[None]:
        """The server stopped (connections refused) inside the block, started again after it."""
        self.stop()
        try:
            yield
        finally:
            self.start()


@contextlib.contextmanager
def smtp_server(directory: Path) -> Iterator[SmtpServer]:
    """A real SMTP server process on loopback, stopped at the end."""
    server = SmtpServer(directory)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def worker_environment(settings: Settings, **variables: str) -> Iterator[Settings]:
    """The stack's notification worker restarted with these environment variables (as `stepledger
    up` would start it with them), and restarted as it was at the end."""
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    notify.stop(settings)
    notify.start(settings)
    try:
        yield settings
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        notify.stop(settings)
        notify.start(settings)
