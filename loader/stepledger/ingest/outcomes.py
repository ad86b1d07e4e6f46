"""What became of the events sent to the ingest API, counted the same way by the loader, the
tailer and replays."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Outcomes:
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0

    def outcome_lines(self) -> list[str]:
        """The three counts, one line each, as the commands' summaries print them."""
        return [f"  accepted    {self.accepted:>12,}",
                f"  duplicates  {self.duplicates:>12,}",
                f"  rejected    {self.rejected:>12,}"]
