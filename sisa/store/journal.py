"""The durable journal of deletion requests.

A request is journaled **before** it is acknowledged: ``append`` returns only after its
write-once document ``journal/r<seq>.json`` is committed, and only then does the caller
hand out the request ID. The journal never holds a raw ID. Requests are validated before
they are journaled, so each is recorded as the salted hash of every point with the part
(shard, or the test set) and slice it sits in. A point's slice is a pure function of its
own attributes, so it never changes, whichever generation a shard is at.

Sequence numbers are contiguous: a writer creates ``r<max+1>`` exclusively and retries on
conflict, so ``r<n+1>`` can only exist once ``r<n>`` does. A batch that has read the
journal up to ``n`` has therefore seen every request numbered ``n`` or less.

A journal document that cannot be read (truncated, or failing its checksum) is a
**damaged entry**. Its request can be neither listed nor processed: readers skip it and
name it (``Journal.damaged``), so ``process`` carries on with the readable requests while
``status``, ``process`` and ``audit`` report it and never call the store clean. Once the
operator has resubmitted the request, ``Journal.void`` journals a void: a request with no
points that names the damaged number (and the resubmission), processed and receipted like
any other.

A request's state follows from the store, never from a field that could disagree with it:

- ``accepted``: its document exists;
- ``compliant``: the serving state covers it (predictions no longer use its points);
- ``retrained``: every part it touches has a head that applied it;
- ``purged``: its receipt exists, written after the stale artifacts were deleted.
"""

from __future__ import annotations

import hmac
import re
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from sisa.store.artifacts import SisaStore
from sisa.store.layout import JOURNAL, RECEIPTS, REQUEST_NAME, request_path
from storage import CorruptArtifactError, DocumentExistsError

STATES = ("accepted", "compliant", "retrained", "purged")
# the sequence number, then 128 random bits that make a request ID hard to guess (stores
# from before held 32: their IDs still name their requests)
_REQUEST_ID = re.compile(r"^r([0-9]{9})-([0-9a-f]{32}|[0-9a-f]{8})\Z")
SECRET_BYTES = 16


class DamagedEntryError(CorruptArtifactError):
    """A journal document that cannot be read as a request."""

    def __init__(self, seq: int, detail: str) -> None:
        super().__init__(f"damaged journal entry {request_path(seq)}: {detail}")
        self.seq = seq


class UnknownRequestError(KeyError):
    """No request with this ID (or the ID is malformed)."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class Entry:
    """One point of a request: salted hash, part (shard, or -1 for test) and 0-based slice."""

    hash: str
    part: int
    slice: int | None  # None for test points


@dataclass(frozen=True, kw_only=True)
class Request:
    id: str
    seq: int
    entries: tuple[Entry, ...]
    group: str | None  # salted hash of the group key, for a group request
    reason: str | None
    accepted_at: float
    voids: int | None = None  # a void: the number of the damaged entry it closes
    resubmitted_as: str | None = None  # a void: the request that resubmitted it

    @property
    def parts(self) -> set[int]:
        return {e.part for e in self.entries}

    def slices(self, part: int) -> list[int]:
        return [e.slice for e in self.entries if e.part == part and e.slice is not None]

    def to_body(self) -> dict[str, Any]:
        body = {
            "id": self.id,
            "seq": self.seq,
            "entries": [[e.hash, e.part, e.slice] for e in self.entries],
            "group": self.group,
            "reason": self.reason,
            "accepted_at": self.accepted_at,
        }
        if self.voids is not None:
            body |= {"voids": self.voids, "resubmitted_as": self.resubmitted_as}
        return body

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> Request:
        voids = body.get("voids")
        return cls(
            id=body["id"],
            seq=int(body["seq"]),
            entries=tuple(Entry(h, int(p), s) for h, p, s in body["entries"]),
            group=body["group"],
            reason=body["reason"],
            accepted_at=float(body["accepted_at"]),
            voids=None if voids is None else int(voids),
            resubmitted_as=body.get("resubmitted_as"),
        )


def parse_request_id(request_id: str) -> int:
    """The sequence number of a well-formed request ID; never used as a path unchecked."""
    match = _REQUEST_ID.match(request_id) if isinstance(request_id, str) else None
    if match is None:
        raise UnknownRequestError(
            f"malformed request ID {request_id!r}; request IDs look like r000000012-"
            "followed by 32 hex digits"
        )
    return int(match.group(1))


def _seqs(store: SisaStore, folder: str) -> list[int]:
    return sorted(int(m.group(1)) for n in store.names(folder) if (m := REQUEST_NAME.match(n)))


_CACHE: OrderedDict[tuple[str, int, str], Request] = OrderedDict()
_CACHE_SIZE = 1 << 17


class Journal:
    """Append, read and list the deletion requests of one store.

    Request documents are write-once, so a process keeps the ones it has read, keyed by
    store URL, number and the file's version stamp from the listing (size and mtime, or
    ETag): listing open requests then costs one listing, not one read per request, however
    long the backlog. A store replaced at the same URL (retrained, restored from a backup)
    has other stamps, so its requests never hit the old entries.
    """

    def __init__(self, store: SisaStore) -> None:
        self.store = store
        self._stamps: dict[str, str] = {}

    def seqs(self) -> list[int]:
        self._stamps = self.store.versions(JOURNAL)
        return sorted(int(m.group(1)) for n in self._stamps if (m := REQUEST_NAME.match(n)))

    def receipted(self) -> list[int]:
        return _seqs(self.store, RECEIPTS)

    def append(
        self,
        entries: list[Entry],
        group: str | None,
        reason: str | None,
        *,
        seen_through: int | None = None,
        voids: int | None = None,
        resubmitted_as: str | None = None,
    ) -> Request | None:
        """Commit a new request document and return it; the commit is the acceptance.

        Check and append are one atomic step: the caller checked its points against every
        request up to ``seen_through``; before taking number ``n``, the requests between
        it and ``n`` are read too, and points one of them already holds are left out. The
        exclusive create of ``r<n>`` succeeds only while ``r<n>`` is absent, and numbers
        are contiguous, so every request before ``n`` was checked. When no point is left,
        nothing is written and None is returned: an earlier request covers them all.
        """
        self.store.require_atomic_create("the deletion journal")
        checked = seen_through
        while True:
            seqs = self.seqs()
            seq = (seqs[-1] + 1) if seqs else 1
            if checked is not None:
                later = self.scan([s for s in seqs if s > checked])[0]  # damaged: unknowable
                taken = {e.hash for r in later for e in r.entries}
                entries = [e for e in entries if e.hash not in taken]
                checked = seq - 1
                if not entries:
                    return None
            request = Request(
                id=f"r{seq:09d}-{secrets.token_hex(SECRET_BYTES)}",
                seq=seq,
                entries=tuple(entries),
                group=group,
                reason=reason,
                accepted_at=time.time(),
                voids=voids,
                resubmitted_as=resubmitted_as,
            )
            try:
                self.store.write_doc(request_path(seq), request.to_body())
                return request
            except DocumentExistsError:
                continue  # another writer took this number; check its points, take the next

    def read(self, seq: int) -> Request:
        name = request_path(seq).rsplit("/", 1)[1]
        if name not in self._stamps:
            self.seqs()
        stamp = self._stamps.get(name, "")
        key = (self.store.url_of(""), seq, stamp)
        stamped = bool(stamp.split(":")[-1])
        request = _CACHE.get(key) if stamped else None
        if request is None:
            try:
                request = Request.from_body(self.store.read_doc(request_path(seq)))
                if request.seq != seq:
                    raise ValueError(f"it says it is request {request.seq}")
            except CorruptArtifactError as err:
                raise DamagedEntryError(seq, str(err)) from None
            except (KeyError, TypeError, ValueError) as err:
                raise DamagedEntryError(seq, f"not a deletion request: {err!r}") from None
            if stamped:
                _CACHE[key] = request
            if len(_CACHE) > _CACHE_SIZE:
                _CACHE.popitem(last=False)
        return request

    def find(self, request_id: str) -> Request:
        """The request with this ID; UnknownRequestError if there is none."""
        seq = parse_request_id(request_id)
        try:
            request = self.read(seq)
        except FileNotFoundError:
            request = None
        # constant time: the suffix is what makes an ID hard to guess
        if request is None or not hmac.compare_digest(request.id, request_id):
            raise UnknownRequestError(f"unknown request {request_id!r}")
        return request

    def scan(self, seqs: list[int] | None = None) -> tuple[list[Request], list[int]]:
        """The readable requests among ``seqs`` (all by default) and the damaged numbers."""
        requests, damaged = [], []
        for seq in self.seqs() if seqs is None else seqs:
            try:
                requests.append(self.read(seq))
            except DamagedEntryError:
                damaged.append(seq)
        return requests, damaged

    def open_requests(self, through: int | None = None) -> list[Request]:
        """Readable requests without a receipt (up to ``through``), in sequence order."""
        done = set(self.receipted())
        seqs = [s for s in self.seqs() if s not in done and (through is None or s <= through)]
        return self.scan(seqs)[0]

    def all_requests(self) -> list[Request]:
        """Every readable request; ``damaged`` names the others."""
        return self.scan()[0]

    def damaged(self) -> list[int]:
        """Numbers of damaged entries that no void closes yet."""
        requests, damaged = self.scan()
        voided = {r.voids for r in requests if r.voids is not None}
        return [s for s in damaged if s not in voided]

    def void(self, seq: int, resubmitted_as: str | None, reason: str | None = None) -> Request:
        """Journal the void of damaged entry ``seq``.

        An entry whose request was never receipted may be voided only once its request
        was resubmitted: ``resubmitted_as`` must be a readable, later request. (Its points
        are unknowable; the resubmission is what deletes them.)
        """
        if seq not in self.damaged():
            raise ValueError(f"{request_path(seq)} is not a damaged journal entry (or is voided)")
        resubmitted = None
        if resubmitted_as is not None:
            resubmitted = self.find(resubmitted_as)
            if resubmitted.seq < seq or resubmitted.voids is not None:
                raise ValueError(
                    f"{resubmitted_as} was not journaled after entry {seq}: resubmit the "
                    "request first ('sisa forget'), then void the damaged entry"
                )
        elif seq not in set(self.receipted()):
            raise ValueError(
                f"request {seq} was never processed: resubmit it ('sisa forget'), then void "
                "its damaged entry with --resubmitted-as <the new request ID>"
            )
        request = self.append([], None, reason, voids=seq, resubmitted_as=resubmitted_as)
        assert request is not None  # no seen_through: nothing is left out
        return request


def deleted_or_requested(store: SisaStore) -> tuple[set[str], set[str]]:
    """Salted hashes of every point and group deleted or requested so far."""
    open_requests = Journal(store).open_requests()  # first: a batch tombstones, then
    tombs = store.tombstones().body  # receipts, so nothing falls between the two reads
    points = {e["hash"] for e in tombs["entries"]}
    groups = set(tombs["groups"])
    for request in open_requests:
        points.update(e.hash for e in request.entries)
        if request.group:
            groups.add(request.group)
    return points, groups


def covering_requests(store: SisaStore, hashes: set[str]) -> list[str]:
    """IDs of the requests that deleted (or will delete) any of these salted hashes.

    Lets a client that lost its acknowledgement (a crash between journal and reply) find
    its request again by sending the same IDs.
    """
    journal, seqs = Journal(store), set()
    for request in journal.open_requests():
        if request.group in hashes or any(e.hash in hashes for e in request.entries):
            seqs.add(request.seq)
    for entry in store.tombstones().body["entries"]:
        if entry["hash"] in hashes and "request" in entry:
            seqs.add(int(entry["request"]))
    return [journal.read(seq).id for seq in sorted(seqs)]
