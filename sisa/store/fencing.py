"""Fenced writers: a holder that lost the store's lease changes nothing that readers see.

The processing lease (``storage.Lease``) numbers its holders; the number is the holder's
**fencing token**, and a writer that holds it sets ``SisaStore.fence``. No backend can
make a write conditional on another object, so the fence is built from what every backend
offers, the exclusive create, over the store's **chains**: the heads of each shard, of the
test data, of the tombstones and of the batch log (``sisa.deletion.batch_log``). A chain
is the sequence of its generations, and the newest generation is what readers read.

1. **Every commit is a compare-and-swap.** A fenced writer commits generation g+1 of a
   chain only after reading generation g, the newest, and finding it written under a
   token no newer than its own; the exclusive create of g+1 fails if anyone wrote g+1
   meanwhile. Each head records the token it was written under (``fence``).
2. **Every read checks the token.** A fenced writer that reads a head written under a
   newer token stops there (``FencedError``): another process took the lease over.
3. **A takeover fences every chain.** A holder that took the lease from one that may
   still write (``Lease.fence_needed``: its heartbeat ran out, or it had remote workers)
   first writes generation g+1 of every chain: the same records as g, under its token.
   The old holder read g at best, so its next commit is of g+1, which now exists, or of
   a later generation after reading one under the newer token: both fail. Its artifacts
   (data and checkpoints) go to folders of generations the new holder never writes to,
   are referenced by no head, so never read, and are swept.
4. **Deletes are fenced by generation.** A sweep removes only head documents before the
   head it read, and unreferenced files of generations up to one past it (where a failed
   attempt leaves them). A newer holder fenced the chain at one past that head at the
   earliest, writes its files only in later generations, and references of earlier ones
   only what that head references; so a stalled sweep that wakes up deletes nothing the
   newer holder uses. Data keys are shredded under the same rule.
5. **Documents derived from a chain are copies.** Batch plans and receipts are committed
   in the batch log first; their files are written from it afterwards, byte for byte the
   same whoever writes them (``sisa.deletion.batch_log``).

Serving documents are not fenced: they are a pure function of the journal and the heads,
written by any acceptance as well, and each writer retries on a lost race. Nor are audit
verdicts, which any reader of the store may record.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

from sisa.store.layout import AUDITS, BATCHES, SERVING, TEST_PREFIX, TOMBSTONES
from storage import DocumentExistsError, StorageError

if TYPE_CHECKING:
    from sisa.store.artifacts import Head, SisaStore
    from storage import Lease

FENCE = "fence"  # a head's field: the lease token it was committed under
# a generation's head document or artifact folder in its chain's prefix (or the temp file
# of a head document being written)
_GENERATION = re.compile(r"^(?:\.tmp-[0-9a-f]{32}-)?g([0-9]{6,})(\.json)?\Z")
EMPTY = {TOMBSTONES: {"entries": [], "groups": []}, BATCHES: {"plan": None, "receipts": []}}


class FencedError(StorageError):
    """A newer holder of the store's lease wrote what this writer read: it must stop."""


def fenced(prefix: str) -> bool:
    """Whether a chain is fenced: every one but the serving state's and the audits'."""
    return prefix not in (SERVING, AUDITS)


def token_of(head: Head) -> int:
    """The token a head was committed under (0: by a writer without a lease)."""
    token = head.body.get(FENCE, 0)
    return token if type(token) is int and token >= 0 else 0


def check(store: SisaStore, prefix: str, head: Head) -> None:
    """Raise ``FencedError`` if ``head`` was written under a newer token than the store's."""
    if store.fence is None or not fenced(prefix):
        return
    if token_of(head) > store.fence:
        raise FencedError(
            f"{store.url_of(prefix)} generation {head.generation} was committed under lease "
            f"token {token_of(head)}, newer than this process's {store.fence}: another process "
            "took the store's lease over, and this one stops without writing more"
        )


def generation_of(prefix: str, rel: str) -> tuple[int, bool] | None:
    """(generation, is a head document) of a path in a chain's prefix; None for others."""
    rest = rel[len(prefix) + 1 :] if prefix else rel
    match = _GENERATION.match(rest.split("/", 1)[0])
    if match is None:
        return None
    return int(match.group(1)), match.group(2) is not None and "/" not in rest


def chains(store: SisaStore) -> list[str]:
    """Every fenced chain of the store."""
    return [*store.shard_prefixes(), TEST_PREFIX, TOMBSTONES, BATCHES]


def fence_chains(store: SisaStore) -> list[str]:
    """Write one generation on every chain, under the store's token: a copy of its head
    (or the empty record), so that nothing an older holder still writes is ever read."""
    assert store.fence is not None, "only a holder of the lease fences"
    fenced_now = []
    for prefix in chains(store):
        while True:  # a copy of the head it read: a late commit that lands first is kept
            head = store.latest_head(prefix)
            if head is None and prefix not in EMPTY:
                break  # no held-out data: nothing there to write either
            body = dict(EMPTY[prefix]) if head is None else dict(head.body)
            try:
                store.commit_head(prefix, 0 if head is None else head.generation + 1, body)
            except DocumentExistsError:
                continue
            fenced_now.append(prefix)
            break
    return fenced_now


@contextlib.contextmanager
def holding(store: SisaStore, lease: Lease, wait: float = 0.0) -> Iterator[Lease]:
    """Hold ``lease`` with ``store`` fenced by its token; after a takeover from a holder
    that may still write, fence every chain first."""
    with lease.acquire(wait):
        store.fence = lease.token
        try:
            if lease.fence_needed:
                fence_chains(store)
                lease.fenced()  # else the next holder fences, however this one ends
            yield lease
        finally:
            store.fence = None
