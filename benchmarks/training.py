"""Training cost: SISA trained on Ray against the monolithic model at equal sample-epochs.

SISA's equal-cost schedule gives each of the R stages 2e/(R+1) epochs over the slices it
has seen, e·N sample-epochs in all: what one model trained for e epochs costs. So both
sides train with the same ``sisa.epochs``, and the samples each trained on are reported
to show it. Synthetic Purchase is generated once for the largest N; each N trains on
the first N points from a file (not timed: k-means labelling is making data, not training):

* SISA: S = 20 shards, R = 10 slices, ``RayExecutor`` on a local Ray instance with 2 CPUs,
  one CPU and one torch thread per shard task (the config's defaults);
* monolithic: S = R = 1, in process, with 1 torch thread and, up to the grid's
  ``threads_up_to`` points, also 2 (``resources.threads``); the faster is the baseline.
  (A second thread helps only steps big enough to split, and checking that at large N
  would cost minutes of a budget of about eight.)

Every (mode, N) runs in a fresh child process (``benchmarks.training_child``, where the
measurement itself is): its peak RSS is then the
driver's own for that measurement (the monolithic process's covers both thread counts),
and each SISA run gets its own Ray instance, started and warmed (both workers import
the trainer and set torch up) before the clock starts, as the monolithic process is. A
shard task's peak is the ``peak_rss_bytes`` of its ``ShardResult``. Wall time is
``sisa.training.train.train`` end to end (split and write the data, run the jobs), median of the
repeats; ratio = SISA wall / monolithic wall (goal ≤ 0.75).
"""

from __future__ import annotations

import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import run_child
from benchmarks.report import Report, markdown_table, pyplot
from benchmarks.training_child import RAY_CPUS, SHARDS, SLICES

GOAL = 0.75
MONO_THREADS = (1, 2)
GRIDS: dict[str, dict[str, Any]] = {
    "quick": {"n": [1_000, 3_000], "epochs": 2.0, "repeats": [2, 1], "threads_up_to": 3_000},
    "full": {
        "n": [10_000, 30_000, 100_000, 200_000],
        "epochs": 10.0,
        "repeats": [3, 3, 2, 1],
        "threads_up_to": 30_000,
    },
}
MB = 1 << 20


def _summary(runs: list[dict[str, Any]], driver_peak_bytes: int) -> dict[str, Any]:
    def median(key: str) -> float:
        return statistics.median(r[key] for r in runs)

    return {
        "wall_s": median("wall_s"),
        "jobs_s": median("jobs_s"),
        "slowest_job_s": median("slowest_job_s"),
        "phases_s": {
            p: statistics.median(r["phases_s"][p] for r in runs) for p in runs[0]["phases_s"]
        },
        "samples": runs[0]["samples"],
        "steps": runs[0]["steps"],
        "n_train": runs[0]["n_train"],
        "new_workers": max(
            (r["new_workers"] for r in runs if r["new_workers"] is not None), default=None
        ),
        "driver_peak_mb": driver_peak_bytes / MB,
        "task_peak_mb": max(r["task_peak_bytes"] for r in runs) / MB,
        "runs": runs,
    }


def measure(
    mode: str, data: Path, epochs: float, threads: list[int], repeats: int
) -> dict[str, dict[str, Any]]:
    """Thread count -> medians of one mode, measured in a child process that joins no Ray
    cluster of ours."""
    spec = {"mode": mode, "data": str(data), "epochs": epochs, "threads": threads}
    result = run_child("benchmarks.training_child", spec | {"repeats": repeats}, mode)
    return {t: _summary(r, result["driver_peak_bytes"]) for t, r in result["runs"].items()}


def threads(n: int, up_to: int) -> list[int]:
    """Torch thread counts the monolithic model is measured with at N points."""
    return list(MONO_THREADS) if n <= up_to else [1]


def purchase(sizes: list[int], folder: Path) -> dict[int, Path]:
    """Synthetic Purchase files of each size: the first N rows of one draw of the largest
    (generating it is k-means labelling, slower than training at small N; once is enough)."""
    from sisa.data.loaders import synthetic_purchase

    arrays = synthetic_purchase(max(sizes), 0).to_arrays()
    paths = {}
    for n in sizes:
        paths[n] = folder / f"purchase-{n}.npz"
        np.savez(paths[n], **{k: v[:n] for k, v in arrays.items()})
    return paths


def point(data: Path, n: int, epochs: float, repeats: int, threads: list[int]) -> dict[str, Any]:
    """SISA and the monolithic model on the same N points, measured back to back."""
    sisa = measure("sisa", data, epochs, [1], repeats)["1"]
    mono = measure("mono", data, epochs, threads, repeats)
    best = min(mono, key=lambda t: mono[t]["wall_s"])
    ratio = sisa["wall_s"] / mono[best]["wall_s"]
    return {
        "n": n,
        "n_train": sisa["n_train"],
        "repeats": repeats,
        "sisa": sisa,
        "mono": mono,
        "mono_threads": int(best),
        "mono_wall_s": mono[best]["wall_s"],
        "ratio": ratio,
        "ratio_by_threads": {t: sisa["wall_s"] / m["wall_s"] for t, m in mono.items()},
        "samples_ratio": sisa["samples"] / mono[best]["samples"],
        "goal_met": ratio <= GOAL,
    }


def slope(ns: list[int], walls: list[float]) -> float | None:
    """Least-squares exponent a of wall ~ N^a: the slope on the log-log plot."""
    if len(ns) < 2:
        return None
    return float(np.polyfit(np.log(ns), np.log(walls), 1)[0])


def plot(points: list[dict[str, Any]]) -> Any:
    plt = pyplot()
    ns = [p["n"] for p in points]
    fig, (walls, ratios) = plt.subplots(1, 2, figsize=(10, 3.8))
    walls.plot(ns, [p["sisa"]["wall_s"] for p in points], "o-", label=f"SISA, Ray {RAY_CPUS} CPUs")
    for t in MONO_THREADS:
        label = f"monolithic, {t} thread{'s' * (t > 1)}"
        measured = [p for p in points if str(t) in p["mono"]]
        walls.plot(
            [p["n"] for p in measured],
            [p["mono"][str(t)]["wall_s"] for p in measured],
            "s--",
            label=label,
        )
    walls.set_xscale("log")
    walls.set_yscale("log")
    walls.set_xlabel("points N")
    walls.set_ylabel("training wall time (s)")
    walls.set_title(f"S = {SHARDS}, R = {SLICES}, equal sample-epochs")
    walls.legend(fontsize=8)
    ratios.plot(ns, [p["ratio"] for p in points], "o-", label="SISA / best monolithic")
    ratios.axhline(GOAL, color="tab:red", ls="--", label=f"goal {GOAL:g}×")
    ratios.axhline(1 / RAY_CPUS, color="grey", ls=":", label=f"ideal {1 / RAY_CPUS:g}×")
    ratios.set_xscale("log")
    ratios.set_ylim(bottom=0)
    ratios.set_xlabel("points N")
    ratios.set_ylabel("wall-time ratio")
    ratios.legend(fontsize=8)
    fig.tight_layout()
    return fig


def table(points: list[dict[str, Any]], goal: float) -> str:
    header = (
        "N", "samples SISA", "samples mono", "SISA wall (s)", "mono wall (s)", "ratio",
        f"≤ {goal:g}×", "driver peak SISA (MB)", "driver peak mono (MB)", "shard task peak (MB)",
    )  # fmt: skip
    rows = []
    for p in points:
        s, m = p["sisa"], p["mono"][str(p["mono_threads"])]
        rows.append(
            [
                f"{p['n']:,}",
                f"{s['samples']:,}",
                f"{m['samples']:,}",
                f"{s['wall_s']:.2f}",
                f"{m['wall_s']:.2f} ({p['mono_threads']} thr)",
                f"{p['ratio']:.2f}",
                "yes" if p["goal_met"] else "no",
                f"{s['driver_peak_mb']:.0f}",
                f"{m['driver_peak_mb']:.0f}",
                f"{s['task_peak_mb']:.0f}",
            ]
        )
    return "\n".join(markdown_table(header, rows, "rrrrrrcrrr"))


def reading(points: list[dict[str, Any]], goal: float) -> str:
    """Where the ratio comes from, every number computed from the figures."""
    ns = [p["n"] for p in points]
    met = [f"{p['n']:,}" for p in points if p["goal_met"]]
    a_sisa = slope(ns, [p["sisa"]["wall_s"] for p in points])
    a_mono = slope(ns, [p["mono_wall_s"] for p in points])
    out = [
        f"The ratio goes from {points[0]['ratio']:.2f}× at N = {ns[0]:,} to "
        f"{points[-1]['ratio']:.2f}× at N = {ns[-1]:,} (ideal with {RAY_CPUS} workers: "
        f"{1 / RAY_CPUS:g}×); the goal (≤ {goal:g}×) is met at "
        + (f"N = {', '.join(met)}." if met else "no N.")
        + (
            f" Wall time grows as N^{a_sisa:.2f} for SISA and N^{a_mono:.2f} for the "
            "monolithic model (slopes on the log-log plot)."
            if a_sisa is not None and a_mono is not None
            else ""
        )
    ]
    for t in (str(t) for t in MONO_THREADS if t != 1):
        both = [p for p in points if t in p["mono"]]
        fs = [p["mono"][t]["wall_s"] / p["mono"]["1"]["wall_s"] for p in both]
        if fs:
            out.append(
                f"The monolithic model with {t} torch threads takes {min(fs):.2f}–"
                f"{max(fs):.2f}× the time of 1 thread (N ≤ {both[-1]['n']:,})"
                + (", so 1 thread is its best." if min(fs) > 1 else "; the faster is the baseline.")
            )
    p = points[-1]
    s, m = p["sisa"], p["mono"][str(p["mono_threads"])]
    ph, mph, wall = s["phases_s"], m["phases_s"], m["wall_s"]
    spread = s["jobs_s"] / RAY_CPUS
    outside = s["wall_s"] - spread
    out.append(
        f"At N = {p['n']:,}, SISA trains {s['samples']:,} samples against {m['samples']:,} "
        f"(×{p['samples_ratio']:.4f}) in {s['steps']:,} optimizer steps against "
        f"{m['steps']:,}. Its {SHARDS} shard jobs take {s['jobs_s']:.1f} s together, "
        f"{s['jobs_s'] / m['jobs_s']:.2f}× the monolithic job's {m['jobs_s']:.1f} s: "
        f"training {ph['train']:.1f} s (monolithic {mph['train']:.1f} s), writing "
        f"{SHARDS * SLICES} stage checkpoints {ph['checkpoint']:.1f} s (monolithic, 1: "
        f"{mph['checkpoint']:.2f} s), loading {ph['load']:.1f} s (monolithic "
        f"{mph['load']:.2f} s), purging {ph['purge']:.2f} s. Spread evenly over "
        f"{RAY_CPUS} workers that is {spread:.1f} s ({spread / wall:.2f}× the monolithic "
        "wall); "
        + (
            f"the remaining {outside:.1f} s ({outside / wall:.2f}×) is uneven finishing "
            f"(slowest job {s['slowest_job_s']:.1f} s), Ray scheduling and the driver's work "
            "outside the jobs (reading, splitting and writing the data: "
            f"{m['wall_s'] - m['jobs_s']:.1f} s on the monolithic side)."
            if outside >= 0
            else f"the SISA wall is {-outside:.1f} s less, so more than {RAY_CPUS} jobs ran at "
            "once and their wall times count shared CPU twice."
        )
    )
    if s["new_workers"] is not None and s["new_workers"] > 1:
        out.append(
            f"Ray started {s['new_workers']} worker processes during a SISA run at this N "
            f"beyond the {RAY_CPUS} warmed ones, where the progress queue's actor needs one. "
            "A task blocked in `ray.get` (each stage's progress report is one) lends its "
            "CPU to another task, and a fresh worker pays the trainer's start-up (importing "
            "torch's compiler stack for the determinism switches) inside its first job's "
            f"load phase: {ph['load']:.1f} s of load here against {mph['load']:.2f} s "
            "monolithic, and more than two jobs sharing the two CPUs."
        )
    out.append(
        f"Memory at N = {p['n']:,}: the SISA driver peaks at {s['driver_peak_mb']:.0f} MB "
        f"and a shard task at {s['task_peak_mb']:.0f} MB (workers are reused, so an upper "
        f"bound); the monolithic process, which also trains, at {m['driver_peak_mb']:.0f} MB."
    )
    return "\n\n".join(out)


def run(suite: str) -> Report:
    grid = GRIDS[suite]
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        paths = purchase(grid["n"], Path(tmp))
        sizes = zip(grid["n"], grid["repeats"], strict=True)
        points = [
            point(paths[n], n, grid["epochs"], r, threads(n, grid["threads_up_to"]))
            for n, r in sizes
        ]
    config = grid | {
        "shards": SHARDS,
        "slices": SLICES,
        "data": "synthetic-purchase, seed 0, first N points of one draw of the largest N",
        "model": "mlp (128,), sgd, batch 32: the config's defaults",
        "sisa": f"RayExecutor, local Ray with {RAY_CPUS} CPUs, 1 CPU and 1 thread per task",
        "mono_threads": list(MONO_THREADS),  # 2 only up to threads_up_to points
        "goal": GOAL,
        "load_average_at_start": round(load, 2),  # other work on the machine skews timings
    }
    ns = [p["n"] for p in points]
    figures = {
        "goal": GOAL,
        "points": points,
        "slope_sisa": slope(ns, [p["sisa"]["wall_s"] for p in points]),
        "slope_mono": slope(ns, [p["mono_wall_s"] for p in points]),
    }
    return Report(figures, markdown(figures, config), config, {"training-scaling": plot(points)})


def markdown(figures: dict[str, Any], config: dict[str, Any]) -> str:
    """The report of the figures, from them and the settings they were measured with."""
    points, goal, grid = figures["points"], figures["goal"], config
    return (
        "Wall time of training from scratch (`sisa.training.train.train`): SISA with "
        f"S = {SHARDS}, R = {SLICES}, one Ray task per shard on {RAY_CPUS} CPUs, against the "
        f"monolithic model (S = R = 1) in one process, at equal sample-epochs ({grid['epochs']:g} "
        "epochs, equal-cost schedule) on synthetic Purchase. Medians of "
        f"{'/'.join(map(str, grid['repeats']))} runs per N, each (mode, N) in a fresh process, "
        "Ray start-up excluded; mono is the faster of "
        f"{' and '.join(map(str, MONO_THREADS))} torch threads (2 measured up to N = "
        f"{grid['threads_up_to']:,}). Peaks are peak RSS. Load "
        f"average when the run started: {config['load_average_at_start']:.2f}.\n\n"
        "![training wall time against N](training-scaling.png)\n\n"
        + table(points, goal)
        + "\n\n"
        + reading(points, goal)
    )
