"""Forgetting points by ID (or by group): validate, journal, comply, then retrain.

The lifecycle of a request (docs/design.md, "Deletion service"):

1. **Validate** (``plan_forget``). Unknown IDs raise an error naming them, as do empty
   requests, duplicates and unknown groups; nothing is written. IDs deleted or requested
   earlier are reported as no-ops.
2. **Journal** (``accept``). The request is committed to the journal as salted hashes with
   each point's shard and slice; only then is its request ID handed out.
3. **Comply** (``accept``). The serving state is rewritten at once: every shard the request
   touches serves its checkpoint from before the earliest touched slice, or leaves the
   aggregate when that slice is the first (``sisa.deletion.compliance``).
4. **Plan, retrain, purge, receipt** (``sisa.deletion.batch.process``), later and batched with
   whatever else is pending. ``forget`` does all of it in one call.

A crash after step 2 loses nothing: the request is in the journal, and the next
``process`` completes it.
"""

from __future__ import annotations

import re
import time
import unicodedata
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sisa.data.partition import MISSING, Locator, place
from sisa.deletion import compliance
from sisa.deletion.batch import BatchReport, process
from sisa.faults import crash_point
from sisa.ids import ID, as_id_array, canonical_id, id_candidates, salted_hash
from sisa.store.artifacts import Head, SisaStore, StorageOptions, open_store
from sisa.store.journal import Entry, Journal, Request, covering_requests, deleted_or_requested
from sisa.store.layout import TEST_PART, TEST_PREFIX
from sisa.training.factories import check_factory
from sisa.training.jobs import Executor, ShardResult
from storage import LeaseHeldError, StorageError


class UnknownIDError(KeyError):
    """Some requested IDs (or a group) are not in the store and were never deleted."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True, kw_only=True)
class ForgetPlan:
    """What a request will do, decided before anything changes."""

    to_remove: dict[int, list[ID]]  # part (shard, or TEST_PART) -> IDs found there
    slices: dict[int, list[int]]  # shard -> 0-based slice of each ID in to_remove
    already_deleted: list[ID]
    group_hash: str | None = None
    # where the store's live IDs are, and every deleted or requested hash (for reasons)
    locator: Locator | None = field(default=None, repr=False, compare=False)
    deleted: frozenset[str] = field(default=frozenset(), repr=False, compare=False)
    journal_seen: int = 0  # every request up to this number was checked against

    @property
    def start_stages(self) -> dict[int, int]:
        """Shard -> first stage to retrain (earliest affected slice, 1-based)."""
        return {shard: min(s) + 1 for shard, s in self.slices.items() if s}


@dataclass(frozen=True, kw_only=True)
class Acceptance:
    """The answer to a request: its ID once journaled, and what it will remove."""

    request_id: str | None  # None when every point was deleted or requested before
    removed: list[ID]  # training points the request removes
    removed_from_test: list[ID]
    already_deleted: list[ID]  # no-ops: deleted, or pending in an earlier request
    start_stages: dict[int, int]  # shard -> first stage its retrain will train
    compliance_seconds: float  # from the journal commit to the serving state's commit
    rolled_back: list[int]  # shards this request holds back (earlier checkpoint, or left out)
    earlier_requests: list[str] = field(default_factory=list)  # that cover the no-ops


@dataclass(frozen=True, kw_only=True)
class ForgetReport:
    request_id: str | None
    removed: list[ID]
    removed_from_test: list[ID]
    already_deleted: list[ID]
    shards: list[ShardResult] = field(default_factory=list)
    purged: list[str] = field(default_factory=list)
    seconds: float = 0.0
    receipt: dict[str, Any] | None = None


def _heads(store: SisaStore, shards: int) -> dict[int, Head]:
    heads = {shard: store.shard_head(shard) for shard in range(shards)}
    test = store.latest_head(TEST_PREFIX)
    if test is not None:
        heads[TEST_PART] = test
    return heads


def _part_ids(
    store: SisaStore, shards: int
) -> tuple[dict[int, Head], dict[int, dict[str, np.ndarray]]]:
    """The heads and the IDs of each part's data. A batch committing meanwhile may purge
    the data a head we just read names; then the heads moved on, and we read them again.
    (Points never change shard or slice, so a plan from any generation is as good.)"""
    for attempt in range(100):
        try:
            heads = _heads(store, shards)  # a head listed, then purged as a newer one landed
        except (StorageError, FileNotFoundError):
            if attempt == 99:
                raise
            continue
        try:
            return heads, {p: store.read_data(h.data, features=False) for p, h in heads.items()}
        except (StorageError, FileNotFoundError):
            now = _heads(store, shards)
            if [h.generation for h in now.values()] == [h.generation for h in heads.values()]:
                raise  # not a purge under us: the store is damaged
    raise AssertionError("unreachable")


def plan_forget(
    store: SisaStore | str,
    ids: list[object] | None = None,
    group: object | None = None,
    *,
    storage_options: StorageOptions = None,
) -> ForgetPlan:
    """Resolve a request into the points to remove; raise on bad input, change nothing."""
    store = open_store(store, storage_options)
    store.require_trained()
    config, salt = store.config(), store.salt()
    if (ids is None or len(ids) == 0) == (group is None):
        raise ValueError("give either IDs or one group to forget (not both, not neither)")
    heads, parts = _part_ids(store, config.sisa.shards)
    seen = max(Journal(store).seqs(), default=0)  # listed first: ``deleted`` covers these
    deleted, deleted_groups = deleted_or_requested(store)
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
            if group_hash in deleted_groups:
                return ForgetPlan(
                    to_remove={},
                    slices={},
                    already_deleted=[group],
                    group_hash=group_hash,
                    deleted=frozenset(deleted),
                    journal_seen=seen,
                )
            raise UnknownIDError(f"unknown group: {group!r}")
    else:
        query = as_id_array([canonical_id(v) for v in ids])  # type: ignore[union-attr]
        values, counts = np.unique(query, return_counts=True)
        if (counts > 1).any():
            raise ValueError(f"duplicate IDs in request: {values[counts > 1].tolist()[:10]}")
    locator = Locator({part: a["ids"] for part, a in parts.items()})
    located = locator.locate(query)
    hashes = [salted_hash(salt, i) for i in query.tolist()]
    pending = np.array([h in deleted for h in hashes], dtype=bool)
    missing = (located.part == MISSING) & ~pending
    if missing.any():
        unknown = query[missing].tolist()
        shown = ", ".join(repr(i) for i in unknown[:20])
        more = f" and {len(unknown) - 20} more" if len(unknown) > 20 else ""
        raise UnknownIDError(f"unknown IDs (not in the store, never deleted): {shown}{more}")
    already = query[pending].tolist()
    if group is not None and not (~pending).any():
        already = [group]
    to_remove: dict[int, list[ID]] = {}
    slices: dict[int, list[int]] = {}
    live = ~pending
    for part in np.unique(located.part[live]).tolist():
        rows = located.row[live & (located.part == part)]
        arrays = parts[part]
        to_remove[part] = arrays["ids"][rows].tolist()
        if part != TEST_PART:
            subset = {k: v[rows] for k, v in arrays.items()}
            _, slice_of = place(config.sisa, subset, store.placement_key())
            slices[part] = slice_of.tolist()
    return ForgetPlan(
        to_remove=to_remove,
        slices=slices,
        already_deleted=already,
        group_hash=group_hash,
        locator=locator,
        deleted=frozenset(deleted),
        journal_seen=seen,
    )


MAX_REASON = 1000


def check_reason(
    reason: str | None, plan: ForgetPlan, group: object | None, salt: bytes, id_kind: str
) -> None:
    """A reason is kept for good (in the receipt), so it may not name any ID of the store:
    not one being forgotten, not one forgotten before, and not one that may be later."""
    if reason is None:
        return
    if not isinstance(reason, str) or len(reason) > MAX_REASON:
        raise ValueError(f"reason must be text of at most {MAX_REASON} characters")
    if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in reason):
        raise ValueError("reason must be one line of printable text")
    named = {str(i) for v in plan.to_remove.values() for i in v}
    named |= {str(i) for i in plan.already_deleted}
    if group is not None:
        named.add(str(group))
    candidates = [c for c in id_candidates(reason) if isinstance(c, int) == (id_kind == "int")]
    live = False
    if plan.locator is not None and candidates:
        live = bool((plan.locator.locate(as_id_array(candidates)).part != MISSING).any())
    gone = any(salted_hash(salt, c) in plan.deleted for c in candidates)
    mentioned = any(re.search(rf"(?<![^\W_]){re.escape(v)}(?![^\W_])", reason) for v in named)
    if live or gone or mentioned:
        raise ValueError(
            "reason names an ID of this store; receipts outlive the data, so the reason "
            "must not hold IDs (use a ticket number that is not an ID)"
        )


def accept(
    store: SisaStore | str,
    ids: list[object] | None = None,
    *,
    group: object | None = None,
    reason: str | None = None,
    storage_options: StorageOptions = None,
) -> Acceptance:
    """Validate, journal and comply: when this returns, predictions no longer use the points.

    Retraining happens later, in ``sisa.deletion.batch.process`` (or ``forget``).
    """
    store = open_store(store, storage_options)
    plan = plan_forget(store, ids, group)
    check_reason(reason, plan, group, store.salt(), (store.intent() or {}).get("id_kind", "int"))
    salt = store.salt()
    points: dict[str, tuple[int, ID]] = {}  # salted hash -> (part, ID), as the entries
    entries = []
    for part, v in sorted(plan.to_remove.items()):
        slices = plan.slices[part] if part != TEST_PART else [None] * len(v)
        for point, slice_ in zip(v, slices, strict=True):
            entries.append(Entry(salted_hash(salt, point), part, slice_))
            points[entries[-1].hash] = (part, point)
    request: Request | None = None
    if entries:
        crash_point("before-journal")
        journal = Journal(store)
        request = journal.append(entries, plan.group_hash, reason, seen_through=plan.journal_seen)
    journaled = time.perf_counter()
    kept = {e.hash for e in request.entries} if request is not None else set()
    raced = [point for h, (_, point) in points.items() if h not in kept]  # a racer has them
    already = plan.already_deleted + raced
    if group is not None and request is None and raced:
        already = [group]
    earlier = []
    if already:
        hashes = {salted_hash(salt, i) for i in plan.already_deleted} | (points.keys() - kept)
        if group is not None and request is None:
            hashes.add(plan.group_hash)
        earlier = covering_requests(store, hashes)
    if request is None:
        return Acceptance(
            request_id=None,
            removed=[],
            removed_from_test=[],
            already_deleted=already,
            start_stages={},
            compliance_seconds=0.0,
            rolled_back=[],
            earlier_requests=earlier,
        )
    removed = [p for h, (part, p) in points.items() if h in kept and part != TEST_PART]
    from_test = [p for h, (part, p) in points.items() if h in kept and part == TEST_PART]
    slices = {
        part: [e.slice for e in request.entries if e.part == part and e.slice is not None]
        for part in plan.slices
    }
    crash_point("after-journal")
    state = compliance.refresh(store)
    compliant = time.perf_counter() - journaled
    crash_point("after-compliance")
    return Acceptance(
        request_id=request.id,
        removed=removed,
        removed_from_test=from_test,
        already_deleted=already,
        start_stages={shard: min(s) + 1 for shard, s in slices.items() if s},
        compliance_seconds=compliant,
        rolled_back=[s.shard for s in state.shards.values() if request.seq in s.pending],
        earlier_requests=earlier,
    )


def wait_purged(
    store: SisaStore | str,
    request_id: str,
    executor: Executor | None = None,
    timeout: float | None = None,
    poll: float = 0.2,
    *,
    storage_options: StorageOptions = None,
) -> list[BatchReport]:
    """Process (or wait for the process that holds the store) until the request is purged."""
    from sisa.deletion import receipts

    store = open_store(store, storage_options)
    seq = Journal(store).find(request_id).seq
    deadline = None if timeout is None else time.monotonic() + timeout
    reports = []
    while not receipts.exists(store, seq):
        try:
            report = process(store, executor=executor)
            if report is not None:
                reports.append(report)
            continue
        except LeaseHeldError:
            pass  # a service is processing; its batch will include this request
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"request {request_id} is not purged after {timeout}s")
        time.sleep(poll)
    return reports


def forget(
    store: SisaStore | str,
    ids: list[object] | None = None,
    *,
    group: object | None = None,
    reason: str | None = None,
    storage_options: StorageOptions = None,
    executor: Executor | None = None,
) -> ForgetReport:
    """Forget points by ID, or every point of ``group``, and return once they are purged."""
    from sisa.deletion import receipts

    started = time.perf_counter()
    store = open_store(store, storage_options)
    store.require_trained()
    check_factory(store.config().model)  # it retrains: refuse before journaling anything
    accepted = accept(store, ids, group=group, reason=reason)
    reports = []
    if accepted.request_id is None:  # nothing new; still finish what a crash left
        try:
            report = process(store, executor=executor)
        except LeaseHeldError:  # a service is on it
            report = None
        reports = [report] if report else []
    else:
        reports = wait_purged(store, accepted.request_id, executor)
    receipt = None
    if accepted.request_id is not None:
        receipt = receipts.read(store, Journal(store).find(accepted.request_id).seq)
    return ForgetReport(
        request_id=accepted.request_id,
        removed=accepted.removed,
        removed_from_test=accepted.removed_from_test,
        already_deleted=accepted.already_deleted,
        shards=[r for b in reports for r in b.results],
        purged=[p for b in reports for p in b.purged],
        seconds=time.perf_counter() - started,
        receipt=receipt,
    )
