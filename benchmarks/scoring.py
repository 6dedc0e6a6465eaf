"""Offline scoring: rows/s of ``sisa predict --executor ray`` (Ray Data, a pool of actors
holding the ensemble, Parquet out) on N = 1,000,000 rows, against the in-process loop.

In the full suite only: it starts a Ray cluster of its own. The store is the serving
benchmark's synthetic Purchase (N = 20,000, S = 20, R = 10; 600 binary features, 100
classes). The rows to score are 1,000,000 more synthetic Purchase points, kept as uint8
in an .npz. In process: ``Ensemble.predict_proba`` over the same rows in 4,096-row
batches, the size the Ray actors score. On Ray: a local cluster of 2 CPUs, one actor (the
other CPU reads and writes), from reading the .npz to the last Parquet file written.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import load_average
from benchmarks.report import Report, markdown_table, times
from benchmarks.serving import PURCHASE
from benchmarks.stores import train_store
from orchestrator.scoring import BATCH_ROWS, score_on_ray
from sisa.data.loaders import synthetic_purchase
from sisa.serving.ensemble import Ensemble
from sisa.store.artifacts import SisaStore

SUITES = ("full",)
ROWS = 1_000_000


def run(suite: str) -> Report:
    import ray

    before = load_average()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        url, train_s = train_store(root, "purchase", PURCHASE)
        rows = synthetic_purchase(ROWS, seed=1)  # uint8 [1M, 600]
        source = root / "rows.npz"
        np.savez(source, ids=rows.ids, X=rows.X)
        ensemble = Ensemble.load(SisaStore(url))
        started = time.perf_counter()
        for start in range(0, ROWS, BATCH_ROWS):
            ensemble.predict_proba(rows.X[start : start + BATCH_ROWS])
        in_process_s = time.perf_counter() - started
        print(f"[scoring] in process: {ROWS / in_process_s:,.0f} rows/s", flush=True)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        try:
            started = time.perf_counter()
            scored = score_on_ray(url, None, str(source), str(root / "scored"))
            ray_s = time.perf_counter() - started
        finally:
            ray.shutdown()
        assert scored == ROWS
        print(f"[scoring] on Ray Data: {ROWS / ray_s:,.0f} rows/s", flush=True)
    figures: dict[str, Any] = {
        "store": PURCHASE | {"train_s": train_s},
        "rows": ROWS,
        "batch": BATCH_ROWS,
        "in_process_s": in_process_s,
        "ray_s": ray_s,
        "in_process_rows_per_s": ROWS / in_process_s,
        "ray_rows_per_s": ROWS / ray_s,
        "ratio": in_process_s / ray_s,
        "load_average": {"before": before, "after": load_average()},
    }
    return Report(figures, markdown(figures), {"suite": suite})


def markdown(f: dict[str, Any]) -> str:
    table = markdown_table(
        ("1,000,000 rows", "seconds", "rows/s", "of in process"),
        [
            ["`Ensemble.predict_proba`, in process, 4,096-row batches",
             f"{f['in_process_s']:.1f}", f"{f['in_process_rows_per_s']:,.0f}", "1.00x"],
            ["`sisa predict --executor ray` (read .npz, score, write Parquet)",
             f"{f['ray_s']:.1f}", f"{f['ray_rows_per_s']:,.0f}", times(f["ratio"])],
        ],
    )  # fmt: skip
    lb, la = f["load_average"]["before"][0], f["load_average"]["after"][0]
    return "\n\n".join(
        [
            "Synthetic Purchase: a store of N = 20,000, S = 20, R = 10, scoring 1,000,000 "
            "more points (600 binary features as uint8) on a local Ray cluster of 2 CPUs with "
            f"one scoring actor. 1-minute load average {lb:.2f} at the start, {la:.2f} at the "
            "end.",
            "\n".join(table),
            "The Ray figure includes Ray Data's start, reading the .npz into the object store "
            "and writing the Parquet files; on more nodes, more actors score at once.",
        ]
    )
