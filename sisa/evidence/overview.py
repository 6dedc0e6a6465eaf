"""What a compliance officer needs on one page, read off the store: every request with
its state, age, deadline and receipt; the last audit; the shards served rolled back; and
deletions per day with their time to compliance.

It names requests by their IDs and points by their salted hashes only (the receipts'),
never by a raw ID: the page it feeds (``orchestrator.dashboard``) is shown to people who
may not see the data. A request's ``reason`` is free text from whoever filed it; it is
passed on as text, and the page escapes it.
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from sisa.deletion import compliance, receipts
from sisa.deletion.lifecycle import request_statuses
from sisa.evidence.audit import last_audit
from sisa.store.artifacts import SisaStore, StorageOptions, open_store


def overview(store: SisaStore | str, storage_options: StorageOptions = None) -> dict[str, Any]:
    """The dashboard's data, as JSON-ready values (times in seconds since the epoch)."""
    store = open_store(store, storage_options)
    config = store.config()
    deadline = config.deletion.deadline_s
    now = time.time()
    state = compliance.current(store)
    requests = []
    purged: dict[str, list[float]] = defaultdict(list)  # day -> each request's time to comply
    for status in request_statuses(store, with_receipts=True):
        receipt = status.receipt
        compliant_at = receipt["compliant_at"] if receipt else state.compliant_at.get(status.seq)
        done_at = receipt["purged_at"] if receipt else None
        requests.append(
            {
                "id": status.id,
                "seq": status.seq,
                "state": status.state,
                "reason": status.reason,
                "points": status.points,
                "test_points": status.test_points,
                "shards": status.shards,
                "group": status.group,
                "accepted_at": status.accepted_at,
                "age_s": now - status.accepted_at,
                "deadline_at": status.accepted_at + deadline,
                # until the deadline while open; once purged, the margin it was kept by
                "time_left_s": status.accepted_at + deadline - (done_at or now),
                "compliant_at": compliant_at,
                "purged_at": done_at,
                "receipt": None if receipt is None else _receipt(receipt),
            }
        )
        if receipt is not None:
            day = datetime.fromtimestamp(done_at, UTC).strftime("%Y-%m-%d")
            purged[day].append(max(0.0, receipt["compliant_at"] - receipt["accepted_at"]))
    slices = config.sisa.slices
    return {
        "now": now,
        "deadline_s": deadline,
        "shards": config.sisa.shards,
        "slices": slices,
        "requests": requests,
        "audit": last_audit(store),
        "rolled_back": [
            {"shard": s.shard, "stage": s.stage, "pending": s.pending}
            for s in state.shards.values()
            if s.stage < slices
        ],
        "daily": [
            {
                "day": day,
                "deletions": len(times),
                "median_time_to_compliance_s": statistics.median(times),
            }
            for day, times in sorted(purged.items())
        ],
    }


def _receipt(body: dict[str, Any]) -> dict[str, Any]:
    """A receipt as the page shows it: its hash, what it links to, and what was done."""
    return {
        "sha256": receipts.digest(body),
        "prev": body.get("prev"),
        "hashed_ids": body.get("ids", []),  # salted hashes: the receipt's own
        "shards": [
            {k: s.get(k) for k in ("shard", "points", "stages", "new_generation")}
            for s in body.get("shards", [])
        ],
        "test_points": body.get("test_points", 0),
        "retrained_at": body.get("retrained_at"),
        "purged_at": body.get("purged_at"),
    }
