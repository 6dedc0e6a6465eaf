"""The plan of a batch of deletion requests: which shards restart where, and at what cost.

A plan is computed from the requests and the committed heads alone, and reads only. The
batch (``sisa.deletion.batch``) commits it as ``batches/b<Q>.json`` before it changes
anything, so a run that dies resumes the same plan; ``pending_plan`` is what the next
``process`` would run.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from sisa.data.partition import place
from sisa.deletion import receipts
from sisa.deletion.cost import (
    Calibration,
    calibration,
    full_retrain_samples,
    paper_batched_points,
    paper_request_cost,
    retrain_samples,
)
from sisa.ids import salted_hashes
from sisa.store.artifacts import Head, SisaStore, StorageOptions, open_store
from sisa.store.journal import Journal, Request
from sisa.store.layout import BATCH_NAME, BATCHES, TEST_PART, batch_path, part_prefix


@dataclass(frozen=True, kw_only=True)
class ShardPlan:
    shard: int
    generation: int  # of the head being replaced
    start_stage: int  # 1-based; stages before it are reused
    removed: int
    remaining: int
    samples: int  # exact samples the retrain will train on
    old_checkpoints: list[str]  # state hash of every stage of the replaced head
    old_dirs: list[str]  # artifacts of the replaced head (purged unless reused)


@dataclass(frozen=True, kw_only=True)
class BatchPlan:
    through: int  # Q: the newest request in the batch
    requests: list[str]
    seqs: list[int]
    shards: list[ShardPlan]
    test_removed: int
    samples: int  # predicted samples, summed over shards
    full_retrain_samples: int  # one monolithic model from scratch on what remains
    seconds_per_sample: float | None
    calibrated_from: str
    predicted_seconds: float | None
    paper: dict[str, float]  # the paper's expectations for this many requests
    # salted keys of the removed points' groups: the candidates for deleted groups
    groups: list[str] = field(default_factory=list)
    planned_at: float = field(default_factory=time.time)
    stages: int = 0  # stages the retrains write, summed over shards
    seconds_per_stage: float = 0.0  # the calibration's fixed costs (see sisa.deletion.cost)
    seconds_per_job: float = 0.0

    def to_body(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> BatchPlan:
        """Read a stored plan; fields this version does not know (a newer writer's
        estimates) are dropped, while a missing field without a default is an error."""
        shards = [ShardPlan(**_known(ShardPlan, s)) for s in body["shards"]]
        return cls(**(_known(cls, body) | {"shards": shards}))


def _known(kind: type, body: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(kind)}
    return {k: v for k, v in body.items() if k in names}


def removals(
    store: SisaStore, requests: list[Request]
) -> dict[int, tuple[Head, np.ndarray, dict[str, np.ndarray]]]:
    """Part -> (head, mask of rows to drop, ids/labels/groups) for parts the requests touch.

    By content: a row is dropped when its salted hash is in a request of the batch or in
    the tombstones. Parts with nothing left to drop are left out.
    """
    salt, hashes = store.salt(), {}
    touched = {part for r in requests for part in r.parts}
    for entry in store.tombstones().body["entries"]:
        if entry["part"] in touched:
            hashes.setdefault(entry["part"], set()).add(entry["hash"])
    for request in requests:
        for e in request.entries:
            hashes.setdefault(e.part, set()).add(e.hash)
    out = {}
    for part in sorted(touched):
        head = store.latest_head(part_prefix(part))
        if head is None:
            continue
        arrays = store.read_data(head.data, features=False)
        drop = np.array([h in hashes[part] for h in salted_hashes(salt, arrays["ids"])], bool)
        if drop.any():
            out[part] = (head, drop, arrays)
    return out


def _artifact_dirs(head: Head) -> list[str]:
    return [head.data.dir] + [s.dir for s in head.stages]


def store_calibration(store: SisaStore) -> Calibration:
    """Seconds per sample measured by the last batch that trained, else by training."""
    done = Journal(store).receipted()
    for seq in reversed(done[-64:]):  # a batch resumed after its training trained nothing
        actual = receipts.read(store, seq)["batch"]["actual"]
        if actual["samples"] > 0:
            return calibration(
                actual["samples"],
                actual["compute_seconds"],
                "last batch",
                phases=actual.get("phases"),
                stages=actual.get("stages", 0),
                jobs=actual.get("jobs", 0),
            )
    meta = store.meta() or {}
    return calibration(
        meta.get("train_samples", 0),
        meta.get("train_seconds", 0.0),
        "training",
        phases=meta.get("train_phases"),
        stages=meta.get("train_stages", 0),
        jobs=meta.get("train_jobs", 0),
    )


def plan_batch(store: SisaStore, requests: list[Request]) -> BatchPlan:
    """What processing these requests will do and cost; reads only."""
    config, salt = store.config(), store.salt()
    shards, test_removed, groups = [], 0, set()
    for part, (head, drop, arrays) in removals(store, requests).items():
        if "groups" in arrays:
            groups.update(salted_hashes(salt, arrays["groups"][drop]))
        if part == TEST_PART:
            test_removed = int(drop.sum())
            continue
        _, slice_of = place(config.sisa, arrays, store.placement_key())
        start = int(slice_of[drop].min()) + 1
        counts = np.bincount(slice_of[~drop], minlength=config.sisa.slices).tolist()
        shards.append(
            ShardPlan(
                shard=part,
                generation=head.generation,
                start_stage=start,
                removed=int(drop.sum()),
                remaining=int((~drop).sum()),
                samples=retrain_samples(config.sisa, counts, start),
                old_checkpoints=[s.state_hash for s in head.stages],
                old_dirs=_artifact_dirs(head),
            )
        )
    points = sum(store.shard_head(k).body["n"] for k in range(config.sisa.shards))
    remaining = points - sum(s.removed for s in shards)
    cal = store_calibration(store)
    samples = sum(s.samples for s in shards)
    cfg = config.sisa
    stages = sum(cfg.slices - s.start_stage + 1 for s in shards)
    return BatchPlan(
        through=max((r.seq for r in requests), default=0),
        requests=[r.id for r in requests],
        seqs=[r.seq for r in requests],
        shards=shards,
        test_removed=test_removed,
        samples=samples,
        full_retrain_samples=full_retrain_samples(cfg, remaining),
        seconds_per_sample=cal.seconds_per_sample,
        calibrated_from=cal.source,
        predicted_seconds=cal.seconds(samples, stages, len(shards)),
        paper={
            "request_samples": paper_request_cost(points, cfg.shards, cfg.slices, cfg.epochs),
            "touched_points": paper_batched_points(points, cfg.shards, len(requests)),
        },
        groups=sorted(groups),
        stages=stages,
        seconds_per_stage=cal.seconds_per_stage,
        seconds_per_job=cal.seconds_per_job,
    )


def unfinished_batch(store: SisaStore, journal: Journal) -> BatchPlan | None:
    """The plan of a batch that a crash cut short (some request without a receipt)."""
    planned = [int(m.group(1)) for n in store.names(BATCHES) if (m := BATCH_NAME.match(n))]
    if not planned:
        return None
    plan = BatchPlan.from_body(store.read_doc(batch_path(max(planned))))
    done = set(journal.receipted())
    return None if all(seq in done for seq in plan.seqs) else plan


def pending_plan(
    store: SisaStore | str, storage_options: StorageOptions = None
) -> BatchPlan | None:
    """The batch the next ``process`` will run (resumed or new), or None; reads only."""
    store = open_store(store, storage_options)
    store.require_trained()
    journal = Journal(store)
    plan = unfinished_batch(store, journal)
    if plan is not None:
        return plan
    requests = journal.open_requests()
    return plan_batch(store, requests) if requests else None
