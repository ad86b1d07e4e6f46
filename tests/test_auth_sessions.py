"""Login sessions: a password change, disabling a user and POST /rpc/logout_everywhere end every
token the user holds at once; re-enabling revives none; refresh tokens rotate and a reused one
ends its whole session; user ids in a token are compared as uuids, whatever their spelling.

Every refusal is paired with a token that still works (another session, another user, a new
login), so that a test which refuses everything for a wrong reason fails.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import httpx
import jwt
import psycopg
import pytest

from auth_support import PASSWORD, add_client, add_user, login, unique
from stacks import run_cli_process
from stepledger.settings import Settings

NEW_PASSWORD = "a brand new passphrase"


@pytest.fixture(scope="module")
def client_id(su_conn: psycopg.Connection) -> str:
    return add_client(su_conn, unique("sess"))


def _person(su_conn: psycopg.Connection, client_id: str,
            roles: tuple[str, ...] = ("client",)) -> tuple[str, str]:
    email = f"person-{unique('x')}@{client_id}.example"
    return email, add_user(su_conn, email, list(roles), client_id)


class Person(NamedTuple):
    email: str
    user_id: str


@pytest.fixture
def person(su_conn: psycopg.Connection, client_id: str) -> Person:
    """A new user of the module's client, with the client role."""
    return Person(*_person(su_conn, client_id))


def _token(pgrst: httpx.Client, email: str, password: str = PASSWORD,
           role: str | None = None) -> str:
    response = login(pgrst, email, password, role)
    assert response.status_code == 200, response.text
    return str(response.json()["token"])


def _refresh(pgrst: httpx.Client, token: str) -> httpx.Response:
    return pgrst.post("/rpc/refresh_token", headers={"Authorization": f"Bearer {token}"})


def _status(api: Callable[..., httpx.Client], token: str) -> int:
    return api(token).get("/jobs", params={"limit": "1"}).status_code


def _refused(api: Callable[..., httpx.Client], token: str, why: str = "") -> None:
    response = api(token).get("/jobs", params={"limit": "1"})
    assert response.status_code == 401, response.text
    body = response.json()
    assert body["code"] == "SL312", body
    assert why in body["message"], body


def _claims(token: str, settings: Settings) -> dict[str, Any]:
    return dict(jwt.decode(token, settings.jwt_secret, algorithms=["HS256"]))


def _sign(settings: Settings, claims: dict[str, Any]) -> str:
    """Claims signed with the stack's secret, as only its holder could."""
    return jwt.encode(claims, settings.jwt_secret, algorithm="HS256")


def _signed_in_three_ways(pgrst: httpx.Client, su_conn: psycopg.Connection,
                          client_id: str) -> tuple[str, list[str], str]:
    """A user with the admin and client roles, signed in three times (as client, as admin, and
    once more then refreshed), and another user of the same client signed in: (the user's email,
    the user's three tokens, the other user's token)."""
    email, _ = _person(su_conn, client_id, ("admin", "client"))
    other, _ = _person(su_conn, client_id)
    as_client = _token(pgrst, email)
    as_admin = _token(pgrst, email, role="admin")
    refreshed = _refresh(pgrst, _token(pgrst, email))
    assert refreshed.status_code == 200, refreshed.text
    return email, [as_client, as_admin, refreshed.json()["token"]], _token(pgrst, other)


# ---- a password change ---------------------------------------------------------------------------

def test_a_password_change_ends_every_token_of_the_user_at_once(
        pgrst: httpx.Client, api: Callable[..., httpx.Client], su_conn: psycopg.Connection,
        client_id: str) -> None:
    email, tokens, bystander = _signed_in_three_ways(pgrst, su_conn, client_id)
    assert all(_status(api, t) == 200 for t in tokens)

    su_conn.execute("select auth.add_user(%s, %s, '{client}')", [email, NEW_PASSWORD])

    for token in tokens:
        _refused(api, token, "the password was changed")
        assert _refresh(pgrst, token).status_code == 401  # no new token from an old one either
    assert _status(api, bystander) == 200  # another user of the same client is untouched
    assert login(pgrst, email).status_code == 401  # the old password is gone
    assert _status(api, _token(pgrst, email, NEW_PASSWORD)) == 200


def test_setting_the_same_password_again_keeps_the_tokens(
        pgrst: httpx.Client, api: Callable[..., httpx.Client], su_conn: psycopg.Connection,
        client_id: str) -> None:
    # `stepledger user add` again to add a role, with the password the user already has
    email, _ = _person(su_conn, client_id)
    token = _token(pgrst, email)
    su_conn.execute("select auth.add_user(%s, %s, '{admin}')", [email, PASSWORD])
    assert _status(api, token) == 200
    su_conn.execute("select auth.add_user(%s, %s, '{admin}')", [email, NEW_PASSWORD])
    _refused(api, token, "the password was changed")


def test_a_new_password_hash_written_in_sql_ends_the_sessions_too(
        pgrst: httpx.Client, api: Callable[..., httpx.Client], su_conn: psycopg.Connection,
        person: Person) -> None:
    email, user_id = person
    token = _token(pgrst, email)
    assert _status(api, token) == 200
    su_conn.execute("update auth.users set password_hash = crypt(%s, gen_salt('bf', 4)) "
                    "where user_id = %s", [NEW_PASSWORD, user_id])
    _refused(api, token, "the password was changed")


# ---- disable and enable --------------------------------------------------------------------------

def test_disable_then_enable_revives_no_token(pgrst: httpx.Client,
                                              api: Callable[..., httpx.Client],
                                              settings: Settings, person: Person) -> None:
    email, _ = person
    token = _token(pgrst, email)
    refreshable = _token(pgrst, email)
    assert _status(api, token) == 200
    for action in ("disable", "enable"):  # as the operator does it
        done = run_cli_process(settings, "user", action, email, timeout=120)
        assert done.returncode == 0, done.stderr
    _refused(api, token, "the user was disabled")
    refresh = _refresh(pgrst, refreshable)
    assert refresh.status_code == 401 and refresh.json()["code"] == "SL312"
    assert _status(api, _token(pgrst, email)) == 200  # enabled: a new login works


def test_taking_a_role_away_and_back_revives_no_token(pgrst: httpx.Client,
                                                      api: Callable[..., httpx.Client],
                                                      su_conn: psycopg.Connection,
                                                      client_id: str) -> None:
    email, user_id = _person(su_conn, client_id, ("admin", "client"))
    as_admin = _token(pgrst, email, role="admin")
    as_client = _token(pgrst, email)
    su_conn.execute("update auth.users set roles = '{client}' where user_id = %s", [user_id])
    su_conn.execute("update auth.users set roles = '{admin,client}' where user_id = %s", [user_id])
    _refused(api, as_admin, "roles or client changed")
    _refused(api, as_client, "roles or client changed")
    # adding a role takes nothing away: the new login's token stays valid
    fresh = _token(pgrst, email)
    su_conn.execute("select auth.add_user(%s, %s, '{admin}')", [email, PASSWORD])
    assert _status(api, fresh) == 200


# ---- refresh tokens rotate -----------------------------------------------------------------------

def test_each_token_refreshes_once_along_a_chain(pgrst: httpx.Client,
                                                 api: Callable[..., httpx.Client],
                                                 settings: Settings, person: Person) -> None:
    email, user_id = person
    first = _token(pgrst, email)
    chain = [first]
    for _ in range(3):
        response = _refresh(pgrst, chain[-1])
        assert response.status_code == 200, response.text
        chain.append(response.json()["token"])
    claims = [_claims(t, settings) for t in chain]
    assert len({c["jti"] for c in claims}) == len(chain)  # a new id each time
    assert {c["sid"] for c in claims} == {claims[0]["sid"]}  # one session
    assert {c["sub"] for c in claims} == {user_id}
    assert {c["auth_time"] for c in claims} == {claims[0]["auth_time"]}
    # A refreshed token still reads until it expires (a request in flight during the refresh
    # must not fail); only its power to refresh is gone.
    assert all(_status(api, t) == 200 for t in chain)


def test_a_reused_refresh_token_ends_the_whole_session(pgrst: httpx.Client,
                                                       api: Callable[..., httpx.Client],
                                                       su_conn: psycopg.Connection,
                                                       person: Person) -> None:
    email, _ = person
    stolen = _token(pgrst, email)
    other_session = _token(pgrst, email)  # the same user in another browser
    legit = _refresh(pgrst, stolen)
    assert legit.status_code == 200
    newest = legit.json()["token"]

    reused = _refresh(pgrst, stolen)  # the thief (or the victim) replays the old token
    assert reused.status_code == 401
    assert reused.json()["code"] == "SL315" and "token" not in reused.json()
    assert reused.headers["WWW-Authenticate"].startswith("Bearer")
    # the whole family is gone at once: the newest token and the replayed one
    _refused(api, newest, "refreshed twice")
    _refused(api, stolen, "refreshed twice")
    assert _refresh(pgrst, newest).status_code == 401
    # the user's other session is not part of that family
    assert _status(api, other_session) == 200
    assert _refresh(pgrst, other_session).status_code == 200
    row = su_conn.execute("select ended_reason from auth.sessions where session_id = %s",
                          [jwt.decode(stolen, options={"verify_signature": False})["sid"]])
    assert row.fetchone() == ("refresh_reused",)


def test_two_refreshes_of_one_token_at_once_never_both_succeed(api: Callable[..., httpx.Client],
                                                               settings: Settings,
                                                               person: Person) -> None:
    email, _ = person
    with httpx.Client(base_url=settings.postgrest_url, timeout=30.0) as pgrst:
        token = _token(pgrst, email)

    def refresh(_: int) -> httpx.Response:
        with httpx.Client(base_url=settings.postgrest_url, timeout=30.0) as own:
            return _refresh(own, token)

    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(refresh, range(4)))
    ok = [a for a in answers if a.status_code == 200]
    assert len(ok) <= 1, [a.text for a in answers]
    assert all(a.status_code in (200, 401) for a in answers), [a.text for a in answers]
    # more than one attempt: a reuse, so even the one that succeeded is ended
    for answer in ok:
        _refused(api, answer.json()["token"], "refreshed twice")


def test_refresh_is_bounded_by_the_password_time_not_by_the_token(
        pgrst: httpx.Client, su_conn: psycopg.Connection, settings: Settings,
        person: Person) -> None:
    email, _ = person
    token = _token(pgrst, email)
    sid = _claims(token, settings)["sid"]
    su_conn.execute("update auth.sessions set auth_time = now() - interval '13 hours' "
                    "where session_id = %s", [sid])
    too_old = _refresh(pgrst, token)
    assert too_old.status_code == 400 and too_old.json()["code"] == "SL309"
    # A token re-signed with a fresh auth_time claim (by whoever holds the secret) changes
    # nothing: the session's own time counts.
    claims = _claims(token, settings)
    forged = _sign(settings, {**claims, "auth_time": int(time.time())})
    assert _refresh(pgrst, forged).json()["code"] == "SL309"


# ---- sign out everywhere -------------------------------------------------------------------------

def test_logout_everywhere_ends_every_session_of_the_user(
        pgrst: httpx.Client, api: Callable[..., httpx.Client], su_conn: psycopg.Connection,
        client_id: str) -> None:
    email, tokens, bystander = _signed_in_three_ways(pgrst, su_conn, client_id)
    phone = tokens[0]

    response = api(phone).post("/rpc/logout_everywhere")
    assert response.status_code == 200, response.text
    assert response.json() == {"sessions_ended": 3}
    for token in tokens:
        _refused(api, token, "signed out everywhere")
        assert _refresh(pgrst, token).status_code == 401
    assert api(phone).post("/rpc/logout_everywhere").status_code == 401  # nothing left to end
    assert _status(api, bystander) == 200
    assert _status(api, _token(pgrst, email)) == 200  # a new login works


def test_logout_everywhere_needs_a_login_token(api: Callable[..., httpx.Client],
                                               jwt_for: Callable[..., str],
                                               api_token: Callable[..., str],
                                               client_id: str) -> None:
    assert api().post("/rpc/logout_everywhere").status_code == 401  # anonymous
    assert api(api_token(client_id)).post("/rpc/logout_everywhere").status_code == 403  # ingest
    operator = api(jwt_for("admin", sub="operator")).post("/rpc/logout_everywhere")
    assert operator.status_code == 400 and operator.json()["code"] == "SL309"
    refused = api(jwt_for("admin", sub="operator")).get("/rpc/logout_everywhere")
    assert refused.status_code == 405 and refused.json()["code"] == "SL314"


def test_logout_everywhere_in_sql_ends_only_the_callers_sessions(
        db: psycopg.Connection, as_user: Callable[..., Any], pgrst: httpx.Client,
        su_conn: psycopg.Connection, client_id: str, settings: Settings, person: Person) -> None:
    email, _ = person
    other, _ = _person(su_conn, client_id)
    mine = _claims(_token(pgrst, email), settings)
    theirs = _claims(_token(pgrst, other), settings)
    # claims naming someone else's session with my user id: not a session of mine
    with as_user(db, "client", client_id, sub=mine["sub"], sid=theirs["sid"]), \
            pytest.raises(psycopg.Error) as raised:
        db.execute("select api.logout_everywhere()")
    assert raised.value.sqlstate == "SL309"
    db.rollback()
    with as_user(db, "client", client_id, sub=mine["sub"], sid=mine["sid"]):
        row = db.execute("select api.logout_everywhere()").fetchone()
    assert row == ({"sessions_ended": 1},)
    live = db.execute("select session_id::text from auth.sessions "
                      "where session_id in (%s, %s) and ended_at is null",
                      [mine["sid"], theirs["sid"]]).fetchall()
    assert live == [(theirs["sid"],)]


# ---- the subject and session claims are compared as uuids ----------------------------------------

@pytest.mark.parametrize("spelling", [str.upper, lambda u: "{" + u + "}",
                                      lambda u: u.replace("-", ""),
                                      lambda u: u.upper().replace("-", "")])
def test_a_user_id_in_another_spelling_gets_the_same_checks(
        api: Callable[..., httpx.Client], pgrst: httpx.Client, jwt_for: Callable[..., str],
        su_conn: psycopg.Connection, client_id: str, settings: Settings,
        spelling: Callable[[str], str], person: Person) -> None:
    email, user_id = person
    claims = _claims(_token(pgrst, email), settings)
    respelled = _sign(settings, {**claims, "sub": spelling(user_id)})
    assert _status(api, respelled) == 200  # the same user, live: accepted
    su_conn.execute("select auth.set_user_disabled(%s, true)", [email])
    _refused(api, respelled)
    # without a session, a user id in any spelling is refused (before: upper case skipped
    # the check of the user entirely)
    bare = jwt_for("client", client_id, sub=spelling(user_id))
    _refused(api, bare)


@pytest.mark.parametrize("claims", [
    {"sub": 42},  # PostgREST itself refuses a subject that is not a string (PGRST301)
    {"sub": {"id": "x"}},
    {"sub": "operator", "sid": "not-a-uuid"},
    {"sub": "operator", "sid": "00000000-0000-4000-8000-000000000000"},
    {"sid": 7},
    {"sid": "00000000-0000-4000-8000-000000000000"},
])
def test_hostile_subject_and_session_claims_are_refused(api: Callable[..., httpx.Client],
                                                        jwt_for: Callable[..., str],
                                                        client_id: str,
                                                        claims: dict[str, object]) -> None:
    response = api(jwt_for("client", client_id, **claims)).get("/jobs", params={"limit": "1"})
    assert response.status_code == 401, response.text
    assert response.json()["code"] in ("SL312", "PGRST301"), response.text
    assert _status(api, jwt_for("client", client_id, sub="operator")) == 200


def test_a_session_of_another_user_or_role_is_refused(api: Callable[..., httpx.Client],
                                                      pgrst: httpx.Client,
                                                      jwt_for: Callable[..., str],
                                                      su_conn: psycopg.Connection,
                                                      client_id: str,
                                                      settings: Settings) -> None:
    # Whoever holds the secret could mix claims; the database still checks they belong together.
    mine_email, _ = _person(su_conn, client_id, ("admin", "client"))
    theirs_email, theirs_id = _person(su_conn, client_id)
    mine = _claims(_token(pgrst, mine_email), settings)
    assert _status(api, _sign(settings, mine)) == 200
    _refused(api, _sign(settings, {**mine, "sub": theirs_id}))
    as_admin = {k: v for k, v in mine.items() if k != "client_id"}
    _refused(api, _sign(settings, {**as_admin, "role": "admin"}))
    theirs = _claims(_token(pgrst, theirs_email), settings)
    _refused(api, _sign(settings, {**theirs, "sid": mine["sid"]}))
