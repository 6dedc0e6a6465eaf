"""Sharding and slicing by ID, and O(1) lookup of where an ID lives.

A point's shard and slice are a pure function of (seed, strategy, its own ID, and its
label, group or deletion risk). No quota, rank or count of other points enters, because
then removing one point could move another and the retrained shard would no longer equal
training from scratch. The price: shards and slices are balanced in expectation, not
exactly.

* ``uniform``: keyed hash of the ID.
* ``stratified``: keyed hash of the ID under a key of its class, so each class is spread
  over the shards independently of the others (class shares per shard match the global
  ones in expectation, whatever the class sizes).
* ``group``: keyed hash of the group key, for shard *and* slice. All points of one group
  (one person) live in one slice of one shard, so erasing a person retrains one shard from
  one slice.

Deletion-aware placement (``sisa.deletion_risk``, docs/sharding.md) composes with all
three: a point whose stored risk is at or above ``sisa.risk_threshold`` is *risky* and is
placed by the strategy's hash into a few reserved shards and, there, into the last slices;
every other point is placed by the same hash over the remaining shards and all slices. The
tier is a function of the point's own risk, so exactness is untouched.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from sisa.config import SisaConfig
from sisa.ids import as_id_array, bucket, fingerprints

STRATEGIES = ("uniform", "stratified", "group")


@dataclass(frozen=True)
class Tiers:
    """Where risky points go: shards [0, shards) and, there, the last ``slices`` slices."""

    threshold: float  # risk at or above it is risky
    shards: int  # reserved for risky points; the others take the remaining shards
    slices: int  # the last slices of a reserved shard that risky points fill


def risk_tiers(cfg: SisaConfig) -> Tiers | None:
    """The config's tiers, or None when placement ignores risk (``deletion_risk`` unset).

    With one shard, risky and other points share it (risky ones in its last slices).
    """
    if cfg.deletion_risk is None:
        return None
    reserved = max(1, math.floor(cfg.risky_shard_fraction * cfg.shards + 0.5))
    late = max(1, math.floor(cfg.risky_slice_fraction * cfg.slices + 0.5))
    shards = 1 if cfg.shards == 1 else min(cfg.shards - 1, reserved)
    return Tiers(cfg.risk_threshold, shards, min(cfg.slices, late))


def _spread(
    strategy: str,
    fps: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray | None,
    seed: int,
    shards: int,
    slices: int,
    tag: tuple[str, ...],
    secret: bytes | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(shard, slice) in [0, shards) x [0, slices) by the strategy's keyed hash. [n] -> [n], [n]."""
    s = {"secret": secret}
    if strategy == "uniform":
        return bucket(fps, shards, seed, "shard", *tag, **s), bucket(
            fps, slices, seed, "slice", *tag, **s
        )
    if strategy == "stratified":
        shard = np.empty(len(fps), dtype=np.int64)
        slice_ = np.empty(len(fps), dtype=np.int64)
        for label in np.unique(labels).tolist():
            rows = labels == label
            shard[rows] = bucket(fps[rows], shards, seed, "shard", "class", label, *tag, **s)
            slice_[rows] = bucket(fps[rows], slices, seed, "slice", "class", label, *tag, **s)
        return shard, slice_
    if strategy == "group":
        if groups is None:
            raise ValueError("sisa.sharding = 'group' needs data with groups (a 'group' column)")
        gfps = fingerprints(groups)
        return bucket(gfps, shards, seed, "shard", "group", *tag, **s), bucket(
            gfps, slices, seed, "slice", "group", *tag, **s
        )
    raise ValueError(f"sisa.sharding: unknown strategy {strategy!r}; use one of {STRATEGIES}")


def _check_group_tiers(groups: np.ndarray, risky: np.ndarray) -> None:
    """Group sharding keeps a group together only if all its points share a tier."""
    import pandas as pd

    mixed = pd.Series(risky).groupby(groups).nunique()
    split = mixed.index[mixed.to_numpy() > 1]
    if len(split):
        shown = ", ".join(repr(g) for g in split[:5].tolist())
        raise ValueError(
            "sisa.sharding = 'group' with sisa.deletion_risk: every point of a group must be "
            f"on the same side of sisa.risk_threshold; these groups are split: {shown}"
            + (f" ({len(split)} in all)" if len(split) > 5 else "")
        )


def assign(
    ids: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray | None,
    *,
    seed: int,
    strategy: str,
    shards: int,
    slices: int,
    risk: np.ndarray | None = None,
    tiers: Tiers | None = None,
    secret: bytes | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Return (shard, slice) per point, both [n] int64, slices 0-based.

    ``risk`` ([n] in [0, 1]) matters only with ``tiers``; without them every point is
    placed by the strategy over all shards and slices. With a ``secret`` (a store keyed
    by its key store: ``SisaStore.placement_key``) the hashes are keyed by it, so that the
    seed alone does not tell where an ID would be.
    """
    fps = fingerprints(ids)
    if tiers is None:
        return _spread(strategy, fps, labels, groups, seed, shards, slices, (), secret)
    if risk is None:
        raise ValueError(
            "sisa.deletion_risk is set but the data holds no risk values (a 'risk' column)"
        )
    risky = np.asarray(risk) >= tiers.threshold  # [n] bool
    if strategy == "group" and groups is not None:
        _check_group_tiers(groups, risky)
    shard = np.empty(len(fps), dtype=np.int64)
    slice_ = np.empty(len(fps), dtype=np.int64)
    first = tiers.shards if shards > tiers.shards else 0  # the other points' first shard
    layout = (  # rows, first shard, shards, first slice, slices, tag
        (~risky, first, shards - first, 0, slices, "safe"),
        (risky, 0, tiers.shards, slices - tiers.slices, tiers.slices, "risky"),
    )
    for rows, k0, k_count, r0, r_count, tag in layout:
        if not rows.any():
            continue
        sub = None if groups is None else groups[rows]
        k, r = _spread(
            strategy, fps[rows], labels[rows], sub, seed, k_count, r_count, ("tier", tag), secret
        )
        shard[rows], slice_[rows] = k + k0, r + r0
    return shard, slice_


def place(
    cfg: SisaConfig, arrays: Mapping[str, np.ndarray], secret: bytes | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``assign`` under a config, for data arrays as stored: ``ids``, ``y``, and optional
    ``groups`` and ``risk`` (other arrays, such as features, are ignored); ``secret`` is
    the store's placement key."""
    return assign(
        arrays["ids"],
        arrays["y"],
        arrays.get("groups"),
        seed=cfg.seed,
        strategy=cfg.sharding,
        shards=cfg.shards,
        slices=cfg.slices,
        risk=arrays.get("risk"),
        tiers=risk_tiers(cfg),
        secret=secret,
    )


@dataclass(frozen=True)
class Located:
    """Where each queried ID lives. ``part`` is a shard index, the test part (-1,
    ``sisa.store.layout.TEST_PART``) or ``MISSING``."""

    part: np.ndarray  # [q] int64
    row: np.ndarray  # [q] int64 row within that part, -1 when missing


MISSING = -2


class Locator:
    """Hash index from ID to (part, row): O(1) per lookup, vectorised, fine for millions.

    The hash index (pandas) is built by ``build``, or by the first lookup of more than
    ``SCAN_MAX`` IDs. A lookup of fewer before then, as a deletion request naming a few
    IDs, is one vectorised scan of the IDs instead: O(N), as building the index is, with
    the same answer, and a ``sisa forget`` does not import pandas (0.2 s and more).
    """

    SCAN_MAX = 64

    def __init__(self, parts: dict[int, np.ndarray]) -> None:
        keys = sorted(parts)
        ids = [as_id_array(parts[k]) for k in keys]
        non_empty = [a for a in ids if len(a)]
        self._int_ids = not non_empty or non_empty[0].dtype.kind in "iu"
        self._ids = np.concatenate(non_empty) if non_empty else np.array([], "int64")  # [N]
        self._index: Any = None  # pandas.Index of self._ids, once built
        self._part = np.concatenate(
            [np.full(len(a), k, dtype=np.int64) for k, a in zip(keys, ids, strict=True)]
            or [np.array([], np.int64)]
        )
        self._row = np.concatenate(
            [np.arange(len(a), dtype=np.int64) for a in ids] or [np.array([], np.int64)]
        )

    def build(self) -> Locator:
        """Build the hash index now (a no-op once built); returns the locator."""
        if self._index is None:
            import pandas as pd

            self._index = pd.Index(self._ids)
        return self

    def _scan(self, query: np.ndarray) -> np.ndarray:
        """Position of each ID of ``query`` in ``self._ids``, -1 where absent (IDs unique)."""
        at = np.flatnonzero(np.isin(self._ids, query))  # [hits] positions of queried IDs
        if not len(at):
            return np.full(len(query), -1, np.int64)
        order = np.argsort(self._ids[at], kind="stable")
        found, at = self._ids[at][order], at[order]  # [hits] sorted, with their positions
        pos = np.searchsorted(found, query).clip(0, len(found) - 1)  # [q]
        return np.where(found[pos] == query, at[pos], -1)

    def __len__(self) -> int:
        return len(self._ids)

    def locate(self, query: np.ndarray) -> Located:
        query = as_id_array(query)
        if len(query) == 0 or (query.dtype.kind in "iu") != self._int_ids:
            pos = np.full(len(query), -1, dtype=np.int64)  # an int ID never matches a str ID
        elif self._index is None and len(query) <= self.SCAN_MAX:
            pos = self._scan(query)
        else:
            pos = self.build()._index.get_indexer(query)
        found = pos >= 0
        if not found.any():
            none = np.full(len(query), -1, np.int64)
            return Located(part=np.full(len(query), MISSING, np.int64), row=none)
        safe = np.where(found, pos, 0)
        part = np.where(found, self._part[safe], MISSING)
        row = np.where(found, self._row[safe], -1)
        return Located(part=part.astype(np.int64), row=row.astype(np.int64))
