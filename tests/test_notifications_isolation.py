"""Isolation of notifications over HTTP (and for BI logins in SQL): a client never sees or touches
another client's endpoints, messages or deliveries, nor the all-clients endpoints of admins; the
secret is never readable; ingest tokens, anonymous callers and BI logins get nothing. Every
"cannot" is paired with an admin (or the owner) seeing the same row."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg
import pytest

from billing_support import make_client, make_pipeline

URL = "https://hooks.example.com/in"


class World:
    def __init__(self, su_conn: psycopg.Connection, api: Callable[..., httpx.Client],
                 jwt_for: Callable[..., str], api_token: Callable[..., str]) -> None:
        self.pipeline = make_pipeline(su_conn, ("one", "two"), prefix="ni")
        self.a, self.b = make_client(su_conn, prefix="ni-a"), make_client(su_conn, prefix="ni-b")
        self.admin = api(jwt_for("admin"))
        self.user_a = api(jwt_for("client", self.a))
        self.user_b = api(jwt_for("client", self.b))
        self.ingest_a = api(api_token(self.a))
        self.anon = api()
        self.hook_a = self.created(self.user_a.post("/rpc/create_webhook", json={
            "url": URL + "/a", "events": ["job.failed"]}))
        self.hook_b = self.created(self.user_b.post("/rpc/create_webhook", json={
            "url": URL + "/b", "events": ["job.failed"], "client_id": self.b}))
        self.hook_all = self.created(self.admin.post("/rpc/create_webhook", json={
            "url": URL + "/all", "events": ["job.failed"], "client_id": None}))
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        for client in (self.a, self.b):
            response = self.admin.post("/rpc/ingest", json=[{
                "event_id": uuid.uuid4().hex, "client_id": client, "job_id": f"job-{client}",
                "pipeline": self.pipeline, "step": "one", "status": "failed", "occurred_at": now,
                "error": {"code": "E", "message": "broken"}}])
            assert response.status_code == 200 and response.json()["accepted"] == 1, response.text
        su_conn.execute("select ledger.dispatch_notifications()")  # as the worker would
        su_conn.execute("select api.set_usage_alert(%s, 100, 'EUR'), "
                        "api.set_usage_alert(%s, 200, 'EUR')", [self.a, self.b])

    @staticmethod
    def created(response: httpx.Response) -> dict[str, Any]:
        assert response.status_code == 200, response.text
        return response.json()

    def all_hooks(self) -> set[str]:
        return {self.hook_a["webhook_id"], self.hook_b["webhook_id"], self.hook_all["webhook_id"]}


@pytest.fixture
def world(su_conn: psycopg.Connection, api: Callable[..., httpx.Client],
          jwt_for: Callable[..., str], api_token: Callable[..., str]) -> World:
    return World(su_conn, api, jwt_for, api_token)


def ids(rows: list[dict[str, Any]], key: str) -> set[str]:
    return {r[key] for r in rows}


def test_a_client_reads_only_its_own_endpoints_messages_and_deliveries(world: World) -> None:
    mine = world.user_a.get("/webhooks").json()
    assert ids(mine, "webhook_id") == {world.hook_a["webhook_id"]}
    everything = ids(world.admin.get("/webhooks").json(), "webhook_id")
    assert world.all_hooks() <= everything

    messages = world.user_a.get("/webhook_messages").json()
    assert {m["client_id"] for m in messages} == {world.a}
    admin_messages = world.admin.get("/webhook_messages",
                                     params={"client_id": f"in.({world.a},{world.b})"}).json()
    assert {m["client_id"] for m in admin_messages} == {world.a, world.b}

    # A's message went to A's endpoint and to the admin's all-clients endpoint; A sees only the
    # delivery to its own endpoint.
    deliveries = world.user_a.get("/webhook_deliveries").json()
    assert ids(deliveries, "webhook_id") == {world.hook_a["webhook_id"]}
    admin_view = world.admin.get("/webhook_deliveries", params={
        "webhook_id": f"in.({','.join(sorted(world.all_hooks()))})"}).json()
    assert ids(admin_view, "webhook_id") == world.all_hooks()

    # Filters naming the other client's rows find nothing.
    for path, column in (("/webhooks", "webhook_id"), ("/webhook_deliveries", "webhook_id")):
        other = {column: f"eq.{world.hook_b['webhook_id']}"}
        assert world.user_a.get(path, params=other).json() == []
    assert world.user_a.get("/webhook_messages", params={"client_id": f"eq.{world.b}"}).json() == []
    assert ids(world.user_a.get("/usage_alerts").json(), "client_id") == {world.a}
    assert {world.a, world.b} <= ids(world.admin.get("/usage_alerts").json(), "client_id")


def test_a_client_cannot_act_on_another_clients_endpoints_or_deliveries(world: World) -> None:
    other = world.hook_b["webhook_id"]
    for rpc in ("delete_webhook", "rotate_webhook_secret", "test_webhook", "enable_webhook"):
        for target in (other, world.hook_all["webhook_id"]):
            response = world.user_a.post(f"/rpc/{rpc}", json={"webhook_id": target})
            assert response.status_code == 400 and response.json()["code"] == "SL603", \
                (rpc, response.text)
    # Not found looks the same as not yours.
    missing = world.user_a.post("/rpc/delete_webhook", json={"webhook_id": str(uuid.uuid4())})
    assert missing.json()["code"] == "SL603"
    (delivery_b,) = world.admin.get("/webhook_deliveries",
                                    params={"webhook_id": f"eq.{other}"}).json()
    refused = world.user_a.post("/rpc/redeliver", json={"delivery_id": delivery_b["delivery_id"]})
    assert refused.status_code == 400 and refused.json()["code"] == "SL603"
    assert world.user_b.post("/rpc/redeliver",
                             json={"delivery_id": delivery_b["delivery_id"]}).status_code == 200
    # Creating for another client, or for every client, is refused.
    for client_id in (world.b,):
        response = world.user_a.post("/rpc/create_webhook", json={
            "url": URL, "events": ["job.failed"], "client_id": client_id})
        assert response.status_code == 400 and response.json()["code"] == "SL604", response.text
    # Thresholds are the admins'.
    response = world.user_a.post("/rpc/set_usage_alert",
                                 json={"client_id": world.a, "amount": 1, "currency": "EUR"})
    assert response.status_code in (401, 403)
    # The other client's endpoint is intact, and the admin can still act on it.
    rotated = world.admin.post("/rpc/rotate_webhook_secret", json={"webhook_id": other})
    assert rotated.status_code == 200


def test_ingest_tokens_and_anonymous_callers_get_nothing(world: World) -> None:
    for http in (world.ingest_a, world.anon):
        for path in ("/webhooks", "/webhook_messages", "/webhook_deliveries", "/usage_alerts",
                     "/email_alerts"):
            response = http.get(path)
            assert response.status_code in (401, 403), (path, response.status_code)
        for rpc, body in (("create_webhook", {"url": URL, "events": ["job.failed"]}),
                          ("delete_webhook", {"webhook_id": world.hook_a["webhook_id"]}),
                          ("redeliver", {"delivery_id": str(uuid.uuid4())}),
                          ("set_email_alerts", {"events": ["job.failed"]}),
                          ("set_usage_alert", {"client_id": world.a, "amount": 1})):
            response = http.post(f"/rpc/{rpc}", json=body)
            assert response.status_code in (401, 403), (rpc, response.status_code)
    assert world.hook_a["webhook_id"] in ids(world.user_a.get("/webhooks").json(), "webhook_id")


def test_the_secret_is_never_readable(world: World, db: psycopg.Connection,
                                      as_user: Callable[..., Any]) -> None:
    for http in (world.user_a, world.admin):
        body = http.get("/webhooks").text
        assert world.hook_a["secret"] not in body and "whsec_" not in body
        assert http.get("/webhooks", params={"select": "secret"}).status_code == 400
    for role, client in (("client", world.a), ("admin", None)):
        with as_user(db, role, client), pytest.raises(psycopg.errors.InsufficientPrivilege):
            db.execute("select secret from ledger.webhooks")
        db.rollback()
    assert db.execute("select count(*) from ledger.webhooks where secret = %s",
                      [world.hook_a["secret"]]).fetchone() == (1,)


@pytest.mark.parametrize("table", ["webhooks", "notification_messages", "webhook_deliveries",
                                   "webhook_attempts", "usage_alerts", "email_subscriptions",
                                   "email_deliveries", "notification_settings"])
def test_bi_logins_and_ingest_read_no_notification_table(world: World, db: psycopg.Connection,
                                                         as_user: Callable[..., Any],
                                                         table: str) -> None:
    for role, client in (("bi_reader", world.a), ("ingest", world.a), ("anon", None)):
        with as_user(db, role, client), pytest.raises(psycopg.errors.InsufficientPrivilege):
            db.execute(f"select 1 from ledger.{table} limit 1")
        db.rollback()
    assert db.execute(f"select count(*) >= 0 from ledger.{table}").fetchone() == (True,)


@pytest.mark.parametrize("body, code", [
    ({"url": "https://x.example.com/" + "a" * 2100, "events": ["job.failed"]}, "SL601"),
    ({"url": "https://x.example.com/\nHost: evil", "events": ["job.failed"]}, "SL601"),
    ({"url": "https://x.example.com/", "events": []}, "SL602"),
    ({"url": "https://x.example.com/", "events": [None]}, "SL602"),
    ({"url": "https://x.example.com/", "events": ["webhook.test"]}, "SL602"),
    ({"url": "https://x.example.com/", "events": ["job.failed'; drop table ledger.jobs; --"]},
     "SL602"),
    ({"url": None, "events": ["job.failed"]}, "SL601"),
])
def test_hostile_input_is_refused_with_a_clear_code(world: World, body: dict[str, Any],
                                                     code: str) -> None:
    response = world.user_a.post("/rpc/create_webhook", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["code"] == code, response.text
    bad_id = world.user_a.post("/rpc/delete_webhook", json={"webhook_id": "not-a-uuid"})
    assert bad_id.status_code == 400
    with contextlib.suppress(ValueError):
        assert "uuid" in bad_id.json()["message"]
