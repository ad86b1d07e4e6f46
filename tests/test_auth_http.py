"""HTTP hardening of the API: functions that write answer only POST (PostgREST runs GET and HEAD
in a read-only transaction, where a login did its bcrypt work and then failed with a message that
told a right password from a wrong one); every API answer says Cache-Control: no-store and
X-Content-Type-Options: nosniff; no other site's page may read the API (no CORS).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import psycopg
import pytest

from auth_support import PASSWORD, add_client, add_user, unique
from stepledger.settings import Settings

GATEWAY_405 = ('{"code":"SL314","message":"/rpc/login changes data: call it with POST",'
               '"details":null,"hint":"send the arguments as a JSON body"}')

# A value of each argument type, for calling any function with GET.
SAMPLE_ARGUMENT = {
    "text": "x", "uuid": "00000000-0000-4000-8000-000000000000", "integer": "1",
    "bigint": "1", "boolean": "false", "date": "2026-01-01",
    "timestamp with time zone": "2026-01-01T00:00:00Z", "jsonb": "[]", "json": "[]",
    "numeric": "1", "text[]": "{x}",
}

WRITING_FUNCTIONS = """
select p.proname::text,
       coalesce(p.proargnames, '{}')::text[],
       (select array_agg(format_type(t, null) order by n)
          from unnest(p.proargtypes::oid[]) with ordinality a(t, n)),
       p.pronargs - p.pronargdefaults
  from pg_proc p
 where p.pronamespace = 'api'::regnamespace and p.provolatile = 'v'
 order by 1
"""


@pytest.fixture(scope="module")
def person(su_conn: psycopg.Connection) -> dict[str, str]:
    client_id = add_client(su_conn, unique("http"))
    email = f"nurse@{client_id}.example"
    add_user(su_conn, email, ["client"], client_id)
    return {"client_id": client_id, "email": email}


def _login_state(su_conn: psycopg.Connection, email: str) -> tuple[Any, ...]:
    row = su_conn.execute(
        "select u.last_login_at,"
        "       (select f.failures from auth.login_failures f"
        "         where f.email_hash = sha256(convert_to(u.email, 'UTF8')))"
        "  from auth.users u where u.email = %s", [email]).fetchone()
    assert row is not None
    return tuple(row)


# ---- GET /rpc/login ------------------------------------------------------------------------------

def test_get_login_answers_the_same_for_a_right_and_a_wrong_password(
        pgrst: httpx.Client, su_conn: psycopg.Connection, person: dict[str, str]) -> None:
    before = _login_state(su_conn, person["email"])
    answers = []
    for password in (PASSWORD, "not the password at all"):
        for method in ("GET", "HEAD"):
            answers.append(pgrst.request(method, "/rpc/login", params={
                "email": person["email"], "password": password}))
    for response in answers:
        assert response.status_code == 405, response.text
        assert response.headers["Allow"] == "POST"
        assert "token" not in response.text
    gets = [r for r in answers if r.request.method == "GET"]
    assert gets[0].content == gets[1].content  # nothing tells the two passwords apart
    assert gets[0].json()["code"] == "SL314"
    # refused before any credential work: no login, no failure counted
    assert _login_state(su_conn, person["email"]) == before
    assert pgrst.post("/rpc/login", json={"email": person["email"],
                                          "password": PASSWORD}).status_code == 200


@pytest.mark.parametrize("path", ["/rpc/%6cogin", "/rpc/%6C%6F%67%69%6E", "//rpc/login"])
def test_get_login_is_refused_whatever_the_spelling_of_the_path(
        pgrst: httpx.Client, person: dict[str, str], path: str) -> None:
    url = httpx.URL(str(pgrst.base_url).rstrip("/") + path,
                    params={"email": person["email"], "password": PASSWORD})
    response = pgrst.get(url)
    assert response.status_code in (404, 405), response.text
    assert "token" not in response.text
    if response.status_code == 405:
        assert response.json()["code"] == "SL314"


@pytest.mark.parametrize("port", ["api", "web"])
def test_the_gateway_lets_only_post_reach_login(settings: Settings, person: dict[str, str],
                                                port: str) -> None:
    base = settings.api_url if port == "api" else f"{settings.web_url}/api"
    with httpx.Client(base_url=base, timeout=30.0) as gateway:
        query = {"email": person["email"], "password": PASSWORD}
        for method in ("GET", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH"):
            response = gateway.request(method, "/rpc/login", params=query)
            assert response.status_code == 405, (method, response.text)
            assert response.headers["Allow"] == "POST"
            assert response.headers["Cache-Control"] == "no-store"
            if method != "HEAD":
                assert response.text == GATEWAY_405  # nginx's answer: PostgREST never saw it
        encoded = gateway.get("/rpc/%6cogin", params=query)
        assert encoded.status_code == 405 and encoded.text == GATEWAY_405
        ok = gateway.post("/rpc/login", json=query)
        assert ok.status_code == 200 and "token" in ok.json()


# ---- every other function that writes --------------------------------------------------------

def _get_arguments(names: list[str], types: list[str], required: int) -> dict[str, str]:
    pairs = list(zip(names, types, strict=False))[:required]
    return {name: SAMPLE_ARGUMENT[kind] for name, kind in pairs}


def test_every_api_function_that_writes_refuses_get_and_head(
        api: Callable[..., httpx.Client], pgrst: httpx.Client, jwt_for: Callable[..., str],
        api_token: Callable[..., str], su_conn: psycopg.Connection,
        person: dict[str, str]) -> None:
    functions = su_conn.execute(WRITING_FUNCTIONS).fetchall()
    names = {row[0] for row in functions}
    # the catalog, not a list kept by hand: a new function that writes is covered too
    assert {"login", "refresh_token", "logout_everywhere", "create_api_token",
            "revoke_api_token", "ingest"} <= names
    admin = jwt_for("admin")
    login_token = pgrst.post("/rpc/login", json={"email": person["email"],
                                                 "password": PASSWORD}).json()["token"]
    ingest = api_token(person["client_id"])
    tokens_before = su_conn.execute("select count(*) from auth.api_tokens").fetchone()
    called = set()
    for name, arg_names, arg_types, required in functions:
        if (required and not arg_names[:required]) or (arg_names and not all(arg_names)):
            # One unnamed argument (the ingest body): PostgREST cannot call it with GET at all.
            response = api(admin).get(f"/rpc/{name}")
            assert response.status_code in (404, 405), (name, response.text)
            continue
        query = _get_arguments(list(arg_names), list(arg_types or []), required)
        for token in (admin, login_token, ingest, None):
            for method in ("GET", "HEAD"):
                response = api(token).request(method, f"/rpc/{name}", params=query)
                # 405 SL314 when the caller may call it at all; else refused for the role (401,
                # 403), never run
                assert response.status_code in (401, 403, 405), (name, method, response.text)
                if response.status_code == 405 and method == "GET":
                    assert response.json()["code"] == "SL314", (name, response.text)
                    assert response.headers["Allow"] == "POST"
        admin_get = api(admin).get(f"/rpc/{name}", params=query)
        assert admin_get.status_code == 405, (name, admin_get.text)
        called.add(name)
    assert {"login", "refresh_token", "create_api_token", "revoke_api_token"} <= called
    assert su_conn.execute("select count(*) from auth.api_tokens").fetchone() == tokens_before


def test_the_database_decodes_the_path_as_postgrest_does(pgrst: httpx.Client,
                                                         jwt_for: Callable[..., str]) -> None:
    # refresh_usage has no guard of its own: only auth.pre_request stands between a GET and it
    headers = {"Authorization": f"Bearer {jwt_for('admin')}"}
    for path in ("/rpc/refresh_usage", "/rpc/refresh%5Fusage", "/rpc/%72efresh_usage"):
        url = httpx.URL(str(pgrst.base_url).rstrip("/") + path)
        response = pgrst.get(url, headers=headers)
        assert response.status_code == 405, (path, response.text)
        assert response.json()["code"] == "SL314"


def test_in_sql_a_read_only_call_is_refused_before_any_work(db: psycopg.Connection,
                                                            as_user: Callable[..., Any],
                                                            person: dict[str, str]) -> None:
    # The guard inside each function holds even without the pre-request hook (psql, a path the
    # hook did not recognise): the first statement refuses, before bcrypt runs.
    answers = []
    for password in (PASSWORD, "wrong wrong wrong"):
        db.execute("set transaction read only")
        with as_user(db, "anon"), pytest.raises(psycopg.Error) as raised:
            db.execute("select api.login(%s, %s)", [person["email"], password])
        answers.append((raised.value.sqlstate, raised.value.diag.message_primary))
        db.rollback()
    assert answers[0] == answers[1]
    assert answers[0][0] == "PGRST" and json.loads(answers[0][1] or "")["code"] == "SL314"
    for call in ("api.refresh_token()", "api.logout_everywhere()",
                 "api.create_api_token('x', 'y')",
                 "api.revoke_api_token('00000000-0000-4000-8000-000000000000')"):
        db.execute("set transaction read only")
        with as_user(db, "admin"), pytest.raises(psycopg.Error) as raised:
            db.execute(f"select {call}")
        assert raised.value.sqlstate == "PGRST", call
        db.rollback()


# ---- headers of every API answer -----------------------------------------------------------------

def _answers(base: str, admin: str) -> list[httpx.Response]:
    with httpx.Client(base_url=base, timeout=30.0) as client:
        auth = {"Authorization": f"Bearer {admin}"}
        return [
            client.get("/jobs", params={"limit": "1"}, headers=auth),
            client.get("/jobs", params={"limit": "1"}, headers={**auth, "Accept": "text/csv"}),
            client.get("/jobs"),  # no token
            client.get("/jobs", headers={"Authorization": "Bearer not.a.token"}),
            client.get("/no_such_view", headers=auth),
            client.post("/rpc/login", json={"email": "nobody@example.org", "password": "x" * 12}),
            client.get("/rpc/login"),
            client.get("/"),  # the OpenAPI document
            client.get("/jobs", params={"x": "y" * 9000}, headers=auth),  # the gateway's 414
        ]


@pytest.mark.parametrize("port", ["api", "web"])
def test_every_api_answer_is_not_stored_and_not_sniffed(settings: Settings,
                                                        jwt_for: Callable[..., str],
                                                        port: str) -> None:
    base = settings.api_url if port == "api" else f"{settings.web_url}/api"
    answers = _answers(base, jwt_for("admin"))
    assert {r.status_code for r in answers} >= {200, 401, 404, 405, 414}
    for response in answers:
        assert response.headers.get_list("Cache-Control") == ["no-store"], response.request.url
        assert response.headers.get("X-Content-Type-Options") == "nosniff", response.request.url


def test_the_web_app_keeps_its_own_caching(settings: Settings) -> None:
    # the app's files revalidate (no-cache), they are not "no-store" like the API
    with httpx.Client(base_url=settings.web_url, timeout=30.0) as web:
        page = web.get("/")
    assert page.status_code == 200
    assert page.headers.get_list("Cache-Control") == ["no-cache"]
    assert page.headers["X-Content-Type-Options"] == "nosniff"


# ---- no CORS -------------------------------------------------------------------------------------

@pytest.mark.parametrize("port", ["api", "web"])
def test_no_other_origin_may_read_the_api(settings: Settings, jwt_for: Callable[..., str],
                                          port: str) -> None:
    base = settings.api_url if port == "api" else f"{settings.web_url}/api"
    evil = {"Origin": "https://evil.example"}
    with httpx.Client(base_url=base, timeout=30.0) as client:
        preflight = client.options("/jobs", headers={
            **evil, "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization"})
        login_preflight = client.options("/rpc/login", headers={
            **evil, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type"})
        read = client.get("/jobs", params={"limit": "1"},
                          headers={**evil, "Authorization": f"Bearer {jwt_for('admin')}"})
        login = client.post("/rpc/login", headers=evil,
                            json={"email": "nobody@example.org", "password": "x" * 12})
    assert read.status_code == 200  # the request itself works (a pipeline sends no Origin) ...
    for response in (preflight, login_preflight, read, login):
        # ... but a browser on another site is never allowed to read the answer
        cors = [h for h in response.headers if h.lower().startswith("access-control-")]
        assert cors == [], (response.request.method, response.request.url, cors)
