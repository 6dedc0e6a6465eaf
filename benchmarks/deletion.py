"""Deletion: time to compliance, and batched deletions against the cost model.

The measurements are ``benchmarks.compliance`` and ``benchmarks.batching``; the tables
and the reading are ``benchmarks.deletion_report``. Shard jobs run in this process
(``InProcessExecutor``), for training, calibration and retraining alike.

* compliance: ``accept`` one single-ID request, then refresh a live ensemble with
  ``Ensemble.load(store, previous=...)`` and predict one row. Reported as medians over
  repeats; each repeat is followed by ``process`` so every request meets a fully trained
  store. It asserts that the refreshed ensemble serves what ``compliance.current`` says, that
  the touched shard is rolled back (or dropped) and that untouched shards keep their
  loaded models.
* batched: K random single-ID requests accepted one by one, then one ``process`` on a
  fresh copy of a trained Purchase store. Measured against the cost model, in the same
  run: the points in the shards retrained against the paper's N(1 - (1 - 1/S)^K), and the
  retrain's compute and wall time against the plan's predicted seconds (the store's
  training calibrates them, ``sisa.deletion.cost``: optimizer time per sample, a checkpoint per
  stage, loading and purging per job), with the goal measured <= 1.1 x predicted;
  deletions per second. The gap is split into the optimizer time and the fixed costs
  (loading, checkpoint writes, purging), each against its calibrated unit cost, beside the
  other work on the machine during training and during each batch, because a shared
  machine's speed moves between phases. For small K the same requests are also processed
  one at a time, for the batching gain.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.batching import bench_batch, bench_sequential, calibration_run, summarise
from benchmarks.common import load_average
from benchmarks.compliance import backlog, bench_compliance
from benchmarks.deletion_report import reading, render
from benchmarks.report import Report, median
from benchmarks.stores import copy_store, train_store
from sisa.training.trainer import configure

GOAL_S = 0.100  # the deletion-service issue's goal for accepted -> compliant
GOAL_RATIO = 1.1  # batched deletions: measured <= 1.1 x the cost model's prediction
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
        urls = {"purchase": url, "digits": train_store(root, "digits", DIGITS)[0]}
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
    return Report(figures, render(figures, sizes.purchase), config)
