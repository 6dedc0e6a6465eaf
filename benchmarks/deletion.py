"""Deletion: time to compliance, and batched deletions against the cost model.

* compliance: ``accept`` one single-ID request, then refresh a live ensemble with
  ``Ensemble.load(store, previous=...)`` and predict one row. Reported as medians over
  repeats; each repeat is followed by ``process`` so every request meets a fully trained
  store. It asserts that the refreshed ensemble serves what ``serving.current`` says, that
  the touched shard is rolled back (or dropped) and that untouched shards keep their
  loaded models.
* batched: K random single-ID requests accepted one by one, then one ``process`` on a
  fresh copy of a trained Purchase store. Measured against the cost model, in the same
  run: the points in the shards retrained against the paper's N(1 - (1 - 1/S)^K), and the
  retrain's compute and wall time against the plan's predicted seconds (the store's
  training calibrates them, ``sisa.cost``: optimizer time per sample, a checkpoint per
  stage, loading and purging per job), with the goal measured <= 1.1 x predicted;
  deletions per second. The gap is split into the optimizer time and the fixed costs
  (loading, checkpoint writes, purging), each against its calibrated unit cost, beside the
  other work on the machine during training and during each batch, because a shared
  machine's speed moves between phases. For small K the same requests are also processed
  one at a time, for the batching gain.
"""

from __future__ import annotations

import itertools
import json
import math
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from benchmarks.common import Others, load_average, load_change
from benchmarks.harness import Report
from orchestrator.executors import InProcessExecutor
from sisa import serving
from sisa.batch import BatchPlan, BatchReport, pending_plan, process
from sisa.config import build_config
from sisa.cost import calibration, paper_batched_points
from sisa.ensemble import Ensemble
from sisa.jobs import PHASES, ShardResult
from sisa.store import TEST, SisaStore
from sisa.train import train
from sisa.trainer import configure
from sisa.unlearn import Acceptance, accept

T = TypeVar("T")
GOAL_S = 0.100  # the deletion-service issue's goal for accepted -> compliant
GOAL_RATIO = 1.1  # batched deletions: measured <= 1.1 x the cost model's prediction
QUIET = InProcessExecutor(progress=False)  # in this process: calibration and retrains alike
COPIES = itertools.count()
PURCHASE: dict[str, Any] = {
    "data.source": "synthetic-purchase",
    "data.n": 20_000,
    "sisa.shards": 20,
    "sisa.slices": 10,
    "sisa.epochs": 5,
    "model.hidden": [64],
    "optim.name": "adam",
    "optim.lr": 0.001,
    "optim.batch_size": 64,
}
DIGITS: dict[str, Any] = {"data.source": "digits"}  # the embedded default: S=5, R=4, e=20


@dataclass(frozen=True)
class Sizes:
    purchase: dict[str, Any]  # overrides of the batched store (compliance runs on it too)
    ks: tuple[int, ...]  # batch sizes
    compliance_repeats: int
    batch_repeats: dict[int, int]  # K -> fresh copies, new random IDs each
    sequential_repeats: dict[int, int] = field(default_factory=dict)  # K -> one at a time
    backlog_edges: tuple[int, ...] = (0, 10, 100, 250, 500, 750, 1000)


SIZES = {
    "quick": Sizes(
        PURCHASE | {"data.n": 4000, "sisa.shards": 5},
        (1, 10),
        5,
        {1: 3, 10: 2},
        {1: 3, 10: 2},
    ),
    "full": Sizes(
        PURCHASE,
        (1, 10, 100, 1000),
        21,
        {1: 5, 10: 3, 100: 3, 1000: 1},
        {1: 5, 10: 3, 100: 1},
    ),
}


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    t0 = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - t0


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


def train_store(root: Path, name: str, overrides: dict[str, Any]) -> str:
    url = str(root / name)
    train(build_config({}, overrides), url, executor=QUIET)
    return url


def copy_store(url: str, root: Path, name: str) -> str:
    """A fresh copy of a trained store (paths in a store are relative).

    Every copy gets a path of its own: ``sisa.journal`` caches request documents per
    process by (URL, salt, number), and copies share the salt.
    """
    dest = str(root / f"{name}-{next(COPIES)}")
    shutil.copytree(url, dest)
    return dest


def training_ids(store: SisaStore) -> np.ndarray:
    shards = store.config().sisa.shards
    parts = [store.read_data(store.shard_head(k).data, features=False) for k in range(shards)]
    return np.concatenate([p["ids"] for p in parts])


def check_compliant(old: Ensemble, new: Ensemble, store: SisaStore, acc: Acceptance) -> None:
    """The refreshed ensemble serves the serving state, rolled back where the request hit."""
    state = serving.current(store)
    assert new.served == state.shards  # same generation, stage and checkpoint per shard
    assert set(new.models) == {k for k, s in state.shards.items() if s.live}
    assert acc.rolled_back and set(acc.rolled_back) == set(acc.start_stages)
    for shard, start in acc.start_stages.items():
        assert old.served[shard].stage == store.config().sisa.slices  # was final
        assert new.served[shard].stage == start - 1  # the stage before the touched slice
        assert (shard in new.models) == (start > 1)  # first slice touched: left out
    for shard in set(new.models) - set(acc.start_stages):
        assert new.models[shard] is old.models[shard]  # untouched shards are not reloaded


def bench_compliance(url: str, repeats: int, rng: np.random.Generator) -> dict[str, Any]:
    store = SisaStore(url)
    cfg = store.config().sisa
    test = store.read_data(store.latest_head(TEST).data)  # type: ignore[union-attr]
    row = test["X"][:1]
    victims = rng.choice(training_ids(store), repeats, replace=False).tolist()
    ensemble = Ensemble.load(store)
    runs: list[dict[str, float]] = []
    for victim in victims:
        acc, accept_s = timed(lambda v=victim: accept(url, [v]))
        fresh, load_s = timed(lambda e=ensemble: Ensemble.load(store, previous=e))
        _, predict_s = timed(lambda f=fresh: f.predict(row))
        check_compliant(ensemble, fresh, store, acc)
        _, cold_s = timed(lambda: Ensemble.load(store))  # without ``previous``: every shard
        runs.append(
            {
                "accept_s": accept_s,
                "compliance_s": acc.compliance_seconds,
                "reload_s": load_s,
                "predict_s": predict_s,
                "cold_reload_s": cold_s,
                "end_to_end_s": acc.compliance_seconds + load_s + predict_s,
                "dropped": float(min(acc.start_stages.values()) == 1),
            }
        )
        process(url, executor=QUIET)  # retrain, so the next request meets a final store
        ensemble = Ensemble.load(store, previous=fresh)
    summary = {k: median([r[k] for r in runs]) for k in runs[0] if k != "dropped"}
    summary |= {f"max_{k}": max(r[k] for r in runs) for k in ("compliance_s", "end_to_end_s")}
    n_train = int(store.require_trained()["n_train"])
    return summary | {
        "n_train": n_train,
        "shards": cfg.shards,
        "slices": cfg.slices,
        "repeats": repeats,
        "dropped": int(sum(r["dropped"] for r in runs)),
        "runs": runs,
    }


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
    victims = rng.choice(training_ids(store), k, replace=False).tolist()
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


def backlog(row: dict[str, Any], edges: tuple[int, ...]) -> list[dict[str, Any]]:
    """Acceptance times of one batch run, grouped by how many requests were already open."""
    out = []
    for lo, hi in itertools.pairwise(edges):
        comply, calls = row["compliance_each_s"][lo:hi], row["accept_each_s"][lo:hi]
        if comply:
            out.append(
                {
                    "open": f"{lo}-{lo + len(comply) - 1}",
                    "accepts": len(comply),
                    "compliance_s": median(comply),
                    "max_compliance_s": max(comply),
                    "accept_s": median(calls),
                }
            )
    return out


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


Column = tuple[str, Callable[[dict[str, Any]], str]]


def table(columns: list[Column], rows: list[dict[str, Any]]) -> list[str]:
    """A Markdown table: a header, then one line per row; the first column left-aligned."""
    lines = ["| " + " | ".join(name for name, _ in columns) + " |"]
    lines.append("|---|" + "---:|" * (len(columns) - 1))
    return lines + ["| " + " | ".join(cell(r) for _, cell in columns) + " |" for r in rows]


def ms(key: str, digits: int = 1) -> Callable[[dict[str, Any]], str]:
    return lambda r: f"{r[key] * 1e3:.{digits}f}"


def num(key: str, fmt: str = ",.0f") -> Callable[[dict[str, Any]], str]:
    return lambda r: format(r[key], fmt)


def ratio(key: str) -> Callable[[dict[str, Any]], str]:
    return lambda r: f"{r[key]:.2f}x"


def share(key: str) -> Callable[[dict[str, Any]], str]:
    return lambda r: f"{r[key]:+.0%}"


def meets(value: float) -> str:
    return "yes" if value <= GOAL_RATIO else "no"


COMPLIANCE: list[Column] = [
    ("store", lambda r: r["name"]),
    ("N train", num("n_train")),
    ("S", num("shards", "d")),
    ("R", num("slices", "d")),
    ("repeats", num("repeats", "d")),
    ("accept call (ms)", ms("accept_s")),
    ("journal→serving commit (ms)", ms("compliance_s")),
    ("reload with previous (ms)", ms("reload_s")),
    ("predict 1 row (ms)", ms("predict_s", 2)),
    ("accepted→compliant predictions (ms)", ms("end_to_end_s")),
    ("max (ms)", ms("max_end_to_end_s")),
    ("cold reload (ms)", ms("cold_reload_s")),
    ("< 100 ms (median)", lambda r: "yes" if r["end_to_end_s"] < GOAL_S else "no"),
]
BATCHED: list[Column] = [
    ("K", num("k")),
    ("repeats", num("repeats", "d")),
    ("shards retrained", num("shards_retrained", "g")),
    ("samples planned", num("planned_samples")),
    ("samples trained", num("trained_samples")),
    ("compute (s)", num("compute_s", ".2f")),
    ("wall (s)", num("wall_s", ".2f")),
    ("deletions/s", num("deletions_per_s", ".1f")),
    ("accepting all K (s)", num("accept_total_s", ".2f")),
    ("last accept's compliance (ms)", ms("last_compliance_s", 0)),
]
AGAINST_MODEL: list[Column] = [
    ("K", num("k")),
    ("paper: N(1-(1-1/S)^K)", num("paper_touched_points")),
    ("points in retrained shards", num("touched_points")),
    ("points: measured / paper", ratio("points_ratio")),
    ("predicted (s)", num("predicted_s", ".2f")),
    ("compute (s)", num("compute_s", ".2f")),
    ("compute / predicted", ratio("compute_ratio")),
    ("wall / predicted", ratio("wall_ratio")),
    (
        f"≤ {GOAL_RATIO}x: points / compute / wall",
        lambda r: " / ".join(meets(r[k]) for k in ("points_ratio", "compute_ratio", "wall_ratio")),
    ),
    ("gap from optimizer time", share("optimizer_gap")),
    ("gap from fixed costs", share("fixed_gap")),
]
SPLIT: list[Column] = [
    ("run", lambda r: r["run"]),
    ("samples", num("samples")),
    ("stages", num("stages")),
    ("jobs", num("jobs")),
    ("samples per stage", num("samples_per_stage")),
    ("compute µs per sample", num("us_per_sample")),
    ("train phase µs per sample", num("train_us_per_sample")),
    ("checkpoint ms per stage", num("checkpoint_ms_per_stage", ".1f")),
    ("load ms per job", num("load_ms_per_job", ".1f")),
    ("purge ms per job", num("purge_ms_per_job", ".1f")),
    ("not training (share of compute)", lambda r: f"{r['not_training_share']:.0%}"),
    ("other work (cores)", num("other_cores", ".2f")),
]
SEQUENTIAL: list[Column] = [
    ("K", num("k", "g")),
    ("repeats", num("repeats", "d")),
    ("one at a time: samples", num("samples")),
    ("wall (s)", num("wall_s", ".2f")),
    ("one batch: samples", num("batched_samples")),
    ("wall (s)", num("batched_wall_s", ".2f")),
    ("gain in samples", lambda r: f"{r['samples_gain']:.1f}x"),
    ("gain in wall time", lambda r: f"{r['wall_gain']:.1f}x"),
]
BACKLOG: list[Column] = [
    ("requests open before the accept", lambda r: r["open"]),
    ("accepts", num("accepts", "d")),
    ("journal→serving commit, median (ms)", ms("compliance_s")),
    ("max (ms)", ms("max_compliance_s")),
    ("accept call, median (ms)", ms("accept_s")),
]


def split_rows(figures: dict[str, Any]) -> list[dict[str, Any]]:
    cal = figures["calibration"]
    rows = [cal | {"run": "training (the plan's calibration)", "samples": cal["samples"]}]
    for b in figures["batched"]:
        rows.append(b | {"run": f"K = {b['k']:,} (median)", "samples": b["trained_samples"]})
    return rows


def render(figures: dict[str, Any], sizes: Sizes) -> str:
    compliance = [{"name": name} | c for name, c in figures["compliance"].items()]
    cal, average = figures["calibration"], figures["load_average"]
    load = load_change(average["before"], average["after"])
    return "\n".join(
        [
            f"Load average (1/5/15 min) before -> after the run: {load}.",
            "",
            f"Purchase store: `{json.dumps(sizes.purchase)}`. Digits store: "
            "`data.source = digits` with the defaults (S=5, R=4, e=20, MLP [128], SGD). "
            "Shard jobs run in this process (`InProcessExecutor`), for training and "
            "retraining alike.",
            "",
            "## Time to compliance (one single-ID request, nothing else pending)",
            "",
            *table(COMPLIANCE, compliance),
            "",
            "Medians over the repeats; 'max' is the slowest repeat. 'accepted→compliant",
            "predictions' = journal→serving commit + reload with `previous` + predict.",
            "",
            "## Batched deletions (K single-ID requests, then one `process`; purchase store)",
            "",
            *table(BATCHED, figures["batched"]),
            "",
            "Medians over the repeats (fresh copies of the store, new random IDs each). "
            "Deletions/s = K / `process` wall time.",
            "",
            f"### Against the cost model (goal: measured ≤ {GOAL_RATIO} x predicted)",
            "",
            *table(AGAINST_MODEL, figures["batched"]),
            "",
            "Ratios are medians of each repeat's ratio. Points: the points in the shards the "
            "batch retrained (before the deletion) against the paper's expectation. Time: "
            "the plan's `predicted_seconds` = samples planned x the optimizer time per sample "
            f"of the store's training ({cal['seconds_per_sample'] * 1e6:.0f} µs) + stages x "
            f"its checkpoint time per stage ({cal['seconds_per_stage'] * 1e3:.1f} ms) + jobs "
            f"x the rest of a job ({cal['seconds_per_job'] * 1e3:.1f} ms), measured in this "
            "process before the batches (every copy is fresh, so no earlier batch calibrates "
            "it), "
            "against the shard jobs' summed time (compute) and the whole `process` call "
            "(wall). The gap, compute / predicted - 1, splits into two parts that add up to it: "
            "the retrain's optimizer time (the train phase) and its fixed costs (load, "
            "checkpoint, purge), each against its calibrated cost, as a share of the "
            "prediction.",
            "",
            "### Where the compute goes",
            "",
            *table(SPLIT, split_rows(figures)),
            "",
            "From the shard jobs' phases (`sisa.jobs.PHASES`): train = the optimizer steps; "
            "checkpoint = writing each stage (fsync'd) and the head; load = reading data and "
            "the checkpoint to resume from; purge = sweeping the replaced generation. "
            "'other work' = cores busy with processes this benchmark did not start during "
            "the training or the `process` call.",
            "",
            "### One at a time",
            "",
            "The same requests processed one at a time (accept, process, accept, ...), "
            "against the batch of the same repeat; medians over the repeats:",
            "",
            *table(SEQUENTIAL, figures["sequential"]),
            "",
            f"## Acceptance under a backlog (the K = {figures['batched'][-1]['k']:,} run)",
            "",
            *table(BACKLOG, figures["backlog"]),
            "",
            "## Reading",
            "",
            *figures["reading"],
            "",
        ]
    )


def spread(values: list[float], fmt: str = ".2f") -> str:
    """``lo-hi`` of some figures (one figure when they agree at this precision)."""
    lo, hi = format(min(values), fmt), format(max(values), fmt)
    return lo if lo == hi else f"{lo}-{hi}"


def per_k(rows: list[dict[str, Any]], key: str, fmt: str = ".2f", unit: str = "x") -> str:
    return ", ".join(f"K={r['k']:,}: {r[key]:{fmt}}{unit}" for r in rows)


def reading(figures: dict[str, Any]) -> list[str]:
    """The honest summary: computed from the figures, with the reasons behind them."""
    lines = []
    for name, c in figures["compliance"].items():
        verdict = (
            "met on every repeat"
            if c["max_end_to_end_s"] < GOAL_S
            else "met at the median, not on every repeat"
            if c["end_to_end_s"] < GOAL_S
            else "not met"
        )
        lines.append(
            f"- **Compliance, {name}**: the serving state commits {c['compliance_s'] * 1e3:.0f} ms "
            f"(median; max {c['max_compliance_s'] * 1e3:.0f}) after the journal commit; a live "
            f"predictor that reloads with `previous` and predicts is compliant "
            f"{c['end_to_end_s'] * 1e3:.0f} ms (max {c['max_end_to_end_s'] * 1e3:.0f}) after it. "
            f"The < 100 ms goal is {verdict}. The whole `accept` call, validation included, "
            f"takes {c['accept_s'] * 1e3:.0f} ms. {c['dropped']} of {c['repeats']} requests hit "
            "a first slice and dropped their shard from the vote."
        )
    lines.append(
        "- Compliance is cheap because it trains nothing: `accept` rewrites one small serving "
        "document from the heads and the open requests, and the reload reads only the "
        "rolled-back shard's checkpoint and reuses every other loaded model (asserted); a "
        "reload without `previous` reads every shard. Validation, the rest of the `accept` "
        "call, reads every shard's ID list to locate the IDs, so it grows with N."
    )
    batched, cal = figures["batched"], figures["calibration"]
    exact = all(b["planned_samples"] == b["trained_samples"] for b in batched)
    points_met = [b["k"] for b in batched if b["points_ratio"] <= GOAL_RATIO]
    lines.append(
        f"- **Points against the paper**: measured / N(1 - (1 - 1/S)^K) = "
        f"{per_k(batched, 'points_ratio')}; within {GOAL_RATIO}x for "
        f"{len(points_met)} of {len(batched)} K. The paper's figure is an expectation over "
        "where the requests land; each repeat is one random draw (and one shard's size for "
        "K = 1), so small K scatters around it, and from K ≈ 5S every shard is touched."
    )

    def ks(keys: list[int]) -> str:
        return ", ".join(f"K={k:,}" for k in keys) or "no K"

    time_met = [b["k"] for b in batched if b["compute_ratio"] <= GOAL_RATIO]
    close = [b["k"] for b in batched if 1 / GOAL_RATIO <= b["compute_ratio"] <= GOAL_RATIO]
    lines.append(
        f"- **Time against the plan**: the planned samples "
        f"{'equal' if exact else 'differ from'} the samples trained for every K, so the plan "
        "counts the work exactly and any gap is in the seconds per sample. Compute / "
        f"predicted: {per_k(batched, 'compute_ratio')}; the goal (≤ {GOAL_RATIO}x) is met "
        f"for {ks(time_met)}, and the prediction is within {GOAL_RATIO}x either way (not "
        f"over-predicting either) for {ks(close)}"
        + f". Wall / predicted: {per_k(batched, 'wall_ratio')}; the model does not predict "
        "the wall time around the jobs (writing the new data generation, serving refresh, "
        "tombstones, one fsync'd receipt per request): "
        + ", ".join(f"K={b['k']:,}: {b['wall_s'] - b['compute_s']:.2f} s" for b in batched)
        + "."
    )
    opt, fixed = (
        median([abs(b["optimizer_gap"]) for b in batched]),
        median([abs(b["fixed_gap"]) for b in batched]),
    )
    lines.append(
        "- **Where the gap comes from**: it splits into optimizer time (against training's "
        "per sample) and fixed costs (against training's per stage and per job; the table "
        "above): "
        + ", ".join(
            f"K={b['k']:,}: {b['optimizer_gap']:+.0%} and {b['fixed_gap']:+.0%}" for b in batched
        )
        + f". *Fixed costs*: {cal['not_training_share']:.0%} of training's compute and "
        f"{spread([b['not_training_share'] for b in batched], '.0%')} of the retrains' is "
        "not optimizer time but loading, fsync'd checkpoint writes and purging, which the "
        "plan predicts per stage and per job. Per job, a retrain loads "
        f"{spread([b['load_ms_per_job'] for b in batched], '.0f')} ms (it also restores "
        f"the checkpoint it resumes from; training: {cal['load_ms_per_job']:.0f} ms) and "
        f"purges {spread([b['purge_ms_per_job'] for b in batched], '.0f')} ms (the replaced "
        f"generation; training replaces nothing: {cal['purge_ms_per_job']:.0f} ms); a "
        f"checkpoint costs {spread([b['checkpoint_ms_per_stage'] for b in batched], '.1f')} "
        f"ms per stage against {cal['checkpoint_ms_per_stage']:.1f} ms in training (the "
        "head's commit, once per job, is part of it, and the disk is shared). Training "
        f"ran {cal['samples_per_stage']:.0f} samples per stage, the retrains "
        f"{spread([b['samples_per_stage'] for b in batched], ',.0f')}: a retrain from a "
        "late slice trains only the big later stages, one that restarts many shards early "
        "also the small first ones. *Optimizer time*: "
        f"{cal['train_us_per_sample']:.0f} µs per sample in training, "
        f"{spread([b['train_us_per_sample'] for b in batched], '.0f')} µs in the retrains, "
        f"with {cal['other_cores']:.2f} cores of other work on the machine during training "
        f"and {spread([b['other_cores'] for b in batched])} during the batches. The larger "
        f"part of the gap, by the median over K, is "
        + ("the fixed costs." if fixed >= opt else "the optimizer time.")
    )
    lines.append(
        "- **Is the comparison fair?** The calibration is measured the way the product "
        "measures it: by this process, with the same executor, on the store whose copies "
        f"are retrained, {spread([b['since_calibration_s'] for b in batched], ',.0f')} s "
        "before the batches (medians per K). What it cannot share with them is the moment: "
        "the other work on a shared 2-core machine comes and goes between phases (see the "
        "table), which moves the optimizer time and the disk-bound checkpoints alike; and "
        "a single training calibrates all later predictions. What is left of the fixed-"
        "cost part is the model's own: training restores no checkpoint and replaces no "
        "generation, so its cost per job understates a retrain's loading and purging."
    )
    buckets = figures["backlog"]
    big = batched[-1]
    slow = [b for b in buckets if b["compliance_s"] >= GOAL_S]
    lines.append(
        f"- **Backlog**: the median journal→serving commit is "
        f"{buckets[0]['compliance_s'] * 1e3:.0f} ms with {buckets[0]['open']} requests open and "
        f"{buckets[-1]['compliance_s'] * 1e3:.0f} ms with {buckets[-1]['open']} open; "
        f"accepting all {big['k']:,} one by one took {big['accept_total_s']:.1f} s. Validation "
        "(`deleted_or_requested`) and `serving.refresh` both walk every open request, so one "
        "acceptance costs O(open requests). This process reads each journal document once and "
        "then keeps it (`sisa.journal` caches them per process); a fresh process per request, "
        "such as one CLI call each, reads every open document again. "
        + (
            f"The 100 ms goal fails, at the median, once {slow[0]['open']} requests are open; "
            "it holds only while `process` keeps the backlog short."
            if slow
            else "The 100 ms goal still holds at the median under this backlog (slowest "
            f"journal→serving commit: {max(b['max_compliance_s'] for b in buckets) * 1e3:.0f} ms)."
        )
    )
    gains = ", ".join(
        f"K={s['k']:g}: {s['samples_gain']:.1f}x the samples, {s['wall_gain']:.1f}x the wall time"
        for s in figures["sequential"]
    )
    lines.append(
        f"- **Batching**: one at a time vs one batch: {gains}. A batch retrains each touched "
        "shard once, from its earliest touched slice; while K is well below S the requests "
        "rarely share a shard, so batching saves little training, and the gain grows as they "
        "pile onto the same shards. Deletions per second of `process` wall time: "
        + per_k(batched, "deletions_per_s", ".1f", "")
        + "."
    )
    lines.append(
        "- Timings come from a shared 2-core machine (see the load averages and the other "
        "work); single figures move by tens of percent between runs."
    )
    return lines


def run(suite: str) -> Report:
    sizes = SIZES[suite]
    configure(1)
    rng = np.random.default_rng(0)
    before = load_average()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        # the batches come right after the training that calibrates their plans
        url, cal = calibration_run(root, sizes.purchase)
        calibrated = time.perf_counter()
        batched, sequential, raw = [], [], []
        for k in sizes.ks:
            rows, seq = [], []
            for i in range(sizes.batch_repeats[k]):  # one at a time right after, same load
                rows.append(bench_batch(url, root, k, cal, rng))
                rows[-1]["since_calibration_s"] = time.perf_counter() - calibrated
                if i < sizes.sequential_repeats.get(k, 0):
                    seq.append(bench_sequential(url, root, rows[-1]))
            raw += rows
            batched.append(summarise(rows))
            if seq:
                medians = {key: median([r[key] for r in seq]) for key in seq[0]}
                sequential.append(medians | {"repeats": len(seq)})
        urls = {"purchase": url, "digits": train_store(root, "digits", DIGITS)}
        compliance = {
            name: bench_compliance(
                copy_store(u, root, f"{name}-live"), sizes.compliance_repeats, rng
            )
            for name, u in urls.items()
        }
    figures: dict[str, Any] = {
        "goal_s": GOAL_S,
        "goal_ratio": GOAL_RATIO,
        "compliance": compliance,
        "calibration": cal,
        "batched": batched,
        "sequential": sequential,
        "backlog": backlog(raw[-1], sizes.backlog_edges),
        "batched_runs": [{k: v for k, v in r.items() if k != "victims"} for r in raw],
        "load_average": {"before": before, "after": load_average()},
    }
    figures["reading"] = reading(figures)
    config = asdict(sizes) | {"digits": DIGITS}
    return Report(figures, render(figures, sizes), config)
