"""Instant compliance: from the moment a request is accepted, predictions come from models
that never saw its points (each touched shard rolled back to the stage before the earliest
touched slice, or left out when that slice is the first)."""

from __future__ import annotations

import numpy as np
import pytest

from sisa.deletion import compliance
from sisa.deletion.accept import accept
from sisa.deletion.batch import process
from sisa.serving.aggregate import aggregate
from sisa.serving.ensemble import Ensemble
from sisa.store.artifacts import SisaStore
from sisa.store.journal import Entry, Journal
from sisa.training.trainer import fresh_state, predict_proba
from tests.sisa.deletion.test_accept import layout


def pick(url, shard, slice_):
    ids, shards, slices = layout(url)
    return int(ids[(shards == shard) & (slices == slice_)][0])


def rollback_aggregate(url, expected_stage, X):
    """The aggregate computed by hand from the checkpoints the rollback should serve."""
    store = SisaStore(url)
    config, intent = store.config(), store.intent()
    probs = []
    for shard, stage in expected_stage.items():
        if stage == 0:
            continue
        ref = store.shard_head(shard).stages[stage - 1]
        weights, _ = store.read_stage(ref, state=False)
        model = fresh_state(config, shard, tuple(intent["input_shape"]), intent["num_classes"])
        model.model.load_state_dict(weights)
        probs.append(predict_proba(model.model.eval(), X))
    return aggregate(np.stack(probs), config.sisa.aggregation)


def test_served_output_in_the_compliant_state_is_the_rollback_aggregate(url):
    X = np.random.default_rng(3).random((40, 64)).astype(np.float32)
    before = Ensemble.load(SisaStore(url)).predict_proba(X)
    accepted = accept(url, [pick(url, 0, 2), pick(url, 0, 3), pick(url, 2, 0)])
    assert accepted.start_stages == {0: 3, 2: 1}
    assert sorted(accepted.rolled_back) == [0, 2]
    ensemble = Ensemble.load(SisaStore(url))
    assert sorted(ensemble.models) == [0, 1]  # shard 2 lost its first slice: left out
    assert {k: s.stage for k, s in ensemble.served.items()} == {0: 2, 1: 4, 2: 0}
    expected = rollback_aggregate(url, {0: 2, 1: 4, 2: 0}, X)
    np.testing.assert_array_equal(ensemble.predict_proba(X), expected)
    assert not np.array_equal(ensemble.predict_proba(X), before)


def test_serving_switches_to_the_retrained_models_when_they_commit(url):
    accept(url, [pick(url, 1, 1)])
    assert compliance.current(SisaStore(url)).shards[1].stage == 1
    process(url)
    store = SisaStore(url)
    state = compliance.current(store)
    assert all(s.stage == 4 and not s.pending for s in state.shards.values())
    assert state.shards[1].ref == store.shard_head(1).stages[-1]
    assert state.shards[1].generation == 1


def test_a_reload_reuses_unchanged_models_and_swaps_the_rest(url):
    old = Ensemble.load(SisaStore(url))
    accept(url, [pick(url, 1, 2)])
    new = Ensemble.load(SisaStore(url), previous=old)
    assert new.models[0] is old.models[0] and new.models[2] is old.models[2]
    assert new.models[1] is not old.models[1] and new.served[1].stage == 2


def test_a_request_journaled_without_its_serving_write_is_still_served_compliant(url):
    """A writer died between the journal commit and the serving document."""
    store = SisaStore(url)
    victim = pick(url, 2, 1)
    accept(url, [pick(url, 0, 3)])  # a serving document now exists, through request 1
    from sisa.ids import salted_hash

    Journal(store).append([Entry(salted_hash(store.salt(), victim), 2, 1)], None, None)
    latest = store.latest_head("serving")
    assert latest.body["through"] == 1  # the document is stale
    state = compliance.current(store)
    assert state.through == 2 and state.shards[2].stage == 1 and state.shards[2].pending == [2]
    assert Ensemble.load(store).served[2].stage == 1


def test_rollbacks_of_several_requests_take_the_earliest_slice(url):
    accept(url, [pick(url, 0, 3)])
    assert compliance.current(SisaStore(url)).shards[0].stage == 3
    accept(url, [pick(url, 0, 1)])
    state = compliance.current(SisaStore(url))
    assert state.shards[0].stage == 1 and state.shards[0].pending == [1, 2]
    assert set(state.compliant_at) == {1, 2}


def test_serving_documents_are_write_once_and_pruned(url):
    store = SisaStore(url)
    for _ in range(4):
        compliance.refresh(store)
    names = store.fs.listdir("serving")
    assert names == ["g000002.json", "g000003.json"]  # the newest two


def test_accept_reads_heads_again_when_a_batch_purges_their_data_meanwhile(url, monkeypatch):
    """A request accepted while a batch commits: the data of the heads it read first is
    purged under it; it reads the new heads and is journaled."""
    from sisa.deletion import accept as accept_module

    stale = accept_module._heads(SisaStore(url), 3)
    accept(url, [pick(url, 0, 0)])
    process(url)  # shard 0 moves to a new generation; the old data is purged
    real, reads = accept_module._heads, iter([stale])
    fake = lambda store, n: next(reads, None) or real(store, n)  # noqa: E731
    monkeypatch.setattr(accept_module, "_heads", fake)
    accepted = accept(url, [pick(url, 0, 2)])
    assert accepted.request_id is not None and accepted.start_stages == {0: 3}


def test_accept_still_refuses_a_damaged_store(url):
    from storage import StorageError

    store = SisaStore(url)
    store.fs.delete(f"{store.shard_head(1).data.dir}/MANIFEST.json")
    with pytest.raises(StorageError, match="not committed"):
        accept(url, [pick(url, 0, 2)])
    assert Journal(store).seqs() == []
