"""Cross-tenant attempts through the HTTP gateway. Each attempt gets nothing or a 401/403, and each
is paired with the same request as an admin, which sees the rows: an empty answer for the wrong
reason (no data, a typo in a filter) fails the test.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator

import httpx
import psycopg
import pytest

from auth_support import Tenants, ingest, job_events, prepared_tenants, unique
from stepledger.settings import Settings


@pytest.fixture(scope="module")
def tenants(su_conn: psycopg.Connection, settings: Settings) -> Tenants:
    return prepared_tenants(su_conn, settings)


@pytest.fixture
def as_a(api: Callable[..., httpx.Client], tenants: Tenants) -> httpx.Client:
    return api(tenants.extra["a"])


@pytest.fixture
def as_admin(api: Callable[..., httpx.Client], tenants: Tenants) -> httpx.Client:
    return api(tenants.extra["admin"])


@pytest.fixture
def as_ingest(api: Callable[..., httpx.Client], tenants: Tenants) -> Iterator[httpx.Client]:
    yield api(tenants.extra["ingest_a"])


def _jobs(client: httpx.Client, **params: str) -> list[dict[str, object]]:
    response = client.get("/jobs", params=params)
    assert response.status_code == 200, response.text
    return list(response.json())


def test_client_reads_only_its_own_jobs(as_a: httpx.Client, as_admin: httpx.Client,
                                        tenants: Tenants) -> None:
    mine = _jobs(as_a)
    assert mine and {j["client_id"] for j in mine} == {tenants.a}
    assert {j["job_id"] for j in mine} == set(tenants.jobs_a)
    everything = _jobs(as_admin, client_id=f"in.({tenants.a},{tenants.b})")
    assert {j["client_id"] for j in everything} == {tenants.a, tenants.b}


def test_filtering_for_another_client_finds_nothing(as_a: httpx.Client, as_admin: httpx.Client,
                                                    tenants: Tenants) -> None:
    queries = [
        {"client_id": f"eq.{tenants.b}"},
        {"job_id": f"eq.{tenants.jobs_b[0]}"},
        {"client_id": f"neq.{tenants.a}"},
        {"or": f"(client_id.eq.{tenants.b},job_id.eq.{tenants.jobs_b[0]})"},
        {"client_id": f"like.{tenants.b[:6]}*"},
    ]
    for params in queries:
        assert _jobs(as_a, **params) == [], params
        seen_by_admin = _jobs(as_admin, **params)
        assert any(j["client_id"] == tenants.b for j in seen_by_admin), params


def test_step_runs_of_another_client_are_invisible(as_a: httpx.Client, as_admin: httpx.Client,
                                                   tenants: Tenants) -> None:
    params = {"client_id": f"eq.{tenants.b}", "job_id": f"eq.{tenants.jobs_b[0]}"}
    response = as_a.get("/step_runs", params=params)
    assert response.status_code == 200 and response.json() == []
    admin_rows = as_admin.get("/step_runs", params=params).json()
    assert len(admin_rows) >= 20 and {r["client_id"] for r in admin_rows} == {tenants.b}


def test_a_shared_job_id_shows_each_client_only_its_own_job(as_a: httpx.Client,
                                                           as_admin: httpx.Client,
                                                           tenants: Tenants) -> None:
    mine = _jobs(as_a, job_id=f"eq.{tenants.shared_job}")
    assert [j["client_id"] for j in mine] == [tenants.a]
    both = _jobs(as_admin, job_id=f"eq.{tenants.shared_job}")
    assert sorted(j["client_id"] for j in both) == sorted([tenants.a, tenants.b])


def test_embedding_step_runs_never_crosses_clients(as_a: httpx.Client, as_admin: httpx.Client,
                                                  tenants: Tenants) -> None:
    params = {"select": "client_id,job_id,step_runs(client_id,step,attempt)",
              "job_id": f"eq.{tenants.shared_job}"}
    [job] = _jobs(as_a, **params)
    assert job["client_id"] == tenants.a
    embedded = job["step_runs"]
    assert embedded and {r["client_id"] for r in embedded} == {tenants.a}  # type: ignore[union-attr]
    admin_jobs = _jobs(as_admin, **params)
    for row in admin_jobs:
        assert {r["client_id"] for r in row["step_runs"]} == {row["client_id"]}  # type: ignore[union-attr]
    assert len(admin_jobs) == 2
    # an inner-join filter on the embedded rows cannot reach the other client either
    inner = _jobs(as_a, select="job_id,step_runs!inner(client_id)",
                  **{"step_runs.client_id": f"eq.{tenants.b}"})
    assert inner == []
    assert _jobs(as_admin, select="job_id,step_runs!inner(client_id)",
                 **{"step_runs.client_id": f"eq.{tenants.b}"})


def test_counts_and_csv_cover_only_the_clients_rows(as_a: httpx.Client, as_admin: httpx.Client,
                                                    tenants: Tenants) -> None:
    counted = as_a.head("/jobs", headers={"Prefer": "count=exact"})
    assert counted.headers["Content-Range"].endswith(f"/{len(tenants.jobs_a)}")
    admin_count = as_admin.head("/jobs", params={"client_id": f"in.({tenants.a},{tenants.b})"},
                                headers={"Prefer": "count=exact"})
    assert admin_count.headers["Content-Range"].endswith(
        f"/{len(tenants.jobs_a) + len(tenants.jobs_b)}")
    text = as_a.get("/jobs", headers={"Accept": "text/csv"}).text
    rows = list(csv.DictReader(io.StringIO(text)))
    assert rows and {r["client_id"] for r in rows} == {tenants.a}


def test_client_cannot_write_or_delete(as_a: httpx.Client, as_admin: httpx.Client,
                                       tenants: Tenants) -> None:
    target = {"client_id": f"eq.{tenants.b}", "job_id": f"eq.{tenants.jobs_b[0]}"}
    attempts = [
        as_a.patch("/jobs", params=target, json={"status": "completed"}),
        as_a.delete("/jobs", params=target),
        as_a.post("/jobs", json={"client_id": tenants.b, "job_id": "forged"}),
        as_a.delete("/step_runs", params=target),
    ]
    for response in attempts:
        # 403: no privilege. PostgreSQL checks that a view joining two tables is updatable before
        # it checks privileges, so PATCH and DELETE on it answer 55000 (HTTP 500) instead.
        refused = response.status_code in (401, 403, 405) or (
            response.status_code == 500 and response.json()["code"] == "55000")
        assert refused, (response.request.method, response.status_code, response.text)
    [job] = _jobs(as_admin, **target)
    assert job["job_id"] == tenants.jobs_b[0]


def test_client_cannot_ingest_for_anyone(as_a: httpx.Client, as_admin: httpx.Client,
                                         tenants: Tenants) -> None:
    job = unique("client-ingest")
    events = job_events(tenants.b, job)
    for path in ("/rpc/ingest", "/rpc/ingest_ndjson"):
        response = as_a.post(path, content="[]", headers={"Content-Type": "application/json"})
        assert response.status_code == 403, (path, response.text)
    assert ingest(as_a, events).status_code == 403
    assert _jobs(as_admin, job_id=f"eq.{job}") == []
    # the same events as admin are accepted, so the refusal was about the caller
    accepted = ingest(as_admin, events)
    assert accepted.status_code == 200 and accepted.json()["accepted"] == len(events)


def test_ingest_token_cannot_write_for_another_client(as_ingest: httpx.Client,
                                                      as_admin: httpx.Client,
                                                      tenants: Tenants) -> None:
    job = unique("cross-ingest")
    events = job_events(tenants.b, job)
    response = ingest(as_ingest, events)
    assert response.status_code == 200
    body = response.json()
    assert body["accepted"] == 0 and len(body["rejected"]) == len(events)
    assert all(e["errors"][0]["path"] == "/client_id" for e in body["rejected"])
    assert _jobs(as_admin, job_id=f"eq.{job}") == []
    # its own client's events are accepted
    own = job_events(tenants.a, job)
    assert ingest(as_ingest, own).json()["accepted"] == len(own)
    assert [j["client_id"] for j in _jobs(as_admin, job_id=f"eq.{job}")] == [tenants.a]


@pytest.mark.parametrize("path", ["/jobs", "/step_runs", "/api_tokens",
                                  "/jobs?select=*,step_runs(*)"])
def test_ingest_token_reads_nothing(as_ingest: httpx.Client, as_admin: httpx.Client,
                                    path: str) -> None:
    response = as_ingest.get(path)
    assert response.status_code == 403, response.text
    assert as_admin.get(path).status_code == 200


def test_ingest_token_cannot_manage_tokens_or_log_in(as_ingest: httpx.Client,
                                                    tenants: Tenants) -> None:
    assert as_ingest.post("/rpc/create_api_token", json={
        "client_id": tenants.a, "name": "x", "scope": "ingest"}).status_code == 403
    assert as_ingest.post("/rpc/refresh_token").status_code == 403
    assert as_ingest.post("/rpc/login", json={"email": tenants.user_a,
                                              "password": "x"}).status_code == 403


@pytest.mark.parametrize("path", ["/jobs", "/step_runs", "/api_tokens"])
def test_anonymous_requests_read_nothing(api: Callable[..., httpx.Client], as_admin: httpx.Client,
                                         path: str) -> None:
    assert api().get(path).status_code == 401
    assert as_admin.get(path).status_code == 200


def test_anonymous_requests_cannot_ingest_or_create_tokens(api: Callable[..., httpx.Client],
                                                          tenants: Tenants) -> None:
    for path in ("/rpc/ingest", "/rpc/ingest_ndjson"):
        assert api().post(path, content="[]",
                          headers={"Content-Type": "application/json"}).status_code == 401
    body = {"client_id": tenants.a, "name": "anonymous", "scope": "ingest"}
    assert api().post("/rpc/create_api_token", json=body).status_code == 401
    assert api(tenants.extra["admin"]).post("/rpc/create_api_token", json=body).status_code == 200


def test_the_web_port_applies_the_same_rules(web_url: str, tenants: Tenants) -> None:
    with httpx.Client(base_url=f"{web_url}/api", timeout=30.0) as web:
        token = tenants.extra["a"]
        rows = web.get("/jobs", params={"client_id": f"eq.{tenants.b}"},
                       headers={"Authorization": f"Bearer {token}"})
        assert rows.status_code == 200 and rows.json() == []
        admin = web.get("/jobs", params={"client_id": f"eq.{tenants.b}"},
                        headers={"Authorization": f"Bearer {tenants.extra['admin']}"})
        assert admin.status_code == 200 and admin.json()
