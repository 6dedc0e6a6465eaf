"""The stores the benchmarks measure in: where they train, fresh copies of them, and where
each training point lives (its shard and 0-based slice), read back from the store."""

from __future__ import annotations

import itertools
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.executors import InProcessExecutor, RayExecutor
from sisa.config import build_config
from sisa.data.partition import place
from sisa.store.artifacts import SisaStore
from sisa.training.train import train

QUIET = InProcessExecutor(progress=False)  # shard jobs in this process, no progress bars
COPIES = itertools.count()  # every copy of a store gets a path of its own


def store_executor(ray: bool) -> Any:
    """Where a benchmark trains the stores it measures in (not timed there): in this
    process, or on a local Ray instance of 2 CPUs that ``run`` shuts down afterwards."""
    if not ray:
        return InProcessExecutor(progress=False)
    return RayExecutor(
        progress=False, init_kwargs={"num_cpus": 2, "object_store_memory": 300 << 20}
    )


def train_store(root: Path, name: str, overrides: dict[str, Any]) -> tuple[str, float]:
    """A store trained in this process from the embedded defaults and ``overrides``, at
    ``root / name``: its URL, and the seconds training took."""
    url = str(root / name)
    started = time.perf_counter()
    train(build_config({}, overrides), url, executor=QUIET)
    return url, time.perf_counter() - started


def copy_store(url: str, root: Path, name: str) -> str:
    """A fresh copy of a trained store (paths in a store are relative).

    Every copy gets a path of its own: ``sisa.store.journal`` caches request documents per
    process by (URL, salt, number), and copies share the salt.
    """
    dest = str(root / f"{name}-{next(COPIES)}")
    shutil.copytree(url, dest)
    return dest


@dataclass(frozen=True)
class Layout:
    """Every training point of a store, shard after shard: [n] each."""

    ids: np.ndarray
    shard: np.ndarray
    slice: np.ndarray  # 0-based
    columns: dict[str, np.ndarray] = field(default_factory=dict)  # asked-for data columns


def training_layout(url: str, columns: Sequence[str] = ()) -> Layout:
    """Where the store's training points live, read from each shard's current data (no
    features), with the data ``columns`` asked for (such as ``risk``)."""
    store = SisaStore(url)
    cfg = store.config().sisa
    parts = [store.read_data(store.shard_head(k).data, features=False) for k in range(cfg.shards)]
    return Layout(
        np.concatenate([p["ids"] for p in parts]),
        np.concatenate([np.full(len(p["ids"]), k) for k, p in enumerate(parts)]),
        np.concatenate([place(cfg, p, store.placement_key())[1] for p in parts]),
        {c: np.concatenate([p[c] for p in parts]) for c in columns},
    )
