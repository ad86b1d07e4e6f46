"""Ingest plans: ingest at one git revision against ingest at another (or this checkout), side by
side on two stacks in one run, each against a bare PostgREST insert of the same rows.

Each stack is made from the whole tree of its revision (db/, deploy/), so schema changes are
compared too; the migration runner is this checkout's, and where the revision's runner added the
envelope CHECK on ledger.events the "before" stack gets it as that runner did.
Requests alternate between the stacks and, on each stack, between ingest and the bare insert, so
all four see the same machine load. Phases, in order, on PostgREST connections whose plans were
cached by a first batch of 1,000 events into empty tables:
  fresh singles: one event per request, tables nearly empty;
  batches: batches of 1,000 events (--batches of them per stack);
  warm singles: one event per request, after the batches.

`python -m bench.ingest_plans --before main --batches 100 --singles 300 [--no-autovacuum]`
`python -m bench.ingest_plans --sql-batches 6`: batches of 10,000 through SQL instead.

--no-autovacuum turns autovacuum off on the tables ingest reads by key, so that no ANALYZE
replans the cached statements during the run: the state of a plan that outlives the statistics
it was made with (on a big table the next automatic ANALYZE is 10% of growth away).
"""

from __future__ import annotations

import contextlib
import json
import uuid
from pathlib import Path

import httpx
import psycopg

from bench import harness
from bench.ingest import BASELINE_DDL, _post, _wait_for_baseline, make_batch

SIDES = ("before", "after")
KEYED_TABLES = ("jobs", "step_runs", "job_steps", "event_ids")


def _stacks(stack: contextlib.ExitStack, before: str, after: str | None) -> dict[str, object]:
    """The two stacks, "before" made from revision `before`, "after" from `after` (this checkout
    when None)."""
    out: dict[str, object] = {}
    for side, revision in (("before", before), ("after", after)):
        tree = stack.enter_context(harness.revision_tree(revision)) if revision else None
        settings = stack.enter_context(harness.bench_stack(repo_root=tree))
        # The revision's migration runner, where the package had it then (flat) or has it now.
        runners = [(tree or harness.REPO) / "loader" / "stepledger" / where / "migrate.py"
                   for where in (".", "schema")]
        if any(r.exists() and "ensure_envelope_constraint(conn)" in r.read_text()
               for r in runners):
            with psycopg.connect(settings.dsn("stepledger_owner"), autocommit=True) as conn:  # type: ignore[attr-defined]
                conn.execute("alter table ledger.events drop constraint if exists "
                             "events_payload_matches_envelope")
                conn.execute("alter table ledger.events add constraint "
                             "events_payload_matches_envelope "
                             "check (ledger.step_event_v1_valid(payload))")
        out[side] = settings
    return out


def _summary(times: dict[str, list[float]], per: int) -> dict[str, object]:
    return {"ingest_p50_ms": round(harness.summary(times["ingest"])["p50"] * 1000, 2),
            "baseline_p50_ms": round(harness.summary(times["baseline"])["p50"] * 1000, 2),
            "ingest_events_per_s": round(per * len(times["ingest"]) / sum(times["ingest"])),
            "ratio": round(sum(times["baseline"]) / sum(times["ingest"]), 3)}


def run(quick: bool = False, before: str = "main", batches: int | None = None,
        singles: int | None = None, autovacuum: bool = True,
        after: str | None = None) -> dict[str, object]:
    batches = batches if batches is not None else (10 if quick else 100)
    singles = singles if singles is not None else (50 if quick else 300)
    run_id = uuid.uuid4().hex[:8]
    with contextlib.ExitStack() as stack:
        http: dict[str, httpx.Client] = {}
        stacks = _stacks(stack, before, after)
        for side in SIDES:
            settings = stacks[side]
            with harness.superuser(settings) as conn:
                conn.execute(BASELINE_DDL)
                for table in () if autovacuum else KEYED_TABLES:
                    conn.execute(f"alter table ledger.{table} set (autovacuum_enabled = off)")
            client = stack.enter_context(httpx.Client(
                base_url=settings.api_url, timeout=300,
                headers={"Authorization": f"Bearer {harness.admin_token(settings)}"}))
            _wait_for_baseline(client)
            http[side] = client
        # Each stack's connections plan ingest on a first batch into empty tables.
        for side in SIDES:
            warm = json.dumps(make_batch(f"first-{run_id}", 0, 1_000))
            _post(http[side], "/rpc/ingest", warm)
            _post(http[side], "/bench_baseline", warm)

        def alternate(phase: str, count: int, size: int) -> dict[str, dict[str, list[float]]]:
            times = {side: {"ingest": [], "baseline": []} for side in SIDES}
            for i in range(count):
                events = make_batch(f"{phase}-{run_id}", i * size, size)
                body = json.dumps(events[0] if size == 1 else events)
                sides = SIDES if i % 2 == 0 else SIDES[::-1]
                paths = (("ingest", "/rpc/ingest"), ("baseline", "/bench_baseline"))
                for side in sides:
                    for name, path in (paths if i % 2 == 0 else paths[::-1]):
                        times[side][name].append(_post(http[side], path, body))
            return times

        fresh = alternate("fresh", singles, 1)
        batch = alternate("batch", batches, 1_000)
        warm_singles = alternate("warm", singles, 1)
    result: dict[str, object] = {
        "before": before, "after": after or "checkout", "autovacuum": autovacuum,
        "batches_per_stack": batches, "singles_per_phase": singles,
        **{side: {"fresh_single": _summary(fresh[side], 1),
                  "batch_of_1000": _summary(batch[side], 1_000),
                  "warm_single": _summary(warm_singles[side], 1)} for side in SIDES},
    }
    harness.dump(result)
    return result


def run_sql_batches(before: str, count: int, size: int = 10_000,
                    after: str | None = None) -> dict[str, object]:
    """Batches of `size` events through `select api.ingest(...)` as admin, alternating between
    the two stacks (no HTTP: requests this large spend their time in the database)."""
    with contextlib.ExitStack() as stack:
        conns: dict[str, psycopg.Connection] = {}
        stacks = _stacks(stack, before, after)
        for side in SIDES:
            conn = stack.enter_context(harness.superuser(stacks[side]))
            conn.execute("""select set_config('request.jwt.claims', '{"role": "admin"}', false)""")
            conn.execute("set role admin")
            conns[side] = conn
        times: dict[str, list[float]] = {side: [] for side in SIDES}
        for i in range(count):
            body = json.dumps(make_batch("sql", i * size, size))
            for side in SIDES if i % 2 == 0 else SIDES[::-1]:
                times[side].append(harness.timed(
                    lambda c=conns[side], b=body: c.execute("select api.ingest(%s::jsonb)", [b])))
    result: dict[str, object] = {
        "before": before, "batch_size": size, "batches_per_stack": count,
        **{side: {"p50_s": round(harness.summary(v)["p50"], 3),
                  "events_per_s": round(size * len(v) / sum(v))} for side, v in times.items()}}
    harness.dump(result)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = harness.argument_parser("bench.ingest_plans", __doc__)
    parser.add_argument("--before", default="main", help="git revision of 'before'")
    parser.add_argument("--after", help="git revision of 'after' (default: this checkout)")
    parser.add_argument("--batches", type=int, default=100, help="batches of 1,000 per stack")
    parser.add_argument("--singles", type=int, default=300, help="single-event requests per phase")
    parser.add_argument("--no-autovacuum", action="store_true",
                        help="no automatic ANALYZE of the keyed tables during the run")
    parser.add_argument("--sql-batches", type=int, metavar="N",
                        help="instead: N batches of 10,000 per stack through SQL")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args(argv)
    if args.sql_batches:
        result = run_sql_batches(args.before, args.sql_batches, after=args.after)
    else:
        result = run(before=args.before, batches=args.batches, singles=args.singles,
                     autovacuum=not args.no_autovacuum, after=args.after)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
