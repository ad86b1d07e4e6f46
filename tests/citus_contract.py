"""One contract scenario, run against any stack: the answers a client, an ingest token, an admin
and a BI login get, with the client ids replaced by their role in the scenario, so that the
answers of a single node and of a Citus cluster can be compared as they are
(tests/test_citus.py, docs/adr/0012-citus-distribution.md).

The scenario uses clients of its own (`tag`-a, `tag`-b) with prices of their own, and events at
fixed instants in a past month, so its answers depend on nothing else in the database.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import psycopg

import notify_support
from auth_support import PASSWORD, add_user, ingest, login
from notify_support import Receiver, SmtpServer, smtp_server, verify_signature, wait_for
from stepledger.demo import simulate
from stepledger.settings import REPO_ROOT, Settings

PERIOD = "2026-10"
START = datetime(2026, 10, 12, 8, 0, tzinfo=UTC)
# Volatile values (instants of receipt and of processing, ids made at random) are left out, and
# so is where an invoice line was read from (`source`: the usage view or live), which depends on
# whether the scheduler's refresh ran in between; the amounts are compared either way.
VOLATILE = {"received_at", "updated_at", "last_received_at", "vault_id", "batch_id",
            "changed_xid", "generated_at", "issued_on", "due_on", "finalized_at",
            "duration_s", "stalls_at", "source", "replay_id", "replayed_at", "timestamp",
            "refreshed_at"}
# What the notification worker must deliver to the scenario's webhooks (a failed job of A, the
# job of B left running in the past, so stalled at the first scan), and how long it may take.
DELIVERED = {("job.failed", "A", "job-2"), ("job.stalled", "B", "job-3")}
DELIVERY_TIMEOUT_S = 45


@dataclass
class Scenario:
    tag: str
    a: str
    b: str
    answers: dict[str, Any]


def _events(client_id: str, job_id: str, outcome: str, seed: int) -> list[dict[str, Any]]:
    plan = simulate.JobPlan(client_id, job_id, START + timedelta(hours=seed), outcome)
    return list(simulate.job_events(plan, random.Random(seed), START + timedelta(days=2)))


def _normal(value: Any, names: dict[str, str]) -> Any:
    """The answer with client ids replaced by 'A' / 'B' and volatile fields left out."""
    if isinstance(value, dict):
        return {_normal(k, names): _normal(v, names) for k, v in sorted(value.items())
                if k not in VOLATILE}
    if isinstance(value, list):
        return [_normal(v, names) for v in value]
    if isinstance(value, str):
        for real, label in names.items():
            value = value.replace(real, label)
        return value
    return value


def prepare(su_conn: psycopg.Connection, tag: str) -> tuple[str, str]:
    a, b = f"{tag}-a", f"{tag}-b"
    su_conn.execute("select ledger.register_pipeline(%s::jsonb)",
                    [(REPO_ROOT / "schemas" / "pipelines" / "botimage.json").read_text()])
    steps = [s["key"] for s in json.loads(
        (REPO_ROOT / "schemas" / "pipelines" / "botimage.json").read_text())["steps"]]
    for client, price in ((a, "0.05"), (b, "0.07")):
        su_conn.execute("select ledger.add_client(%s, %s, 'EUR')", [client, f"Clinic {client}"])
        # a price of its own for every step: default prices (other tests') do not reach it
        for step in steps:
            su_conn.execute("select ledger.add_price('botimage', %s, %s, %s, 'EUR', '2026-01-01', "
                            "p_note => 'contract test')", [step, price, client])
        add_user(su_conn, f"staff@{client}.example", ["client"], client)
    # B commits to a monthly minimum above its usage: its invoice and revenue get a top-up
    su_conn.execute("select ledger.add_client_minimum(%s, 1000, '2026-01-01')", [b])
    add_user(su_conn, f"admin@{tag}.example", ["admin"])
    return a, b


def _refusal(su_conn: psycopg.Connection, *statements: tuple[str, list[Any]]) -> Any:
    """The last statement's first value, or [SQLSTATE, message] when one is refused; all in one
    transaction, rolled back."""
    try:
        with su_conn.transaction(force_rollback=True):
            row = None
            for statement, params in statements:
                cursor = su_conn.execute(statement, params)
                row = cursor.fetchone() if cursor.description else None
            return row[0] if row else None
    except psycopg.Error as exc:
        return [exc.sqlstate, exc.diag.message_primary]


def _logged_in_own_transaction(su_conn: psycopg.Connection, client_id: str, reason: str,
                               *statements: tuple[str, list[Any]]) -> Any:
    """After the statements (rolled back): whether the billing changes they logged carry their
    transaction's id, which the usage refresh compares with its snapshot. The id is asked for in
    a statement of its own: in a query over a distributed table a worker would answer its own."""
    try:
        with su_conn.transaction(force_rollback=True):
            for statement, params in statements:
                su_conn.execute(statement, params)
            (xid,) = su_conn.execute("select pg_current_xact_id()::text").fetchone()
            return su_conn.execute(
                "select array_agg(distinct ch.xid::text = %s) from ledger.billing_changes ch "
                " where ch.client_id = %s and ch.reason = %s", [xid, client_id, reason]
            ).fetchone()[0]
    except psycopg.Error as exc:
        return [exc.sqlstate, exc.diag.message_primary]


# POST /prices and POST /client_minimums as an admin: rows for a month far ahead (they change no
# answer above), and hostile input, answered as on a single node (ADR 0012: on a cluster the
# checks run once on the coordinator, the rows land on the reference table and on A's shard).
PRICE_BOOK_POSTS = (
    ("a price", "/prices", {"pipeline": "botimage", "step": "dicom-intake", "client_id": "A",
                            "unit_price": 0.0400, "effective_from": "2031-01-01T00:00:00Z",
                            "tiers": [{"from_units": 100, "unit_price": 0.03}], "note": "n"}),
    ("a default price", "/prices", {"pipeline": "botimage", "step": "dicom-intake",
                                    "unit_price": 1, "currency": "CHF",
                                    "effective_from": "2031-01-01T00:00:00Z"}),
    ("a price of another currency", "/prices", {"pipeline": "botimage", "step": "dicom-intake",
                                                "client_id": "A", "currency": "GBP",
                                                "unit_price": 1}),
    ("a price of no step", "/prices", {"pipeline": "botimage", "step": "no-such-step",
                                       "unit_price": 1}),
    ("a price of bad tiers", "/prices", {"pipeline": "botimage", "step": "dicom-intake",
                                         "unit_price": 1, "tiers": [{"from_units": 0}]}),
    ("a price of a bad slug", "/prices", {"pipeline": "botimage", "step": "Bad Step!",
                                          "unit_price": 1}),
    ("a minimum", "/client_minimums", {"client_id": "A", "monthly_minimum": 12.50,
                                       "effective_from": "2031-01-01", "note": "n"}),
    ("a minimum mid-month", "/client_minimums", {"client_id": "A", "monthly_minimum": 1,
                                                 "effective_from": "2031-01-15"}),
    ("a minimum of no client", "/client_minimums", {"client_id": "no-such-client",
                                                    "monthly_minimum": 1,
                                                    "effective_from": "2031-01-01"}),
    ("a minimum of a bad slug", "/client_minimums", {"client_id": "Bad Client!",
                                                     "monthly_minimum": 1,
                                                     "effective_from": "2031-01-01"}),
    ("a minimum without amount", "/client_minimums", {"client_id": "A",
                                                      "effective_from": "2031-01-01"}),
)


def _price_book(api: httpx.Client, admin: dict[str, str], a: str) -> dict[str, Any]:
    """The answers to PRICE_BOOK_POSTS (the row as POST returns it, or the error), and whether
    each row was recorded as the admin's."""
    answers: dict[str, Any] = {}
    headers = {**admin, "Prefer": "return=representation"}
    for name, path, body in PRICE_BOOK_POSTS:
        body = {k: a if v == "A" else v for k, v in body.items()}
        posted = api.post(path, json=body, headers=headers)
        rows = posted.json()
        answers[f"POST {name}"] = [posted.status_code, [
            {k: v for k, v in row.items() if k not in ("price_id", "minimum_id", "recorded_at")}
            for row in rows] if posted.status_code == 201 else rows]
    return answers


def _logged_once_through_the_view(su_conn: psycopg.Connection, client_id: str) -> Any:
    """POST /prices and POST /client_minimums as PostgREST's session runs them (an admin's role
    and claims), in a transaction rolled back: who each row was recorded by, and how many rows
    of the billing change log each insert wrote in the transaction (read as the owner who wrote
    them: on a cluster a transaction may not read placements another user modified in it)."""
    claims = json.dumps({"role": "admin", "email": f"pricing@{client_id}.example"})
    as_admin = ("select set_config('request.jwt.claims', %s, true), "
                "set_config('role', 'admin', true)", [claims])
    as_owner = [("reset role", []), ("set local role stepledger_owner", [])]
    inserts = {
        "price": ("insert into api.prices (pipeline, step, client_id, unit_price, effective_from)"
                  " values ('botimage', 'dicom-intake', %s, 0.05, '2032-01-01') "
                  "returning recorded_by, recorded_role, state", [client_id]),
        "minimum": ("insert into api.client_minimums (client_id, monthly_minimum, effective_from)"
                    " values (%s, 5, '2032-01-01') returning recorded_by, monthly_minimum",
                    [client_id]),
    }
    logged: dict[str, Any] = {}
    for reason, insert in inserts.items():
        try:
            with su_conn.transaction(force_rollback=True):
                su_conn.execute(*as_admin)
                recorded = su_conn.execute(*insert).fetchone()
                for statement in as_owner:
                    su_conn.execute(*statement)
                (xid,) = su_conn.execute("select pg_current_xact_id()::text").fetchone()
                (count,) = su_conn.execute(
                    "select count(*) from ledger.billing_changes ch where ch.client_id = %s "
                    "   and ch.reason = %s and ch.xid::text = %s", [client_id, reason, xid]
                ).fetchone()
                logged[reason] = [list(recorded), count]
        except psycopg.Error as exc:
            logged[reason] = [exc.sqlstate, exc.diag.message_primary]
    return logged


def _delivered(receiver: Receiver, names: dict[str, str]) -> list[Any]:
    """The job messages the receiver got for the scenario's clients, normalized."""
    out = []
    for request in receiver.requests:
        body = _normal(request.json(), names)
        data = body.get("data", {})
        if data.get("client_id") in ("A", "B"):
            data["url"] = "#" + str(data.get("url", "")).split("#", 1)[-1]  # the web app's host
            out.append(body)
    return sorted(out, key=lambda m: json.dumps(m, sort_keys=True))


def run(settings: Settings, su_conn: psycopg.Connection, tag: str, mail_dir: Path) -> Scenario:
    """Ingest, progress, usage and invoices, isolation, notifications (webhooks to a real HTTP
    receiver, e-mail to a real SMTP server), replay, a currency change and the change log's
    transaction: every answer of the scenario."""
    with contextlib.closing(Receiver()) as receiver, smtp_server(mail_dir) as smtp, \
            notify_support.worker_environment(settings, STEPLEDGER_WEBHOOK_ALLOW_PRIVATE="1",
                                              STEPLEDGER_SMTP_URL=smtp.url):
        return _run(settings, su_conn, tag, receiver, smtp)


def _run(settings: Settings, su_conn: psycopg.Connection, tag: str,
         receiver: Receiver, smtp: SmtpServer) -> Scenario:
    a, b = prepare(su_conn, tag)
    names = {a: "A", b: "B", tag: "T"}
    token = {c: su_conn.execute("select auth.create_api_token(%s, 'contract', 'ingest', 'tests')",
                                [c]).fetchone()[0]["token"] for c in (a, b)}
    answers: dict[str, Any] = {}
    with httpx.Client(base_url=settings.api_url, timeout=60) as api:
        def as_token(t: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {t}"}

        # Webhooks of both clients, made by their users before anything happens.
        secrets = {}
        for c in (a, b):
            session = login(api, f"staff@{c}.example").json()["token"]
            made = api.post("/rpc/create_webhook", headers=as_token(session), json={
                "url": receiver.url, "events": ["job.failed", "job.stalled"], "client_id": c})
            assert made.status_code == 200, made.text
            secrets[c] = made.json()["secret"]
        # A's staff also wants failed jobs by e-mail.
        opted = api.post("/rpc/set_email_alerts", headers=as_token(login(
            api, f"staff@{a}.example").json()["token"]), json={"events": ["job.failed"]})
        answers["e-mail opt-in of A"] = [opted.status_code, opted.json()]

        # Ingest: two clients, a completed, a failed and a retried job each; a duplicate batch;
        # a bad event; and a bound token writing for the other client.
        batches = {
            "a1": (token[a],
                   _events(a, "job-1", "completed", 1) + _events(a, "job-2", "failed", 2)),
            "b1": (token[b],
                   _events(b, "job-1", "completed", 3) + _events(b, "job-3", "running", 4)),
            "a2": (token[a], _events(a, "job-2", "completed", 5)),
        }
        for name, (t, events) in batches.items():
            api.headers.update(as_token(t))
            answers[f"ingest {name}"] = ingest(api, events).json()
        answers["ingest again"] = ingest(api, batches["a2"][1]).json()
        bad = dict(batches["a2"][1][0], event_id="bad-step", step="no-such-step")
        answers["ingest bad"] = ingest(api, [bad]).json()
        api.headers.update(as_token(token[a]))
        foreign = dict(batches["b1"][1][0], event_id="foreign")
        answers["ingest for another client"] = ingest(api, [foreign]).json()
        reading = api.get("/jobs")  # an ingest token writes, it does not read
        answers["ingest token reads jobs"] = [reading.status_code, reading.json().get("code")]
        api.headers.pop("Authorization")

        sessions = {c: login(api, f"staff@{c}.example").json()["token"] for c in (a, b)}
        admin = login(api, f"admin@{tag}.example", PASSWORD).json()["token"]
        for c in (a, b):
            headers = as_token(sessions[c])
            other = b if c == a else a
            answers[f"jobs of {c}"] = api.get(
                "/jobs", params={"order": "client_id,job_id"}, headers=headers).json()
            answers[f"step runs of {c}"] = api.get(
                "/step_runs", params={"order": "job_id,step,attempt"}, headers=headers).json()
            answers[f"{c} asks for {other}'s jobs"] = api.get(
                "/jobs", params={"client_id": f"eq.{other}"}, headers=headers).json()
            answers[f"invoice of {c}"] = api.post(
                "/rpc/invoice", json={"client_id": c, "period": PERIOD}, headers=headers).json()
            refused = api.post("/rpc/invoice", json={"client_id": other, "period": PERIOD},
                               headers=headers)
            answers[f"{c} asks for {other}'s invoice"] = [refused.status_code,
                                                          refused.json().get("code")]
        # Usage as client A reads it, once the refresh (the scheduler's, every 2 s) has seen
        # every change; the freshness view counts what it has not seen.
        def usage_current() -> bool:
            fresh = api.get("/usage_freshness", headers=as_token(sessions[a]))
            rows = fresh.json() if fresh.status_code == 200 else []
            return bool(rows) and rows[0]["pending_changes"] == 0
        with contextlib.suppress(AssertionError):  # on a timeout the answers below differ
            wait_for(usage_current, 20, "the usage refresh", interval=0.5)
        fresh = api.get("/usage_freshness", headers=as_token(sessions[a]))
        body = fresh.json()  # rows, or an error
        answers["usage freshness of A"] = [fresh.status_code, [r["pending_changes"] for r in body]
                                           if isinstance(body, list) else body]
        answers["usage of A"] = api.get("/usage", params={"order": "period,pipeline,step"},
                                        headers=as_token(sessions[a])).json()
        answers.update(_usage_while_unseen(settings, su_conn, api, a, b,
                                           {c: as_token(sessions[c]) for c in (a, b)},
                                           usage_current))
        headers = as_token(admin)
        answers["admin's jobs"] = api.get(
            "/jobs", params={"client_id": f"in.({a},{b})", "order": "client_id,job_id"},
            headers=headers).json()
        finalized = api.post("/rpc/finalize_invoice", json={"client_id": a, "period": PERIOD},
                             headers=headers)
        answers["finalize"] = [finalized.status_code, finalized.json()]
        answers["invoice of a once final"] = api.post(
            "/rpc/invoice", json={"client_id": a, "period": PERIOD},
            headers=as_token(sessions[a])).json()

        # Replay every row of A's vault: accepted events come back as duplicates, the bad one
        # stays rejected; each original row records the run.
        replayed = api.post("/rpc/replay", json={"outcome": "any", "client_id": a},
                            headers=headers)
        answers["replay"] = [replayed.status_code, replayed.json()]
        answers["replay recorded"] = su_conn.execute(
            "select v.outcome, v.replays->-1->>'outcome', jsonb_array_length(v.replays), count(*) "
            "  from ledger.vault v where v.client_id = %s and v.channel <> 'replay' "
            " group by 1, 2, 3 order by 1, 2, 3", [a]).fetchall()
        answers["replay run"] = su_conn.execute(
            "select replayed, accepted, duplicates, rejected from ledger.replays "
            " where replay_id = %s", [replayed.json().get("replay_id")]).fetchall()

        # A usage alert crossed by a job completed this month: the refresh that rewrote the
        # lines writes usage.threshold_crossed (on a cluster after its writes to the shards).
        api.headers.update(as_token(token[a]))
        now = datetime.now(UTC)
        plan = simulate.JobPlan(a, "job-now", max(now - timedelta(hours=2),
                                                  now.replace(day=1, hour=0, minute=0, second=0,
                                                              microsecond=0)), "completed")
        su_conn.execute("insert into ledger.usage_alerts (client_id, amount, currency, set_by) "
                        "values (%s, 0.01, 'EUR', 'contract')", [a])
        answers["ingest this month"] = ingest(
            api, list(simulate.job_events(plan, random.Random(6), now))).json()
        api.headers.pop("Authorization")

        def crossed() -> list[Any]:
            return su_conn.execute(
                "select m.event_type, m.body->'data'->>'threshold', m.body->'data'->>'currency',"
                "       m.body->'data'->>'period' = to_char(now() at time zone 'UTC', 'YYYY-MM')"
                "  from ledger.notification_messages m where m.client_id = %s "
                "   and m.event_type = 'usage.threshold_crossed'", [a]).fetchall()
        with contextlib.suppress(AssertionError):  # on a timeout the answer below differs
            wait_for(crossed, 20, "usage.threshold_crossed of A", interval=0.5)
        answers["usage alert crossed"] = crossed()
        answers.update(_price_book(api, as_token(admin), a))

    # Notifications: the stall scan (the scheduler's task, run here at once) and the worker's
    # delivery of job.failed and job.stalled to the clients' webhooks, signed.
    try:
        su_conn.execute("select ledger.scan_stalled_jobs()")
        answers["stall scan"] = "ran"
    except psycopg.Error as exc:
        answers["stall scan"] = [exc.sqlstate, exc.diag.message_primary]

    def delivered() -> bool:
        got = {(m["type"], m["data"]["client_id"], m["data"]["job_id"])
               for m in _delivered(receiver, names)}
        return got >= DELIVERED
    # on a timeout the answers below differ from the single node's, and say what arrived
    with contextlib.suppress(AssertionError):
        wait_for(delivered, DELIVERY_TIMEOUT_S, "job.failed and job.stalled at the receiver",
                 interval=0.5)
    answers["webhooks received"] = _delivered(receiver, names)
    with contextlib.suppress(AssertionError):
        wait_for(lambda: smtp.mails_to(f"staff@{a}.example"), DELIVERY_TIMEOUT_S,
                 "the e-mail of job.failed", interval=0.5)
    answers["e-mails received"] = [
        # the job page's host is the stack's web port
        _normal([m["To"], m["Subject"], re.sub(r"https?://[^/]+/", "WEB/", m.get_content())],
                names)
        for m in smtp.mails_to(f"staff@{a}.example")]
    # and what the outbox recorded of them once the worker was done (says why, when one did not
    # arrive)
    def email_outcomes() -> list[Any]:
        return su_conn.execute(
            "select state, attempts, last_error from ledger.email_deliveries where recipient = %s",
            [f"staff@{a}.example"]).fetchall()
    with contextlib.suppress(AssertionError):
        wait_for(lambda: all(state != "pending" for state, *_ in email_outcomes()),
                 DELIVERY_TIMEOUT_S, "the e-mail's outcome recorded", interval=0.2)
    answers["e-mail deliveries"] = email_outcomes()
    answers.update(_email_retried(settings, su_conn, smtp, token[a], a))
    for request in receiver.requests:
        client = request.json().get("data", {}).get("client_id")
        if client in secrets:
            verify_signature(secrets[client], request)

    # A client's currency: free while nothing is billed in it (C has nothing), refused once the
    # client has prices of its own (A); the change is logged in this transaction (the
    # coordinator's on a cluster: the usage refresh compares it with its snapshot).
    # As the CLI does it (`stepledger client update`): as the owner.
    owner = ("set local role stepledger_owner", [])
    c = f"{tag}-c"
    su_conn.execute("select ledger.add_client(%s, %s, 'EUR')", [c, f"Clinic {c}"])
    answers["currency change of C"] = _refusal(
        su_conn, owner, ("select (ledger.update_client(%s, null, 'USD')).currency", [c]))
    answers["currency change of A"] = _refusal(
        su_conn, owner, ("select (ledger.update_client(%s, null, 'USD')).currency", [a]))
    answers["currency change of A again"] = _refusal(
        su_conn, owner, ("select (ledger.add_client(%s, 'Clinic', 'GBP')).currency", [a]))
    answers["currency change logged in its transaction"] = _logged_in_own_transaction(
        su_conn, c, "currency", owner, ("select ledger.update_client(%s, null, 'CHF')", [c]))
    # A rebuild deletes job steps: their months are logged in the deleting transaction (on a
    # cluster the deleted rows are on a worker, told the coordinator's transaction first).
    answers["deleted steps logged in their transaction"] = _logged_in_own_transaction(
        su_conn, a, "rebuild", owner, ("select ledger.share_transaction_id()", []),
        ("delete from ledger.job_steps where client_id = %s and job_id = 'job-1'", [a]))

    answers["price book rows logged once"] = _logged_once_through_the_view(su_conn, a)

    # The vault guarantees: append-only vault, immutable finalized invoices, even for a superuser.
    for name, statement in (
            ("vault update", "update ledger.vault set outcome = outcome where client_id = %s"),
            ("vault delete", "delete from ledger.vault where client_id = %s"),
            ("invoice update", "update ledger.invoices set number = number where client_id = %s"),
            ("invoice line delete", "delete from ledger.invoice_lines where client_id = %s")):
        try:
            with su_conn.transaction():
                su_conn.execute(statement, [a])
            answers[name] = "allowed"
        except psycopg.Error as exc:
            answers[name] = [exc.sqlstate, exc.diag.message_primary]
    return Scenario(tag, a, b, _normal(answers, names))


def _email_retried(settings: Settings, su_conn: psycopg.Connection, smtp: SmtpServer,
                   ingest_token: str, client: str) -> dict[str, Any]:
    """A failed job of the client while its mail relay is down: the e-mail's first attempt is
    refused and scheduled again, not lost; once the relay is back, the retry sends it, once."""
    recipient, job = f"staff@{client}.example", "job-relay-down"
    answers: dict[str, Any] = {}

    def delivery() -> tuple[Any, ...] | None:
        return su_conn.execute(
            "select d.state, d.attempts, d.last_error from ledger.email_deliveries d "
            "  join ledger.notification_messages m on m.message_seq = d.message_seq "
            " where d.recipient = %s and m.body -> 'data' ->> 'job_id' = %s",
            [recipient, job]).fetchone()

    def mails() -> list[EmailMessage]:
        return [m for m in smtp.mails_to(recipient) if job in m["Subject"]]

    # on a timeout the answers below differ from the single node's, and say how far it got
    su_conn.execute("update ledger.notification_settings set retry_first = '3 seconds'")
    try:
        with smtp.down():
            with httpx.Client(base_url=settings.api_url, timeout=60,
                              headers={"Authorization": f"Bearer {ingest_token}"}) as api:
                answers["ingest while the mail relay is down"] = ingest(
                    api, _events(client, job, "failed", 8)).json()
            with contextlib.suppress(AssertionError):
                wait_for(lambda: (delivery() or ("", 0))[1] >= 1, DELIVERY_TIMEOUT_S,
                         "the e-mail's first attempt", interval=0.2)
            state, attempts, error = delivery() or (None, 0, None)
            answers["e-mail while the relay is down"] = [
                state, attempts >= 1, str(error).split(":")[0], len(mails())]
        with contextlib.suppress(AssertionError):
            wait_for(lambda: (delivery() or ("pending",))[0] != "pending", DELIVERY_TIMEOUT_S,
                     "the e-mail's retry", interval=0.2)
        state, attempts, error = delivery() or (None, 0, None)
        answers["e-mail once the relay is back"] = [state, attempts >= 2, error, len(mails())]
    finally:
        su_conn.execute("update ledger.notification_settings set retry_first = default")
    return answers


def _usage_while_unseen(settings: Settings, su_conn: psycopg.Connection, api: httpx.Client,
                        a: str, b: str, headers: dict[str, dict[str, str]],
                        usage_current: Any) -> dict[str, Any]:
    """GET /usage, its freshness, the usage reports and A's draft invoice while a change of A's
    month, then one of every client, is logged but not absorbed by the usage refresh (held off by
    its lock), and once it is: each line's `stale` as the change log says. A's change carries
    the id of a transaction that the last refresh's snapshot saw, as a change does on a cluster
    for an instant after a refresh committed on the coordinator and before it committed on the
    worker that holds the client's lines: a row still in the log is unseen, whatever its id."""
    answers: dict[str, Any] = {}
    month = f"{PERIOD}-01"

    def read(label: str) -> None:
        for c in (a, b):
            answers[f"usage of {c} {label}"] = api.get(
                "/usage", params={"order": "period,pipeline,step"}, headers=headers[c]).json()
        fresh = api.get("/usage_freshness", headers=headers[a]).json()
        answers[f"usage freshness of {a} {label}"] = [r["pending_changes"] for r in fresh]
        answers[f"invoice of {a} {label}"] = api.post(
            "/rpc/invoice", json={"client_id": a, "period": PERIOD}, headers=headers[a]).json()
        with su_conn.transaction(force_rollback=True):
            su_conn.execute("set local role admin")
            for report in ("usage_by_step", "revenue_by_client_month"):
                answers[f"{report} {label}"] = [list(r) for r in su_conn.execute(
                    f"select client_id, period, stale, sum(amount)::text from reporting.{report} "
                    " where client_id = any(%s) group by 1, 2, 3 order by 1, 2, 3",
                    [[a, b]])]

    def log_change(client_id: str, xid: str | None = None) -> None:
        # the transaction's id asked for in a statement of its own (the coordinator's)
        with su_conn.transaction():
            if xid is None:
                (xid,) = su_conn.execute("select pg_current_xact_id()::text").fetchone()
            su_conn.execute(
                "insert into ledger.billing_changes (client_id, period_from, period_to, reason, "
                "xid) values (%s, %s::date, %s::date, 'rebuild', %s::xid8)",
                [client_id, month, month, xid])

    # a transaction committed before the next refresh starts, so that its snapshot sees it
    with su_conn.transaction():
        (seen_xid,) = su_conn.execute("select pg_current_xact_id()::text").fetchone()
    # (not only a later refresh: one whose snapshot saw that transaction)
    wait_for(lambda: su_conn.execute(
        "select exists (select from ledger.usage_last_refresh r "
        "                where pg_visible_in_snapshot(%s::xid8, r.snapshot))",
        [seen_xid]).fetchone()[0], 20, "a usage refresh that saw the transaction", interval=0.2)
    with psycopg.connect(settings.dsn("postgres")) as holder:
        holder.execute("select pg_advisory_xact_lock(hashtext('stepledger.refresh_usage'))")
        log_change(a, seen_xid)
        read("while its month is unseen")
        log_change("")
        read("while every month is unseen")
        holder.rollback()
    with contextlib.suppress(AssertionError):  # on a timeout the answers below differ
        wait_for(usage_current, 20, "the usage refresh", interval=0.5)
    read("once seen")
    return answers


def as_json(scenario: Scenario) -> str:
    return json.dumps(scenario.answers, indent=1, sort_keys=True, default=str)
