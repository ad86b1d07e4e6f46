"""Realistic BotImage histories: jobs that run the 20 steps with timings, failures and retries.

Deterministic for a given seed, so demos, tests and benchmarks are repeatable.
"""

# ruff: noqa: E501  (the step table below reads better one row per line)
from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

# (step key, typical seconds, failure probability, error code, error message)
BOTIMAGE_STEPS: list[tuple[str, float, float, str, str]] = [
    ("dicom-intake", 40, 0.01, "PACS_TIMEOUT", "PACS did not answer the C-MOVE request within 30 s"),
    ("integrity-check", 8, 0.02, "CHECKSUM_MISMATCH", "series 3 checksum does not match the manifest"),
    ("deidentification", 15, 0.005, "PHI_BURNED_IN", "burned-in patient name detected in pixel data"),
    ("metadata-extraction", 5, 0.005, "MISSING_TAG", "mandatory tag (0018,0050) SliceThickness is missing"),
    ("series-selection", 3, 0.01, "NO_ELIGIBLE_SERIES", "no axial series with slice thickness <= 2.5 mm"),
    ("format-conversion", 25, 0.01, "CONVERSION_FAILED", "inconsistent slice spacing in series 2"),
    ("quality-control", 12, 0.04, "QC_MOTION", "motion artifacts above threshold (score 0.41)"),
    ("intensity-normalization", 10, 0.005, "HU_RANGE", "Hounsfield units outside the expected range"),
    ("resampling", 30, 0.01, "REGISTRATION_DIVERGED", "registration did not converge after 200 iterations"),
    ("artifact-removal", 20, 0.005, "METAL_ARTIFACT", "metal artifact covers more than 20% of the volume"),
    ("organ-segmentation", 90, 0.02, "GPU_OOM", "CUDA out of memory while segmenting (needed 11.2 GiB)"),
    ("lesion-detection", 120, 0.03, "GPU_OOM", "CUDA out of memory in the detection network"),
    ("lesion-segmentation", 60, 0.01, "EMPTY_MASK", "lesion mask empty after post-processing"),
    ("feature-extraction", 35, 0.005, "FEATURE_NAN", "texture features contain NaN for lesion 2"),
    ("malignancy-classification", 25, 0.01, "MODEL_UNAVAILABLE", "model server returned 503"),
    ("uncertainty-estimation", 30, 0.005, "ENSEMBLE_MISMATCH", "ensemble members disagree on lesion count"),
    ("prior-comparison", 20, 0.02, "PRIOR_NOT_FOUND", "prior study referenced but not retrievable"),
    ("risk-scoring", 5, 0.005, "SCORE_UNDEFINED", "no scoring rule for this body part"),
    ("radiologist-review", 600, 0.01, "REVIEW_TIMEOUT", "no radiologist confirmed within the SLA"),
    ("report", 10, 0.01, "HL7_REJECTED", "hospital system rejected the HL7 ORU message"),
]

SITES = {"st-mary": ["st-mary-gpu1", "st-mary-gpu2"], "riverside": ["riverside-node"],
         "northgate": ["northgate-a", "northgate-b"]}


@dataclass
class JobPlan:
    client_id: str
    job_id: str
    start: datetime
    outcome: str  # completed | failed | running | stalled


def _ts(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def job_events(plan: JobPlan, rng: random.Random, now: datetime,
               pipeline: str = "botimage") -> Iterator[dict[str, object]]:
    """The events one job emits, in the order a pipeline sends them."""
    moment = plan.start
    images = rng.choice([120, 240, 300, 480, 512, 960])
    sites = SITES.get(plan.client_id, [f"{plan.client_id}-node"])
    source = rng.choice(sites)
    stop_at = len(BOTIMAGE_STEPS)
    if plan.outcome in ("running", "stalled"):
        stop_at = rng.randrange(3, len(BOTIMAGE_STEPS) - 2)
    fail_at = rng.randrange(2, len(BOTIMAGE_STEPS)) if plan.outcome == "failed" else -1
    seq = 0

    def event(step: str, status: str, attempt: int, **extra: object) -> dict[str, object]:
        nonlocal seq
        seq += 1
        body: dict[str, object] = {
            "event_id": f"{plan.job_id}:{seq}", "client_id": plan.client_id, "job_id": plan.job_id,
            "pipeline": pipeline, "step": step, "status": status, "occurred_at": _ts(moment),
            "attempt": attempt, "source": source,
        }
        body.update(extra)
        return body

    for index, (step, seconds, p_fail, code, message) in enumerate(BOTIMAGE_STEPS):
        if index >= stop_at:
            if plan.outcome == "running" or plan.outcome == "stalled":
                yield event(step, "started", 1)
            return
        attempt = 1
        while True:
            yield event(step, "started", attempt)
            moment += timedelta(seconds=max(1.0, rng.gauss(seconds, seconds / 4)))
            if moment > now:
                return
            final_failure = index == fail_at
            transient = not final_failure and rng.random() < p_fail * 3 and attempt < 3
            if final_failure or transient:
                yield event(step, "failed", attempt,
                            error={"code": code, "message": message, "retryable": transient})
                if final_failure:
                    return
                attempt += 1
                moment += timedelta(seconds=rng.uniform(5, 60))
                continue
            units = images if step in ("dicom-intake", "deidentification", "quality-control") else 1
            data: dict[str, object] = {}
            if step == "dicom-intake":
                data = {"images": images, "series": rng.randint(1, 6), "modality": rng.choice(["CT", "MR", "MG"])}
            elif step == "lesion-detection":
                data = {"lesions_found": rng.randint(0, 4), "max_confidence": round(rng.random(), 3)}
            yield event(step, "completed", attempt, units=units, **({"data": data} if data else {}))
            break
        moment += timedelta(seconds=rng.uniform(0.5, 5))


def history(clients: list[str], jobs_per_client: int, now: datetime, days: int = 14,
            seed: int = 7) -> Iterator[dict[str, object]]:
    """A few weeks of jobs per client: mostly completed, some failed, a few running or stalled."""
    rng = random.Random(seed)
    for client in clients:
        for n in range(jobs_per_client):
            roll = rng.random()
            if n >= jobs_per_client - 2:
                outcome, start = "running", now - timedelta(minutes=rng.uniform(5, 40))
            elif n == jobs_per_client - 3:
                outcome, start = "stalled", now - timedelta(hours=rng.uniform(5, 20))
            else:
                outcome = "failed" if roll < 0.12 else "completed"
                start = now - timedelta(days=rng.uniform(0.3, days))
            plan = JobPlan(client, f"{client}-{start:%Y%m%d}-{n:04d}", start, outcome)
            yield from job_events(plan, rng, now)
