"""The HTTP access matrix of tests/loader_endpoints.yaml, checked through the API gateway."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

MATRIX = yaml.safe_load((Path(__file__).parent / "loader_endpoints.yaml").read_text())
CASES = [(entry, role, role in entry["allow"])
         for entry in MATRIX["endpoints"] for role in entry["allow"] + entry["deny"]]


@pytest.mark.parametrize(("entry", "role", "allowed"), CASES,
                         ids=[f"{e['name']}-{r}" for e, r, _ in CASES])
def test_access(entry: dict[str, Any], role: str, allowed: bool,
                api: Callable[..., httpx.Client], jwt_for: Callable[..., str],
                api_token: Callable[..., str]) -> None:
    if role == "ingest":
        token = api_token("st-mary")
    else:
        token = None if role == "anon" else jwt_for(role, None if role == "admin" else "st-mary")
    client = api(token)
    response = client.request(entry["method"], entry["path"], json=entry.get("body"))
    if allowed:
        assert response.is_success, response.text
    else:
        assert response.status_code in (401, 403), response.text


def test_every_role_is_covered_once() -> None:
    for entry in MATRIX["endpoints"]:
        roles = entry["allow"] + entry["deny"]
        assert sorted(roles) == sorted({"anon", "client", "ingest", "admin"}), entry["name"]
