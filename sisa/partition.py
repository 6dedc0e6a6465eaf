"""Sharding and slicing by ID, and O(1) lookup of where an ID lives.

A point's shard and slice are a pure function of (seed, strategy, its own ID, and its
label or group). No quota, rank or count of other points enters, because then removing one
point could move another and the retrained shard would no longer equal training from
scratch. The price: shards and slices are balanced in expectation, not exactly.

* ``uniform``: keyed hash of the ID.
* ``stratified``: keyed hash of the ID under a key of its class, so each class is spread
  over the shards independently of the others (class shares per shard match the global
  ones in expectation, whatever the class sizes).
* ``group``: keyed hash of the group key, for shard *and* slice. All points of one group
  (one person) live in one slice of one shard, so erasing a person retrains one shard from
  one slice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from sisa.config import SisaConfig
from sisa.ids import as_id_array, bucket, fingerprints

STRATEGIES = ("uniform", "stratified", "group")


def assign(
    ids: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray | None,
    *,
    seed: int,
    strategy: str,
    shards: int,
    slices: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Return (shard, slice) per point, both [n] int64, slices 0-based."""
    if strategy == "uniform":
        fps = fingerprints(ids)
        return bucket(fps, shards, seed, "shard"), bucket(fps, slices, seed, "slice")
    if strategy == "stratified":
        fps = fingerprints(ids)
        shard = np.empty(len(fps), dtype=np.int64)
        slice_ = np.empty(len(fps), dtype=np.int64)
        for label in np.unique(labels).tolist():
            rows = labels == label
            shard[rows] = bucket(fps[rows], shards, seed, "shard", "class", label)
            slice_[rows] = bucket(fps[rows], slices, seed, "slice", "class", label)
        return shard, slice_
    if strategy == "group":
        if groups is None:
            raise ValueError("sisa.sharding = 'group' needs data with groups (a 'group' column)")
        gfps = fingerprints(groups)
        return bucket(gfps, shards, seed, "shard", "group"), bucket(
            gfps, slices, seed, "slice", "group"
        )
    raise ValueError(f"sisa.sharding: unknown strategy {strategy!r}; use one of {STRATEGIES}")


def place(
    cfg: SisaConfig, ids: np.ndarray, labels: np.ndarray, groups: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """``assign`` under a config's seed, strategy, shard and slice counts."""
    return assign(
        ids,
        labels,
        groups,
        seed=cfg.seed,
        strategy=cfg.sharding,
        shards=cfg.shards,
        slices=cfg.slices,
    )


@dataclass(frozen=True)
class Located:
    """Where each queried ID lives. ``part`` is a shard index, ``TEST`` or ``MISSING``."""

    part: np.ndarray  # [q] int64
    row: np.ndarray  # [q] int64 row within that part, -1 when missing


TEST = -1
MISSING = -2


class Locator:
    """Hash index from ID to (part, row): O(1) per lookup, vectorised, fine for millions."""

    def __init__(self, parts: dict[int, np.ndarray]) -> None:
        keys = sorted(parts)
        ids = [as_id_array(parts[k]) for k in keys]
        non_empty = [a for a in ids if len(a)]
        self._int_ids = not non_empty or non_empty[0].dtype.kind in "iu"
        self._index = pd.Index(np.concatenate(non_empty) if non_empty else np.array([], "int64"))
        self._part = np.concatenate(
            [np.full(len(a), k, dtype=np.int64) for k, a in zip(keys, ids, strict=True)]
            or [np.array([], np.int64)]
        )
        self._row = np.concatenate(
            [np.arange(len(a), dtype=np.int64) for a in ids] or [np.array([], np.int64)]
        )

    def __len__(self) -> int:
        return len(self._index)

    def locate(self, query: np.ndarray) -> Located:
        query = as_id_array(query)
        if len(query) == 0 or (query.dtype.kind in "iu") != self._int_ids:
            pos = np.full(len(query), -1, dtype=np.int64)  # an int ID never matches a str ID
        else:
            pos = self._index.get_indexer(query)
        found = pos >= 0
        if not found.any():
            none = np.full(len(query), -1, np.int64)
            return Located(part=np.full(len(query), MISSING, np.int64), row=none)
        safe = np.where(found, pos, 0)
        part = np.where(found, self._part[safe], MISSING)
        row = np.where(found, self._row[safe], -1)
        return Located(part=part.astype(np.int64), row=row.astype(np.int64))
