"""Offline scoring across a Ray cluster (``sisa predict --executor ray``).

Ray Data reads the source in blocks: a Parquet file or folder by the store's column
mapping, or an .npz (``X``, optional ``ids``). A pool of actors, each holding the
ensemble once, scores the blocks, and each block's predictions are written as one Parquet
file of the output folder: the ID when known, the predicted class index, its original
label value, its score and every class's score (``orchestrator.io.predictions_frame``).
A row's prediction depends on that row alone, so the blocks can go anywhere.

The actors load the store's model factories under this process's trust
(``executors.with_trust``), and an encrypted store's key-encryption key from
``storage.kek_file`` (or the nodes' environment), as shard tasks do.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from orchestrator.executors import with_trust
from orchestrator.io import frame_features, predictions_frame

BATCH_ROWS = 4096  # rows per scored batch


class _Scorer:
    """One actor: the ensemble, loaded once, scoring batch after batch."""

    def __init__(self, url: str, options: dict[str, Any] | None, kind: str) -> None:
        from sisa.serving.ensemble import Ensemble
        from sisa.store.artifacts import SisaStore

        store = SisaStore(url, options)
        self.data, self.kind = store.config().data, kind
        self.ensemble = Ensemble.load(store)

    def __call__(self, batch: Any) -> pd.DataFrame:
        if self.kind == "npz":
            ids, X = batch.get("ids"), batch["X"]  # [n], [n, *f]
        else:
            ids, X = frame_features(batch, self.data, "the input")
        scores = self.ensemble.predict_proba(X)  # [n, C]
        return predictions_frame(ids, scores, self.ensemble.class_names)


def _dataset(source: str) -> tuple[Any, str]:
    import pyarrow as pa
    import ray
    from ray.data.extensions import ArrowTensorArray

    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"{source}: no such input file or folder")
    if path.suffix.lower() == ".npz":
        with np.load(path, allow_pickle=False) as npz:
            if "X" not in npz.files:
                raise ValueError(f"{source}: .npz input needs an array named X")
            columns = {"X": ArrowTensorArray.from_numpy(npz["X"])}
            if "ids" in npz.files:
                columns = {"ids": pa.array(npz["ids"])} | columns
        return ray.data.from_arrow(pa.table(columns)), "npz"
    if path.suffix.lower() == ".parquet" or path.is_dir():
        return ray.data.read_parquet(os.fspath(path)), "parquet"
    raise ValueError(f"{source}: use .npz or Parquet (a file or a folder) with --executor ray")


def score_on_ray(
    url: str,
    storage_options: dict[str, Any] | None,
    source: str,
    output: str,
    *,
    address: str | None = None,
    actors: int | None = None,
) -> int:
    """Score ``source`` with the store's ensemble on Ray; write Parquet files into the
    folder ``output``; return the number of rows scored."""
    import ray

    if Path(output).exists() and any(Path(output).iterdir()):
        raise FileExistsError(f"{output}: the output folder exists and is not empty")
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    dataset, kind = _dataset(source)
    # one CPU left to the reads and the writes: actors holding every CPU would starve them
    workers = actors or max(1, int(ray.available_resources().get("CPU", 1)) - 1)
    scored = dataset.map_batches(
        _Scorer,
        fn_constructor_args=(url, storage_options, kind),
        batch_size=BATCH_ROWS,
        batch_format="numpy" if kind == "npz" else "pandas",
        concurrency=workers,
        num_cpus=1,
        **with_trust({}),
    )
    scored.write_parquet(output)
    return _rows(output)


def _rows(folder: str) -> int:
    import pyarrow.parquet as pq

    return sum(pq.read_metadata(f).num_rows for f in Path(folder).glob("*.parquet"))
