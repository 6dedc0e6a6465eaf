"""Batched deletions against the cost model: K requests accepted, then one ``process``.

The store is trained once in this process (``calibration_run``); what its training
measured is what every later plan calibrates from (``sisa.deletion.cost``: optimizer time per
sample, a checkpoint per stage, loading and purging per job). Each batch runs on a fresh
copy of it (``bench_batch``): the points in the shards retrained against the paper's
N(1 - (1 - 1/S)^K), and the retrain's compute and wall time against the plan's predicted
seconds, with the gap split into optimizer time and fixed costs, each against its
calibrated unit cost. ``bench_sequential`` processes the same requests one at a time,
for the batching gain.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import Others
from benchmarks.report import median, timed
from benchmarks.stores import QUIET, copy_store, training_layout
from sisa.config import build_config
from sisa.deletion.accept import Acceptance, accept
from sisa.deletion.batch import BatchReport, process
from sisa.deletion.cost import calibration, paper_batched_points
from sisa.deletion.plan import BatchPlan, pending_plan
from sisa.store.artifacts import SisaStore
from sisa.training.jobs import PHASES, ShardResult
from sisa.training.train import train


def phase_totals(results: list[ShardResult]) -> dict[str, float]:
    return {p: sum(r.phases.get(p, 0.0) for r in results) for p in PHASES}


def split(
    samples: int, stages: int, jobs: int, compute_s: float, phases: dict[str, float]
) -> dict[str, float]:
    """Where a run's compute went, per unit of what the cost model counts or could count:
    optimizer time per sample, checkpoint writes per stage, loading and purging per job."""
    return {
        "us_per_sample": compute_s / samples * 1e6,
        "train_us_per_sample": phases["train"] / samples * 1e6,
        "samples_per_stage": samples / stages,
        "checkpoint_ms_per_stage": phases["checkpoint"] / stages * 1e3,
        "load_ms_per_job": phases["load"] / jobs * 1e3,
        "purge_ms_per_job": phases["purge"] / jobs * 1e3,
        "not_training_share": 1 - phases["train"] / compute_s,
    }


def calibration_run(root: Path, overrides: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Train the batched store in this process; what its training measured is what every
    fresh copy's plan calibrates from (``store.meta``), split by phase."""
    url = str(root / "purchase")
    with Others() as others:
        report = train(build_config({}, overrides), url, executor=QUIET)
    samples = sum(r.samples for r in report.shards)
    compute = sum(r.seconds for r in report.shards)
    stages, jobs = sum(len(r.trained) for r in report.shards), len(report.shards)
    phases = phase_totals(report.shards)
    unit = calibration(samples, compute, "training", phases=phases, stages=stages, jobs=jobs)
    return url, {
        "points": report.n_train,
        "shards": jobs,
        "samples": samples,
        "compute_s": compute,
        "seconds_per_sample": unit.seconds_per_sample,
        "seconds_per_stage": unit.seconds_per_stage,
        "seconds_per_job": unit.seconds_per_job,
        "stages": stages,
        "jobs": jobs,
        "phases_s": phases,
        "other_cores": others.cores,
    } | split(samples, stages, jobs, compute, phases)


def check_plan(plan: BatchPlan, report: BatchReport, accepted: list[Acceptance]) -> None:
    """The plan is what ran: its samples were trained, its shards restarted where the
    requests said (each once, from its earliest touched slice)."""
    assert report.plan.samples == plan.samples == report.samples
    starts: dict[int, int] = {}
    for acc in accepted:
        for shard, start in acc.start_stages.items():
            starts[shard] = min(start, starts.get(shard, start))
    assert {s.shard: s.start_stage for s in plan.shards} == starts
    assert sorted(r.shard for r in report.results) == sorted(starts)


def bench_batch(
    url: str, root: Path, k: int, cal: dict[str, Any], rng: np.random.Generator
) -> dict[str, Any]:
    """K requests accepted one by one, then one ``process`` on a fresh copy of the store."""
    copy = copy_store(url, root, f"batch-{k}")
    store = SisaStore(copy)
    slices = store.config().sisa.slices
    victims = rng.choice(training_layout(copy).ids, k, replace=False).tolist()
    timings = [timed(lambda v=v: accept(copy, [v])) for v in victims]  # backlog grows
    accepted = [acc for acc, _ in timings]
    plan = pending_plan(store)
    assert plan is not None and plan.predicted_seconds is not None
    # a fresh copy has no batch behind it: the plan calibrates from the training above
    assert plan.calibrated_from == "training"
    assert math.isclose(plan.seconds_per_sample or 0.0, cal["seconds_per_sample"], rel_tol=1e-9)
    with Others() as others:
        report = process(copy, executor=QUIET)
    assert report is not None
    check_plan(plan, report, accepted)
    shutil.rmtree(copy)
    touched = sum(s.removed + s.remaining for s in plan.shards)
    paper = plan.paper["touched_points"]  # N(1 - (1 - 1/S)^K), N: the points before
    assert math.isclose(paper, paper_batched_points(cal["points"], cal["shards"], k))
    stages = sum(slices - s.start_stage + 1 for s in plan.shards)
    assert stages == sum(len(r.trained) for r in report.results)
    phases = phase_totals(report.results)
    # compute / predicted - 1, split: optimizer time against the calibrated time per
    # sample, and fixed costs against the calibrated costs per stage and per job (the two
    # add up to the gap exactly)
    train_s = cal["seconds_per_sample"] * report.samples
    fixed_s = cal["seconds_per_stage"] * stages + cal["seconds_per_job"] * len(plan.shards)
    return {
        "k": k,
        "victims": victims,
        "accept_total_s": sum(t for _, t in timings),
        "last_compliance_s": accepted[-1].compliance_seconds,
        "accept_each_s": [t for _, t in timings],
        "compliance_each_s": [acc.compliance_seconds for acc in accepted],
        "planned_samples": plan.samples,
        "trained_samples": report.samples,
        "stages": stages,
        "jobs": len(plan.shards),
        "predicted_s": plan.predicted_seconds,
        "calibrated_from": plan.calibrated_from,
        "compute_s": report.compute_seconds,
        "wall_s": report.seconds,
        "phases_s": phases,
        "other_cores": others.cores,
        "shards_retrained": len(report.results),
        "paper_touched_points": paper,
        "touched_points": touched,
        "full_retrain_samples": plan.full_retrain_samples,
        "points_ratio": touched / paper,
        "compute_ratio": report.compute_seconds / plan.predicted_seconds,
        "wall_ratio": report.seconds / plan.predicted_seconds,
        "optimizer_gap": (phases["train"] - train_s) / plan.predicted_seconds,
        "fixed_gap": (report.compute_seconds - phases["train"] - fixed_s) / plan.predicted_seconds,
        "deletions_per_s": k / report.seconds,
    } | split(report.samples, stages, len(plan.shards), report.compute_seconds, phases)


def bench_sequential(url: str, root: Path, batch: dict[str, Any]) -> dict[str, Any]:
    """The batch's requests again, each processed before the next is accepted."""
    copy = copy_store(url, root, f"sequential-{batch['k']}")
    samples, wall = 0, 0.0
    for victim in batch["victims"]:
        accept(copy, [victim])
        report = process(copy, executor=QUIET)
        assert report is not None
        samples, wall = samples + report.samples, wall + report.seconds
    shutil.rmtree(copy)
    assert batch["k"] > 1 or samples == batch["trained_samples"]  # the same work when K = 1
    return {
        "k": batch["k"],
        "samples": samples,
        "wall_s": wall,
        "batched_samples": batch["trained_samples"],
        "batched_wall_s": batch["wall_s"],
        "samples_gain": samples / batch["trained_samples"],
        "wall_gain": wall / batch["wall_s"],
    }


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over repeats of every number, ratios included (the median of each repeat's
    ratio, not the quotient of medians); the repeats themselves are kept for JSON."""
    out: dict[str, Any] = {"k": rows[0]["k"], "repeats": len(rows)}
    for key, value in rows[0].items():
        if isinstance(value, int | float) and key != "k":
            out[key] = median([r[key] for r in rows])
    out["phases_s"] = {p: median([r["phases_s"][p] for r in rows]) for p in PHASES}
    return out | {"calibrated_from": rows[0]["calibrated_from"]}
