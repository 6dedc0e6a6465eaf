"""Millions of points: training and a deletion at N = 1M, with the driver's memory bounded.

The dataset never passes through the driver. The ingest job (a Ray task here) generates
synthetic Purchase chunk by chunk and writes each shard's part to the store; every shard
task reads its own part back. So the driver's peak RSS is its imports, Ray's client and
a few bytes per point of index, not the N x 600 bytes of features. Goal: ≤ 500 MB.

Everything runs in a fresh child process (``python -m benchmarks.scale --child``,
``benchmarks.common.run_child``), so that its peak RSS (``VmHWM``)
is the driver's own: Python, torch, Ray, then ``train``, one deletion (``forget``: the
request, the lookup of the ID's shard and slice, the retrain, the purge), and ``verify``
of the retrained shard, bitwise against a retrain from scratch.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import child_main, run_child
from benchmarks.report import Report, markdown_table

GRIDS: dict[str, dict[str, Any]] = {
    "quick": {"n": 20_000, "shards": 4, "slices": 3, "epochs": 1.0},
    "full": {"n": 1_000_000, "shards": 20, "slices": 5, "epochs": 2.0},
}
RAY_CPUS = 2
GOAL_MB = 500
MB = 1 << 20
FEATURES = 600  # bytes per point of synthetic Purchase (one uint8 per item)


def rss_mb() -> tuple[float, float]:
    """(current, peak) resident memory of this process, in MB."""
    found = {}
    with open("/proc/self/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(value.split()[0]) / 1024  # kB -> MB
    return found["VmRSS"], found["VmHWM"]


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """Train, forget one point and verify its shard, in this fresh process."""
    import numpy as np
    import ray

    from orchestrator.executors import RayExecutor
    from sisa.config import build_config
    from sisa.deletion.accept import forget
    from sisa.evidence.verify import verify
    from sisa.training.train import train

    out: dict[str, Any] = {"rss_imports_mb": rss_mb()[0]}
    ray.init(
        num_cpus=RAY_CPUS,
        object_store_memory=200 * MB,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
    )
    try:
        out["rss_ray_mb"] = rss_mb()[0]
        executor = RayExecutor(progress=False)
        config = build_config(
            {},
            {
                "data.source": "synthetic-purchase",
                "data.n": spec["n"],
                "sisa.shards": spec["shards"],
                "sisa.slices": spec["slices"],
                "sisa.epochs": spec["epochs"],
            },
        )
        url = str(Path(spec["store"]) / "store")
        started = time.perf_counter()
        report = train(config, url, executor=executor)
        out["train_s"] = time.perf_counter() - started
        out["n_train"], out["n_test"] = report.n_train, report.n_test
        out["train_jobs_s"] = sum(r.seconds for r in report.shards)
        out["task_peak_mb"] = max(r.peak_rss_bytes for r in report.shards) / MB
        out["rss_after_train_mb"], out["peak_after_train_mb"] = rss_mb()

        victim = int(np.random.default_rng(spec["n"]).integers(spec["n"]))
        started = time.perf_counter()
        forgot = forget(url, [victim], executor=executor)
        out["forget_s"] = time.perf_counter() - started
        out["forgot"] = {
            "id": victim,
            "from_test": bool(forgot.removed_from_test),
            "shards": [r.shard for r in forgot.shards],
            "stages_retrained": sum(len(r.trained) for r in forgot.shards),
            "samples_retrained": sum(r.samples for r in forgot.shards),
        }
        shard = forgot.shards[0].shard if forgot.shards else 0
        started = time.perf_counter()
        out["verified_shard"] = shard
        out["verified"] = verify(url, shard, executor=executor).identical
        out["verify_s"] = time.perf_counter() - started
        out["rss_end_mb"], out["driver_peak_mb"] = rss_mb()
        return out
    finally:
        ray.shutdown()


def measure(grid: dict[str, Any]) -> dict[str, Any]:
    """Run ``child`` in a fresh process that joins no Ray cluster of ours."""
    with tempfile.TemporaryDirectory() as tmp:
        return run_child("benchmarks.scale", grid | {"store": tmp}, "scale")


def markdown(grid: dict[str, Any], f: dict[str, Any]) -> str:
    data_mb = grid["n"] * FEATURES / MB
    forgot = f["forgot"]
    where = (
        "a held-out point: no shard retrains"
        if forgot["from_test"]
        else f"shard {forgot['shards']}, {forgot['stages_retrained']} stage(s), "
        f"{forgot['samples_retrained']:,} samples retrained"
    )
    rows = [
        ("points N (train / test)", f"{grid['n']:,} ({f['n_train']:,} / {f['n_test']:,})"),
        ("features if held at once", f"{data_mb:,.0f} MB"),
        ("train, end to end", f"{f['train_s']:.1f} s (shard jobs {f['train_jobs_s']:.1f} s)"),
        ("forget one ID (request, lookup, retrain, purge)", f"{f['forget_s']:.2f} s: {where}"),
        (
            "verify the retrained shard",
            f"{f['verify_s']:.1f} s: " + ("bitwise identical" if f["verified"] else "DIFFERENT"),
        ),
        ("driver RSS after imports / Ray", f"{f['rss_imports_mb']:.0f} / {f['rss_ray_mb']:.0f} MB"),
        (
            "driver peak RSS (whole run)",
            f"{f['driver_peak_mb']:.0f} MB "
            f"({'meets' if f['driver_peak_mb'] <= GOAL_MB else 'misses'} the ≤ {GOAL_MB} MB goal)",
        ),
        ("shard task peak RSS", f"{f['task_peak_mb']:.0f} MB"),
    ]
    table = "\n".join(markdown_table(["", ""], rows))
    grown = f["driver_peak_mb"] - f["rss_ray_mb"]
    return (
        f"Synthetic Purchase, N = {grid['n']:,}, S = {grid['shards']}, R = {grid['slices']}, "
        f"{grid['epochs']:g} epochs, on a local Ray instance with {RAY_CPUS} CPUs; the store on "
        "local disk. The driver is a fresh process; its figures are its own.\n\n"
        + table
        + "\n\n"
        + f"Beyond its imports and Ray's client, the driver grew by {grown:.0f} MB over the "
        f"whole run, {grown / data_mb:.2f}× the {data_mb:,.0f} MB the features would take in "
        "memory: the features went from the ingest task to the store and from the store to "
        "the shard tasks, never through the driver. What it does hold is the index of IDs "
        "a deletion request is looked up in."
    )


def run(suite: str) -> Report:
    grid = GRIDS[suite]
    load = os.getloadavg()[0]
    figures = measure(grid)
    figures["goal_mb"] = GOAL_MB
    figures["goal_met"] = figures["driver_peak_mb"] <= GOAL_MB
    config = grid | {
        "ray_cpus": RAY_CPUS,
        "data": "synthetic-purchase, seed 0",
        "load_average_at_start": round(load, 2),  # other work on the machine skews timings
    }
    return Report(figures, markdown(grid, figures), config)


if __name__ == "__main__":  # the child process of ``measure``
    sys.exit(child_main(child, "the N = 1M measurement (internal)"))
