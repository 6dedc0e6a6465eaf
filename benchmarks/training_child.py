"""One measurement of the training benchmark, in a fresh child process.

``benchmarks.training`` starts ``python -m benchmarks.training_child --child SPEC`` for
every (mode, N): its peak RSS is then the driver's own for that measurement, and a SISA
run gets a Ray instance of its own, started and warmed (both workers import the trainer
and set torch up) before the clock starts, as the monolithic process is. ``train_once``
times ``sisa.training.train.train`` end to end and reads what the shard jobs say of it.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import child_main

SHARDS, SLICES, RAY_CPUS = 20, 10, 2
OBJECT_STORE_BYTES = 200 << 20
PURCHASE_CLASSES = 100


def warm() -> int:
    """A worker's one-off start-up (import the trainer; the determinism switches import
    torch's compiler stack), holding the CPU a moment so that both workers get one."""
    from sisa.training.trainer import configure

    configure(1)
    time.sleep(0.5)
    return os.getpid()


def workers_started() -> int | None:
    """Worker processes this Ray instance has started so far (one log file each), or None
    where Ray's layout is not the expected one."""
    try:
        from ray._private.worker import _global_node

        return len(list(Path(_global_node.get_logs_dir_path()).glob("python-core-worker-*.log")))
    except Exception:
        return None


def train_once(config: Any, executor: Any, sisa: bool) -> dict[str, Any]:
    """Train a store from scratch once, timed; what the shard jobs say of it."""
    from sisa.training.jobs import PHASES
    from sisa.training.train import train

    tmp = tempfile.mkdtemp(prefix="sisa-training-")
    before = workers_started() if sisa else None
    try:
        started = time.perf_counter()
        report = train(config, str(Path(tmp) / "store"), executor=executor)
        wall = time.perf_counter() - started
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    after = workers_started() if sisa else None
    shards = report.shards
    return {
        "wall_s": wall,
        "jobs_s": sum(r.seconds for r in shards),
        "slowest_job_s": max(r.seconds for r in shards),
        "phases_s": {p: sum(r.phases[p] for r in shards) for p in PHASES},
        "samples": sum(r.samples for r in shards),
        "steps": sum(r.head.stages[-1].step for r in shards),
        "n_train": report.n_train,
        "task_peak_bytes": max(r.peak_rss_bytes for r in shards),
        "new_workers": None if before is None or after is None else after - before,
    }


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """One mode on one N in this fresh process: ``repeats`` rounds, each training once per
    thread count (interleaved, so drift in the machine's load hits them alike). ``spec``:
    mode (sisa or mono), data (a file), epochs, threads, repeats."""
    from orchestrator.executors import InProcessExecutor, RayExecutor
    from sisa.config import build_config
    from sisa.training.jobs import peak_rss_bytes
    from sisa.training.trainer import configure

    sisa = spec["mode"] == "sisa"
    configs = {
        t: build_config(
            {},
            {
                "data.source": spec["data"],
                "data.num_classes": PURCHASE_CLASSES,  # a prefix may lack the top label
                "sisa.shards": SHARDS if sisa else 1,
                "sisa.slices": SLICES if sisa else 1,
                "sisa.epochs": spec["epochs"],
                "resources.threads": t,
            },
        )
        for t in spec["threads"]
    }
    configure(spec["threads"][0])  # torch's one-off start-up, before any clock
    executor: Any = InProcessExecutor(progress=False)
    if sisa:
        import ray

        ray.init(
            num_cpus=RAY_CPUS,
            object_store_memory=OBJECT_STORE_BYTES,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
        ray.get([ray.remote(warm).remote() for _ in range(RAY_CPUS)])
        executor = RayExecutor(progress=False)
    runs: dict[str, list[dict[str, Any]]] = {str(t): [] for t in configs}
    try:
        for _ in range(spec["repeats"]):
            for t, config in configs.items():
                runs[str(t)].append(train_once(config, executor, sisa))
    finally:
        if sisa:
            ray.shutdown()
    return {"runs": runs, "driver_peak_bytes": peak_rss_bytes()}


if __name__ == "__main__":
    sys.exit(child_main(child, "one training measurement (internal)"))
