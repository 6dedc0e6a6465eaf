"""Receipts: the proof of each processed request, chained by hash into a log.

A receipt outlives the data, so it holds no raw ID: only the salted hash of each point.
It records which shards were retrained from which stage, the state hashes of the
checkpoints before and after, the artifacts purged, and when the request was accepted,
became compliant, was retrained and was purged.

Receipt n is the write-once document ``receipts/r<n>.json``, a copy of what the batch log
committed (``sisa.deletion.batch_log``); its body carries ``prev``,
the sha256 of receipt n-1's body (``None`` for the first). Changing, removing or
reordering any receipt breaks the link from the next one, and every document carries its
own hash, so ``verify_chain`` finds the first broken link. The newest receipt's hash
(``head``) is what a user anchors outside the store to catch a truncated log.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sisa.deletion.compliance import ServingState
from sisa.store.artifacts import SisaStore
from sisa.store.journal import Journal, Request
from sisa.store.layout import TEST_PART, head_path, receipt_path, shard_prefix
from storage import StorageError, sha256_hex
from storage.commit import canonical_json

if TYPE_CHECKING:
    from sisa.deletion.plan import BatchPlan


def exists(store: SisaStore, seq: int) -> bool:
    return store.exists(receipt_path(seq))


def read(store: SisaStore, seq: int) -> dict[str, Any]:
    return store.read_doc(receipt_path(seq))


def digest(body: dict[str, Any]) -> str:
    return sha256_hex(canonical_json(body))


def build(
    store: SisaStore,
    request: Request,
    plan: BatchPlan,
    state: ServingState,
    actual: dict[str, Any],
) -> dict[str, Any]:
    """The receipt body of ``request``, processed by the batch ``plan``."""
    planned = {s.shard: s for s in plan.shards}
    parts, retrained_at = [], []
    for part in sorted(request.parts - {TEST_PART}):
        head = store.shard_head(part)
        retrained_at.append(head.body.get("committed_at", 0.0))
        entry: dict[str, Any] = {
            "shard": part,
            "points": sum(1 for e in request.entries if e.part == part),
            "new_generation": head.generation,
            "new_checkpoint": head.stages[-1].state_hash if head.stages else None,
        }
        p = planned.get(part)
        if p is not None:
            live = {head.data.dir} | {s.dir for s in head.stages}
            entry |= {
                "stages": list(range(p.start_stage, len(p.old_checkpoints) + 1)),
                "old_generation": p.generation,
                "old_checkpoint": p.old_checkpoints[-1] if p.old_checkpoints else None,
                "purged": [d for d in p.old_dirs if d not in live]
                + [head_path(shard_prefix(part), p.generation)],
            }
        else:  # its points were gone already (a duplicate request): nothing retrained
            entry |= {"stages": [], "old_generation": None, "old_checkpoint": None, "purged": []}
        parts.append(entry)
    void = {"voids": request.voids, "resubmitted_as": request.resubmitted_as}
    return (void if request.voids is not None else {}) | {
        "request": request.id,
        "seq": request.seq,
        "reason": request.reason,
        "ids": sorted(e.hash for e in request.entries),
        "group": request.group,
        "shards": parts,
        "test_points": sum(1 for e in request.entries if e.part == TEST_PART),
        "accepted_at": request.accepted_at,
        "compliant_at": state.compliant_at.get(request.seq, request.accepted_at),
        "retrained_at": max(retrained_at, default=request.accepted_at),
        "batch": {
            "through": plan.through,
            "requests": len(plan.seqs),
            "planned": {
                "shards": {str(s.shard): s.start_stage for s in plan.shards},
                "samples": plan.samples,
                "predicted_seconds": plan.predicted_seconds,
            },
            "actual": actual,
        },
    }


def link(store: SisaStore, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Chain a batch's receipt bodies (in request order) to the receipts before them."""
    if not bodies:
        return []
    # the newest receipt before the first: seq - 1, unless that request's entry is damaged
    before = [s for s in Journal(store).receipted() if s < bodies[0]["seq"]]
    prev = digest(read(store, before[-1])) if before else None
    linked, now = [], time.time()
    for body in bodies:
        linked.append(body | {"prev": prev, "purged_at": now})
        prev = digest(linked[-1])
    return linked


@dataclass
class ChainReport:
    length: int
    head: str | None  # sha256 of the newest receipt: anchor it outside the store
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_chain(
    store: SisaStore, seqs: list[int], unreadable: frozenset[int] = frozenset()
) -> ChainReport:
    """Check every receipt's own hash and its link to the one before.

    Receipts are numbered as their requests, without gaps, except for requests whose
    journal entry is ``unreadable`` (damaged, or voided: ``sisa.store.journal``): those are never
    processed, and the next receipt links to the one before them.
    """
    report = ChainReport(len(seqs), None)
    expected_prev: str | None = None
    expected = 1
    for seq in seqs:
        while expected < seq and expected in unreadable:
            expected += 1
        if seq != expected:
            report.problems.append(f"receipt {expected} is missing (the log jumps to {seq})")
            return report
        expected += 1
        try:
            body = read(store, seq)
        except StorageError as err:
            report.problems.append(f"receipt {seq} is tampered with or unreadable: {err}")
            return report
        if body.get("seq") != seq:
            report.problems.append(f"receipt {seq} claims to be receipt {body.get('seq')}")
        if body.get("prev") != expected_prev:
            report.problems.append(
                f"receipt {seq} does not link to receipt {seq - 1}: the chain is broken"
            )
            return report
        expected_prev = digest(body)
    report.head = expected_prev
    return report
