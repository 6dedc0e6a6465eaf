"""The serving state: which checkpoint of each shard the aggregate predicts with.

Instant compliance by rollback. While a request is open, every shard it touches serves the
checkpoint of the stage **before** the earliest slice the request's points sit in; that
checkpoint never saw them. A shard whose first slice is touched has no such checkpoint and
is dropped from the aggregate until it is retrained. Once a retrain commits, the shard
serves its new final stage. The state is a pure function of the committed heads and the
open requests:

    served stage of shard k = min(R, min slice of open requests on k not applied by k's head)

(slices 0-based, so slice s rolls back to stage s, the stage before it). A head applied a
request when its ``journal_seq`` is at least the request's number.

The state is materialised as write-once documents ``serving/g<N>.json`` so a predictor
reads one small file. Writers (acceptance and processing) read the latest generation
first, then the journal, then the heads, and create generation N+1 exclusively; a writer
that loses the race retries. Hence every document is computed from a journal read after
the previous document existed, and a request acknowledged after its document was written
is covered by every later document. A reader that finds a document older than the journal
(a writer died between the two writes) computes the state itself rather than trust it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from sisa.store.artifacts import Head, SisaStore
from sisa.store.journal import Journal, Request
from sisa.store.layout import SERVING
from sisa.store.records import StageRef
from storage import DocumentExistsError

KEEP_DOCS = 2  # a reader that listed just before a write still finds the one it chose


@dataclass(frozen=True, kw_only=True)
class ServedShard:
    shard: int
    generation: int  # of the shard's head
    stage: int  # checkpoint served: R = final, 1..R-1 = rolled back, 0 = left out
    ref: StageRef | None  # the stage checkpoint served; None when left out
    pending: list[int]  # open requests that hold this shard back

    @classmethod
    def from_row(cls, row: list[Any]) -> ServedShard:
        shard, generation, stage, ref, pending = row
        ref = StageRef.from_body(ref) if ref is not None else None
        return cls(shard=shard, generation=generation, stage=stage, ref=ref, pending=pending)

    @property
    def live(self) -> bool:
        return self.ref is not None


@dataclass(frozen=True, kw_only=True)
class ServingState:
    through: int  # every request numbered up to this is accounted for
    shards: dict[int, ServedShard]
    compliant_at: dict[int, float] = field(default_factory=dict)  # open request -> time
    generation: int = -1  # of the document; -1 when computed by a reader

    def to_body(self) -> dict[str, Any]:
        return {
            "through": self.through,
            "shards": [
                [s.shard, s.generation, s.stage, s.ref and s.ref.to_body(), s.pending]
                for s in self.shards.values()
            ],
            "compliant_at": {str(k): v for k, v in sorted(self.compliant_at.items())},
            "written_at": time.time(),
        }

    @classmethod
    def from_head(cls, head: Head) -> ServingState:
        body = head.body
        return cls(
            through=int(body["through"]),
            shards={s[0]: ServedShard.from_row(s) for s in body["shards"]},
            compliant_at={int(k): float(v) for k, v in body["compliant_at"].items()},
            generation=head.generation,
        )

    @property
    def rolled_back(self) -> list[int]:
        return [s.shard for s in self.shards.values() if s.pending]


def compute(
    store: SisaStore,
    open_requests: list[Request],
    through: int,
    previous: ServingState | None = None,
) -> ServingState:
    """The serving state for these heads and open requests (read heads after the journal)."""
    config = store.config()
    shards: dict[int, ServedShard] = {}
    for shard in range(config.sisa.shards):
        head = store.shard_head(shard)
        applied = int(head.body.get("journal_seq", 0))
        holding = [r for r in open_requests if r.seq > applied and shard in r.parts]
        touched = [s for r in holding for s in r.slices(shard)]
        stage = min([config.sisa.slices, *touched])
        if head.body["n"] == 0:
            stage = 0  # an empty shard has nothing to contribute
        if stage > 0 and head.stages[stage - 1].n == 0:
            stage = 0  # a rolled-back stage that trained on no point would only add noise
        ref = head.stages[stage - 1] if stage > 0 else None
        shards[shard] = ServedShard(
            shard=shard,
            generation=head.generation,
            stage=stage,
            ref=ref,
            pending=[r.seq for r in holding],
        )
    now, before = time.time(), previous.compliant_at if previous else {}
    compliant_at = {r.seq: before.get(r.seq, now) for r in open_requests}
    return ServingState(through=through, shards=shards, compliant_at=compliant_at)


def _latest(store: SisaStore) -> ServingState | None:
    head = store.latest_head(SERVING)
    return ServingState.from_head(head) if head is not None else None


def current(store: SisaStore) -> ServingState:
    """The state predictions must use now; computed here if no document covers the journal."""
    state = _latest(store)
    journal = Journal(store)
    seqs = journal.seqs()
    through = seqs[-1] if seqs else 0
    if state is not None and state.through >= through:
        return state
    return compute(store, journal.open_requests(through), through, state)


def refresh(store: SisaStore) -> ServingState:
    """Write a serving document covering every journaled request; return it."""
    journal = Journal(store)
    while True:
        latest = store.latest_head(SERVING)
        previous = ServingState.from_head(latest) if latest is not None else None
        generation = latest.generation + 1 if latest is not None else 0
        seqs = journal.seqs()  # after reading the latest document: see the module docstring
        through = seqs[-1] if seqs else 0
        state = compute(store, journal.open_requests(through), through, previous)
        try:
            store.commit_head(SERVING, generation, state.to_body())
        except DocumentExistsError:
            continue
        _prune(store, generation)
        return ServingState(
            through=state.through,
            shards=state.shards,
            compliant_at=state.compliant_at,
            generation=generation,
        )


def _prune(store: SisaStore, generation: int) -> None:
    store.prune_heads(SERVING, below=generation - KEEP_DOCS + 1)
