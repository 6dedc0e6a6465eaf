"""Unlearning speedup: one random deletion, end to end, against retraining from scratch.

For each dataset and (S, R) of the suite's grid, a store is trained, then single-point
deletions are run one after another with ``forget`` (journal, plan, retrain, commit,
purge, receipt) and timed. The baseline is a monolithic model (S = R = 1) retrained from
scratch on the same data with the same epochs, timed in the same run the same way: a
deletion in a monolithic store retrains all of it. Reported per point:

* measured speedup = median monolithic training time / median deletion time;
* the cost model's ideal ``S / (2/3 + 1/(3R))`` (``sisa.cost.paper_speedup``), and
  measured / ideal;
* where a deletion's time goes: the shard job's load, train, checkpoint and purge phases
  (``sisa.jobs.PHASES``), and the rest (journal, planning, receipts, scheduling).
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import Report
from orchestrator.executors import InProcessExecutor
from sisa.config import build_config
from sisa.cost import paper_speedup
from sisa.jobs import PHASES
from sisa.store import SisaStore
from sisa.train import train
from sisa.trainer import configure
from sisa.unlearn import forget

QUIET = InProcessExecutor(progress=False)
DATASETS: dict[str, dict[str, Any]] = {
    "digits": {"data.source": "digits"},
    "purchase": {"data.source": "synthetic-purchase", "data.n": 200_000},
}
GRIDS: dict[str, dict[str, Any]] = {
    "quick": {"datasets": ["digits"], "shards": [1, 5], "slices": [1, 5], "repeats": 2},
    "full": {
        "datasets": ["digits", "purchase"],
        "shards": [1, 5, 10, 20],
        "slices": [1, 5, 10, 50],
        "repeats": 3,
    },
}
EPOCHS = 10.0


def training_ids(url: str) -> list[int | str]:
    store = SisaStore(url)
    ids: list[int | str] = []
    for shard in range(store.config().sisa.shards):
        ids += store.read_data(store.shard_head(shard).data, features=False)["ids"].tolist()
    return ids


def deletion(url: str, rng: random.Random) -> dict[str, Any]:
    victim = rng.choice(training_ids(url))
    started = time.perf_counter()
    report = forget(url, [victim], executor=QUIET)
    wall = time.perf_counter() - started
    phases = {p: sum(r.phases.get(p, 0.0) for r in report.shards) for p in PHASES}
    return {"seconds": wall, "phases": phases, "rest": wall - sum(phases.values())}


def point(dataset: str, shards: int, slices: int, repeats: int, mono_s: float) -> dict:
    overrides = DATASETS[dataset] | {
        "sisa.shards": shards,
        "sisa.slices": slices,
        "sisa.epochs": EPOCHS,
    }
    rng = random.Random(f"{dataset}-{shards}-{slices}")
    with tempfile.TemporaryDirectory() as tmp:
        url = str(Path(tmp) / "store")
        trained = train(build_config({}, overrides), url, executor=QUIET)
        runs = [deletion(url, rng) for _ in range(repeats)]
    median = statistics.median(r["seconds"] for r in runs)
    ideal = paper_speedup(shards, slices)
    return {
        "dataset": dataset,
        "shards": shards,
        "slices": slices,
        "train_s": trained.seconds,
        "deletion_s": median,
        "monolithic_s": mono_s,
        "speedup": mono_s / median,
        "ideal": ideal,
        "of_ideal": mono_s / median / ideal,
        "phases_s": {p: statistics.median(r["phases"][p] for r in runs) for p in PHASES},
        "rest_s": statistics.median(r["rest"] for r in runs),
        "runs": runs,
    }


def monolithic(dataset: str, repeats: int) -> float:
    """Median seconds to retrain a monolithic model (S = R = 1) from scratch: a deletion
    in such a store retrains all of it, through the same code as every other point."""
    return point(dataset, 1, 1, repeats, float("nan"))["deletion_s"]


def table(points: list[dict[str, Any]]) -> str:
    lines = [
        "| data | S | R | deletion (s) | monolithic (s) | speedup | ideal | of ideal | "
        + " | ".join(f"{p} (s)" for p in PHASES)
        + " | rest (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|" + "---:|" * (len(PHASES) + 1),
    ]
    for p in points:
        phases = " | ".join(f"{p['phases_s'][name]:.3f}" for name in PHASES)
        lines.append(
            f"| {p['dataset']} | {p['shards']} | {p['slices']} | {p['deletion_s']:.3f} | "
            f"{p['monolithic_s']:.3f} | {p['speedup']:.2f} | {p['ideal']:.2f} | "
            f"{p['of_ideal']:.2f} | {phases} | {p['rest_s']:.3f} |"
        )
    return "\n".join(lines)


def run(suite: str) -> Report:
    grid = GRIDS[suite]
    configure(1)  # one-off start-up cost, kept out of the timings
    points = []
    for dataset in grid["datasets"]:
        mono_s = monolithic(dataset, grid["repeats"])
        for shards in grid["shards"]:
            for slices in grid["slices"]:
                points.append(point(dataset, shards, slices, grid["repeats"], mono_s))
    markdown = (
        "One random single-point deletion, end to end (`forget`: journal, plan, retrain, "
        "commit, purge, receipt), against retraining a monolithic model (S = R = 1) from "
        f"scratch on the same data for the same {EPOCHS:g} epochs (a deletion in a "
        "monolithic store, timed the same way). Medians of "
        f"{grid['repeats']} runs; ideal = S / (2/3 + 1/(3R)); phases are the shard job's "
        "own time, rest is everything around it.\n\n" + table(points)
    )
    return Report({"points": points}, markdown, grid | {"epochs": EPOCHS})
