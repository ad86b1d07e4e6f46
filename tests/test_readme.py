"""The README answers a new user's first questions in the order they come up."""

from __future__ import annotations

import re
from pathlib import Path

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_the_token_is_made_before_the_curl_that_uses_it() -> None:
    made = README.index("TOKEN=$(")
    used = README.index("$TOKEN")
    assert made < used
    assert "stepledger token create" in README[made:used]


def test_the_port_overrides_are_shown_as_a_command() -> None:
    assignment = re.search(r"export STEPLEDGER_HOME=\S+ STEPLEDGER_PG_PORT=\d+ "
                           r"STEPLEDGER_API_PORT=\d+ STEPLEDGER_WEB_PORT=\d+", README)
    assert assignment is not None
    assert "make up" in README[assignment.end():assignment.end() + 200]


def test_the_openapi_document_is_per_caller() -> None:
    assert "lists the endpoints and\nverbs of **the caller's role**" in README
    assert "send your token" in README


def test_step_keys_are_shown_where_pipeline_developers_look() -> None:
    assert "stepledger pipeline show" in README
    assert "job.skip_remaining(" in README
