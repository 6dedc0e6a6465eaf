"""Unlearning speedup: one random deletion, end to end, against retraining from scratch.

For each dataset and (S, R) of the suite's grid, a store is trained, then single-point
deletions are run one after another with ``forget`` (journal, plan, retrain, commit,
purge, receipt) and timed. The baseline is a monolithic model (S = R = 1) retrained from
scratch on the same data with the same epochs, timed in the same run the same way: a
deletion in a monolithic store retrains all of it. Reported per point:

* measured speedup = median monolithic training time / median deletion time;
* the cost model's ideal ``S / (2/3 + 1/(3R))`` (``sisa.deletion.cost.paper_speedup``), and
  measured / ideal;
* where a deletion's time goes: the shard job's load, train, checkpoint and purge phases
  (``sisa.training.jobs.PHASES``), and the rest (journal, planning, receipts, scheduling).
"""

from __future__ import annotations

import random
import statistics
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.datasets import DataCache
from benchmarks.report import Report, markdown_table, pyplot, timed
from benchmarks.stores import QUIET, store_executor, training_layout
from sisa.config import build_config
from sisa.deletion.accept import forget
from sisa.deletion.cost import paper_speedup
from sisa.store.artifacts import SisaStore
from sisa.training.jobs import PHASES
from sisa.training.train import train
from sisa.training.trainer import configure

DATASETS: dict[str, dict[str, Any]] = {
    "digits": {"data.source": "digits"},
    "purchase": {"data.source": "synthetic-purchase", "data.n": 200_000},
}
GRIDS: dict[str, dict[str, Any]] = {
    "quick": {
        "datasets": ["digits"],
        "shards": [1, 5],
        "slices": [1, 5],
        "repeats": 2,
        "draws": 2,
        "ray": False,
    },
    "full": {
        "datasets": ["digits", "purchase"],
        "shards": [1, 5, 10, 20],
        "slices": [1, 5, 10, 50],
        "repeats": 3,  # monolithic retrains, and deletions at S = 1
        "draws": 5,  # deletions at S > 1, one per slice stratum
        "ray": True,  # stores are trained on Ray (2 CPUs); deletions are timed in process
    },
}
EPOCHS = 10.0
PAPER = {"purchase": 4.63}  # the paper's measured speedup at S = 20, R = 50 (Purchase-100)
GOAL = 0.8  # measured / ideal at the largest S and R, where the paper measured


def victims(url: str, draws: int, rng: random.Random) -> list[int | str]:
    """``draws`` random training IDs, one from each of ``draws`` equal strata of slice
    positions (stratified sampling): a uniformly random deletion's cost depends steeply on
    its slice, and the cost model's ideal is an expectation over slices, so a few plain
    random draws would scatter far around it."""
    layout = training_layout(url)
    ids, slices = layout.ids.tolist(), layout.slice.tolist()
    total = SisaStore(url).config().sisa.slices
    chosen: list[int | str] = []
    for i in range(draws):
        lo = i * total // draws
        hi = max((i + 1) * total // draws, lo + 1)  # more draws than slices: strata repeat
        stratum = [k for k, s in zip(ids, slices, strict=True) if lo <= s < hi and k not in chosen]
        chosen.append(rng.choice(stratum))
    return chosen


def deletion(url: str, victim: int | str, executor: Any = QUIET) -> dict[str, Any]:
    report, wall = timed(lambda: forget(url, [victim], executor=executor))
    phases = {p: sum(r.phases.get(p, 0.0) for r in report.shards) for p in PHASES}
    samples = sum(r.samples for r in report.shards)
    return {
        "seconds": wall,
        "samples": samples,
        "phases": phases,
        "rest": wall - sum(phases.values()),
    }


def measure(
    overrides: dict[str, Any], shards: int, slices: int, draws: int, ray: bool, on_ray: bool = False
) -> tuple[list[dict], list[dict]]:
    """Train a store, then time ``draws`` single-point deletions in it, one after another;
    with ``on_ray``, then as many again with the retrain as a Ray task (after one untimed
    deletion that warms a worker up), which adds what scheduling costs."""
    cfg = build_config(
        {}, overrides | {"sisa.shards": shards, "sisa.slices": slices, "sisa.epochs": EPOCHS}
    )
    rng = random.Random(f"{shards}-{slices}")
    with tempfile.TemporaryDirectory() as tmp:
        url = str(Path(tmp) / "store")
        train(cfg, url, executor=store_executor(ray))
        runs = [deletion(url, v) for v in victims(url, draws, rng)]
        if not on_ray:
            return runs, []
        executor = store_executor(True)
        deletion(url, victims(url, 1, rng)[0], executor)
        return runs, [deletion(url, v, executor) for v in victims(url, draws, rng)]


def point(shards: int, slices: int, runs: list[dict], mono: dict[str, float]) -> dict[str, Any]:
    """One grid point's figures. The deletion time is the mean over the stratified draws,
    an estimate of the expected cost the ideal speaks of; the monolithic time is a median."""
    mean_s = statistics.mean(r["seconds"] for r in runs)
    mean_samples = statistics.mean(r["samples"] for r in runs)
    ideal = paper_speedup(shards, slices)
    speedup = mono["seconds"] / mean_s
    drawn_ideal = mono["samples"] / mean_samples  # the exact count for the IDs drawn
    return {
        "shards": shards,
        "slices": slices,
        "draws": len(runs),
        "deletion_s": mean_s,
        "deletion_median_s": statistics.median(r["seconds"] for r in runs),
        "deletion_samples": mean_samples,
        "monolithic_s": mono["seconds"],
        "monolithic_samples": mono["samples"],
        "speedup": speedup,
        "ideal": ideal,
        "of_ideal": speedup / ideal,
        "drawn_ideal": drawn_ideal,
        "of_drawn_ideal": speedup / drawn_ideal,
        "phases_s": {p: statistics.mean(r["phases"][p] for r in runs) for p in PHASES},
        "rest_s": statistics.mean(r["rest"] for r in runs),
        "runs": runs,
    }


HEADER = (
    "data", "S", "R", "draws", "deletion (s)", "monolithic (s)", "speedup", "ideal",
    "of ideal", "drawn ideal", "of drawn", *(f"{p} (s)" for p in PHASES), "rest (s)",
)  # fmt: skip


def table(points: list[dict[str, Any]]) -> str:
    rows = (
        [
            p["dataset"],
            str(p["shards"]),
            str(p["slices"]),
            str(p["draws"]),
            f"{p['deletion_s']:.3f}",
            f"{p['monolithic_s']:.3f}",
            f"{p['speedup']:.2f}",
            f"{p['ideal']:.2f}",
            f"{p['of_ideal']:.2f}",
            f"{p['drawn_ideal']:.2f}",
            f"{p['of_drawn_ideal']:.2f}",
            *(f"{p['phases_s'][name]:.3f}" for name in PHASES),
            f"{p['rest_s']:.3f}",
        ]
        for p in points
    )
    return "\n".join(markdown_table(HEADER, rows))


def run(suite: str) -> Report:
    grid = GRIDS[suite]
    configure(1)  # one-off start-up cost, kept out of the timings
    points = []
    with tempfile.TemporaryDirectory() as tmp:
        data = DataCache(tmp)
        for dataset in grid["datasets"]:
            overrides = data.overrides(DATASETS[dataset])
            mono_runs, _ = measure(overrides, 1, 1, grid["repeats"], grid["ray"])
            mono = {
                "seconds": statistics.median(r["seconds"] for r in mono_runs),
                "samples": statistics.median(r["samples"] for r in mono_runs),
            }
            for shards in grid["shards"]:
                for slices in grid["slices"]:
                    on_ray: list[dict] = []
                    if (shards, slices) == (1, 1):
                        runs = mono_runs  # the monolithic model is this grid point
                    else:
                        draws = grid["repeats"] if shards == 1 else grid["draws"]
                        headline = (shards, slices) == (max(grid["shards"]), max(grid["slices"]))
                        runs, on_ray = measure(
                            overrides, shards, slices, draws, grid["ray"], headline and grid["ray"]
                        )
                    points.append({"dataset": dataset} | point(shards, slices, runs, mono))
                    if on_ray:
                        points[-1]["on_ray"] = point(shards, slices, on_ray, mono)
    config = grid | {"epochs": EPOCHS, "datasets_config": DATASETS}
    figures = {"goal_of_ideal": GOAL, "paper_speedup": PAPER, "points": points}
    plots = {"speedup-grid": plot(points)}
    return Report(figures, markdown(figures, config), config, plots)


def markdown(figures: dict[str, Any], config: dict[str, Any]) -> str:
    """The report of the figures, from them and the settings they were measured with."""
    points = figures["points"]
    return (
        "One random single-point deletion, end to end (`forget`: journal, plan, retrain, "
        "commit, purge, receipt), against retraining a monolithic model (S = R = 1) from "
        f"scratch on the same data for the same {config['epochs']:g} epochs (a deletion in a "
        f"monolithic store, timed the same way; median of {config['repeats']}).\n\n"
        "A random deletion's cost depends on its slice, and the cost model's ideal "
        "S / (2/3 + 1/(3R)) is an expectation over slices; so each point draws one ID from "
        "each of `draws` equal strata of slice positions and reports the mean deletion time. "
        "'Drawn ideal' is the cost model's exact count for the IDs drawn (monolithic samples "
        "/ mean samples retrained); 'of drawn' = speedup / drawn ideal is the share of the "
        "ideal that the time outside training (checkpoints, loading, the journal) leaves. "
        "Phases are the shard job's own time (mean over draws); rest is everything around "
        "it (journal, locating the IDs, planning, receipts).\n\n"
        "![speedup against shards and slices](speedup-grid.png)\n\n"
        + table(points)
        + "\n\n"
        + "\n".join(reading(figures))
    )


def reading(figures: dict[str, Any]) -> list[str]:
    """The headline point of each dataset, in sentences computed from the figures."""
    points, goal = figures["points"], figures["goal_of_ideal"]
    lines = ["Reading:", ""]
    for dataset in dict.fromkeys(p["dataset"] for p in points):
        top = max(
            (p for p in points if p["dataset"] == dataset), key=lambda p: (p["shards"], p["slices"])
        )
        paper = figures["paper_speedup"].get(dataset)
        verdict = "met" if top["of_ideal"] >= goal else "not met"
        line = (
            f"- **{dataset}, S={top['shards']}, R={top['slices']}**: one deletion takes "
            f"{top['deletion_s']:.2f} s against {top['monolithic_s']:.1f} s to retrain the "
            f"monolithic model, a {top['speedup']:.1f}x speedup; the cost model's ideal is "
            f"{top['ideal']:.1f}x, so measured / ideal = {top['of_ideal']:.2f} (goal >= {goal}: "
            f"{verdict}). For the IDs drawn the exact count gives {top['drawn_ideal']:.1f}x, "
            f"of which the time reaches {top['of_drawn_ideal']:.2f}. Training is "
            f"{top['phases_s']['train'] / top['deletion_s']:.0%} of the deletion, checkpoints "
            f"{top['phases_s']['checkpoint'] / top['deletion_s']:.0%}, loading "
            f"{top['phases_s']['load'] / top['deletion_s']:.0%}, the shard's purge "
            f"{top['phases_s']['purge'] / top['deletion_s']:.0%}, and the rest (journal, "
            f"locating, planning, sweeps, receipts) {top['rest_s'] / top['deletion_s']:.0%}."
        )
        if paper:
            line += (
                f" The paper measured {paper}x here; this is {top['speedup'] / paper:.1f}x that."
            )
        if "on_ray" in top:
            ray = top["on_ray"]
            line += (
                f" With the retrain as a Ray task a deletion takes {ray['deletion_s']:.2f} s "
                f"({ray['speedup']:.1f}x, {ray['of_ideal']:.2f} of ideal): scheduling adds "
                f"{ray['deletion_s'] - top['deletion_s']:+.2f} s."
            )
        lines.append(line)
    return lines


def plot(points: list[dict[str, Any]]) -> Any:
    plt = pyplot()
    datasets = list(dict.fromkeys(p["dataset"] for p in points))
    fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 3.6), squeeze=False)
    for ax, dataset in zip(axes[0], datasets, strict=True):
        mine = [p for p in points if p["dataset"] == dataset]
        for i, slices in enumerate(sorted({p["slices"] for p in mine})):
            row = [p for p in mine if p["slices"] == slices]
            color = f"C{i}"
            shards = [p["shards"] for p in row]
            ax.plot(shards, [p["speedup"] for p in row], "o-", color=color, label=f"R={slices}")
            ax.plot(shards, [p["ideal"] for p in row], "--", color=color, alpha=0.6)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ticks = sorted({p["shards"] for p in mine})
        ax.set_xticks(ticks, [str(k) for k in ticks])
        ax.minorticks_off()
        ax.set_xlabel("shards S")
        ax.set_ylabel("speedup over retraining (dashed: ideal)")
        ax.set_title(dataset)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
