"""GPU: exact unlearning on CUDA, and shard tasks packed onto one GPU.

In the full suite only (``SUITES``), and only where torch sees a CUDA device: elsewhere
``run`` raises ``BenchmarkUnavailable`` before doing anything, and the harness writes
nothing for it and exits non-zero. CI has no GPU; its test checks the rest on the CPU.

1. Exactness: synthetic Purchase (N = 20,000, S = 8, R = 4) is trained on cuda twice in
   this process and every stage's weights are compared bitwise; then one point per shard
   is forgotten and ``verify`` retrains every shard from scratch on cuda and compares
   bitwise. The environment fingerprint (GPU, compute capability, CUDA, cuDNN, driver)
   is recorded with the figures: bitwise equality is promised within it.
2. Packing: the same training through ``RayExecutor`` on a local Ray instance with one
   GPU and every CPU, with ``resources.num_gpus`` of 1, 0.5, 0.25 and 0.125 (up to 1, 2,
   4 and 8 shard tasks on the GPU at once). Wall time of ``train`` end to end, shards
   per second, speedup against ``num_gpus = 1``, the device's peak memory in use (all
   processes, polled), and whether every stage equals the in-process training bitwise.
   Each GPU task runs in a fresh worker process (its CUDA start-up is in the times).

Budget: about 3 minutes on one H100 with 16 CPUs (estimated; it was written without a
GPU at hand, so its first run is also its test). One run per packing: GPU time is scarce.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.datasets import DataCache
from benchmarks.report import BenchmarkUnavailable, Report, markdown_table, times
from benchmarks.stores import training_layout
from orchestrator.executors import InProcessExecutor, RayExecutor
from sisa.config import Config, build_config
from sisa.deletion.accept import forget
from sisa.evidence.verify import verify
from sisa.store.artifacts import SisaStore
from sisa.training.environment import configure, environment_differences
from sisa.training.train import train

SUITES = ("full",)
SIZES: dict[str, Any] = {
    "n": 20_000,
    "shards": 8,
    "slices": 4,
    "epochs": 20.0,
    "hidden": [128],
    "batch_size": 32,
    "packings": [1.0, 0.5, 0.25, 0.125],
}
MIB = 1 << 20


def require_cuda() -> None:
    """Raise ``BenchmarkUnavailable`` unless torch sees a CUDA device."""
    if not torch.cuda.is_available():
        built = f"CUDA {torch.version.cuda}" if torch.version.cuda else "without CUDA"
        raise BenchmarkUnavailable(
            f"gpu: no CUDA device here (torch {torch.__version__}, built {built}); "
            "run it on a machine with an NVIDIA GPU"
        )


def config(data: dict[str, Any], num_gpus: float = 0.0) -> Config:
    return build_config(
        {},
        data
        | {
            "sisa.shards": SIZES["shards"],
            "sisa.slices": SIZES["slices"],
            "sisa.epochs": SIZES["epochs"],
            "model.hidden": SIZES["hidden"],
            "optim.batch_size": SIZES["batch_size"],
            "resources.device": "cuda",
            "resources.num_gpus": num_gpus,
        },
    )


def stage_weights(url: str) -> list[list[str]]:
    """sha256 of every stage's weights, per shard."""
    store = SisaStore(url)
    shards = store.config().sisa.shards
    return [[r.weights_sha256 for r in store.shard_head(k).stages] for k in range(shards)]


def stage_fingerprints(url: str) -> list[dict[str, Any]]:
    store = SisaStore(url)
    shards = store.config().sisa.shards
    return [r.fingerprint for k in range(shards) for r in store.shard_head(k).stages]


def one_id_per_shard(url: str, seed: int = 0) -> list[int]:
    """A random training ID of each shard (so every shard retrains, from varying slices)."""
    layout, rng = training_layout(url), np.random.default_rng(seed)
    ids = []
    for k in range(SisaStore(url).config().sisa.shards):
        held = layout.ids[layout.shard == k]  # [n_k]
        ids.append(int(held[rng.integers(len(held))]))
    return ids


class MemoryPeak:
    """Polls the device's memory in use (every process on it) in a thread."""

    def __init__(self, interval_s: float = 0.05) -> None:
        self.interval_s, self.peak, self._stop = interval_s, 0, threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            free, total = torch.cuda.mem_get_info()
            self.peak = max(self.peak, total - free)
            self._stop.wait(self.interval_s)

    def __enter__(self) -> MemoryPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def exactness(root: Path, data: dict[str, Any]) -> dict[str, Any]:
    cfg, quiet = config(data), InProcessExecutor(progress=False)
    started = time.perf_counter()
    train(cfg, str(root / "a"), executor=quiet)
    train_s = time.perf_counter() - started
    train(cfg, str(root / "b"), executor=quiet)
    twice = stage_weights(str(root / "a")) == stage_weights(str(root / "b"))
    victims = one_id_per_shard(str(root / "a"))
    started = time.perf_counter()
    forget(str(root / "a"), victims, executor=quiet)
    forget_s = time.perf_counter() - started
    started = time.perf_counter()
    report = verify(str(root / "a"), executor=quiet)
    return {
        "trained_twice_identical": twice,
        "forgotten": len(victims),
        "verified_identical": report.identical,
        "same_environment": report.same_environment,
        "train_s": train_s,
        "forget_s": forget_s,
        "verify_s": time.perf_counter() - started,
        "fingerprint": report.fingerprint,
    }


def packing(root: Path, data: dict[str, Any], reference: str) -> list[dict[str, Any]]:
    executor = RayExecutor(
        progress=False,
        init_kwargs={"num_cpus": os.cpu_count(), "num_gpus": 1, "object_store_memory": 1 << 30},
    )
    expected, fingerprint = stage_weights(reference), stage_fingerprints(reference)[0]
    runs = []
    for num_gpus in SIZES["packings"]:
        cfg = config(data, num_gpus)
        executor.check(cfg.resources)  # Ray starts here, before the clock
        torch.cuda.empty_cache()
        url = str(root / f"ray-{num_gpus:g}")
        with MemoryPeak() as memory:
            started = time.perf_counter()
            report = train(cfg, url, executor=executor)
            seconds = time.perf_counter() - started
        differences = {
            d for f in stage_fingerprints(url) for d in environment_differences(fingerprint, f)
        }
        runs.append(
            {
                "num_gpus": num_gpus,
                "at_once": min(int(1 / num_gpus), SIZES["shards"]),
                "seconds": seconds,
                "task_seconds": [r.seconds for r in report.shards],
                "peak_gpu_mib": memory.peak / MIB,
                "identical": stage_weights(url) == expected,
                "environment_differences": sorted(differences),
            }
        )
    return runs


def figures(exact: dict[str, Any], runs: list[dict[str, Any]], shards: int) -> dict[str, Any]:
    """The figures of both parts: each packing's throughput and speedup over num_gpus=1."""
    base = next(r for r in runs if r["num_gpus"] == 1.0)
    packed = [
        r
        | {
            "shards_per_s": shards / r["seconds"],
            "speedup": base["seconds"] / r["seconds"],
            "mean_task_s": sum(r["task_seconds"]) / len(r["task_seconds"]),
        }
        for r in runs
    ]
    return {
        "exactness": exact,
        "packing": packed,
        "all_identical": exact["trained_twice_identical"]
        and exact["verified_identical"]
        and all(r["identical"] and not r["environment_differences"] for r in runs),
    }


def yes(flag: bool) -> str:
    return "yes" if flag else "**NO**"


PACKING = (
    "resources.num_gpus", "tasks at once", "wall (s)", "shards/s", "speedup vs 1",
    "mean task (s)", "peak GPU memory (MiB)", "bitwise equal to in-process",
)  # fmt: skip


def render(f: dict[str, Any], sizes: dict[str, Any]) -> str:
    e, fp = f["exactness"], f["exactness"]["fingerprint"]
    checks = [
        (
            "trained twice in one process: every stage's weights bitwise equal",
            yes(e["trained_twice_identical"]),
        ),
        (
            f"after forgetting {e['forgotten']} points (one per shard), `verify` against "
            "training from scratch on cuda",
            yes(e["verified_identical"]),
        ),
        (
            "every stage trained in the environment that verified it",
            yes(e["same_environment"]),
        ),
    ]
    packing = (
        [
            f"{r['num_gpus']:g}",
            str(r["at_once"]),
            f"{r['seconds']:.1f}",
            f"{r['shards_per_s']:.2f}",
            times(r["speedup"]),
            f"{r['mean_task_s']:.1f}",
            f"{r['peak_gpu_mib']:,.0f}",
            yes(r["identical"] and not r["environment_differences"]),
        ]
        for r in f["packing"]
    )
    lines = [
        f"Synthetic Purchase, N = {sizes['n']:,}, S = {sizes['shards']}, R = {sizes['slices']}, "
        f"e = {sizes['epochs']:g}, MLP {sizes['hidden']}, batch {sizes['batch_size']}, on "
        f"{fp.get('gpu')} (compute capability {fp.get('capability')}, CUDA {fp.get('cuda')}, "
        f"cuDNN {fp.get('cudnn')}, driver {fp.get('driver')}, torch {fp.get('torch')}).",
        "",
        "## Exactness on CUDA",
        "",
        *markdown_table(("check", "result"), checks, "ll"),
        "",
        f"Training took {e['train_s']:.1f} s in process, forgetting {e['forget_s']:.1f} s, "
        f"verifying {e['verify_s']:.1f} s.",
        "",
        "## Shard tasks packed on one GPU (RayExecutor)",
        "",
        *markdown_table(PACKING, packing, "rrrrrrrl"),
    ]
    best = max(f["packing"], key=lambda r: r["speedup"])
    lines += [
        "",
        f"Packing {best['at_once']} shard tasks on the GPU (num_gpus = {best['num_gpus']:g}) "
        f"trains {best['speedup']:.2f}x as fast as one at a time. Wall time is `train` end to "
        "end (splitting and writing the data, then the tasks); each task runs in a fresh "
        "worker process, whose CUDA start-up is part of its time. Peak memory is the "
        "device's, every process included (each CUDA context holds some). One run each.",
        "",
        "Every result above is bitwise equal: "
        + ("**yes**." if f["all_identical"] else "**NO**, see the rows marked NO."),
    ]
    for r in f["packing"]:
        if r["environment_differences"]:
            lines.append(f"- num_gpus {r['num_gpus']:g}: {'; '.join(r['environment_differences'])}")
    return "\n".join(lines)


def run(suite: str) -> Report:
    require_cuda()
    configure(1, "cuda")  # before this process does any CUDA work
    with tempfile.TemporaryDirectory(prefix="sisa-gpu-") as tmp:
        root = Path(tmp)
        data = DataCache(root).overrides(
            {"data.source": "synthetic-purchase", "data.n": SIZES["n"]}
        )
        exact = exactness(root, data)
        runs = packing(root, data, str(root / "b"))
    f = figures(exact, runs, SIZES["shards"])
    return Report(f, render(f, SIZES), dict(SIZES))
