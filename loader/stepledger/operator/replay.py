"""`stepledger replay`: reprocess vault rows through today's validation and catalog.

The work happens in the database (api.replay, db/functions/80_replay/10_replay.sql); this drives it
chunk by chunk, each chunk its own transaction, and sums up. A chunk that is retried after a
network error is harmless: the run skips rows it has already replayed.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from stepledger import StepledgerError
from stepledger.api_client import IngestClient, RetryPolicy
from stepledger.ingest.load import BadLine, reason_of
from stepledger.ingest.outcomes import Outcomes
from stepledger.ingest.progress import Progress

OUTCOMES = ("rejected", "duplicate", "accepted", "any")


def parse_moment(text: str | None, what: str) -> str | None:
    """An ISO date (midnight UTC) or date-time (UTC when it has no offset), as RFC 3339."""
    if text is None:
        return None
    try:
        if len(text) == 10:
            moment = datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC)
        else:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
    except ValueError:
        raise StepledgerError(f"{what} {text!r} is not a date (YYYY-MM-DD) or date-time") from None
    return moment.isoformat()


@dataclass
class ReplaySummary(Outcomes):
    replay_id: str | None = None
    matching: int = 0
    unparsable: int = 0
    replayed: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    still_rejected: list[BadLine] = field(default_factory=list)
    dry_run: bool = False

    def lines(self, max_reasons: int = 10) -> list[str]:
        if self.dry_run:
            out = [f"stepledger: {self.matching:,} vault rows would be replayed"]
            if self.unparsable:
                out.append(f"  ({self.unparsable:,} more match but were not JSON: they cannot be "
                           "re-read and are left as they are)")
            return out
        out = [f"stepledger: replay {self.replay_id}: {self.replayed:,} vault rows replayed",
               *self.outcome_lines()]
        for reason, count in self.reasons.most_common(max_reasons):
            out.append(f"    {count:>10,}  {reason}")
        if self.unparsable:
            out.append(f"  not JSON    {self.unparsable:>12,}  (kept raw; cannot be replayed)")
        if self.still_rejected:
            out.append(f"still rejected (first {len(self.still_rejected)}):")
            out.extend("  " + bad.text() for bad in self.still_rejected)
        return out


def replay(client: IngestClient, outcome: str = "rejected", since: str | None = None,
           until: str | None = None, client_id: str | None = None, chunk: int = 1000,
           dry_run: bool = False, progress: Progress | None = None, max_shown: int = 20,
           retry: RetryPolicy | None = None) -> ReplaySummary:
    """Replay every matching vault row; returns what became of them."""
    if outcome not in OUTCOMES:
        raise StepledgerError(f"unknown outcome {outcome!r}; use one of {', '.join(OUTCOMES)}")
    retry = retry or RetryPolicy()
    filters: dict[str, object] = {"outcome": outcome, "since": since, "until": until,
                                  "client_id": client_id}
    counted = retry.run(lambda: client.rpc("replay", {**filters, "dry_run": True}))
    assert isinstance(counted, dict)
    summary = ReplaySummary(matching=int(counted["matching"]),
                            unparsable=int(counted["unparsable"]), dry_run=dry_run)
    if dry_run:
        return summary
    if progress is not None:
        progress.total = None
    while True:
        params = {**filters, "replay_id": summary.replay_id, "max_rows": chunk}
        answer = retry.run(lambda params=params: client.rpc("replay", params))
        assert isinstance(answer, dict)
        summary.replay_id = str(answer["replay_id"])
        summary.replayed += int(answer["replayed"])
        summary.accepted += int(answer["accepted"])
        summary.duplicates += int(answer["duplicates"])
        summary.rejected += int(answer["rejected"])
        for item in answer.get("rejections") or []:
            errors = list(item.get("errors") or [])
            summary.reasons[reason_of(errors)] += 1
            if len(summary.still_rejected) < max_shown:
                summary.still_rejected.append(
                    BadLine(f"vault row {item.get('vault_id')}", 0, errors))
        if progress is not None:
            progress.update(summary.replayed, label=f"replay {summary.replay_id}")
        if not answer.get("more") or int(answer["replayed"]) == 0:
            break
    if progress is not None:
        progress.finish()
    return summary
