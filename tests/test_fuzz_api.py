"""Schemathesis against PostgREST's own OpenAPI (Swagger 2.0) document, once per role.

For anon, a client user of A, an admin and an ingest token of A, the document PostgREST serves
to that role (GET / on the API gateway) is loaded with schemathesis; every operation in it gets
a few generated requests, valid and schema-violating ones, sent through the gateway with the
role's token. No answer may be a 5xx, and no answer to the client of A may contain a row of
client B; the same operations as admin do reach B's rows, so the leak check can see a leak.

It runs on a stack of its own: the admin's generated POST, PATCH and DELETE requests would
otherwise change the data other tests rely on.
"""

from __future__ import annotations

import http.client
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
import hypothesis.strategies as st
import jwt
import psycopg
import pytest
import schemathesis
from bench.faults import own_stack
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode

from ingest_support import IngestClient
from stacks import register_catalog
from stepledger.demo import simulate
from stepledger.ingest.credentials import operator_token
from stepledger.settings import Settings

CLIENT_A = "fuzz-tenant-a"
CLIENT_B = "fuzz-tenant-b"
B_MARK = "secretb"                 # in every job and event id of client B
EXAMPLES = 4                       # generated requests per operation, per generation mode
ROLE_BUDGET_S = 40.0               # a role's operations stop getting new examples after this
REQUEST_TIMEOUT_S = 15.0
# PostgREST 12 answers a request with a header value that is not UTF-8 with this 500 text.
POSTGREST_DECODE_ERROR = "Something went wrong"


@dataclass
class Fuzz:
    settings: Settings
    headers: dict[str, dict[str, str]] = field(default_factory=dict)


@pytest.fixture(scope="module")
def fuzz() -> Iterator[Fuzz]:
    with own_stack("stepledger-fuzz-") as own:
        yield _seed(own)


def _seed(own: Settings) -> Fuzz:
    """BotImage, clients A and B with a few realistic jobs each, a price; tokens per role."""
    with psycopg.connect(own.dsn("stepledger_owner"), autocommit=True) as conn:
        register_catalog(conn, [CLIENT_A, CLIENT_B])
        conn.execute("select ledger.add_price('botimage', 'report', 2.5, p_currency => 'EUR', "
                     "p_effective_from => '2020-01-01')")
    events = []
    for event in simulate.history([CLIENT_A, CLIENT_B], 4, datetime.now(UTC), seed=9):
        if event["client_id"] == CLIENT_B:
            event = {**event, "job_id": f"{B_MARK}-{event['job_id']}",
                     "event_id": f"{B_MARK}-{event['event_id']}"}
        events.append(event)
    admin = operator_token(own.jwt_secret)
    with IngestClient(own.api_url, admin) as client:
        result = client.send_all(events)
    assert result.accepted == len(events) and not result.rejected
    with psycopg.connect(own.dsn("postgres"), autocommit=True) as conn:
        conn.execute("select ledger.refresh_usage('fuzz')")
        row = conn.execute("select auth.create_api_token(%s, 'fuzz', 'ingest', 'fuzz')",
                           [CLIENT_A]).fetchone()
    assert row is not None
    client_a = jwt.encode({"role": "client", "client_id": CLIENT_A, "sub": "fuzz-a",
                           "exp": int(time.time()) + 3600}, own.jwt_secret, algorithm="HS256")
    return Fuzz(own, {"anon": {}, "client": {"Authorization": f"Bearer {client_a}"},
                      "admin": {"Authorization": f"Bearer {admin}"},
                      "ingest": {"Authorization": f"Bearer {row[0]['token']}"}})


def _operations(fuzz: Fuzz, role: str) -> list[object]:
    """The operations of the OpenAPI document PostgREST serves to this role."""
    answer = httpx.get(f"{fuzz.settings.api_url}/", headers=fuzz.headers[role], timeout=30)
    assert answer.status_code == 200, answer.text
    document = answer.json()
    assert document["swagger"] == "2.0"
    schema = schemathesis.openapi.from_dict(document)
    operations = []
    for result in schema.get_all_operations():
        operations.append(result.ok())  # raises with the reason when one cannot be loaded
    return operations


def _strategy(operation: object) -> st.SearchStrategy[object]:
    modes = []
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        modes.append(operation.as_strategy(mode))  # type: ignore[attr-defined]
    return st.one_of(modes)


def _bad_header_bytes(headers: Mapping[str, str | bytes]) -> bool:
    """True when a header value goes on the wire as bytes that are not UTF-8 (requests sends
    header strings as Latin-1)."""
    for value in headers.values():
        raw = value if isinstance(value, bytes) else value.encode("latin-1", "replace")
        try:
            raw.decode("utf-8")
        except UnicodeError:
            return True
    return False


def _fuzz_role(fuzz: Fuzz, role: str) -> tuple[int, int, list[str], set[str], list[str]]:
    """Send generated requests for every operation; return (operations, requests, problems,
    operations whose answers held a row of B, known PostgREST header-decoding 500s)."""
    headers = fuzz.headers[role]
    operations = _operations(fuzz, role)
    problems: list[str] = []
    reached_b: set[str] = set()
    known: list[str] = []
    sent = 0
    deadline = time.monotonic() + ROLE_BUDGET_S

    def fuzz_operation(operation: object) -> None:
        label = f"{operation.method.upper()} {operation.path}"  # type: ignore[attr-defined]

        @given(case=_strategy(operation))
        @settings(max_examples=EXAMPLES * 2, deadline=None, database=None,
                  phases=[Phase.explicit, Phase.generate],
                  suppress_health_check=list(HealthCheck))
        def one(case: object) -> None:
            nonlocal sent
            if time.monotonic() > deadline:
                return
            response = case.call(base_url=fuzz.settings.api_url,  # type: ignore[attr-defined]
                                 headers=headers, timeout=REQUEST_TIMEOUT_S)
            sent += 1
            request = f"{label} {response.request.url}"
            if response.status_code >= 500 and _bad_header_bytes(response.request.headers) \
                    and response.text == POSTGREST_DECODE_ERROR:
                known.append(label)  # docs/reliability.md: PostgREST 12 and non-UTF-8 headers
            elif response.status_code >= 500:
                sent_headers = {k: v for k, v in response.request.headers.items()
                                if k.lower() != "authorization"}
                problems.append(f"{role}: {request} headers {sent_headers} body "
                                f"{str(response.request.body)[:200]} -> {response.status_code} "
                                f"{response.text[:300]}")
            if B_MARK in response.text or CLIENT_B in response.text:
                reached_b.add(label)
                if role == "client":
                    problems.append(f"client of A got a row of B: {request}")

        one()

    for operation in operations:
        fuzz_operation(operation)
    return len(operations), sent, problems, reached_b, known


def _plain_lists(fuzz: Fuzz, role: str) -> dict[str, str]:
    """GET of every list in the role's document with no filter: path -> body."""
    bodies = {}
    for operation in _operations(fuzz, role):
        path = operation.path  # type: ignore[attr-defined]
        if operation.method.upper() == "GET" and path != "/" and "{" not in path \
                and not path.startswith("/rpc/"):  # type: ignore[attr-defined]
            answer = httpx.get(f"{fuzz.settings.api_url}{path}", headers=fuzz.headers[role],
                               timeout=REQUEST_TIMEOUT_S)
            assert answer.status_code in (200, 206), f"{role} GET {path}: {answer.text[:300]}"
            bodies[path] = answer.text
    return bodies


def test_the_leak_check_sees_rows_of_b_when_they_are_there(fuzz: Fuzz) -> None:
    """Every list the client of A reads holds none of B's rows; the admin's same lists do."""
    client = _plain_lists(fuzz, "client")
    admin = _plain_lists(fuzz, "admin")
    assert {"/jobs", "/step_runs", "/usage"} <= set(client) <= set(admin)
    assert not [path for path, body in client.items() if B_MARK in body or CLIENT_B in body]
    assert all(CLIENT_A in admin[path] and CLIENT_B in admin[path]
               for path in ("/jobs", "/step_runs", "/usage")), admin["/usage"][:300]
    assert all(CLIENT_A in client[path] for path in ("/jobs", "/step_runs", "/usage"))


@pytest.mark.parametrize("role", ["anon", "client", "admin", "ingest"])
def test_schemathesis_finds_no_5xx_and_no_foreign_rows(fuzz: Fuzz, role: str) -> None:
    operations, sent, problems, reached_b, known = _fuzz_role(fuzz, role)
    print(f"{role}: {operations} operations, {sent} requests, {len(known)} known 500s "
          "(non-UTF-8 header bytes)")
    assert operations >= {"anon": 2, "client": 20, "admin": 30, "ingest": 2}[role]
    assert sent >= operations, f"only {sent} requests for {operations} operations"
    assert not problems, "\n".join(problems[:20])
    if role == "admin":
        assert reached_b  # generated admin requests do reach B's rows
    if role == "client":
        assert not reached_b


def test_postgrest_answers_500_to_a_non_utf8_header_and_keeps_serving(fuzz: Fuzz) -> None:
    """The one 5xx the fuzzing meets, pinned: a header value with a byte that is not UTF-8
    (any header; PostgREST decodes them all for request.headers) gets a bare 500 from PostgREST
    12, through the gateway too. Nothing runs in the database, and the next request is served.
    When an upgrade fixes it this test fails: then drop the exception in _fuzz_role and the
    note in docs/reliability.md."""
    for port in (fuzz.settings.api_port, fuzz.settings.postgrest_port):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT_S)
        try:
            connection.putrequest("GET", "/jobs")
            connection.putheader("X-Note", b"caf\xe9")
            connection.endheaders()
            answer = connection.getresponse()
            assert (answer.status, answer.read().decode()) == (500, POSTGREST_DECODE_ERROR)
        finally:
            connection.close()
        after = httpx.get(f"http://127.0.0.1:{port}/jobs?select=job_id&limit=1",
                          headers=fuzz.headers["client"], timeout=REQUEST_TIMEOUT_S)
        assert after.status_code == 200 and CLIENT_A in httpx.get(
            f"http://127.0.0.1:{port}/jobs?select=client_id&limit=1",
            headers=fuzz.headers["client"], timeout=REQUEST_TIMEOUT_S).text
