"""The ingest client as the tests use it: the product's client, plus sending any number of
events in batches with one summed result (the product sends through Loader or the SDK)."""

from __future__ import annotations

from collections.abc import Iterable

from stepledger import api_client
from stepledger.api_client import IngestResult


class IngestClient(api_client.IngestClient):
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
