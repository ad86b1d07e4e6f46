"""A small HTTP client for the ingest API, shared by the loader, the demo and the SDK.

Errors are typed so that callers can decide whether to retry:
- `TransientError`: the network failed, or the server answered 5xx, 408 or 429; the same request
  may succeed later, and resending it is safe because events are deduplicated by `event_id`;
- `RequestRefused`: any other 4xx (bad token, no permission, malformed request); resending the
  same request cannot help.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import httpx

from stepledger import StepledgerError

T = TypeVar("T")
# How long a command waits for the API to answer at all before it gives up (stack down).
REACH_TIMEOUT_S = 3.0


@dataclass
class IngestResult:
    accepted: int = 0
    duplicates: int = 0
    rejected: list[dict[str, object]] = field(default_factory=list)

    def add(self, other: IngestResult, offset: int = 0) -> None:
        self.accepted += other.accepted
        self.duplicates += other.duplicates
        for item in other.rejected:
            self.rejected.append({**item, "index": int(item["index"]) + offset})  # type: ignore[call-overload]

    @classmethod
    def from_body(cls, body: object) -> IngestResult:
        if not isinstance(body, dict) or not {"accepted", "duplicates", "rejected"} <= body.keys():
            raise TransientError(f"unexpected answer from the ingest API: {str(body)[:200]}")
        return cls(int(body["accepted"]), int(body["duplicates"]), list(body["rejected"]))


class ApiError(StepledgerError):
    """The API could not be used; `status` is the HTTP status, or None for a network failure."""

    def __init__(self, message: str, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class TransientError(ApiError):
    """Worth retrying: network failure, 5xx, 408 or 429."""


class RequestRefused(ApiError):
    """A 4xx answer: the request itself is wrong (token, permission, body); do not retry."""


# How the caller gives a token: the CLI's flag by default; the SDK names its own argument.
CLI_TOKEN_ARGUMENT = "--token"
_HINTS = {
    401: "the token is missing, malformed or expired; pass {token_argument} or set "
         "STEPLEDGER_TOKEN (create one with `stepledger token create`)",
    403: "the token's role may not do this; ingest needs an ingest token or an admin login",
    404: "no such endpoint; is the URL the stepledger API (e.g. http://127.0.0.1:3000)?",
    413: "the request body is too large; send smaller batches",
}


def _reason(response: httpx.Response) -> tuple[str, str | None]:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:200] or response.reason_phrase, None
    if isinstance(body, dict):
        message = str(body.get("message") or body)
        if body.get("hint"):
            message += f" ({body['hint']})"
        code = body.get("code")
        return message, str(code) if code is not None else None
    return str(body)[:200], None


def raise_for_answer(response: httpx.Response, what: str,
                     token_argument: str = CLI_TOKEN_ARGUMENT) -> None:
    """Turn a non-2xx answer into TransientError or RequestRefused with a one-line reason."""
    if response.is_success:
        return
    status = response.status_code
    message, code = _reason(response)
    text = f"{what} failed with HTTP {status}: {message}"
    if status in (408, 429) or status >= 500:
        raise TransientError(text, status, code)
    hint = _HINTS.get(status, "").format(token_argument=token_argument) or None
    raise RequestRefused(f"{text}; {hint}" if hint and hint not in text else text, status, code)


@dataclass
class RetryPolicy:
    """Exponential backoff with jitter for transient errors.

    `attempts` counts tries (None: retry forever, the SDK's choice while events sit in its
    spool); the delay starts at `initial_s`, doubles up to `max_s`, and is jittered by ±25%.
    """

    attempts: int | None = 8
    initial_s: float = 0.5
    max_s: float = 30.0

    def delays(self) -> Iterable[float]:
        delay = self.initial_s
        tried = 1
        while self.attempts is None or tried < self.attempts:
            yield delay * random.uniform(0.75, 1.25)
            delay = min(self.max_s, delay * 2)
            tried += 1

    def run(self, call: Callable[[], T],
            on_retry: Callable[[TransientError, float], None] | None = None,
            sleep: Callable[[float], object] = time.sleep) -> T:
        """Call until it succeeds, a RequestRefused is raised, or the attempts are used up."""
        delays = iter(self.delays())
        while True:
            try:
                return call()
            except TransientError as exc:
                delay = next(delays, None)
                if delay is None:
                    raise
                if on_retry is not None:
                    on_retry(exc, delay)
                sleep(delay)


class IngestClient:
    """Posts batches of events to `POST /rpc/ingest` (or NDJSON to `/rpc/ingest_ndjson`).

    Bodies go out as text/plain: PostgREST parses an application/json array itself and refuses
    arrays whose objects have different keys (events with and without `error` or `data`); as text
    the body reaches the database unchanged, which parses it (docs/adr/0002-api-gateway.md).
    """

    def __init__(self, base_url: str, token: str, timeout: float = 60.0,
                 transport: httpx.BaseTransport | None = None,
                 token_argument: str = CLI_TOKEN_ARGUMENT) -> None:
        self.base_url = base_url.rstrip("/")
        self.token_argument = token_argument  # named in the hint of a 401
        self.http = httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport,
                                 headers={"Authorization": f"Bearer {token}"})

    def __enter__(self) -> IngestClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def check_reachable(self, within_s: float = REACH_TIMEOUT_S,
                        sleep: Callable[[float], object] = time.sleep) -> None:
        """Fail within seconds, not after a minute of retries, when nothing answers at the URL
        (or the gateway answers that the API behind it is down). Any other answer, even a 401,
        means the API is there; the request itself then reports what is wrong."""
        deadline = time.monotonic() + within_s
        while True:
            left = deadline - time.monotonic()
            try:
                response = self.http.get("/", timeout=max(0.5, min(2.0, left)))
            except httpx.TransportError as exc:
                reason = f"{type(exc).__name__}: {exc or 'no answer'}"
            else:
                if response.status_code not in (502, 503, 504):
                    return
                reason = f"HTTP {response.status_code} from the gateway"
            if time.monotonic() + 0.25 >= deadline:
                raise StepledgerError(f"cannot reach the API at {self.base_url} ({reason}); "
                                      "is the stack up? try `stepledger up`")
            sleep(0.25)

    def _post(self, path: str, what: str, **kwargs: object) -> object:
        return self._request("POST", path, what, **kwargs)

    def _request(self, method: str, path: str, what: str, **kwargs: object) -> object:
        """One request; its JSON answer, or the error typed (transient or refused)."""
        try:
            response = self.http.request(method, path, **kwargs)  # type: ignore[arg-type]
        except httpx.TransportError as exc:
            raise TransientError(f"{what}: cannot reach {self.base_url} "
                                 f"({type(exc).__name__}: {exc or 'no answer'})") from None
        raise_for_answer(response, what, self.token_argument)
        try:
            return response.json()
        except ValueError:
            raise TransientError(f"{what}: the answer is not JSON: {response.text[:200]}") from None

    def send(self, events: Sequence[object]) -> IngestResult:
        """One batch (index = position in `events`, 0-based)."""
        body = json.dumps(events, separators=(",", ":"), ensure_ascii=False).encode()
        return IngestResult.from_body(self._post(
            "/rpc/ingest", "ingest", content=body,
            headers={"Content-Type": "text/plain; charset=utf-8"}))

    def send_ndjson(self, body: bytes | str) -> IngestResult:
        """One event per line (index = 1-based line number in `body`)."""
        content = body.encode() if isinstance(body, str) else body
        return IngestResult.from_body(self._post(
            "/rpc/ingest_ndjson", "ingest", content=content,
            headers={"Content-Type": "application/x-ndjson"}))

    def send_unreadable(self, lines: Sequence[dict[str, object]]) -> IngestResult:
        """Keep lines that are not events in the vault: [{line, text, error}] (index = line)."""
        return IngestResult.from_body(self._post(
            "/rpc/ingest_unreadable", "ingest", json={"lines": list(lines)}))

    def get_json(self, path: str, what: str, params: dict[str, str],
                 timeout: float | None = None) -> object:
        """GET a JSON answer; errors typed as for POSTs."""
        return self._request("GET", path, what, params=params,
                             timeout=timeout if timeout is not None else self.http.timeout)

    def rpc(self, name: str, params: dict[str, object]) -> object:
        """Call another function of the API with named parameters."""
        return self._post(f"/rpc/{name}", name, json=params)
