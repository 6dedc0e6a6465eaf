"""Processing deletion requests in batches: plan, retrain, commit, purge, receipt.

One process at a time works on a store (``storage.Lease``). A batch takes every open
request up to the newest, ``Q``, and:

1. **plans**: each touched shard restarts once, from the earliest slice any request
   touches; the plan (with the predicted cost) is committed as ``batches/b<Q>.json``
   before anything changes, with the hashes of every checkpoint it will replace;
2. **retrains**: writes each shard's data without the points as a new generation and runs
   one job per shard that reuses the stages before its start, trains the rest and commits
   the head with ``journal_seq = Q`` (the head applied every request up to Q);
3. **switches serving** to the new heads;
4. **purges**: deletes every artifact the new heads do not reference (old data, replaced
   checkpoints, old heads) and records the deleted hashes as tombstones;
5. **writes receipts**, one per request in order, chained by hash. A receipt is the proof
   that its request is purged.

Which rows to remove is decided by content (the salted hash of every ID in a touched
part), so the steps are idempotent. A process that dies anywhere leaves the batch's plan
behind; the next one sweeps what the crash left, resumes that same batch (its requests
only, whatever arrived since), and ends bitwise where an uninterrupted run would.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from sisa.data.partition import TEST, place
from sisa.deletion import compliance, receipts
from sisa.deletion.cost import (
    Calibration,
    calibration,
    calibration_totals,
    full_retrain_samples,
    paper_batched_points,
    paper_request_cost,
    retrain_samples,
)
from sisa.faults import crash_point
from sisa.ids import salted_hashes
from sisa.store.artifacts import BATCHES, PROCESS_LOCK, Head, SisaStore, shard_prefix
from sisa.store.artifacts import TEST as TEST_PREFIX
from sisa.store.journal import Journal, Request
from sisa.store.tombstones import emptied_groups
from sisa.training.factories import check_factory
from sisa.training.jobs import (
    Executor,
    ShardJob,
    ShardResult,
    TestDataJob,
    run_jobs,
    run_shard_job,
    run_test_data_job,
)
from storage import DocumentExistsError, Lease, read_doc, write_doc

LOCK = PROCESS_LOCK


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


@dataclass(frozen=True, kw_only=True)
class BatchReport:
    plan: BatchPlan
    results: list[ShardResult]
    receipts: list[dict[str, Any]]
    purged: list[str]
    samples: int  # trained by this run (less than planned when resuming)
    compute_seconds: float  # summed over shard jobs
    seconds: float  # wall time of this run
    resumed: bool  # it finished a batch that an earlier run started
    # ... whose process died (it left its lease behind); else that run stopped on an error
    after_crash: bool = False


def batch_path(through: int) -> str:
    return f"{BATCHES}/b{through:09d}.json"


def _prefix(part: int) -> str:
    return TEST_PREFIX if part == TEST else shard_prefix(part)


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
        head = store.latest_head(_prefix(part))
        if head is None:
            continue
        arrays = store.read_data(head.data, features=False)
        drop = np.array([h in hashes[part] for h in salted_hashes(salt, arrays["ids"])], bool)
        if drop.any():
            out[part] = (head, drop, arrays)
    return out


def _artifact_dirs(head: Head) -> list[str]:
    return [head.data["dir"]] + [s["dir"] for s in head.stages]


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
        if part == TEST:
            test_removed = int(drop.sum())
            continue
        _, slice_of = place(config.sisa, arrays)
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
                old_checkpoints=[s["state_hash"] for s in head.stages],
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
    names = sorted(n for n in store.fs.listdir(BATCHES) if n.startswith("b"))
    if not names:
        return None
    plan = BatchPlan.from_body(read_doc(store.fs, f"{BATCHES}/{names[-1]}"))
    done = set(journal.receipted())
    return None if all(seq in done for seq in plan.seqs) else plan


def pending_plan(store: SisaStore) -> BatchPlan | None:
    """The batch the next ``process`` will run (resumed or new), or None; reads only."""
    store.require_trained()
    journal = Journal(store)
    plan = unfinished_batch(store, journal)
    if plan is not None:
        return plan
    requests = journal.open_requests()
    return plan_batch(store, requests) if requests else None


def process(
    url: str,
    storage_options: dict[str, Any] | None = None,
    *,
    executor: Executor | None = None,
    wait: float = 0.0,
) -> BatchReport | None:
    """Run one batch of pending requests; None when there is nothing to do.

    Waits up to ``wait`` seconds for another process holding the store's lease.
    """
    store = SisaStore(url, storage_options)
    store.require_trained()
    config = store.config()
    check_factory(config.model)  # a batch that cannot train must not start (plan, lease)
    lease = Lease(store.fs, LOCK, config.deletion.lease_s)
    with lease.acquire(wait):
        crash_point("process-locked")
        return _run(store, executor, after_crash=lease.broke is not None)


def _run(store: SisaStore, executor: Executor | None, after_crash: bool) -> BatchReport | None:
    started = time.perf_counter()
    purged = store.sweep_all()  # finish a purge that a crash cut short
    journal = Journal(store)
    plan = unfinished_batch(store, journal)
    resumed = plan is not None
    if plan is None:
        requests = journal.open_requests()
        if not requests:
            return None
        plan = plan_batch(store, requests)
        try:
            write_doc(store.fs, batch_path(plan.through), plan.to_body())
        except DocumentExistsError:  # written by a run that died before its receipts
            plan = BatchPlan.from_body(read_doc(store.fs, batch_path(plan.through)))
        crash_point("after-plan")
    requests = [journal.read(seq) for seq in plan.seqs]
    results = _retrain(store, requests, plan.through, executor)
    crash_point("after-retrain")
    _advance_heads(store, requests, plan.through)
    state = compliance.refresh(store)
    crash_point("after-serving")
    # The batch started by sweeping every part; since then only the parts it touched got
    # new heads, so only theirs can hold files no head references.
    for part in sorted({p for r in requests for p in r.parts}):
        purged += store.sweep(_prefix(part))
    purged += [p for r in results for p in r.purged]
    _tombstone(store, requests, set(plan.groups))
    crash_point("after-tombstones")
    samples = sum(r.samples for r in results)
    actual = {
        "samples": samples,
        "compute_seconds": sum(r.seconds for r in results),
        **calibration_totals(results),
        "wall_seconds": time.perf_counter() - started,
        "resumed": resumed,
    }
    written = []
    for request in requests:
        if receipts.exists(store, request.seq):
            continue
        written.append(receipts.append(store, receipts.build(store, request, plan, state, actual)))
        crash_point("after-receipt")
    return BatchReport(
        plan=plan,
        results=results,
        receipts=written,
        purged=purged,
        samples=samples,
        compute_seconds=actual["compute_seconds"],
        seconds=time.perf_counter() - started,
        resumed=resumed,
        after_crash=resumed and after_crash,
    )


def _retrain(
    store: SisaStore, requests: list[Request], through: int, executor: Executor | None
) -> list[ShardResult]:
    """New data generation per touched part; one retrain job per touched shard."""
    config = store.config()
    jobs = []
    for part, (head, drop, small) in removals(store, requests).items():
        rows = tuple(np.flatnonzero(drop).tolist())  # the job derives the kept data itself
        if part == TEST:
            args = (store.url, store.storage_options, head.generation + 1, head.data, rows)
            test = TestDataJob(*args, head_extra={"journal_seq": through})
            resources = config.resources.for_data()
            run_jobs(executor, run_test_data_job, [test], resources=resources, units=0, desc="")
            continue
        _, slice_of = place(config.sisa, {k: v[drop] for k, v in small.items()})
        start = int(slice_of.min()) + 1
        jobs.append(
            ShardJob(
                store.url,
                store.storage_options,
                part,
                head.generation + 1,
                start,
                head.data,
                head.stages[: start - 1],
                head_extra={"journal_seq": through},
                drop_rows=rows,
            )
        )
    units = sum(config.sisa.slices - j.start_stage + 1 for j in jobs)
    return run_jobs(
        executor, run_shard_job, jobs, resources=config.resources, units=units, desc="retrain"
    )


def _advance_heads(store: SisaStore, requests: list[Request], through: int) -> None:
    """Mark parts a request touched but whose points were already gone as applied.

    Happens when two requests raced to delete the same point: the second finds nothing to
    remove, yet its part's head must say it applied the request, or serving would hold
    the shard back for ever. The new generation reuses every artifact of the old one.
    """
    for part in sorted({p for r in requests for p in r.parts}):
        prefix = _prefix(part)
        head = store.latest_head(prefix)
        if head is None or int(head.body.get("journal_seq", 0)) >= through:
            continue
        body = {k: v for k, v in head.body.items() if k != "generation"}
        extra = {"journal_seq": through, "committed_at": time.time()}
        store.commit_head(prefix, head.generation + 1, body | extra)


def _tombstone(store: SisaStore, requests: list[Request], candidates: set[str]) -> None:
    """Record the batch's hashes for good (idempotent), before any receipt says purged.

    ``candidates`` are the salted group keys of the removed points. Of those, only the
    groups with no point left anywhere in the store are deleted groups (``sisa.store.tombstones``):
    a group whose points were all deleted by ID is then known as deleted, and forgetting it
    later is a no-op, while a group that lost some of its points keeps the rest live.
    """
    current = store.tombstones().body
    known = {e["hash"] for e in current["entries"]}
    entries = []
    for r in requests:  # a point is tombstoned once, by the first request that named it
        for e in r.entries:
            if e.hash not in known:
                known.add(e.hash)
                entries.append({"hash": e.hash, "part": e.part, "request": r.seq})
    tombstoned = set(current["groups"])
    groups = emptied_groups(store, candidates - tombstoned)
    groups |= {r.group for r in requests if r.group}
    if entries or groups - tombstoned:
        store.add_tombstones(entries, sorted(groups))
