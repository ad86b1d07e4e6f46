"""A small HTTP client for the ingest API, shared by the loader, the demo and the SDK."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import httpx

from stepledger import StepledgerError


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


class IngestClient:
    """Posts batches of events to `POST /rpc/ingest`.

    Bodies go out as text/plain: PostgREST parses an application/json array itself and refuses
    arrays whose objects have different keys (events with and without `error` or `data`); as text
    the body reaches the database unchanged, which parses it (docs/adr/0002-api-gateway.md).
    """

    def __init__(self, base_url: str, token: str, timeout: float = 60.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout, transport=transport,
                                 headers={"Authorization": f"Bearer {token}"})

    def __enter__(self) -> IngestClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def send(self, events: Sequence[object]) -> IngestResult:
        response = self.http.post("/rpc/ingest", content=json.dumps(events, separators=(",", ":")),
                                  headers={"Content-Type": "text/plain; charset=utf-8"})
        if response.status_code != 200:
            raise StepledgerError(f"ingest failed with HTTP {response.status_code}: {_reason(response)}")
        body = response.json()
        return IngestResult(body["accepted"], body["duplicates"], list(body["rejected"]))

    def send_all(self, events: Iterable[object], batch_size: int = 1000) -> IngestResult:
        total = IngestResult()
        batch: list[object] = []
        sent = 0
        for event in events:
            batch.append(event)
            if len(batch) >= batch_size:
                total.add(self.send(batch), sent)
                sent += len(batch)
                batch = []
        if batch:
            total.add(self.send(batch), sent)
        return total


def _reason(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict):
        return str(body.get("message") or body)
    return str(body)[:200]
