"""POST /rpc/login and /rpc/refresh_token: tokens signed in the database, identical answers for
wrong emails and wrong passwords, lockout after repeated failures, roles, disabled users, and the
gateway's rate limit.

Most logins here go straight to PostgREST: the gateway limits /rpc/login to 5 requests a second
per address, which test_gateway_limits_login_rate exercises on purpose.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import jwt
import psycopg
import pytest

from auth_support import PASSWORD, add_client, add_user, login, unique, wait_until
from stepledger.settings import Settings


@pytest.fixture(scope="module")
def people(su_conn: psycopg.Connection) -> dict[str, str]:
    client_id = add_client(su_conn, unique("login"))
    users = {
        "client_id": client_id,
        "client": f"nurse@{client_id}.example",
        "admin": f"it@{client_id}.example",
        "both": f"lead@{client_id}.example",
    }
    users["client_user_id"] = add_user(su_conn, users["client"], ["client"], client_id)
    users["admin_user_id"] = add_user(su_conn, users["admin"], ["admin"])
    users["both_user_id"] = add_user(su_conn, users["both"], ["client", "admin"], client_id)
    return users


def _claims(token: str, settings: Settings) -> dict[str, object]:
    return jwt.decode(token, settings.jwt_secret, algorithms=["HS256"],
                      options={"require": ["exp", "iat", "role", "sub", "sid", "jti"]})


def test_login_returns_a_signed_short_lived_token(pgrst: httpx.Client, settings: Settings,
                                                  people: dict[str, str]) -> None:
    response = login(pgrst, people["client"].upper())  # emails are case-insensitive
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"token", "role", "client_id", "expires_at"}
    assert body["role"] == "client" and body["client_id"] == people["client_id"]
    claims = _claims(body["token"], settings)  # verifies the signature with the stack's secret
    assert claims["role"] == "client" and claims["client_id"] == people["client_id"]
    assert claims["sub"] == people["client_user_id"]
    assert 0 < int(claims["exp"]) - int(claims["iat"]) <= 3600  # type: ignore[call-overload]
    assert abs(int(claims["iat"]) - time.time()) < 120  # type: ignore[call-overload]
    assert body["expires_at"] == time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                               time.gmtime(int(claims["exp"])))  # type: ignore[call-overload]
    header = jwt.get_unverified_header(body["token"])
    assert header["alg"] == "HS256"
    # every login is a different token
    again = login(pgrst, people["client"]).json()
    assert _claims(again["token"], settings)["jti"] != claims["jti"]


def test_login_token_reads_through_the_gateway(pgrst: httpx.Client,
                                               api: Callable[..., httpx.Client],
                                               people: dict[str, str]) -> None:
    token = login(pgrst, people["client"]).json()["token"]
    response = api(token).get("/jobs", params={"limit": "1"})
    assert response.status_code == 200
    assert api().get("/jobs").status_code == 401  # the same request without a token


def test_wrong_password_and_unknown_email_answer_the_same(pgrst: httpx.Client,
                                                          people: dict[str, str]) -> None:
    wrong_password = login(pgrst, people["client"], "not the password at all")
    unknown_email = login(pgrst, f"nobody-{unique('x')}@example.org", PASSWORD)
    empty = pgrst.post("/rpc/login", json={"email": "", "password": ""})
    for response in (wrong_password, unknown_email, empty):
        assert response.status_code == 401
        assert response.json() == {"code": "SL301", "message": "invalid email or password",
                                   "details": None, "hint": None}
        assert "token" not in response.text


def test_unknown_email_costs_the_same_bcrypt_work(pgrst: httpx.Client,
                                                  su_conn: psycopg.Connection) -> None:
    email = f"timing-{unique('x')}@example.org"
    add_user(su_conn, email, ["admin"])

    def median(address: str) -> float:
        durations = []
        for _ in range(4):  # fewer than the 5 failures that lock an email
            started = time.perf_counter()
            assert login(pgrst, address, "definitely wrong").status_code == 401
            durations.append(time.perf_counter() - started)
        return statistics.median(durations)

    known = median(email)
    unknown = median(f"ghost-{unique('x')}@example.org")
    # bcrypt dominates both (tens of ms); without the dummy hash the unknown email would answer
    # several times faster. A wide band keeps this robust on a busy machine.
    assert 0.4 < unknown / known < 2.5, (known, unknown)


def test_repeated_failures_lock_the_email_for_a_while(pgrst: httpx.Client,
                                                      su_conn: psycopg.Connection) -> None:
    client_id = add_client(su_conn, unique("lock"))
    email = f"target@{client_id}.example"
    add_user(su_conn, email, ["client"], client_id)
    for _ in range(4):
        assert login(pgrst, email, "guess guess guess").status_code == 401
    assert login(pgrst, email).status_code == 200  # a success before the fifth clears the count
    for _ in range(5):
        assert login(pgrst, email, "guess guess guess").status_code == 401
    locked = login(pgrst, email)  # the right password, but locked
    assert locked.status_code == 429
    assert locked.json()["code"] == "SL303"
    assert 1 <= int(locked.headers["Retry-After"]) <= 15 * 60
    assert "token" not in locked.text
    # The lock ends on its own: move it into the past instead of waiting 15 minutes.
    su_conn.execute("update auth.login_failures set locked_until = now() - interval '1 second', "
                    "last_failed_at = now() - interval '16 minutes' "
                    "where email_hash = sha256(convert_to(%s, 'UTF8'))", [email])
    assert login(pgrst, email).status_code == 200
    remaining = su_conn.execute("select count(*) from auth.login_failures "
                                "where email_hash = sha256(convert_to(%s, 'UTF8'))", [email])
    assert remaining.fetchone() == (0,)


def test_unknown_emails_lock_the_same_way(pgrst: httpx.Client) -> None:
    email = f"ghost-{unique('x')}@example.org"
    answers = [login(pgrst, email, "guess guess guess").status_code for _ in range(6)]
    assert answers == [401] * 5 + [429]


def test_lockout_only_stores_a_hash_of_the_email(pgrst: httpx.Client,
                                                 su_conn: psycopg.Connection) -> None:
    email = f"ghost-{unique('x')}@example.org"
    assert login(pgrst, email, "guess guess guess").status_code == 401
    row = su_conn.execute("select failures from auth.login_failures "
                          "where email_hash = sha256(convert_to(%s, 'UTF8'))", [email]).fetchone()
    assert row == (1,)
    leaked = su_conn.execute("select count(*) from auth.login_failures "
                             "where encode(email_hash, 'escape') like %s", [f"%{email}%"])
    assert leaked.fetchone() == (0,)


def test_a_user_with_two_roles_chooses_one(pgrst: httpx.Client, settings: Settings,
                                           people: dict[str, str]) -> None:
    default = login(pgrst, people["both"]).json()
    assert default["role"] == "client" and default["client_id"] == people["client_id"]
    as_admin = login(pgrst, people["both"], role="admin").json()
    assert as_admin["role"] == "admin" and as_admin["client_id"] is None
    claims = _claims(as_admin["token"], settings)
    assert claims["role"] == "admin" and "client_id" not in claims


def test_a_role_the_user_does_not_hold_is_refused(pgrst: httpx.Client,
                                                  people: dict[str, str]) -> None:
    response = login(pgrst, people["client"], role="admin")
    assert response.status_code == 403
    assert response.json()["code"] == "SL302"
    assert "token" not in response.json()
    for role in ("ingest", "postgres", "bi_reader"):
        other = login(pgrst, people["admin"], role=role)
        assert other.status_code == 403 and other.json()["code"] == "SL302"
    assert login(pgrst, people["admin"], role="admin").status_code == 200


def test_admin_login_reads_every_client(pgrst: httpx.Client, api: Callable[..., httpx.Client],
                                        people: dict[str, str]) -> None:
    token = login(pgrst, people["admin"]).json()["token"]
    assert api(token).get("/api_tokens", params={"limit": "1"}).status_code == 200
    client_token = login(pgrst, people["client"]).json()["token"]
    assert api(client_token).get("/api_tokens").status_code == 403


def test_a_disabled_user_cannot_log_in_and_its_tokens_stop_working(
        pgrst: httpx.Client, api: Callable[..., httpx.Client], su_conn: psycopg.Connection) -> None:
    client_id = add_client(su_conn, unique("dis"))
    email = f"leaver@{client_id}.example"
    add_user(su_conn, email, ["client"], client_id)
    token = login(pgrst, email).json()["token"]
    assert api(token).get("/jobs").status_code == 200
    su_conn.execute("select auth.set_user_disabled(%s, true)", [email])
    refused = api(token).get("/jobs")
    assert refused.status_code == 401 and refused.json()["code"] == "SL312"
    failed = login(pgrst, email)
    assert failed.status_code == 401 and failed.json()["code"] == "SL301"
    su_conn.execute("select auth.set_user_disabled(%s, false)", [email])
    # enabling the user again revives none of its old tokens (test_auth_sessions.py)
    assert api(token).get("/jobs").status_code == 401
    assert api(login(pgrst, email).json()["token"]).get("/jobs").status_code == 200


def test_a_user_who_loses_a_role_loses_its_tokens(pgrst: httpx.Client,
                                                  api: Callable[..., httpx.Client],
                                                  su_conn: psycopg.Connection) -> None:
    email = f"temp-admin-{unique('x')}@example.org"
    add_user(su_conn, email, ["admin"])
    token = login(pgrst, email).json()["token"]
    assert api(token).get("/api_tokens", params={"limit": "1"}).status_code == 200
    su_conn.execute("update auth.users set roles = '{client}', client_id = %s where email = %s",
                    [_any_client(su_conn), email])
    refused = api(token).get("/api_tokens")
    assert refused.status_code == 401 and refused.json()["code"] == "SL312"


def _any_client(conn: psycopg.Connection) -> str:
    row = conn.execute("select client_id from ledger.clients order by client_id limit 1").fetchone()
    assert row is not None
    return str(row[0])


def test_refresh_gives_a_new_token_for_the_same_login(pgrst: httpx.Client, settings: Settings,
                                                      people: dict[str, str]) -> None:
    first = login(pgrst, people["client"]).json()["token"]
    response = pgrst.post("/rpc/refresh_token", headers={"Authorization": f"Bearer {first}"})
    assert response.status_code == 200, response.text
    body = response.json()
    old, new = _claims(first, settings), _claims(body["token"], settings)
    assert new["jti"] != old["jti"]
    for claim in ("sub", "sid", "role", "client_id", "auth_time"):
        assert new[claim] == old[claim]
    assert pgrst.post("/rpc/refresh_token").status_code == 401  # anonymous: nothing to refresh


def test_refresh_refuses_old_logins_and_operator_tokens(pgrst: httpx.Client,
                                                        jwt_for: Callable[..., str],
                                                        su_conn: psycopg.Connection,
                                                        settings: Settings,
                                                        people: dict[str, str]) -> None:
    def login_from(hours_ago: int) -> str:
        token = login(pgrst, people["client"]).json()["token"]
        su_conn.execute("update auth.sessions set auth_time = now() - make_interval(hours => %s) "
                        "where session_id = %s", [hours_ago, _claims(token, settings)["sid"]])
        return str(token)

    old = login_from(13)
    response = pgrst.post("/rpc/refresh_token", headers={"Authorization": f"Bearer {old}"})
    assert response.status_code == 400 and response.json()["code"] == "SL309"
    operator = jwt_for("admin", sub="operator")
    response = pgrst.post("/rpc/refresh_token", headers={"Authorization": f"Bearer {operator}"})
    assert response.status_code == 400 and response.json()["code"] == "SL309"
    recent = login_from(1)
    response = pgrst.post("/rpc/refresh_token", headers={"Authorization": f"Bearer {recent}"})
    assert response.status_code == 200


def test_login_needs_the_secret_in_the_database(db: psycopg.Connection,
                                                people: dict[str, str]) -> None:
    db.execute("delete from auth.secrets")
    with pytest.raises(psycopg.Error) as raised:
        db.execute("select api.login(%s, %s)", [people["client"], PASSWORD])
    assert raised.value.sqlstate == "SL305"


def test_the_secret_is_the_one_postgrest_verifies_with(su_conn: psycopg.Connection,
                                                       settings: Settings) -> None:
    row = su_conn.execute("select value from auth.secrets where name = 'jwt_secret'").fetchone()
    assert row == (settings.jwt_secret,)


@pytest.mark.parametrize("port", ["api", "web"])
def test_gateway_limits_login_rate(settings: Settings, port: str) -> None:
    base = settings.api_url if port == "api" else f"{settings.web_url}/api"
    with httpx.Client(base_url=base, timeout=30.0) as client:

        def attempt() -> httpx.Response:
            # a new email each time, so the database's own lockout never answers
            return client.post("/rpc/login", json={"email": f"flood-{unique('x')}@example.org",
                                                   "password": "not it"})

        # 30 at once: well past the burst of 10, however slow bcrypt is on a busy machine
        with ThreadPoolExecutor(max_workers=30) as pool:
            responses = list(pool.map(lambda _: attempt(), range(30)))
        statuses = sorted(r.status_code for r in responses)
        assert set(statuses) == {401, 429}, statuses
        assert statuses.count(429) >= 5, statuses
        # refused by the gateway, not by the database's lockout
        assert all("SL303" not in r.text for r in responses)
        # The limit recovers (5 requests a second). Wait until it lets several probes in a row
        # through, so that the tests after this one find it rested.
        passed: list[bool] = []

        def rested() -> bool:
            passed.append(attempt().status_code == 401)
            return passed[-3:] == [True, True, True]

        assert wait_until(rested, timeout=15, interval=0.5)
