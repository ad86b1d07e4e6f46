"""One contract scenario, run against any stack: the answers a client, an ingest token, an admin
and a BI login get, with the client ids replaced by their role in the scenario, so that the
answers of a single node and of a Citus cluster can be compared as they are
(tests/test_citus.py, docs/adr/0012-citus-distribution.md).

The scenario uses clients of its own (`tag`-a, `tag`-b) with prices of their own, and events at
fixed instants in a past month, so its answers depend on nothing else in the database.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg

from auth_support import PASSWORD, add_user, ingest, login
from stepledger.demo import simulate
from stepledger.settings import REPO_ROOT, Settings

PERIOD = "2026-10"
START = datetime(2026, 10, 12, 8, 0, tzinfo=UTC)
# Volatile values (instants of receipt and of processing, ids made at random) are left out, and
# so is where an invoice line was read from (`source`: the usage view or live), which depends on
# whether the scheduler's refresh ran in between; the amounts are compared either way.
VOLATILE = {"received_at", "updated_at", "last_received_at", "vault_id", "batch_id",
            "changed_xid", "generated_at", "issued_on", "due_on", "finalized_at",
            "duration_s", "stalls_at", "source"}


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
        su_conn.execute(
            "with added as (insert into ledger.prices (pipeline, step, client_id, unit_price, "
            "currency, effective_from, note) select 'botimage', s, %s, %s, 'EUR', '2026-01-01', "
            "'contract test' from unnest(%s::text[]) s returning price_id) "
            "select count(*) from added", [client, price, steps])
        add_user(su_conn, f"staff@{client}.example", ["client"], client)
    add_user(su_conn, f"admin@{tag}.example", ["admin"])
    return a, b


def run(settings: Settings, su_conn: psycopg.Connection, tag: str) -> Scenario:
    """Ingest, progress, usage and invoices, isolation: every answer of the scenario."""
    a, b = prepare(su_conn, tag)
    token = {c: su_conn.execute("select auth.create_api_token(%s, 'contract', 'ingest', 'tests')",
                                [c]).fetchone()[0]["token"] for c in (a, b)}
    answers: dict[str, Any] = {}
    with httpx.Client(base_url=settings.api_url, timeout=60) as api:
        def as_token(t: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {t}"}

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
    return Scenario(tag, a, b, _normal(answers, {a: "A", b: "B", tag: "T"}))


def as_json(scenario: Scenario) -> str:
    return json.dumps(scenario.answers, indent=1, sort_keys=True, default=str)
