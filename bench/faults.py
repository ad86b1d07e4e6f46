"""Faults under load: the SDK sends N events with retries while PostgREST, then PostgreSQL, are
killed with SIGKILL and restarted with the stack's own start functions; afterwards every event
must be stored exactly once, billed once, invoiced at the expected total and vaulted.

The baseline, measured in the same run on the same stack, sends another N events of other jobs
the same way with no fault: the ratio of the two wall times is the cost of the faults.

    python -m bench.faults [--events 100000] [--rate 2500]
    python -m bench faults [--quick]            (10,000 events)

tests/test_reliability_faults.py runs the same scenario at ~3,000 events.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import httpx
import psycopg

from bench import harness
from stepledger import stack
from stepledger.api_client import RetryPolicy
from stepledger.demo import simulate
from stepledger.ingest.credentials import operator_token
from stepledger.operator.billing.prices import set_price
from stepledger.sdk import Tracker
from stepledger.settings import Settings

REPO = Path(__file__).resolve().parents[1]
PIPELINE = "botimage"
# One default price per step: 0.05, 0.10, ... 1.00 EUR per unit, in force long before any event.
PRICES = {step: Decimal("0.05") * (n + 1) for n, (step, *_) in enumerate(simulate.BOTIMAGE_STEPS)}
PRICES_FROM = datetime(2020, 1, 1, tzinfo=UTC)
CENT = Decimal("0.01")


# -- the stack -----------------------------------------------------------------------------------


@contextlib.contextmanager
def own_stack(prefix: str = "stepledger-faults-") -> Iterator[Settings]:
    """A migrated stack of its own on free ports in a fresh home (the faults must not reach any
    other stack); always stopped and removed."""
    with harness.throwaway_stack(prefix) as settings:
        yield settings


def prepare(settings: Settings, client: str) -> str:
    """Register BotImage, the client and a default price per step; return an ingest API token
    issued by the database for that client."""
    with psycopg.connect(settings.dsn("stepledger_owner"), autocommit=True) as conn:
        harness.register_catalog(conn, [(client, f"Faults {client}")],
                                 pipelines=[harness.PIPELINES / f"{PIPELINE}.json"])
        for step, price in PRICES.items():
            set_price(conn, PIPELINE, step, price, currency="EUR", effective_from=PRICES_FROM)
    with psycopg.connect(settings.dsn("postgres"), autocommit=True) as conn:
        row = conn.execute("select auth.create_api_token(%s, 'faults', 'ingest', 'faults')",
                           [client]).fetchone()
    assert row is not None
    return str(row[0]["token"])


def generate(client: str, events: int, seed: int, tag: str) -> list[dict[str, object]]:
    """At least `events` realistic BotImage events of whole jobs of one client (ids carry tag)."""
    now = datetime.now(UTC)
    out: list[dict[str, object]] = []
    jobs = max(4, events // 25)
    while len(out) < events:
        out = []
        for event in simulate.history([client], jobs, now, days=10, seed=seed):
            event = dict(event)
            event["job_id"] = f"{tag}-{event['job_id']}"
            event["event_id"] = f"{tag}-{event['event_id']}"
            out.append(event)
        jobs = int(jobs * 1.3) + 1
    # whole jobs only: cut after the last event of the job that crosses the target
    last_job = out[events - 1]["job_id"]
    end = events
    while end < len(out) and out[end]["job_id"] == last_job:
        end += 1
    return out[:end]


# -- the faults ----------------------------------------------------------------------------------
def _wait(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f}s")
        time.sleep(0.02)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == pid:
                found.append(int(entry.name))
    return found


def kill_postgrest(settings: Settings) -> int:
    """SIGKILL the stack's PostgREST; return its pid once it is gone."""
    pid = stack.status(settings)["postgrest"]["pid"]  # type: ignore[index]
    if not isinstance(pid, int):
        raise RuntimeError("PostgREST is not running")
    os.kill(pid, signal.SIGKILL)
    _wait(lambda: not _alive(pid), 30, "PostgREST exit after SIGKILL")
    return pid


def kill_postgres(settings: Settings) -> int:
    """SIGKILL the postmaster; wait until it is reaped and its backends and auxiliary processes
    have noticed and exited (they hold the shared memory a new postmaster needs)."""
    pid = int((settings.pgdata / "postmaster.pid").read_text().split()[0])
    children = _children(pid)
    os.kill(pid, signal.SIGKILL)
    # Gone, not only dead: pg_ctl counts a zombie postmaster (not yet reaped by init) as running.
    _wait(lambda: not Path(f"/proc/{pid}").exists() and not any(_alive(c) for c in children),
          60, "PostgreSQL processes exit after SIGKILL of the postmaster")
    return pid


@dataclass
class Fault:
    name: str
    at_event: int                   # events emitted when it was injected
    retries_seen: int = 0           # SDK retries while the server was away
    down_s: float = 0.0             # from the kill until the restart returned


@dataclass
class Run:
    events: int
    seconds: float
    accepted: int
    duplicates: int
    rejected: int
    retries: int
    faults: list[Fault] = field(default_factory=list)


def drive(settings: Settings, token: str, client: str, events: list[dict[str, object]],
          spool: Path, rate: float, faults: bool) -> Run:
    """Emit `events` through one SDK Tracker at `rate` per second; with `faults`, kill -9 and
    restart PostgREST once a third is emitted and PostgreSQL once two thirds are; then flush."""
    tracker = Tracker(settings.api_url, token, client_id=client, pipeline=PIPELINE,
                      spool_dir=spool, batch_size=200, flush_interval_s=0.2, fsync=False,
                      timeout_s=15.0, retry=RetryPolicy(attempts=None, initial_s=0.1, max_s=1.0))
    done = threading.Event()
    problems: list[BaseException] = []

    def produce() -> None:
        start = time.monotonic()
        try:
            for n, event in enumerate(events):
                ahead = start + n / rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)   # pacing of the producer, not a wait for a condition
                tracker.emit(event)
        except BaseException as exc:  # reported by the main thread
            problems.append(exc)
        finally:
            done.set()

    started = time.monotonic()
    producer = threading.Thread(target=produce, name="faults-producer")
    producer.start()
    injected: list[Fault] = []
    try:
        if faults:
            for fraction, name in ((1 / 3, "postgrest"), (2 / 3, "postgres")):
                _wait(lambda f=fraction: tracker.stats.emitted >= len(events) * f or done.is_set(),
                      600, "producer progress")
                fault = Fault(name, tracker.stats.emitted)
                retries = tracker.stats.retries
                t0 = time.monotonic()
                if name == "postgrest":
                    kill_postgrest(settings)
                else:
                    kill_postgres(settings)
                # the SDK must have met the outage before the server comes back
                _wait(lambda r=retries: tracker.stats.retries > r, 60, f"SDK retry ({name})")
                if name == "postgres":
                    stack.start_postgres(settings)
                stack.start_postgrest(settings)
                fault.down_s = time.monotonic() - t0
                fault.retries_seen = tracker.stats.retries - retries
                injected.append(fault)
        producer.join()
        if problems:
            raise problems[0]
        if not tracker.flush(timeout_s=600):
            raise TimeoutError("the SDK did not deliver every event within 600 s")
    finally:
        done.set()
        producer.join()
        tracker.close(timeout_s=5)
    stats = tracker.stats
    return Run(len(events), time.monotonic() - started, stats.accepted, stats.duplicates,
               stats.rejected, stats.retries, injected)


# -- the checks ----------------------------------------------------------------------------------
def expected_billing(events: list[dict[str, object]]) -> tuple[
        dict[tuple[str, str], tuple[int, Decimal]], dict[str, dict[str, Decimal]]]:
    """From the generated events alone: (job, step) -> (billed attempt, units) of the latest
    completed attempt, and period -> total and per-step amounts (contract §5)."""
    billed: dict[tuple[str, str], tuple[int, Decimal, str]] = {}
    for e in events:
        if e["status"] != "completed":
            continue
        key = (str(e["job_id"]), str(e["step"]))
        attempt = int(e["attempt"])  # type: ignore[call-overload]
        if key not in billed or attempt > billed[key][0]:
            billed[key] = (attempt, Decimal(str(e.get("units", 1))), str(e["occurred_at"]))
    amounts: dict[str, dict[str, Decimal]] = {}
    for (_, step), (_, units, at) in billed.items():
        period = at[:7]
        amounts.setdefault(period, {}).setdefault(step, Decimal(0))
        amounts[period][step] += units * PRICES[step]
    rounded = {period: {step: amount.quantize(CENT, ROUND_HALF_UP)
                        for step, amount in steps.items()}
               for period, steps in amounts.items()}
    for steps in rounded.values():
        steps["__total__"] = sum(steps.values(), Decimal(0))
    return {k: (a, u) for k, (a, u, _) in billed.items()}, rounded


def verify(settings: Settings, client: str, events: list[dict[str, object]]) -> dict[str, object]:
    """Compare the ledger with the generated events; return the numbers, raise AssertionError
    naming the first difference."""
    ids = Counter(str(e["event_id"]) for e in events)
    assert max(ids.values()) == 1, "generated event ids are not unique"
    with psycopg.connect(settings.dsn("postgres"), autocommit=True) as conn:
        stored = Counter(r[0] for r in conn.execute(
            "select event_id from ledger.events where client_id = %s", [client]))
        vault = {outcome: Counter(r[0] for r in conn.execute(
                     "select event_id from ledger.vault where client_id = %s and outcome = %s",
                     [client, outcome]))
                 for outcome in ("accepted", "duplicate", "rejected")}
        steps = {(job, step): (attempt, units) for job, step, attempt, units in conn.execute(
            "select job_id, step, billed_attempt, billed_units from ledger.job_steps "
            "where client_id = %s and billed_attempt is not null", [client])}
        step_rows = conn.execute("select count(*), count(distinct (job_id, step)) "
                                 "from ledger.job_steps where client_id = %s", [client]).fetchone()
    assert stored == ids, (
        f"events stored {sum(stored.values())} (distinct {len(stored)}), generated {len(ids)}; "
        f"missing {len(set(ids) - set(stored))}, twice {sum(1 for v in stored.values() if v > 1)}")
    assert vault["accepted"] == ids, (
        f"vault: {len(set(ids) - set(vault['accepted']))} generated events have no accepted row, "
        f"{sum(1 for v in vault['accepted'].values() if v > 1)} have more than one")
    assert not vault["rejected"], f"{sum(vault['rejected'].values())} vault rows rejected"
    assert set(vault["duplicate"]) <= set(ids), "a duplicate vault row of an unknown event"
    want_steps, want_invoice = expected_billing(events)
    assert step_rows is not None and step_rows[0] == step_rows[1], "a step billed twice"
    assert steps == want_steps, (
        f"billed steps differ: {len(set(want_steps) ^ set(steps))} keys, "
        f"{sum(1 for k in want_steps if steps.get(k) != want_steps[k])} values")
    invoices = {}
    token = operator_token(settings.jwt_secret)
    with httpx.Client(base_url=settings.api_url, timeout=60,
                      headers={"Authorization": f"Bearer {token}"}) as http:
        for period, want in sorted(want_invoice.items()):
            answer = http.post("/rpc/invoice", json={"client_id": client, "period": period})
            assert answer.status_code == 200, answer.text
            invoice = answer.json()
            got = {line["step"]: Decimal(str(line["amount"])) for line in invoice["lines"]
                   if line["kind"] == "usage"}
            got["__total__"] = Decimal(str(invoice["total"]))
            assert got == want, f"invoice {period}: {json.dumps(invoice)[:400]} != {want}"
            invoices[period] = str(want["__total__"])
    return {"events": len(ids), "vault_duplicates": sum(vault["duplicate"].values()),
            "billed_steps": len(steps), "invoices": invoices}


# -- the benchmark -------------------------------------------------------------------------------
def run(quick: bool = False, events: int | None = None, rate: float = 2500.0) -> dict[str, object]:
    n = events or (10_000 if quick else 100_000)
    with own_stack() as settings, tempfile.TemporaryDirectory(prefix="faults-spool-") as spool:
        base_client, fault_client = "faults-baseline", "faults-kill9"
        base_token = prepare(settings, base_client)
        with psycopg.connect(settings.dsn("stepledger_owner"), autocommit=True) as conn:
            conn.execute("select ledger.add_client(%s, %s)", [fault_client, "Faults kill -9"])
        with psycopg.connect(settings.dsn("postgres"), autocommit=True) as conn:
            row = conn.execute("select auth.create_api_token(%s, 'faults', 'ingest', 'faults')",
                               [fault_client]).fetchone()
        assert row is not None
        fault_token = str(row[0]["token"])
        base_events = generate(base_client, n, seed=11, tag="b")
        fault_events = generate(fault_client, n, seed=11, tag="f")
        base = drive(settings, base_token, base_client, base_events, Path(spool) / "b",
                     rate, faults=False)
        verify(settings, base_client, base_events)
        faulty = drive(settings, fault_token, fault_client, fault_events, Path(spool) / "f",
                       rate, faults=True)
        checks = verify(settings, fault_client, fault_events)
    result = {"events": faulty.events, "rate_per_s": rate,
              "baseline_s": round(base.seconds, 1), "faults_s": round(faulty.seconds, 1),
              "ratio": round(faulty.seconds / base.seconds, 2),
              "sdk_accepted": faulty.accepted, "sdk_duplicates": faulty.duplicates,
              "sdk_rejected": faulty.rejected, "sdk_retries": faulty.retries,
              "faults": [vars(f) | {"down_s": round(f.down_s, 2)} for f in faulty.faults],
              **checks}
    print(json.dumps(result, indent=2, default=str), flush=True)
    print(f"faults: {faulty.events} events, kill -9 of PostgREST and PostgreSQL: "
          f"{faulty.seconds:.1f}s vs {base.seconds:.1f}s without faults "
          f"(ratio {result['ratio']}); stored exactly once, billed once, invoices equal",
          flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = harness.argument_parser("bench.faults", __doc__)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=2500.0, help="events emitted per second")
    args = parser.parse_args(argv)
    run(events=args.events, rate=args.rate)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
