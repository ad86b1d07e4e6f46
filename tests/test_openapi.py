"""GET / serves the OpenAPI document of the caller's role: every operation it lists works for that
role (no 403, 404 or 405 for want of a grant or a route), what the role may not do is not listed,
and the bearer scheme is declared."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import psycopg
import pytest

from billing_support import make_client

# Answers that mean "this operation does not exist or is not allowed": the document promised it.
# (A 404 with the database's own error code is the operation answering: e.g. an unknown job.)
NOT_ALLOWED_CODES = {"42501", "PGRST202", "PGRST205", "PGRST301", "PGRST302"}
DUMMY = {"integer": 1, "number": 1, "boolean": False, "array": []}


@pytest.fixture(scope="module")
def tokens(jwt_for: Callable[..., str], api_token: Callable[..., str],
           su_conn: psycopg.Connection) -> dict[str, str | None]:
    client = make_client(su_conn, prefix="oa")
    return {"anon": None, "client": jwt_for("client", client), "admin": jwt_for("admin"),
            "ingest": api_token(client, "openapi test")}


def document(api_url: str, token: str | None) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    answer = httpx.get(f"{api_url}/", headers=headers, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()


def verbs(doc: dict[str, Any]) -> dict[str, set[str]]:
    return {path: set(item) for path, item in doc["paths"].items()}


@pytest.mark.parametrize("role", ["anon", "client", "admin", "ingest"])
def test_the_document_declares_the_bearer_scheme(api_url: str, tokens: dict[str, str | None],
                                                 role: str) -> None:
    doc = document(api_url, tokens[role])
    assert doc["swagger"] == "2.0"
    [(name, scheme)] = doc["securityDefinitions"].items()
    assert (scheme["type"], scheme["in"], scheme["name"]) == ("apiKey", "header", "Authorization")
    assert "Bearer" in scheme["description"]
    assert doc["security"] == [{name: []}]
    assert "requested with" in doc["info"]["description"]


def test_each_role_sees_its_own_endpoints_and_verbs(api_url: str,
                                                    tokens: dict[str, str | None]) -> None:
    anon = verbs(document(api_url, tokens["anon"]))
    client = verbs(document(api_url, tokens["client"]))
    admin = verbs(document(api_url, tokens["admin"]))
    ingest = verbs(document(api_url, tokens["ingest"]))

    assert anon == {"/": {"get"}, "/rpc/login": {"post"}, "/rpc/openapi": {"get", "post"}}
    # Admins add prices; nobody changes or removes them (append-only): no PATCH, no DELETE.
    assert admin["/prices"] == {"get", "post"}
    assert client["/prices"] == {"get"}
    # Ingest is a volatile function: POST only, and only for roles that may call it.
    assert admin["/rpc/ingest"] == ingest["/rpc/ingest"] == {"post"}
    assert "/rpc/ingest" not in client and "/rpc/finalize_invoice" not in client
    assert admin["/rpc/finalize_invoice"] == {"post"}
    assert client["/rpc/invoice"] == {"get", "post"}
    assert "/jobs" not in ingest and "/api_tokens" not in client
    for listed in (client, admin, ingest):
        assert not any({"patch", "delete"} & v for p, v in listed.items() if p != "/"), listed


def _request(path: str, verb: str, operation: dict[str, Any]) -> dict[str, Any]:
    """A minimal request for an operation: required arguments with dummy values."""
    if verb == "get":
        params = {p["name"]: DUMMY.get(p.get("type", "string"), "x")
                  for p in operation.get("parameters", []) if p.get("required")}
        if not path.startswith("/rpc/"):
            params["limit"] = 1
        return {"params": params}
    [body] = [p for p in operation.get("parameters", []) if p["in"] == "body"]
    schema = body["schema"]
    if "properties" not in schema:
        return {"json": []}
    return {"json": {name: DUMMY.get(prop.get("type", "string"), "x")
                     for name, prop in schema["properties"].items()
                     if name in schema.get("required", [])}}


@pytest.mark.parametrize("role", ["anon", "client", "admin", "ingest"])
def test_every_listed_operation_answers_for_that_role(api_url: str,
                                                      tokens: dict[str, str | None],
                                                      role: str) -> None:
    token = tokens[role]
    doc = document(api_url, token)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    wrong = []
    with httpx.Client(base_url=api_url, headers=headers, timeout=60) as http:
        for path, item in doc["paths"].items():
            for verb, operation in item.items():
                if path in ("/rpc/refresh_usage", "/rpc/refresh_analytics", "/rpc/replay"):
                    continue  # work the whole session's data; their grants are checked above
                answer = http.request(verb.upper(), path, **_request(path, verb, operation))
                code = answer.json().get("code") if answer.headers.get(
                    "content-type", "").startswith("application/json") and answer.content \
                    and isinstance(answer.json(), dict) else None
                missing = answer.status_code == 405 or (
                    answer.status_code == 404 and not str(code or "").startswith("SL"))
                if missing or code in NOT_ALLOWED_CODES:
                    wrong.append((verb, path, answer.status_code, answer.text[:120]))
    assert wrong == []


def test_what_is_not_listed_is_indeed_refused(api_url: str, tokens: dict[str, str | None]
                                              ) -> None:
    admin = {"Authorization": f"Bearer {tokens['admin']}"}
    for verb in ("PATCH", "DELETE"):
        answer = httpx.request(verb, f"{api_url}/prices", params={"price_id": "eq.0"},
                               json={"unit_price": 1} if verb == "PATCH" else None,
                               headers=admin, timeout=30)
        assert answer.status_code in (403, 405), answer.text
    answer = httpx.get(f"{api_url}/rpc/ingest", headers=admin, timeout=30)
    assert answer.status_code in (404, 405), answer.text


def test_the_document_can_be_asked_for_as_openapi_json(api_url: str) -> None:
    answer = httpx.get(f"{api_url}/", headers={"Accept": "application/openapi+json"}, timeout=30)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/openapi+json")
