"""Accuracy against the number of shards: what isolation costs the aggregate.

For each dataset, S of the grid, sharding (uniform, stratified) and seed, a store is
trained and evaluated on its held-out data; ``sisa.evidence.status.evaluate`` scores the same
shard models aggregated both ways (probability averaging and label voting). S = 1 is the
monolithic model. Reported: mean and standard deviation over seeds, and the loss against
the monolithic model in accuracy points (the paper: under 2 points at S = 20 on simple
tasks; the goal here: at most 1.5 with averaging at S = 20, ``GOAL_LOSS_POINTS`` and
``GOAL_SHARDS``, which the figures carry). The plot mirrors the paper's accuracy-vs-shards
figure.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.datasets import DataCache
from benchmarks.report import Report, markdown_table, mean_std, pyplot
from benchmarks.stores import store_executor
from sisa.config import build_config
from sisa.evidence.status import evaluate
from sisa.training.train import train
from sisa.training.trainer import configure

DATASETS: dict[str, dict[str, Any]] = {
    "digits": {"data.source": "digits"},
    "purchase": {"data.source": "synthetic-purchase", "data.n": 20_000},
}
GRIDS: dict[str, dict[str, Any]] = {
    "quick": {
        "datasets": ["digits"],
        "shards": [1, 2, 5],
        "seeds": [0, 1],
        "epochs": 10.0,
        "ray": False,
    },
    "full": {
        "datasets": ["digits", "purchase"],
        "shards": [1, 2, 5, 10, 20, 50],
        "seeds": [0, 1, 2],
        "epochs": 20.0,
        "ray": True,  # stores train on Ray (2 CPUs); nothing here is timed
    },
}
GOAL_LOSS_POINTS = 1.5  # accuracy points the aggregate may lose, with averaging ...
GOAL_SHARDS = 20  # ... at this many shards
SHARDINGS = ("uniform", "stratified")
AGGREGATIONS = ("average", "vote")


def score(data: dict[str, Any], shards: int, sharding: str, epochs: float, ray: bool) -> dict:
    overrides = data | {
        "sisa.shards": shards,
        "sisa.slices": 1,  # slicing changes the cost of unlearning, not what is learnt
        "sisa.sharding": sharding,
        "sisa.epochs": epochs,
    }
    with tempfile.TemporaryDirectory() as tmp:
        url = str(Path(tmp) / "store")
        train(build_config({}, overrides), url, executor=store_executor(ray))
        acc = evaluate(url)
    return {a: acc[a] for a in AGGREGATIONS} | {"mean_shard": acc["mean_shard"]}


def summarise(rows: list[dict[str, Any]], grid: dict[str, Any]) -> list[dict[str, Any]]:
    """Mean and spread over seeds per (dataset, S, sharding, aggregation), with the loss
    against the monolithic model (S = 1) of the same dataset."""
    out = []
    for dataset in grid["datasets"]:
        mono = statistics.mean(
            r["average"] for r in rows if r["dataset"] == dataset and r["shards"] == 1
        )
        for shards in grid["shards"]:
            for sharding in SHARDINGS:
                for aggregation in AGGREGATIONS:
                    values = [
                        r[aggregation]
                        for r in rows
                        if (r["dataset"], r["shards"], r["sharding"]) == (dataset, shards, sharding)
                    ]
                    spread = mean_std(values)
                    out.append(
                        {
                            "dataset": dataset,
                            "shards": shards,
                            "sharding": sharding,
                            "aggregation": aggregation,
                            **spread,
                            "seeds": len(values),
                            "loss_points": (mono - spread["mean"]) * 100,
                        }
                    )
    return out


def plot(summary: list[dict[str, Any]], datasets: list[str]) -> Any:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 3.6), squeeze=False)
    for ax, dataset in zip(axes[0], datasets, strict=True):
        for sharding in SHARDINGS:
            for aggregation in AGGREGATIONS:
                pts = [
                    s
                    for s in summary
                    if (s["dataset"], s["sharding"], s["aggregation"])
                    == (dataset, sharding, aggregation)
                ]
                ax.errorbar(
                    [p["shards"] for p in pts],
                    [p["mean"] for p in pts],
                    yerr=[p["std"] for p in pts],
                    marker="o",
                    capsize=3,
                    label=f"{aggregation}, {sharding}",
                )
        ax.set_xscale("log")
        shards = sorted({s["shards"] for s in summary})
        ax.set_xticks(shards, [str(k) for k in shards])
        ax.minorticks_off()
        ax.set_xlabel("shards S")
        ax.set_ylabel("test accuracy")
        ax.set_title(dataset)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def table(summary: list[dict[str, Any]]) -> str:
    header = (
        "data", "S", "sharding", "aggregation", "accuracy (mean ± std)", "seeds", "loss (points)"
    )  # fmt: skip
    rows = (
        [
            s["dataset"],
            str(s["shards"]),
            s["sharding"],
            s["aggregation"],
            f"{s['mean']:.4f} ± {s['std']:.4f}",
            str(s["seeds"]),
            f"{s['loss_points']:+.2f}",
        ]
        for s in summary
    )
    return "\n".join(markdown_table(header, rows, "lrllrrr"))


def run(suite: str) -> Report:
    grid = GRIDS[suite]
    configure(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cache = DataCache(tmp)
        for dataset in grid["datasets"]:
            for seed in grid["seeds"]:  # the seed draws the data, the split and the shards
                data = cache.overrides(DATASETS[dataset], seed) | {"sisa.seed": seed}
                for shards in grid["shards"]:
                    for sharding in SHARDINGS:
                        acc = score(data, shards, sharding, grid["epochs"], grid["ray"])
                        row = {"dataset": dataset, "shards": shards, "sharding": sharding}
                        rows.append(row | {"seed": seed} | acc)
    summary = summarise(rows, grid)
    figures = {
        "goal_loss_points": GOAL_LOSS_POINTS,
        "goal_shards": GOAL_SHARDS,
        "summary": summary,
        "runs": rows,
    }
    config = grid | {"slices": 1}
    plots = {"accuracy-shards": plot(summary, grid["datasets"])}
    return Report(figures, markdown(figures, config), config, plots)


def markdown(figures: dict[str, Any], config: dict[str, Any]) -> str:
    """The report of the figures, from them and the settings they were measured with."""
    return (
        "Test accuracy of the aggregate for each number of shards, averaging probabilities "
        "or voting labels, with uniform or label-stratified sharding; S = 1 is the "
        f"monolithic model. Mean ± standard deviation over {len(config['seeds'])} seeds; loss "
        "is in accuracy points against the monolithic model's mean.\n\n"
        "![accuracy against shards](accuracy-shards.png)\n\n" + table(figures["summary"])
    )
