"""The recipe benchmark's scaling measurements: ``data.scale = "standard"`` with statistics
fitted per shard per stage (``sisa.training.standardize``), in deletions and in accuracy.

* ``deletion_cost``: two stores alike but for the scaling; the same K random training
  points deleted from both, one request at a time (``accept`` then ``process``, the two
  stores alternating which goes first), then all K in one batch on fresh copies. Reported:
  the wall time of each ``process`` and the samples it retrained (equal by construction:
  the statistics are refitted inside the stages a deletion retrains anyway).
* ``scaling_accuracy``: digits whose 64 features are multiplied by fixed random factors
  (log-uniform in [0.1, 10]): unscaled, SGD at the default rate diverges on them. Variants:
  no scaling, per-stage statistics (what the exactness rule allows), and statistics of the
  whole training set, which the config refuses (``data.scale_from``): that variant exists
  only here, as a copy of the data pre-scaled with the mean and standard deviation of
  the store's training points, trained without scaling. sklearn's digits unscaled (0..16,
  not the built-in source's 0..1) are the reference. Global statistics cannot be
  unlearnt: every deletion would change them and so every shard, which is why they are
  shown for comparison only.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.report import mean_std
from benchmarks.stores import QUIET, copy_store, train_store, training_layout
from sisa.deletion.accept import accept
from sisa.deletion.batch import process
from sisa.evidence.status import evaluate
from sisa.training.standardize import MIN_STD

SCALED = {"data.scale": "standard"}  # data.scale_from defaults to "stage"


def _process(url: str, ids: list[Any]) -> dict[str, float]:
    for point in ids:
        accept(url, [point])
    report = process(url, executor=QUIET)
    assert report is not None
    return {
        "wall_s": report.seconds,
        "compute_s": report.compute_seconds,
        "samples": report.samples,
    }


def deletion_cost(root: Path, data: dict[str, Any], k: int, seed: int) -> dict[str, Any]:
    """K single-point deletions from a store with and without per-stage scaling."""
    urls, train_s = {}, {}
    for name, extra in (("none", {}), ("standard", SCALED)):
        urls[name], train_s[name] = train_store(root, f"cost-{name}", data | extra)
    layouts = {name: training_layout(url) for name, url in urls.items()}
    a, b = layouts["none"], layouts["standard"]
    assert np.array_equal(a.ids, b.ids) and np.array_equal(a.slice, b.slice)  # same places
    victims = np.random.default_rng(seed).choice(a.ids, k, replace=False).tolist()
    copies = {name: copy_store(url, root, f"batch-{name}") for name, url in urls.items()}
    rows = []
    for i, victim in enumerate(victims):
        order = ("none", "standard") if i % 2 == 0 else ("standard", "none")
        row: dict[str, Any] = {"id": victim, "first": order[0]}
        for name in order:
            row[name] = _process(urls[name], [victim])
        row["ratio"] = row["standard"]["wall_s"] / row["none"]["wall_s"]
        rows.append(row)
    batched = {name: _process(url, victims) for name, url in copies.items()}

    def total(name: str, key: str) -> float:
        return sum(r[name][key] for r in rows)

    return {
        "k": k,
        "train_s": train_s,
        "train_ratio": train_s["standard"] / train_s["none"],
        "sequential": {
            name: {key: total(name, key) for key in ("wall_s", "compute_s", "samples")}
            for name in urls
        },
        "sequential_ratio": total("standard", "wall_s") / total("none", "wall_s"),
        "median_ratio": float(np.median([r["ratio"] for r in rows])),
        "samples_equal": all(r["standard"]["samples"] == r["none"]["samples"] for r in rows)
        and batched["standard"]["samples"] == batched["none"]["samples"],
        "batched": batched,
        "batched_ratio": batched["standard"]["wall_s"] / batched["none"]["wall_s"],
        "deletions": rows,
    }


# -- accuracy against global statistics ---------------------------------------------------

FACTOR_DECADES = 1.0  # feature i is multiplied by 10**u_i, u_i uniform in [-1, 1]
VARIANTS = ("original", "none", "per-stage", "global")


def distorted_digits(folder: Path) -> dict[str, Path]:
    """Digits (IDs 0..n-1) as ``.npz``: as they are, and with random per-feature factors."""
    from sklearn.datasets import load_digits

    d = load_digits()
    factors = 10 ** np.random.default_rng(0).uniform(-FACTOR_DECADES, FACTOR_DECADES, 64)
    paths = {"original": folder / "digits.npz", "distorted": folder / "digits-distorted.npz"}
    ids = np.arange(len(d.target))
    np.savez(paths["original"], ids=ids, X=d.data.astype(np.float32), y=d.target)
    np.savez(paths["distorted"], ids=ids, X=(d.data * factors).astype(np.float32), y=d.target)
    return paths


def globally_scaled(source: Path, train_ids: np.ndarray, dest: Path) -> Path:
    """A copy of ``source`` standardised with the mean and (population) standard deviation
    of the points ``train_ids`` over all of them: the whole-set statistic the exactness rule
    forbids, for comparison only."""
    with np.load(source) as f:
        arrays = {k: f[k] for k in f.files}
    rows = arrays["X"][np.isin(arrays["ids"], train_ids)].astype(np.float64)
    mean, std = rows.mean(axis=0), rows.std(axis=0)
    std = np.where(std < MIN_STD, 1.0, std)  # a constant feature keeps scale 1, as sisa does
    np.savez(dest, **arrays | {"X": ((arrays["X"] - mean) / std).astype(np.float32)})
    return dest


def scaling_accuracy(
    configs: list[tuple[int, int]], seeds: list[int], epochs: float
) -> dict[str, Any]:
    """Aggregate accuracy of each variant at each (S, R) and seed, and their summary."""
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        paths = distorted_digits(root)
        for seed in seeds:
            for shards, slices in configs:
                base = {"sisa.seed": seed, "sisa.shards": shards, "sisa.slices": slices}
                base |= {"sisa.epochs": epochs}
                cell = f"{seed}-{shards}-{slices}"
                plain = {"data.source": str(paths["distorted"])}
                stores = {
                    "original": {"data.source": str(paths["original"])},
                    "none": plain,
                    "per-stage": plain | SCALED,
                }
                urls = {v: train_store(root, f"{v}-{cell}", base | o)[0] for v, o in stores.items()}
                train_ids = training_layout(urls["none"]).ids
                scaled = globally_scaled(paths["distorted"], train_ids, root / f"g-{cell}.npz")
                urls["global"] = train_store(root, f"global-{cell}", base | {
                    "data.source": str(scaled)
                })[0]  # fmt: skip
                for variant in VARIANTS:
                    acc = evaluate(urls[variant])
                    runs.append(
                        {"variant": variant, "seed": seed, "shards": shards, "slices": slices}
                        | {key: acc[key] for key in ("average", "vote", "mean_shard")}
                    )
    return {"runs": runs, "summary": summarise(runs, configs)}


def summarise(runs: list[dict[str, Any]], configs: list[tuple[int, int]]) -> list[dict]:
    """Mean ± std over seeds per (variant, S, R); per-stage against global in points."""
    out = []
    for shards, slices in configs:
        cell = [r for r in runs if (r["shards"], r["slices"]) == (shards, slices)]
        means = {}
        for variant in VARIANTS:
            mine = [r for r in cell if r["variant"] == variant]
            means[variant] = mean_std([r["average"] for r in mine])
            shard = mean_std([r["mean_shard"] for r in mine])["mean"]
            out.append(
                {"variant": variant, "shards": shards, "slices": slices, "seeds": len(mine)}
                | means[variant]
                | {"mean_shard": shard}
            )
        gap = (means["global"]["mean"] - means["per-stage"]["mean"]) * 100
        for row in out[-len(VARIANTS) :]:
            row["per_stage_below_global_points"] = gap
    return out
