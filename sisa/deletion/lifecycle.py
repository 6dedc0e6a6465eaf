"""Where each deletion request stands: accepted, compliant, retrained or purged.

States are read off the store, never kept in a field that could disagree with it
(``sisa.store.journal``): the serving state's ``through``, the heads' ``journal_seq`` and the
receipts decide them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sisa.deletion import compliance, receipts
from sisa.store.artifacts import SisaStore, StorageOptions, open_store
from sisa.store.journal import Journal, Request
from sisa.store.layout import TEST_PART, part_prefix, request_path


@dataclass(frozen=True, kw_only=True)
class RequestStatus:
    id: str
    seq: int
    state: str  # one of sisa.store.journal.STATES
    points: int  # training points
    test_points: int
    shards: list[int]
    group: bool
    reason: str | None
    accepted_at: float
    receipt: dict[str, Any] | None = None
    voids: int | None = None  # a void: the damaged entry it closes (sisa.store.journal)

    def to_dict(self) -> dict[str, Any]:
        shown = {k: v for k, v in self.__dict__.items() if k not in ("receipt", "voids")}
        return (
            shown
            | ({"receipt": self.receipt} if self.receipt is not None else {})
            | ({"voids": self.voids} if self.voids is not None else {})
        )


def _applied(store: SisaStore, parts: set[int]) -> dict[int, int]:
    out = {}
    for part in parts:
        head = store.latest_head(part_prefix(part))
        out[part] = int(head.body.get("journal_seq", 0)) if head is not None else 0
    return out


def request_statuses(
    store: SisaStore | str,
    requests: list[Request] | None = None,
    with_receipts: bool = False,
    *,
    storage_options: StorageOptions = None,
) -> list[RequestStatus]:
    """The status of ``requests`` (all journaled requests by default), in order."""
    store = open_store(store, storage_options)
    store.require_trained()
    journal = Journal(store)
    requests = journal.all_requests() if requests is None else requests
    done = set(journal.receipted())
    through = compliance.current(store).through
    applied = _applied(store, {p for r in requests for p in r.parts})
    out = []
    for r in requests:
        if r.seq in done:
            state = "purged"
        elif all(applied[p] >= r.seq for p in r.parts):
            state = "retrained"
        elif through >= r.seq:
            state = "compliant"
        else:
            state = "accepted"
        receipt = receipts.read(store, r.seq) if with_receipts and r.seq in done else None
        out.append(
            RequestStatus(
                id=r.id,
                seq=r.seq,
                state=state,
                points=sum(1 for e in r.entries if e.part != TEST_PART),
                test_points=sum(1 for e in r.entries if e.part == TEST_PART),
                shards=sorted(r.parts - {TEST_PART}),
                group=r.group is not None,
                reason=r.reason,
                accepted_at=r.accepted_at,
                receipt=receipt,
                voids=r.voids,
            )
        )
    return out


def damaged_entries(store: SisaStore | str, storage_options: StorageOptions = None) -> list[str]:
    """Store paths of the journal entries that cannot be read and that no void closes."""
    return [request_path(seq) for seq in Journal(open_store(store, storage_options)).damaged()]


def request_status(
    store: SisaStore | str, request_id: str, *, storage_options: StorageOptions = None
) -> RequestStatus:
    """One request's status, with its receipt once purged; UnknownRequestError if none."""
    store = open_store(store, storage_options)
    request = Journal(store).find(request_id)
    return request_statuses(store, [request], with_receipts=True)[0]
