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
from dataclasses import dataclass
from typing import Any

import numpy as np

from sisa.data.partition import place
from sisa.deletion import batch_log, compliance, receipts
from sisa.deletion.plan import BatchPlan, plan_batch, removals, unfinished_batch
from sisa.faults import crash_point
from sisa.store.artifacts import SisaStore, StorageOptions, open_store
from sisa.store.fencing import holding
from sisa.store.journal import Journal, Request
from sisa.store.layout import PROCESS_LOCK, TEST_PART, part_prefix
from sisa.store.tombstones import add_tombstones, emptied_groups
from sisa.training.factories import check_factory
from sisa.training.jobs import (
    Executor,
    ShardJob,
    ShardResult,
    TestDataJob,
    calibration_totals,
    run_jobs,
    run_shard_job,
    run_test_data_job,
)


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


def process(
    store: SisaStore | str,
    storage_options: StorageOptions = None,
    *,
    executor: Executor | None = None,
    wait: float = 0.0,
) -> BatchReport | None:
    """Run one batch of pending requests; None when there is nothing to do.

    Waits up to ``wait`` seconds for another process holding the store's lease.
    """
    store = open_store(store, storage_options)
    store.require_trained()
    config = store.config()
    check_factory(config.model)  # a batch that cannot train must not start (plan, lease)
    if not _pending(store):  # an idle poll leaves no trace, not even a lease record
        return None
    remote = executor is not None and getattr(executor, "remote", True)
    lease = store.lease(PROCESS_LOCK, config.deletion.lease_s, remote=remote)
    with holding(store, lease, wait):  # every commit from here on is fenced by its token
        crash_point("process-locked")
        return _run(store, executor, lease.token, after_crash=lease.broke is not None)


def _pending(store: SisaStore) -> bool:
    """Whether a batch has work: open requests, or one that a crash cut short (whose
    leftovers its resumption sweeps; see ``batch_log`` for the files of a cut commit)."""
    journal = Journal(store)
    return unfinished_batch(store, journal) is not None or bool(journal.open_requests())


def _run(
    store: SisaStore, executor: Executor | None, fence: int | None, after_crash: bool
) -> BatchReport | None:
    started = time.perf_counter()
    purged = store.sweep_all()  # finish a purge that a crash cut short
    batch_log.copy_out(store, receipts=False)  # the plan's file, if a crash cut it short
    journal = Journal(store)
    plan = unfinished_batch(store, journal)
    resumed = plan is not None
    if plan is None:
        requests = journal.open_requests()
        if not requests:
            return None
        plan = BatchPlan.from_body(
            batch_log.commit_plan(store, plan_batch(store, requests).to_body())
        )
        crash_point("after-plan")
    requests = [journal.read(seq) for seq in plan.seqs]
    results = _retrain(store, requests, plan.through, executor, fence)
    crash_point("after-retrain")
    _advance_heads(store, requests, plan.through)
    state = compliance.refresh(store)
    crash_point("after-serving")
    # The batch started by sweeping every part; since then only the parts it touched got
    # new heads, so only theirs can hold files no head references.
    for part in sorted({p for r in requests for p in r.parts}):
        purged += store.sweep(part_prefix(part))
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
    if batch_log.committed_receipts(store, plan.through) is None:
        done = set(journal.receipted())
        bodies = [
            receipts.build(store, r, plan, state, actual) for r in requests if r.seq not in done
        ]
        batch_log.commit_receipts(store, plan.to_body(), receipts.link(store, bodies))
    written = batch_log.copy_out(store)
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
    store: SisaStore,
    requests: list[Request],
    through: int,
    executor: Executor | None,
    fence: int | None,
) -> list[ShardResult]:
    """New data generation per touched part; one retrain job per touched shard."""
    config = store.config()
    jobs = []
    for part, (head, drop, small) in removals(store, requests).items():
        rows = tuple(np.flatnonzero(drop).tolist())  # the job derives the kept data itself
        if part == TEST_PART:
            test = TestDataJob(
                url=store.url,
                storage_options=store.storage_options,
                generation=head.generation + 1,
                data=head.data,
                drop_rows=rows,
                head_extra={"journal_seq": through},
                fence=fence,
            )
            resources = config.resources.for_data()
            run_jobs(executor, run_test_data_job, [test], resources=resources, units=0, desc="")
            continue
        kept = {k: v[drop] for k, v in small.items()}
        _, slice_of = place(config.sisa, kept, store.placement_key())
        start = int(slice_of.min()) + 1
        jobs.append(
            ShardJob(
                url=store.url,
                storage_options=store.storage_options,
                shard=part,
                generation=head.generation + 1,
                start_stage=start,
                data=head.data,
                base=head.stages[: start - 1],
                head_extra={"journal_seq": through},
                drop_rows=rows,
                fence=fence,
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
        prefix = part_prefix(part)
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
        add_tombstones(store, entries, sorted(groups))
