"""Exact unlearning: forget points by ID (or by group) and retrain only what saw them.

The lifecycle of one ``forget`` call:

1. Validate everything first. Unknown IDs raise an error naming them and change nothing;
   IDs deleted earlier are reported as no-ops.
2. Record the deletion as tombstones: salted hashes of the IDs, each with the part (shard
   or test set) and that part's generation. From here the deletion is durable.
3. Apply every pending tombstone. A tombstone is pending while its part's head is still at
   the generation it names. For each such shard: write the data without the points as the
   next generation, then retrain from the earliest affected slice (reusing the checkpoint
   before it), commit the new head, and sweep: every checkpoint and data file that saw a
   deleted point is deleted. Many IDs in one shard retrain it once.

A crash anywhere after step 2 leaves pending tombstones; the next ``forget`` (or
``apply_pending``) completes them, because step 3 depends only on the store.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sisa.ids import ID, as_id_array, canonical_id, id_set_hash, salted_hash, salted_hashes
from sisa.jobs import Executor, ShardJob, ShardResult, run_jobs, run_shard_job
from sisa.partition import MISSING, TEST, Locator, place
from sisa.store import TEST as TEST_PREFIX
from sisa.store import Head, SisaStore, gen_dir, shard_prefix


class UnknownIDError(KeyError):
    """Some requested IDs (or a group) are not in the store and were never deleted."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class ForgetPlan:
    """What a request will do, decided before anything changes."""

    to_remove: dict[int, list[ID]]  # part (shard, or TEST) -> IDs found there
    slices: dict[int, list[int]]  # shard -> 0-based slice of each ID in to_remove
    already_deleted: list[ID]
    group_hash: str | None = None

    @property
    def start_stages(self) -> dict[int, int]:
        """Shard -> first stage to retrain (earliest affected slice, 1-based)."""
        return {shard: min(s) + 1 for shard, s in self.slices.items() if s}


@dataclass(frozen=True)
class ForgetReport:
    removed: list[ID]
    removed_from_test: list[ID]
    already_deleted: list[ID]
    shards: list[ShardResult] = field(default_factory=list)
    purged: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _heads(store: SisaStore, shards: int) -> dict[int, Head]:
    heads = {shard: store.shard_head(shard) for shard in range(shards)}
    test = store.latest_head(TEST_PREFIX)
    if test is not None:
        heads[TEST] = test
    return heads


def _part_ids(store: SisaStore, heads: dict[int, Head]) -> dict[int, dict[str, np.ndarray]]:
    return {part: store.read_data(h.data, features=False) for part, h in heads.items()}


def plan_forget(
    store: SisaStore, ids: list[object] | None = None, group: object | None = None
) -> ForgetPlan:
    """Resolve a request into the points to remove; raise on bad input, change nothing."""
    store.require_trained()
    config, salt = store.config(), store.salt()
    if (ids is None or len(ids) == 0) == (group is None):
        raise ValueError("give either IDs or one group to forget (not both, not neither)")
    heads = _heads(store, config.sisa.shards)
    parts = _part_ids(store, heads)
    tombs = store.tombstones().body
    group_hash = None
    if group is not None:
        group = canonical_id(group)
        group_hash = salted_hash(salt, group)
        if not any("groups" in a for a in parts.values()):
            raise ValueError("this store's data has no groups; forget by ID instead")
        query = np.concatenate(
            [a["ids"][a["groups"] == group] for a in parts.values() if "groups" in a]
        )
        if len(query) == 0:
            if group_hash in tombs["groups"]:
                return ForgetPlan({}, {}, [group], group_hash)
            raise UnknownIDError(f"unknown group: {group!r}")
    else:
        query = as_id_array([canonical_id(v) for v in ids])  # type: ignore[union-attr]
        values, counts = np.unique(query, return_counts=True)
        if (counts > 1).any():
            raise ValueError(f"duplicate IDs in request: {values[counts > 1].tolist()[:10]}")
    located = Locator({part: a["ids"] for part, a in parts.items()}).locate(query)
    missing = query[located.part == MISSING].tolist()
    deleted = set(tombs_hashes(tombs))
    already = [i for i in missing if salted_hash(salt, i) in deleted]
    unknown = [i for i in missing if salted_hash(salt, i) not in deleted]
    if unknown:
        shown = ", ".join(repr(i) for i in unknown[:20])
        more = f" and {len(unknown) - 20} more" if len(unknown) > 20 else ""
        raise UnknownIDError(f"unknown IDs (not in the store, never deleted): {shown}{more}")
    to_remove: dict[int, list[ID]] = {}
    slices: dict[int, list[int]] = {}
    for part in np.unique(located.part[located.part != MISSING]).tolist():
        rows = located.row[located.part == part]
        arrays = parts[part]
        to_remove[part] = arrays["ids"][rows].tolist()
        if part != TEST:
            _, slice_of = place(
                config.sisa,
                arrays["ids"][rows],
                arrays["y"][rows],
                arrays["groups"][rows] if "groups" in arrays else None,
            )
            slices[part] = slice_of.tolist()
    return ForgetPlan(to_remove, slices, already, group_hash)


def tombs_hashes(tombs: dict[str, Any]) -> list[str]:
    return [e["hash"] for e in tombs["entries"]]


def forget(
    url: str,
    ids: list[object] | None = None,
    *,
    group: object | None = None,
    storage_options: dict[str, Any] | None = None,
    executor: Executor | None = None,
) -> ForgetReport:
    """Forget points by ID, or every point of ``group``; return what was done."""
    started = time.perf_counter()
    store = SisaStore(url, storage_options)
    plan = plan_forget(store, ids, group)
    salt = store.salt()
    recorded = set(tombs_hashes(store.tombstones().body))  # by a call that crashed midway
    entries = []
    for part, part_ids in plan.to_remove.items():
        head = store.latest_head(TEST_PREFIX if part == TEST else shard_prefix(part))
        generation = head.generation if head is not None else -1
        for hashed in salted_hashes(salt, part_ids):
            if hashed not in recorded:
                entries.append({"hash": hashed, "part": part, "generation": generation})
    if entries:
        store.add_tombstones(entries, [plan.group_hash] if plan.group_hash else [])
    results, purged = apply_pending(store, executor)
    removed = [i for part, v in plan.to_remove.items() if part != TEST for i in v]
    return ForgetReport(
        removed=removed,
        removed_from_test=plan.to_remove.get(TEST, []),
        already_deleted=plan.already_deleted,
        shards=results,
        purged=purged + [p for r in results for p in r.purged],
        seconds=time.perf_counter() - started,
    )


def pending(store: SisaStore) -> dict[int, tuple[Head, np.ndarray]]:
    """Part -> (its head, a mask over its data rows that hold a tombstoned ID).

    Decided by content, not by generation numbers, so a tombstone written while another
    writer committed the same shard is still applied by the next call. Parts with nothing
    to remove are left out.
    """
    salt, by_part = store.salt(), {}
    for entry in store.tombstones().body["entries"]:
        by_part.setdefault(entry["part"], set()).add(entry["hash"])
    out: dict[int, tuple[Head, np.ndarray]] = {}
    for part, hashes in by_part.items():
        head = store.latest_head(TEST_PREFIX if part == TEST else shard_prefix(part))
        if head is None:
            continue
        ids = store.read_data(head.data, features=False)["ids"]
        drop = np.array([h in hashes for h in salted_hashes(salt, ids)], dtype=bool)
        if drop.any():
            out[part] = (head, drop)
    return out


def apply_pending(
    store: SisaStore, executor: Executor | None = None
) -> tuple[list[ShardResult], list[str]]:
    """Remove every pending tombstoned point and retrain the shards that held one.

    Starts with a sweep of every part, which completes a purge that a crash cut short.
    """
    config = store.config()
    jobs, purged = [], store.sweep_all()
    for part, (head, drop) in sorted(pending(store).items()):
        prefix = TEST_PREFIX if part == TEST else shard_prefix(part)
        arrays = store.read_data(head.data)  # the same verified artifact: rows line up
        kept = {k: v[~drop] for k, v in arrays.items()}
        rel = f"{gen_dir(prefix, head.generation + 1)}/data"
        ref = store.write_data(rel, kept, id_set_hash(kept["ids"]))
        if part == TEST:
            store.commit_head(
                prefix, head.generation + 1, {"data": ref, "n": int(len(kept["ids"]))}
            )
            purged += store.sweep(prefix)
            continue
        _, slice_of = place(
            config.sisa,
            arrays["ids"][drop],
            arrays["y"][drop],
            arrays["groups"][drop] if "groups" in arrays else None,
        )
        start = int(slice_of.min()) + 1
        base = head.stages[: start - 1]
        jobs.append(
            ShardJob(store.url, store.storage_options, part, head.generation + 1, start, ref, base)
        )
    units = sum(config.sisa.slices - j.start_stage + 1 for j in jobs)
    results = run_jobs(
        executor, run_shard_job, jobs, resources=config.resources, units=units, desc="retrain"
    )
    return results, purged
