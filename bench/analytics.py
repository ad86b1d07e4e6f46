"""Benchmark of progress and error analytics (issue 5), on a throw-away local stack.

    python -m bench.analytics [--jobs 1000000] [--clients 100] [--samples 200]

Builds the state that ingesting --jobs jobs of a 10-step pipeline leaves behind (about 20 events
per job: 1M jobs ~ 20M events, ~10M step attempts) directly in SQL, refreshes the analytics views,
then measures through the API gateway, as the web app calls it:

- a client's first page of jobs (GET /jobs, 50 rows) plus its counts per state
  (GET /rpc/job_counts);
- one job's timeline (GET /rpc/job_timeline);
- error statistics (GET /error_stats) as a client and as an admin;
- ingest of 1000-event batches, progress upkeep included (part of ingest since ADR 0014).

Each read is reported next to a baseline measured in the same run: the smallest PostgREST read
(GET /jobs?limit=1 by the same client), so the ratio is what the query adds to the round trip.
"""

from __future__ import annotations

import json
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg

from bench import harness
from stepledger import stack
from stepledger.api_client import IngestClient
from stepledger.ingest.credentials import operator_token
from stepledger.settings import Settings

PIPELINE = "bench10"
STEPS = ["intake", "check", "deid", "convert", "qc", "segment", "detect", "classify", "review",
         "report"]
ERRORS = ["GPU_OOM", "PACS_TIMEOUT", "QC_MOTION", "MODEL_UNAVAILABLE"]
TARGETS_MS = {"first page + counts": 10.0, "timeline": 5.0, "error_stats (client)": 100.0,
              "error_stats (admin)": 100.0}




def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- data ------------------------------------------------------------------------------------------
GENERATE_RUNS = """
-- Jobs: 85 in 100 completed, 10 failed, 3 stalled, 2 running; started over the last 90 days
-- (running ones in the last half hour). About 2 in 100 steps fail once, then succeed.
insert into ledger.step_runs (client_id, job_id, step, attempt, pipeline, step_index, status,
                              started_at, finished_at, units, error_code, error_message,
                              error_retryable, source, decided_at, events, updated_at)
with jobs as (
  select n,
         format('c%%s', lpad((n %% %(clients)s)::text, 3, '0')) as client_id,
         format('job-%%s', lpad(n::text, 8, '0')) as job_id,
         case when (hashint4(n * 13) & 1023) %% 100 < 85 then 'completed'
              when (hashint4(n * 13) & 1023) %% 100 < 95 then 'failed'
              when (hashint4(n * 13) & 1023) %% 100 < 98 then 'stalled' else 'running' end
           as outcome,
         case when (hashint4(n * 13) & 1023) %% 100 >= 98 then now() - interval '30 minutes'
              else now() - interval '90 days' * ((hashint4(n) & 65535) / 65536.0) end as t0
    from generate_series(1, %(jobs)s) n
),
plan as (
  select j.*, case when j.outcome = 'completed' then 10 else 1 + (j.n * 7) %% 10 end as last_step
    from jobs j
),
steps as (
  select p.*, s,
         (s - 1) * 120 + ((hashint4(p.n * 31 + s) & 255) / 16.0) as offset_s,
         (20 + 5 * s) * (0.75 + 0.5 * ((hashint4(p.n * 17 + s) & 65535) / 65536.0)) as dur_s,
         (hashint4(p.n * 7 + s) & 1023) < 20 as retried
    from plan p, generate_series(1, p.last_step) s
),
runs as (
  -- attempt 1 of a retried step: failed, retryable
  select st.*, 1 as attempt, 'failed' as status, st.offset_s as start_s, st.dur_s / 3 as run_s
    from steps st where st.retried and not (st.s = st.last_step and st.outcome <> 'completed')
  union all
  select st.*, case when st.retried and not (st.s = st.last_step and st.outcome <> 'completed')
                    then 2 else 1 end,
         case when st.s < st.last_step or st.outcome = 'completed' then 'completed'
              when st.outcome = 'failed' then 'failed' else 'started' end,
         st.offset_s + case when st.retried then st.dur_s / 3 + 30 else 0 end, st.dur_s
    from steps st
)
select r.client_id, r.job_id, (%(steps)s::text[])[r.s], r.attempt, '{pipeline}', r.s, r.status,
       r.t0 + make_interval(secs => r.start_s),
       case when r.status <> 'started' then r.t0 + make_interval(secs => r.start_s + r.run_s) end,
       case when r.status = 'completed' then 1 end,
       case when r.status = 'failed' then (%(errors)s::text[])[1 + (r.n + r.s) %% 4] end,
       case when r.status = 'failed' then 'error in step ' || r.s end,
       case when r.status = 'failed' then r.attempt = 1 and r.retried end,
       format('%%s-node%%s', r.client_id, r.n %% 2),
       r.t0 + make_interval(secs => r.start_s
                                    + case when r.status <> 'started' then r.run_s else 0 end),
       case when r.status = 'started' then 1 else 2 end, now()
  from runs r
"""

DERIVE_JOB_STEPS = """
insert into ledger.job_steps (client_id, job_id, step, pipeline, step_index, latest_attempt,
                              latest_status, latest_at, billed_attempt, billed_units, completed_at)
select r.client_id, r.job_id, r.step, min(r.pipeline), min(r.step_index), max(r.attempt),
       (array_agg(r.status order by r.attempt desc))[1],
       (array_agg(r.decided_at order by r.attempt desc))[1],
       max(r.attempt) filter (where r.status = 'completed'),
       (array_agg(r.units order by r.attempt desc) filter (where r.status = 'completed'))[1],
       (array_agg(r.finished_at order by r.attempt desc) filter (where r.status = 'completed'))[1]
  from ledger.step_runs r
 group by r.client_id, r.job_id, r.step
"""

DERIVE_JOBS = """
insert into ledger.jobs (client_id, job_id, pipeline, steps_total, steps_done, status, started_at,
                         updated_at, finished_at, last_error, last_error_step, last_received_at,
                         events, pipeline_version, changed_xid)
select js.client_id, js.job_id, min(js.pipeline), 10,
       count(*) filter (where js.latest_status in ('completed', 'skipped')),
       case when count(*) filter (where js.latest_status in ('completed', 'skipped')) >= 10
            then 'completed'
            when count(*) filter (where js.latest_status = 'failed') > 0 then 'failed'
            else 'running' end,
       min(r.first_start), max(js.latest_at),
       case when count(*) filter (where js.latest_status in ('completed', 'skipped')) >= 10
            then max(js.latest_at)
            when count(*) filter (where js.latest_status = 'failed') > 0
            then max(js.latest_at) filter (where js.latest_status = 'failed') end,
       min('error in ' || js.step) filter (where js.latest_status = 'failed'),
       min(js.step) filter (where js.latest_status = 'failed'),
       max(js.latest_at), sum(r.events), 1, 1
  from ledger.job_steps js
  join (select client_id, job_id, step, min(started_at) as first_start, sum(events) as events
          from ledger.step_runs group by client_id, job_id, step) r
    using (client_id, job_id, step)
 group by js.client_id, js.job_id
"""


def build(settings: Settings, jobs: int, clients: int) -> dict[str, float]:
    """Catalog, clients and the derived state of `jobs` jobs; returns timings in seconds."""
    timings: dict[str, float] = {}
    with psycopg.connect(settings.dsn("stepledger_owner"), autocommit=True) as conn:
        conn.execute("set work_mem = '256MB'")
        conn.execute("set maintenance_work_mem = '512MB'")
        definition = {"pipeline": PIPELINE, "title": "Benchmark pipeline",
                      "stall_timeout": "2 hours",
                      "steps": [{"key": s, "title": s.title()} for s in STEPS]}
        conn.execute("select ledger.register_pipeline(%s::jsonb)", [json.dumps(definition)])
        for c in range(clients):
            conn.execute("select ledger.add_client(%s, %s)", [f"c{c:03d}", f"Client {c}"])
        t = time.perf_counter()
        conn.execute(GENERATE_RUNS.format(pipeline=PIPELINE),  # type: ignore[arg-type]
                     {"clients": clients, "jobs": jobs, "steps": STEPS, "errors": ERRORS})
        timings["step_runs"] = time.perf_counter() - t
        t = time.perf_counter()
        conn.execute(DERIVE_JOB_STEPS)  # type: ignore[arg-type]
        timings["job_steps"] = time.perf_counter() - t
        t = time.perf_counter()
        conn.execute(DERIVE_JOBS)  # type: ignore[arg-type]
        timings["jobs"] = time.perf_counter() - t
        t = time.perf_counter()
        conn.execute("vacuum analyze ledger.step_runs, ledger.job_steps, ledger.jobs")
        timings["vacuum"] = time.perf_counter() - t
        harness.mark_history_changed(conn)
        t = time.perf_counter()
        conn.execute("select ledger.refresh_analytics()")
        timings["refresh_analytics"] = time.perf_counter() - t
        t = time.perf_counter()
        conn.execute("select ledger.refresh_analytics()")
        timings["refresh_analytics_again"] = time.perf_counter() - t
        counts = conn.execute("select (select count(*) from ledger.jobs), "
                              "(select count(*) from ledger.step_runs)").fetchone()
        assert counts is not None
        timings["jobs_rows"], timings["step_runs_rows"] = float(counts[0]), float(counts[1])
        conn.execute("vacuum analyze")
    return timings


# -- measurements ----------------------------------------------------------------------------------
def sample(call: Callable[[], httpx.Response], n: int) -> list[float]:
    """Latencies in ms of n calls (after 3 warm-up calls); each must answer 200."""
    for _ in range(3):
        call().raise_for_status()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        response = call()
        out.append((time.perf_counter() - t) * 1000)
        response.raise_for_status()
    return out


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"p50": round(statistics.median(ordered), 2),
            "p95": round(ordered[max(0, int(len(ordered) * 0.95) - 1)], 2),
            "n": len(ordered)}


def reads(settings: Settings, clients: int, jobs: int, n: int) -> dict[str, dict[str, float]]:
    rng = random.Random(5)
    secret = settings.jwt_secret
    tokens = {f"c{c:03d}": operator_token(secret, "client", f"c{c:03d}") for c in range(clients)}
    admin = operator_token(secret, "admin")
    results: dict[str, list[float]] = {k: [] for k in (
        "baseline: GET /jobs?limit=1", "first page", "counts", "first page + counts", "timeline",
        "error_stats (client)", "error_stats (admin)", "error_stats_by_source (admin)",
        "error_codes (admin)", "step_durations 7 days (client)", "step_durations 7 days (admin)")}
    with httpx.Client(base_url=settings.api_url, timeout=60) as http:
        def as_(token: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {token}"}

        for _ in range(n):
            client = f"c{rng.randrange(clients):03d}"
            h = as_(tokens[client])
            results["baseline: GET /jobs?limit=1"] += sample(
                lambda h=h: http.get("/jobs", params={"limit": 1, "select": "job_id"},
                                     headers=h), 1)
            page = sample(lambda h=h: http.get(
                "/jobs", params={"order": "updated_at.desc", "limit": 50}, headers=h), 1)
            counts = sample(lambda h=h: http.get("/rpc/job_counts", headers=h), 1)
            results["first page"] += page
            results["counts"] += counts
            results["first page + counts"].append(page[0] + counts[0])
            # a job of this client: job numbers n with n % clients == client number
            number = int(client[1:]) or clients
            job = f"job-{(rng.randrange(jobs // clients) * clients + number):08d}"
            results["timeline"] += sample(lambda h=h, job=job: http.get(
                "/rpc/job_timeline", params={"job_id": job}, headers=h), 1)
        for _ in range(max(10, n // 4)):
            client = f"c{rng.randrange(clients):03d}"
            h = as_(tokens[client])
            results["error_stats (client)"] += sample(
                lambda h=h: http.get("/error_stats", headers=h), 1)
            results["step_durations 7 days (client)"] += sample(
                lambda h=h: http.get("/rpc/step_durations", headers=h), 1)
            results["error_stats (admin)"] += sample(
                lambda: http.get("/error_stats", headers=as_(admin)), 1)
            results["error_stats_by_source (admin)"] += sample(
                lambda: http.get("/rpc/error_stats_by_source", headers=as_(admin)), 1)
            results["error_codes (admin)"] += sample(
                lambda: http.get("/rpc/error_codes", headers=as_(admin)), 1)
        results["step_durations 7 days (admin)"] += sample(
            lambda: http.get("/rpc/step_durations", headers=as_(admin)), 10)
    return {k: summary(v) for k, v in results.items()}


def ingest_batches(count: int, clients: int, size: int = 1000) -> list[list[dict[str, object]]]:
    """Fresh jobs of the bench pipeline: 50 complete jobs (20 events each) per batch."""
    now = datetime.now(UTC)
    run = uuid.uuid4().hex[:6]
    batches = []
    for b in range(count):
        events: list[dict[str, object]] = []
        for j in range(size // (2 * len(STEPS))):
            client = f"c{(b * 7 + j) % clients:03d}"
            job = f"ingest-{run}-{b:04d}-{j:03d}"
            moment = now - timedelta(minutes=30)
            for s, step in enumerate(STEPS):
                for status in ("started", "completed"):
                    events.append({"event_id": f"{job}:{s}:{status}", "client_id": client,
                                   "job_id": job, "pipeline": PIPELINE, "step": step,
                                   "status": status,
                                   "occurred_at": moment.isoformat(timespec="milliseconds"),
                                   "source": f"{client}-node0"})
                    moment += timedelta(seconds=7)
        batches.append(events)
    return batches


def ingest(settings: Settings, clients: int, pairs: int) -> dict[str, dict[str, float]]:
    """Seconds per 1000-event batch, on one warm connection (api.ingest) and over HTTP (POST
    /rpc/ingest through the gateway). Until ADR 0014 this compared batches with and without the
    progress trigger; the upkeep is part of ingest's own statements now and cannot be switched
    off, so what is left is its cost as a whole."""
    batches = ingest_batches(4 * pairs + 24, clients)
    out: dict[str, dict[str, float]] = {}
    timed: list[float] = []
    with psycopg.connect(settings.dsn("postgres"), autocommit=True) as conn:
        conn.execute("select set_config('request.jwt.claims', %s, false)",
                     [json.dumps({"role": "admin"})])
        for i, batch in enumerate(batches[: 2 * pairs + 4]):
            t = time.perf_counter()
            result = conn.execute("select api.ingest(%s::jsonb)", [json.dumps(batch)]).fetchone()
            elapsed = time.perf_counter() - t
            assert result is not None and result[0]["accepted"] == len(batch)
            if i >= 4:  # the first ones warm the backend
                timed.append(elapsed)
    out["sql"] = _median(timed)

    token = operator_token(settings.jwt_secret, "admin")
    timed = []
    with IngestClient(settings.api_url, token) as sender:
        for i, batch in enumerate(batches[2 * pairs + 4:]):
            t = time.perf_counter()
            result_http = sender.send(batch)
            elapsed = time.perf_counter() - t
            assert result_http.accepted == len(batch), result_http.rejected[:2]
            if i >= 20:  # warm every backend of PostgREST's pool (db-pool = 10)
                timed.append(elapsed)
    out["http"] = _median(timed)
    return out


def _median(timed: list[float]) -> dict[str, float]:
    return {"median_s": round(statistics.median(timed), 4), "batches": len(timed)}


def main(argv: list[str] | None = None) -> int:
    parser = harness.argument_parser("bench.analytics", __doc__)
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--samples", type=int, default=200, help="requests per read measurement")
    parser.add_argument("--ingest-pairs", type=int, default=10, help="batches with and without")
    parser.add_argument("--keep", action="store_true", help="leave the stack running")
    args = parser.parse_args(argv)

    home = Path(tempfile.mkdtemp(prefix="stepledger-bench-", dir="/tmp"))
    home.chmod(0o755)
    pg, api, web = harness.free_ports(3)
    settings = Settings.from_env(home=home, pg_port=pg, api_port=api, web_port=web,
                                 api_admin_port=api + 1, postgrest_port=api + 2)
    report: dict[str, object] = {"jobs": args.jobs, "clients": args.clients}
    try:
        log(f"starting a stack in {home}")
        stack.up(settings, migrate=True)
        log(f"building {args.jobs} jobs for {args.clients} clients")
        built = build(settings, args.jobs, args.clients)
        report["build_s"] = {k: round(v, 1) for k, v in built.items()}
        log("measuring reads")
        measured = reads(settings, args.clients, args.jobs, args.samples)
        base = measured["baseline: GET /jobs?limit=1"]["p50"]
        report["reads_ms"] = {k: {**v, "ratio_to_baseline": round(v["p50"] / base, 2),
                                  **({"target_p50": TARGETS_MS[k]} if k in TARGETS_MS else {})}
                              for k, v in measured.items()}
        log("measuring ingest, progress upkeep included")
        report["ingest_per_1000_events"] = ingest(settings, args.clients, args.ingest_pairs)
        log("done")
    finally:
        if not args.keep:
            stack.down(settings)
            shutil.rmtree(home, ignore_errors=True)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
