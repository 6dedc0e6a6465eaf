"""Evidence of unlearning: exact SISA against approximate methods, methods × scenarios ×
datasets × seeds.

For each dataset the train/test split is fixed; each seed i trains one monolithic model
on the whole training set (recording RUM's memorisation proxy on the way) and, per
scenario, one reference retrained from scratch without the forget set. Every approximate
method unlearns original i, and is judged against reference i (``sisa.evidence``); the
forgetting quality pools all seeds (N unlearned vs N retrained models per method; the
challenge unlearned one original N times, here each unlearned model has its own
original, so F also carries the spread of training). The forget sets are drawn once
(seed 0, from seed 0's memorisation proxy) and held fixed across seeds.
Beside them:

* ``original``: no unlearning at all, what there is to remove;
* ``retrain``: an independent retrain (seed N + i) against reference i, the spread
  between models that never saw the forget set (the noise floor every figure sits on);
* ``sisa``: a SISA store trained on the same rows, then ``forget``; its reference is the
  store retrained from scratch without the forget set, which it must equal bitwise (the
  run fails otherwise), so its ToW is 1 by construction, and its cost is the retrain.

Costs: wall seconds, and samples processed (rows through a forward pass, inference
included; for SISA and retraining the samples trained on). The tables and the reading are
``benchmarks.evidence_report``.
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from benchmarks.evidence_report import markdown, mean_of
from benchmarks.report import Report
from benchmarks.stores import QUIET
from sisa.config import ModelConfig, build_config
from sisa.data.dataset import split_train_test
from sisa.data.loaders import load_source
from sisa.deletion.accept import forget
from sisa.evidence.approximate import Examples, baseline_config
from sisa.evidence.evaluation import Outputs, evidence
from sisa.evidence.methods import METHODS
from sisa.evidence.quality import forgetting_quality, logit_scaled_confidence
from sisa.evidence.rum import RUM, fit_tracking_confidence
from sisa.evidence.scenarios import SCENARIOS, Scenario, scenario
from sisa.evidence.status import status
from sisa.serving.ensemble import Ensemble
from sisa.store.artifacts import SisaStore
from sisa.training.models import build_model
from sisa.training.train import train
from sisa.training.trainer import configure, predict_proba

DATASETS: dict[str, dict[str, Any]] = {
    "digits": {"source": "digits", "n": 0},
    "purchase": {"source": "synthetic-purchase", "n": 5_000},
}
GRIDS: dict[str, dict[str, Any]] = {
    # the interval tests of forgetting quality cost ~20 ms per example: full suite only
    "quick": {
        "datasets": ["digits"],
        "seeds": 3,
        "epochs": 8,
        "unlearn_epochs": 2,
        "intervals": False,
    },
    "full": {
        "datasets": ["digits", "purchase"],
        "seeds": 5,
        "epochs": 20,
        "unlearn_epochs": 5,
        "intervals": True,
    },
}
FRACTION = 0.05  # of the training set, for the random and memorisation scenarios
SHARDS, SLICES = 5, 4  # the SISA store beside the monolithic models
TRAIN = {"lr": 0.05, "batch_size": 32}  # SISA's optimizer defaults, for every model trained
UNLEARN = {"lr": 0.01, "batch_size": 32}
EXACT = ("original", "retrain", "sisa")
REPORTED = ("seconds", "samples", "tow", "tow_mia", "mia_auc", "svc_mia", "acc_test")


class RowCount:
    """Rows through a model's forward pass, counted by a hook (``counting_rows``)."""

    def __init__(self) -> None:
        self.rows = 0
        self.hook_id = -1

    def __call__(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        self.rows += int(args[0].shape[0])  # args[0]: the batch [B, *f]

    def __deepcopy__(self, memo: dict[int, Any]) -> RowCount:
        return self  # a copied model keeps counting into the same total


@contextmanager
def counting_rows(model: nn.Module) -> Iterator[RowCount]:
    """Counts rows through ``model``'s forward, and through any deep copy of it: a copy
    (the methods train copies) carries the same hook, under the same id."""
    count = RowCount()
    handle = model.register_forward_pre_hook(count)
    count.hook_id = handle.id
    try:
        yield count
    finally:
        handle.remove()


def drop_counting_hook(model: nn.Module, count: RowCount) -> None:
    """Remove the counting hook from a copy, which its handle (the original's) cannot."""
    for module in model.modules():
        module._forward_pre_hooks.pop(count.hook_id, None)


def fresh(shape: tuple[int, ...], classes: int, seed: int) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return build_model(ModelConfig(), shape, classes)


def splits(train: Examples, test: Examples, sc: Scenario) -> dict[str, Examples]:
    keep = sc.retain(len(train))
    out = {
        "forget": Examples(train.X[sc.forget], train.y[sc.forget]),
        "retain": Examples(train.X[keep], train.y[keep]),
        "test": test,
    }
    if sc.forgotten_class is not None:
        mine = test.y == sc.forgotten_class
        out["class_test"] = Examples(test.X[mine], test.y[mine])
        out["other_test"] = Examples(test.X[~mine], test.y[~mine])
    return out


def outputs(predict: Any, parts: dict[str, Examples]) -> Outputs:
    return Outputs({k: predict(v.X) for k, v in parts.items()}, {k: v.y for k, v in parts.items()})


def sisa_run(
    root: Path, ids: np.ndarray, train_set: Examples, sc: Scenario, seed: int, grid: dict
) -> tuple[Any, Any, float, int]:
    """Train a store, forget the scenario's points, retrain a store without them; both
    ensembles' predict functions, the deletion's seconds and samples."""

    def store(name: str, rows: np.ndarray) -> str:
        path = root / f"{name}-{seed}.npz"
        np.savez(path, ids=ids[rows], X=train_set.X[rows], y=train_set.y[rows])
        cfg = build_config(
            {},
            {
                "data.source": str(path),
                "data.test_fraction": 0.0,  # the benchmark's own test set judges
                "data.num_classes": int(train_set.y.max()) + 1,
                "sisa.shards": SHARDS,
                "sisa.slices": SLICES,
                "sisa.seed": seed,
                "sisa.epochs": float(grid["epochs"]),
            },
        )
        url = str(root / f"{name}-{seed}")
        train(cfg, url, executor=QUIET)
        return url

    unlearned = store(f"{sc.name}-sisa", np.arange(len(train_set)))
    started = time.perf_counter()
    report = forget(unlearned, ids[sc.forget].tolist(), executor=QUIET)
    seconds = time.perf_counter() - started
    reference = store(f"{sc.name}-reference", sc.retain(len(train_set)))
    mine, theirs = (
        [s["weights_sha256"] for s in status(u)["shards"]] for u in (unlearned, reference)
    )
    if mine != theirs:
        raise AssertionError(f"SISA after forgetting differs from its retrain ({sc.name})")
    ensembles = [Ensemble.load(SisaStore(u)) for u in (unlearned, reference)]
    samples = sum(r.samples for r in report.shards)
    return ensembles[0].predict_proba, ensembles[1].predict_proba, seconds, samples


def summarise(values: list[float]) -> dict[str, float]:
    """Mean and the half-width of its 95% t-interval over seeds."""
    n = len(values)
    mean = statistics.fmean(values)
    if n < 2:
        return {"mean": mean, "ci95": math.nan}
    from scipy.stats import t

    return {"mean": mean, "ci95": float(t.ppf(0.975, n - 1) * statistics.stdev(values) / n**0.5)}


class Runs:
    """Per method: the figures of each seed, and φ on the forget set of each unlearned
    model and of the reference it is judged against (for forgetting quality)."""

    def __init__(self, forget_y: np.ndarray) -> None:
        self.forget_y = forget_y
        self.figures: dict[str, list[dict[str, Any]]] = {}
        self.phi: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {}

    def record(self, method: str, out: Outputs, ref: Outputs, cost: dict, seed: int) -> None:
        self.figures.setdefault(method, []).append(cost | evidence(out, ref, seed=seed))
        mine, theirs = self.phi.setdefault(method, ([], []))
        mine.append(logit_scaled_confidence(out.proba["forget"], self.forget_y))
        theirs.append(logit_scaled_confidence(ref.proba["forget"], self.forget_y))

    def quality(self, method: str, intervals: bool) -> Any:
        """F over the seeds' models (None with fewer than 3 models per side)."""
        mine, theirs = self.phi[method]
        if len(mine) < 3:
            return None
        return forgetting_quality(np.stack(mine), np.stack(theirs), intervals)


def dataset_rows(name: str, grid: dict, root: Path) -> list[dict[str, Any]]:
    spec = DATASETS[name]
    root = root / name  # the SISA stores of each dataset in their own folder
    root.mkdir(parents=True, exist_ok=True)
    ds = load_source(spec["source"], spec["n"], 0)
    train_ds, test_ds = split_train_test(ds, 0, 0.2)
    train_set, test = Examples(train_ds.X, train_ds.y), Examples(test_ds.X, test_ds.y)
    shape, classes = ds.feature_shape, ds.num_classes
    seeds = range(grid["seeds"])

    def fit(data: Examples, seed: int) -> tuple[nn.Module, np.ndarray, dict[str, float]]:
        model = fresh(shape, classes, seed)
        started = time.perf_counter()
        memo = fit_tracking_confidence(
            model, data, baseline_config(TRAIN | {"seed": seed}), grid["epochs"]
        )
        cost = {"seconds": time.perf_counter() - started, "samples": grid["epochs"] * len(data)}
        return model, memo, cost

    originals = [fit(train_set, seed) for seed in seeds]
    memo = originals[0][1]  # seed 0's proxy picks the memorisation forget sets
    rows = []
    for scenario_name in SCENARIOS:
        sc = scenario(
            scenario_name, y_train=train_set.y, fraction=FRACTION, seed=0, memorization=memo
        )
        parts = splits(train_set, test, sc)
        references = [fit(parts["retain"], seed) for seed in seeds]
        ref_out = [outputs(lambda X, m=m: predict_proba(m, X), parts) for m, _, _ in references]
        # a second, independent set of retrains (other seeds): the noise floor of every
        # figure, forgetting quality included, for models that never saw the forget set
        others = [fit(parts["retain"], len(seeds) + seed) for seed in seeds]
        runs = Runs(parts["forget"].y)
        for seed in seeds:
            original = originals[seed][0]
            mine = outputs(lambda X, m=original: predict_proba(m, X), parts)
            runs.record("original", mine, ref_out[seed], {"seconds": 0.0, "samples": 0}, seed)
            other = others[seed][0]
            other_out = outputs(lambda X, m=other: predict_proba(m, X), parts)
            runs.record("retrain", other_out, ref_out[seed], others[seed][2], seed)
            cfg = baseline_config(UNLEARN | {"epochs": grid["unlearn_epochs"], "seed": seed})
            # RUM refines by the proxy recorded while this seed's original trained
            methods = dict(METHODS) | {"rum": RUM(memorization=originals[seed][1][sc.forget])}
            for method, fn in methods.items():
                with counting_rows(original) as seen:
                    started = time.perf_counter()
                    model = fn(original, parts["forget"], parts["retain"], cfg)
                    cost = {"seconds": time.perf_counter() - started, "samples": seen.rows}
                    drop_counting_hook(model, seen)
                out = outputs(lambda X, m=model: predict_proba(m, X), parts)
                runs.record(method, out, ref_out[seed], cost, seed)
            unlearned, reference, seconds, samples = sisa_run(
                root, train_ds.ids, train_set, sc, seed, grid
            )
            cost = {"seconds": seconds, "samples": samples}
            runs.record("sisa", outputs(unlearned, parts), outputs(reference, parts), cost, seed)
        for method, figures in runs.figures.items():
            quality = runs.quality(method, grid["intervals"])
            row: dict[str, Any] = {
                "dataset": name,
                "scenario": sc.name,
                "goal": sc.goal,
                "method": method,
                "forget_size": len(sc.forget),
                "seeds": len(figures),
                "forgetting_quality": None if quality is None else quality.score,
                "fq_models": None if quality is None else quality.models,
                "runs": figures,
            }
            for key in figures[0]:
                values = [r[key] for r in figures if isinstance(r[key], int | float)]
                if values:
                    row[key] = summarise([float(v) for v in values])
            # the challenge's utility factors, beside F: retain and test accuracy relative
            # to the reference's, over the same models
            row["utility"] = {
                split: mean_of(row, f"acc_{split}") / mean_of(row, f"acc_{split}_reference")
                for split in ("retain", "test")
            }
            rows.append(row)
    return rows


def run(suite: str) -> Report:
    grid = GRIDS[suite]
    configure(1)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for dataset in grid["datasets"]:
            rows += dataset_rows(dataset, grid, Path(tmp))
    config = grid | {
        "fraction": FRACTION,
        "sisa": {"shards": SHARDS, "slices": SLICES},
        "train": TRAIN,
        "unlearn": UNLEARN,
        "datasets_config": DATASETS,
    }
    return Report({"rows": rows}, markdown(rows), config)
