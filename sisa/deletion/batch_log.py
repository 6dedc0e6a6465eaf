"""The batch log: the chain of each batch's plan and receipts, fenced like every head.

A batch commits here twice: its plan, before anything changes, and its receipts, once
its points are purged and tombstoned. Each commit is one generation of the chain
``batches/g<N>.json``, a compare-and-swap under the lease's token (``sisa.store.fencing``),
so a process that lost the lease commits neither. The files readers use, the plan
``batches/b<Q>.json`` and the receipts ``receipts/r<n>.json``, are then written from the
newest generation: write-once copies whose bytes the chain fixes. Any holder writes the
same ones, so a stalled holder that wakes up and copies too changes nothing, and a crash
between a commit and its copies is finished by the next run (``copy_out``).
"""

from __future__ import annotations

from typing import Any

from sisa.faults import crash_point
from sisa.store.artifacts import Head, SisaStore
from sisa.store.layout import BATCH_NAME, BATCHES, RECEIPTS, REQUEST_NAME, batch_path, receipt_path
from storage import DocumentExistsError, StorageError


def newest(store: SisaStore) -> Head | None:
    return store.latest_head(BATCHES)


def commit_plan(store: SisaStore, plan: dict[str, Any]) -> dict[str, Any]:
    """Commit a new batch's plan and write its file; returns the plan in force, which is
    the one on file if a run that died before its receipts wrote it already."""
    try:
        return store.read_doc(batch_path(plan["through"]))
    except FileNotFoundError:
        pass
    _commit(store, {"plan": plan, "receipts": []})
    copy_out(store)
    return plan


def committed_receipts(store: SisaStore, through: int) -> list[dict[str, Any]] | None:
    """The receipts the log holds for the batch through ``through``; None before they
    are committed."""
    head = newest(store)
    if head is None or (head.body.get("plan") or {}).get("through") != through:
        return None
    return head.body.get("receipts") or None


def commit_receipts(store: SisaStore, plan: dict[str, Any], receipts: list[dict[str, Any]]) -> None:
    """Commit a batch's receipts: from here on they are issued, whoever writes the files."""
    _commit(store, {"plan": plan, "receipts": receipts})


def _commit(store: SisaStore, body: dict[str, Any]) -> Head:
    return store.commit_next(BATCHES, body, keep=1)


def copy_out(store: SisaStore, receipts: bool = True) -> list[dict[str, Any]]:
    """Write the files of the newest generation that are missing (its plan only, unless
    ``receipts``); returns the receipts written now, in order."""
    head = newest(store)
    if head is None:
        return []
    plan = head.body.get("plan")
    plans = {n for n in store.names(BATCHES) if BATCH_NAME.match(n)}
    if plan is not None and batch_path(plan["through"]).split("/")[-1] not in plans:
        _copy(store, batch_path(plan["through"]), plan)
    issued = {n for n in store.names(RECEIPTS) if REQUEST_NAME.match(n)}
    written = []
    for body in head.body.get("receipts", []) if receipts else []:
        rel = receipt_path(body["seq"])
        if rel.split("/")[-1] in issued:
            continue
        if _copy(store, rel, body):
            written.append(body)
            crash_point("after-receipt")
    return written


def _copy(store: SisaStore, rel: str, body: dict[str, Any]) -> bool:
    """Write ``body`` at ``rel`` once; False if the same body is there already."""
    try:
        store.write_doc(rel, body)
        return True
    except DocumentExistsError:
        if store.read_doc(rel) != body:
            raise StorageError(
                f"{store.url_of(rel)} differs from what the batch log committed for it"
            ) from None
        return False
