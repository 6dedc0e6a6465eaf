"""Fenced writers, in process: a holder of an older lease token reads nothing past a
fence, commits nothing over it, and its sweeps delete nothing the newer holder uses.

The stalled holder is simulated by a store whose ``fence`` is the old token, and whose
reads may be held at what it saw before the takeover; tests/orchestrator/test_fencing.py
pauses a real process with SIGSTOP."""

from __future__ import annotations

import socket
import time

import pytest

from sisa.deletion import batch_log, compliance
from sisa.deletion.accept import accept
from sisa.deletion.batch import _run, process
from sisa.evidence.audit import audit
from sisa.evidence.verify import verify
from sisa.serving.ensemble import Ensemble
from sisa.store.artifacts import SisaStore
from sisa.store.fencing import FENCE, FencedError, chains, fence_chains
from sisa.store.layout import BATCHES, TOMBSTONES, head_path, shard_prefix
from sisa.training.train import train
from storage import DocumentExistsError, StorageError, write_doc
from tests.conftest import sealed_with_kek_file, tiny_config
from tests.sisa.deletion.test_batch import pick
from tests.storage.test_lease import write_holder


def stalled_holder(url: str, token: int = 1, **fields) -> None:
    """The lease record of a holder on another host whose heartbeat stopped long ago: it
    may only be slow, so whoever takes the lease over must fence."""
    stalled = {"host": "elsewhere.invalid", "pid": 1, "nonce": "0" * 16, "token": token}
    write_holder(SisaStore(url).fs, token, **stalled | {"heartbeat": time.time() - 10**6} | fields)


def heads(url: str) -> dict[str, tuple[int, dict]]:
    store = SisaStore(url)
    return {
        p: (h.generation, h.body) for p in chains(store) if (h := store.latest_head(p)) is not None
    }


def bare(body: dict) -> dict:
    return {k: v for k, v in body.items() if k not in ("generation", FENCE)}


def test_a_fence_writes_one_generation_on_every_chain_that_reads_as_before(url):
    accept(url, pick(url, 0, 1))
    before = heads(url)
    served = compliance.current(SisaStore(url)).shards
    store = SisaStore(url)
    store.fence = 7
    fenced = fence_chains(store)
    after = heads(url)
    assert set(fenced) == set(after) == set(before) | {TOMBSTONES, BATCHES}
    for prefix, (generation, body) in after.items():
        assert body[FENCE] == 7
        if prefix in before:  # the same records, one generation on
            assert generation == before[prefix][0] + 1
            assert bare(body) == bare(before[prefix][1])
        else:  # no tombstones and no batch yet: the empty record, at generation 0
            assert generation == 0
    now = compliance.current(SisaStore(url)).shards
    assert {k: s.ref for k, s in now.items()} == {k: s.ref for k, s in served.items()}


def test_a_stale_holder_reads_nothing_past_a_fence_and_commits_nothing_over_it(url):
    accept(url, pick(url, 0, 1))
    prefix = shard_prefix(0)
    stale = SisaStore(url)
    stale.fence = 1
    seen = stale.shard_head(0)  # what it read before it stalled
    newer = SisaStore(url)
    newer.fence = 2
    fence_chains(newer)
    after = heads(url)
    with pytest.raises(FencedError, match="token 2, newer than this process's 1"):
        stale.latest_head(prefix)
    with pytest.raises(FencedError):  # a commit planned from the old head
        stale.commit_head(prefix, seen.generation + 1, seen.body)
    with pytest.raises(DocumentExistsError):  # the bare create, had it read before
        write_doc(stale.fs, head_path(prefix, seen.generation + 1), seen.body)
    with pytest.raises(FencedError):  # a whole batch run stops at its first read
        _run(stale, None, 1, after_crash=False)
    with pytest.raises(FencedError):  # and so does committing receipts
        batch_log.commit_receipts(stale, {"through": 1}, [])
    assert heads(url) == after  # nothing changed
    assert SisaStore(url).shard_head(0).generation == seen.generation + 1  # readers: fine


@pytest.mark.parametrize("sealed", [False, True], ids=["plain", "sealed"])
def test_a_stale_sweep_deletes_nothing_the_newer_holder_uses(tmp_path, sealed, monkeypatch):
    overrides = sealed_with_kek_file(tmp_path) if sealed else {}
    url = str(tmp_path / "s")
    train(tiny_config(**{"sisa.slices": 4} | overrides), url)
    victims = pick(url, 0, 2)
    accept(url, victims)
    stale = SisaStore(url)
    stale.fence = 1
    prefix = shard_prefix(0)
    seen = stale.latest_head(prefix)  # it read the head, then stalled ...
    stalled_holder(url, token=1)
    report = process(url)  # ... while this process took the lease over and retrained
    assert report is not None and report.results[0].generation == seen.generation + 2
    assert SisaStore(url).shard_head(0).body[FENCE] == 2
    monkeypatch.setattr(stale, "latest_head", lambda p: seen if p == prefix else None)
    stale.sweep(prefix)  # the stale sweep wakes up, with what it read
    live = SisaStore(url)
    head = live.shard_head(0)
    for ref in [head.data, *head.stages]:
        assert live.check_artifact(ref) == []  # every file there, and (sealed) its key too
    assert verify(url).identical
    assert audit(url).ok
    Ensemble.load(live)


def test_a_takeover_from_a_holder_that_may_still_write_fences_first(url):
    accept(url, pick(url, 1, 0))
    before = heads(url)
    stalled_holder(url, token=1)
    process(url)
    after = heads(url)
    assert after[shard_prefix(1)][0] == before[shard_prefix(1)][0] + 2  # fence, retrain
    assert after[shard_prefix(0)][0] == before[shard_prefix(0)][0] + 1  # fence only
    assert all(body[FENCE] == 2 for _, body in after.values())
    assert verify(url).identical and audit(url).ok


@pytest.mark.parametrize("remote", [False, True], ids=["in-process", "with-workers"])
def test_a_dead_holder_is_fenced_only_when_its_workers_may_live(url, remote):
    accept(url, pick(url, 1, 0))
    before = heads(url)
    dead = {"host": socket.gethostname(), "pid": 2**22 - 1, "heartbeat": time.time()}
    stalled_holder(url, token=1, remote=remote, **dead)
    process(url)
    step = 2 if remote else 1  # a fence generation first, or the retrain alone
    assert heads(url)[shard_prefix(1)][0] == before[shard_prefix(1)][0] + step


def test_plans_and_receipts_are_copies_of_the_batch_log(url):
    accept(url, pick(url, 0, 1))
    accept(url, pick(url, 2, 0))
    process(url)
    store = SisaStore(url)
    log = batch_log.newest(store)
    assert [r["seq"] for r in log.body["receipts"]] == [1, 2]
    files = {rel: store.read_bytes(rel) for rel in ("receipts/r000000002.json",)}
    assert store.read_doc("receipts/r000000002.json") == log.body["receipts"][1]
    store.delete("receipts/r000000002.json")  # a run died between the commit and the copy
    assert [r["seq"] for r in batch_log.copy_out(store)] == [2]
    assert {rel: store.read_bytes(rel) for rel in files} == files  # the same bytes
    assert batch_log.copy_out(store) == []
    with pytest.raises(StorageError, match="differs from what the batch log committed"):
        batch_log._copy(store, "receipts/r000000002.json", {"seq": 2})
    assert audit(url).ok


def test_a_fence_cut_short_is_finished_by_the_next_holder(url, monkeypatch):
    """B owed a fence (it took over from a stalled holder) and failed half way: C, the
    next holder, fences again, although B let go of the lease cleanly."""
    import sisa.store.fencing as fencing_module

    accept(url, pick(url, 0, 1))
    stalled_holder(url, token=1)
    whole = fencing_module.fence_chains

    def half(store):
        prefix = chains(store)[0]  # one chain fenced, the others not
        head = store.latest_head(prefix)
        store.commit_head(prefix, head.generation + 1, dict(head.body))
        raise StorageError("the object store went away")

    monkeypatch.setattr(fencing_module, "fence_chains", half)
    with pytest.raises(StorageError, match="went away"):
        process(url)
    monkeypatch.setattr(fencing_module, "fence_chains", whole)
    process(url)
    assert all(body[FENCE] == 3 for _, body in heads(url).values())
    stale = SisaStore(url)
    stale.fence = 1
    with pytest.raises(FencedError):
        stale.tombstones()
    assert verify(url).identical


def test_a_create_lost_to_a_fence_says_fenced(url, monkeypatch):
    """The stale holder checked the newest head, then stalled; the fence's copy took the
    generation: its create fails, and it is told why."""
    prefix = shard_prefix(0)
    stale = SisaStore(url)
    stale.fence = 1
    seen = stale.latest_head(prefix)
    newer = SisaStore(url)
    newer.fence = 2
    fence_chains(newer)
    reads = iter([seen])  # the check still sees the head it read before the fence
    real = SisaStore.latest_head
    monkeypatch.setattr(stale, "latest_head", lambda p: next(reads, None) or real(stale, p))
    with pytest.raises(FencedError):
        stale.commit_head(prefix, seen.generation + 1, seen.body)


def test_a_store_that_keyed_its_hashes_before_keyed_placement_keeps_its_placement(tmp_path):
    """Stores made with a key store before placement was keyed record no
    ``keyed_placement``: they go on placing by the seed, as they were trained."""
    url = str(tmp_path / "s")
    train(tiny_config(**sealed_with_kek_file(tmp_path)), url)
    store = SisaStore(url)
    assert store.placement_key() is not None
    record = {k: v for k, v in store.intent().items() if k != "keyed_placement"}
    store.replace_record(record)
    assert SisaStore(url).placement_key() is None and SisaStore(url).id_hash_key() is not None
