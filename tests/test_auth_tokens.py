"""Tokens that must be refused (forged, expired, alg none, wrong role, revoked, altered) and the
life of an API token: create, use, last use, revoke, through HTTP and the CLI.

Every refusal is paired with the same request made with a valid token, which succeeds.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import psycopg
import pytest

from auth_support import (
    add_client,
    add_user,
    ingest,
    job_events,
    login,
    register_botimage,
    unique,
    wait_until,
)
from stacks import run_cli_process
from stepledger.settings import Settings


def _b64(data: dict[str, object]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def client_id(su_conn: psycopg.Connection) -> str:
    value = unique("tok")
    register_botimage(su_conn, value)
    return value


@pytest.fixture(scope="module")
def admin_token(su_conn: psycopg.Connection, settings: Settings) -> str:
    email = f"tokens-admin-{unique('x')}@example.org"
    add_user(su_conn, email, ["admin"])
    with httpx.Client(base_url=settings.postgrest_url) as pgrst:
        response = login(pgrst, email)
    assert response.status_code == 200
    return str(response.json()["token"])


def _create(api: Callable[..., httpx.Client], admin_token: str, client: str | None,
            name: str = "scanner") -> dict[str, str]:
    response = api(admin_token).post("/rpc/create_api_token",
                                     json={"client_id": client, "name": name, "scope": "ingest"})
    assert response.status_code == 200, response.text
    return dict(response.json())


# ---- tokens PostgREST or the pre-request hook must refuse --------------------------------------

def test_forged_signature_is_refused(api: Callable[..., httpx.Client],
                                     jwt_for: Callable[..., str]) -> None:
    forged = jwt.encode({"role": "admin", "exp": int(time.time()) + 600},
                        "a different secret that is long enough to sign", algorithm="HS256")
    assert api(forged).get("/jobs").status_code == 401
    # same claims, same payload, signature swapped in from another token
    good = jwt_for("admin")
    header, payload, _ = good.split(".")
    other_sig = forged.split(".")[2]
    assert api(f"{header}.{payload}.{other_sig}").get("/jobs").status_code == 401
    assert api(good).get("/jobs").status_code == 200


def test_expired_token_is_refused(api: Callable[..., httpx.Client],
                                  jwt_for: Callable[..., str]) -> None:
    expired = jwt_for("admin", exp=int(time.time()) - 120)
    response = api(expired).get("/jobs")
    assert response.status_code == 401
    assert "expired" in response.text.lower()
    assert api(jwt_for("admin")).get("/jobs").status_code == 200


def test_alg_none_is_refused(api: Callable[..., httpx.Client],
                             jwt_for: Callable[..., str]) -> None:
    claims = {"role": "admin", "exp": int(time.time()) + 600}
    for header in ({"alg": "none", "typ": "JWT"}, {"alg": "None"}, {"alg": "HS512"}):
        unsigned = f"{_b64(header)}.{_b64(claims)}."
        assert api(unsigned).get("/jobs").status_code == 401, header
    assert api(jwt_for("admin")).get("/jobs").status_code == 200


def test_login_tokens_must_expire(api: Callable[..., httpx.Client], settings: Settings,
                                  client_id: str) -> None:
    for role, extra in (("admin", {}), ("client", {"client_id": client_id})):
        forever = jwt.encode({"role": role, **extra}, settings.jwt_secret, algorithm="HS256")
        response = api(forever).get("/jobs")
        assert response.status_code == 401 and response.json()["code"] == "SL312", role


def test_client_token_without_a_client_is_refused(api: Callable[..., httpx.Client],
                                                  jwt_for: Callable[..., str],
                                                  client_id: str) -> None:
    response = api(jwt_for("client")).get("/jobs")
    assert response.status_code == 401 and response.json()["code"] == "SL312"
    assert api(jwt_for("client", client_id)).get("/jobs").status_code == 200


@pytest.mark.parametrize("role", ["postgres", "stepledger_owner", "authenticator", "bi_reader",
                                  "bi_all_clients", "no_such_role", "ADMIN", ""])
def test_wrong_role_claims_are_refused(api: Callable[..., httpx.Client],
                                       jwt_for: Callable[..., str], role: str) -> None:
    response = api(jwt_for(role)).get("/jobs")
    assert response.status_code in (400, 401, 403), response.text
    assert not response.text.startswith("[")  # never rows
    assert api(jwt_for("admin")).get("/jobs").status_code == 200


def test_an_ingest_token_signed_outside_the_database_is_refused(
        api: Callable[..., httpx.Client], settings: Settings,
        api_token: Callable[..., str], client_id: str) -> None:
    # Signed with the right secret, but never issued by the database (jwt_for would record it).
    events = job_events(client_id, unique("job"))[:1]
    for claims in ({}, {"jti": "not-a-uuid"}, {"jti": "00000000-0000-4000-8000-000000000000"}):
        token = jwt.encode({"role": "ingest", "client_id": client_id, **claims},
                           settings.jwt_secret, algorithm="HS256")
        response = ingest(api(token), events)
        assert response.status_code == 401 and response.json()["code"] == "SL311", claims
    registered = ingest(api(api_token(client_id)), events)
    assert registered.status_code == 200 and registered.json()["accepted"] == 1


# ---- API tokens over HTTP ----------------------------------------------------------------------

def test_api_token_ingests_for_its_client_and_records_its_last_use(
        api: Callable[..., httpx.Client], admin_token: str, client_id: str,
        su_conn: psycopg.Connection, settings: Settings) -> None:
    created = _create(api, admin_token, client_id, "ct scanner 3")
    assert set(created) >= {"token", "token_id"}
    claims = jwt.decode(created["token"], settings.jwt_secret, algorithms=["HS256"])
    assert claims["role"] == "ingest" and claims["client_id"] == client_id
    assert claims["jti"] == created["token_id"] and "exp" not in claims
    stored = su_conn.execute("select token_hash, last_used_at from auth.api_tokens "
                             "where token_id = %s", [created["token_id"]]).fetchone()
    assert stored is not None and stored[1] is None
    assert created["token"].encode() not in bytes(stored[0])  # only the hash is kept
    events = job_events(client_id, unique("job"))
    response = ingest(api(created["token"]), events)
    assert response.status_code == 200 and response.json()["accepted"] == len(events)
    used = su_conn.execute("select last_used_at > now() - interval '1 minute' from auth.api_tokens "
                           "where token_id = %s", [created["token_id"]]).fetchone()
    assert used == (True,)
    listed = api(admin_token).get("/api_tokens", params={"token_id": f"eq.{created['token_id']}"})
    assert listed.status_code == 200
    [row] = listed.json()
    assert row["active"] is True and row["client_id"] == client_id and row["name"] == "ct scanner 3"
    assert "token_hash" not in row and "token" not in row


def test_revoked_token_is_refused_on_its_next_request(api: Callable[..., httpx.Client],
                                                      admin_token: str, client_id: str) -> None:
    created = _create(api, admin_token, client_id)
    pipeline = api(created["token"])  # one keep-alive connection, as a pipeline would hold
    first = job_events(client_id, unique("job"))
    assert ingest(pipeline, first).status_code == 200
    revoked = api(admin_token).post("/rpc/revoke_api_token", json={"token_id": created["token_id"]})
    assert revoked.status_code == 200 and revoked.json()["token_id"] == created["token_id"]
    refused = ingest(pipeline, job_events(client_id, unique("job")))
    assert refused.status_code == 401
    assert refused.json()["code"] == "SL311" and "revoked" in refused.json()["message"]
    listed = api(admin_token).get("/api_tokens", params={"token_id": f"eq.{created['token_id']}"})
    assert listed.json()[0]["active"] is False
    # revoking again is harmless; an unknown id is an error
    again = api(admin_token).post("/rpc/revoke_api_token", json={"token_id": created["token_id"]})
    assert again.status_code == 200
    unknown = api(admin_token).post("/rpc/revoke_api_token",
                                    json={"token_id": "00000000-0000-4000-8000-000000000000"})
    assert unknown.status_code == 400 and unknown.json()["code"] == "SL307"


def test_altered_api_token_is_refused(api: Callable[..., httpx.Client], admin_token: str,
                                      client_id: str, su_conn: psycopg.Connection,
                                      settings: Settings) -> None:
    other = unique("tok")
    add_client(su_conn, other)
    created = _create(api, admin_token, client_id)
    claims = jwt.decode(created["token"], settings.jwt_secret, algorithms=["HS256"])
    events = job_events(other, unique("job"))
    # Someone with the signing secret re-signs the token's id for another client, or for all.
    for changed in ({**claims, "client_id": other},
                    {k: v for k, v in claims.items() if k != "client_id"},
                    {**claims, "iat": int(claims["iat"]) + 1}):
        resigned = jwt.encode(changed, settings.jwt_secret, algorithm="HS256")
        response = ingest(api(resigned), events)
        assert response.status_code == 401 and response.json()["code"] == "SL311", changed
    # the genuine token still works, and may not write for the other client
    genuine = ingest(api(created["token"]), events)
    assert genuine.status_code == 200 and genuine.json()["accepted"] == 0
    assert len(genuine.json()["rejected"]) == len(events)


def test_token_for_every_client_writes_for_any(api: Callable[..., httpx.Client], admin_token: str,
                                               client_id: str, su_conn: psycopg.Connection) -> None:
    other = unique("tok")
    add_client(su_conn, other)
    created = _create(api, admin_token, None, "central loader")
    events = job_events(client_id, unique("job")) + job_events(other, unique("job"))
    response = ingest(api(created["token"]), events)
    assert response.status_code == 200 and response.json()["accepted"] == len(events)


@pytest.mark.parametrize(("body", "code"), [
    ({"client_id": None, "name": "x", "scope": "admin"}, "SL306"),
    ({"client_id": None, "name": "", "scope": "ingest"}, "SL306"),
    ({"client_id": "no-such-client", "name": "x", "scope": "ingest"}, "SL306"),
])
def test_bad_token_requests_are_refused(api: Callable[..., httpx.Client], admin_token: str,
                                        body: dict[str, object], code: str) -> None:
    response = api(admin_token).post("/rpc/create_api_token", json=body)
    assert response.status_code == 400 and response.json()["code"] == code


def test_only_admins_manage_tokens(api: Callable[..., httpx.Client], jwt_for: Callable[..., str],
                                   admin_token: str, client_id: str) -> None:
    body = {"client_id": client_id, "name": "sneaky", "scope": "ingest"}
    ingest_token = _create(api, admin_token, client_id)["token"]
    for token, status in ((None, 401), (jwt_for("client", client_id), 403), (ingest_token, 403)):
        assert api(token).post("/rpc/create_api_token", json=body).status_code == status
        assert api(token).get("/api_tokens").status_code == status
        assert api(token).post("/rpc/revoke_api_token", json={
            "token_id": "00000000-0000-4000-8000-000000000000"}).status_code == status
    assert api(admin_token).post("/rpc/create_api_token", json=body).status_code == 200


def test_in_sql_only_admins_pass_the_function_checks(db: psycopg.Connection,
                                                     as_user: Callable[..., Any],
                                                     client_id: str) -> None:
    # Even with a grant by mistake, the functions check the caller's role themselves.
    db.execute("grant execute on function api.create_api_token(text, text, text) to client")
    with as_user(db, "client", client_id), pytest.raises(psycopg.Error) as raised:
        db.execute("select api.create_api_token(%s, 'x')", [client_id])
    assert raised.value.sqlstate == "SL309"


# ---- the CLI -----------------------------------------------------------------------------------

def test_cli_token_create_prints_a_working_token_and_revoke_stops_it(
        api: Callable[..., httpx.Client], settings: Settings, client_id: str) -> None:
    created = run_cli_process(settings, "token", "create", "--client", client_id,
                              "--name", "cli test", timeout=60)
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.count(".") == 2 and "\n" not in token
    events = job_events(client_id, unique("job"))
    assert ingest(api(token), events).json()["accepted"] == len(events)
    token_id = jwt.decode(token, settings.jwt_secret, algorithms=["HS256"])["jti"]
    assert token_id in created.stderr
    revoked = run_cli_process(settings, "token", "revoke", token_id, timeout=60)
    assert revoked.returncode == 0, revoked.stderr
    assert wait_until(lambda: ingest(api(token), events).status_code == 401, timeout=5)
