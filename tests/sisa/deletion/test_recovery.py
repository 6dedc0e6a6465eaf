"""Crash windows, stale writers and overwrite safety of the store lifecycle.

Crash points are simulated in process here (an exception at the named point unwinds with
no further writes); tests/orchestrator/test_cli.py kills real processes."""

from __future__ import annotations

import dataclasses

import pytest

import sisa.deletion.accept
import sisa.deletion.batch
import sisa.training.jobs
from sisa.deletion import compliance
from sisa.deletion.accept import accept, forget
from sisa.deletion.batch import process
from sisa.evidence.verify import verify
from sisa.store.artifacts import SisaStore, StoreStateError
from sisa.store.journal import Journal
from sisa.store.layout import gen_dir, shard_prefix
from sisa.store.tombstones import add_tombstones
from sisa.training.train import train
from storage import decode_arrays
from tests.conftest import tiny_config
from tests.sisa.deletion.test_accept import layout, snapshot


class Crash(Exception):
    pass


def crash_at(monkeypatch, point):
    def crash(name):
        if name == point:
            raise Crash(name)

    for module in (sisa.training.jobs, sisa.deletion.batch, sisa.deletion.accept):
        monkeypatch.setattr(module, "crash_point", crash)


def ids_in_store(url):
    store = SisaStore(url)
    seen = set()
    for rel in store.fs.walk():
        if rel.endswith("ids.npz"):
            seen.update(decode_arrays(store.fs.read_bytes(rel))["ids"].tolist())
    return seen


@pytest.mark.parametrize("point", ["after-stage-commit", "before-head-commit", "after-head-commit"])
def test_a_forget_that_died_is_completed_and_purged_by_the_next_call(tmp_path, monkeypatch, point):
    url = str(tmp_path / "s")
    train(tiny_config(), url)
    ids, shards, slices = layout(url)
    victim = int(ids[(shards == 0) & (slices == 0)][0])
    crash_at(monkeypatch, point)
    with pytest.raises(Crash):
        forget(url, [victim])
    assert victim in ids_in_store(url)  # the crash left the data behind
    for module in (sisa.training.jobs, sisa.deletion.batch, sisa.deletion.accept):
        monkeypatch.setattr(module, "crash_point", lambda name: None)
    report = forget(url, [victim])  # the same request again
    assert victim in report.removed or victim in report.already_deleted
    assert victim not in ids_in_store(url)
    assert verify(url).identical


def test_two_requests_that_raced_for_one_point_both_complete(tmp_path):
    """Two acceptances validated the same point before either was journaled."""
    url = str(tmp_path / "s")
    train(tiny_config(), url)
    ids, shards, slices = layout(url)
    x = int(ids[(shards == 1) & (slices == 1)][0])
    accept(url, [x])
    store = SisaStore(url)
    duplicate = Journal(store).read(1).entries
    process(url)
    # the racing writer validated before the first request was processed, journals late
    Journal(store).append(list(duplicate), None, None)
    assert compliance.refresh(store).shards[1].pending == [2]
    report = process(url)
    assert report is not None and report.results == []  # nothing left to retrain
    assert Journal(store).receipted() == [1, 2]
    state = compliance.current(store)
    final = store.config().sisa.slices
    assert state.shards[1].pending == [] and state.shards[1].stage == final  # not held back
    assert x not in ids_in_store(url)
    assert verify(url).identical


def test_a_repeated_group_forget_changes_nothing(tmp_path):
    from tests.conftest import write_digits_npz

    source = write_digits_npz(tmp_path / "g.npz", groups=True)
    url = str(tmp_path / "s")
    train(tiny_config(**{"data.source": str(source), "sisa.sharding": "group"}), url)
    forget(url, group="person-3")
    before = snapshot(url)
    assert forget(url, group="person-3").already_deleted == ["person-3"]
    assert snapshot(url) == before


def test_heads_past_a_million_generations(tmp_path):
    store = SisaStore(str(tmp_path / "s"))
    store.commit_head("tombstones", 999_999, {"entries": [], "groups": []})
    store.commit_head("tombstones", 1_000_000, {"entries": [{"hash": "h"}], "groups": []})
    assert store.tombstones().generation == 1_000_000
    add_tombstones(store, [{"hash": "i", "part": 0, "generation": 0}], [])
    assert [e["hash"] for e in store.tombstones().body["entries"]] == ["h", "i"]


def test_train_never_touches_files_that_are_not_a_store(tmp_path):
    target = tmp_path / "thesis"
    target.mkdir()
    (target / "thesis.tex").write_text("precious")
    for overwrite in (False, True):
        with pytest.raises(StoreStateError, match="not part of a store"):
            train(tiny_config(), str(target), overwrite=overwrite)
    assert (target / "thesis.tex").read_text() == "precious"
    assert sorted(p.name for p in target.iterdir()) == ["thesis.tex"]


def test_overwrite_refuses_to_bring_back_forgotten_points(tmp_path):
    url = str(tmp_path / "s")
    train(tiny_config(), url)
    forget(url, [5])
    with pytest.raises(StoreStateError, match="forgotten"):
        train(tiny_config(**{"optim.lr": 0.01}), url, overwrite=True)
    assert 5 not in ids_in_store(url) and SisaStore(url).meta() is not None


def test_overwrite_retrains_a_store_in_place(tmp_path):
    url = str(tmp_path / "s")
    train(tiny_config(), url)
    with pytest.raises(StoreStateError, match="already trained"):
        train(tiny_config(), url)
    train(tiny_config(**{"sisa.shards": 2}), url, overwrite=True)
    assert SisaStore(url).config().sisa.shards == 2
    assert not SisaStore(url).fs.walk(shard_prefix(2))


def test_stratified_sharding_is_exact(tmp_path):
    url = str(tmp_path / "s")
    train(tiny_config(**{"sisa.sharding": "stratified"}), url)
    ids, shards, slices = layout(url)
    victims = [int(ids[(shards == k) & (slices == 1)][0]) for k in range(3)]
    report = forget(url, victims)
    assert sorted(r.shard for r in report.shards) == [0, 1, 2]
    assert verify(url).identical


def test_verify_checks_the_optimizer_state_too(tmp_path):
    """Weights equal but optimizer state different: later retrains would diverge."""
    import torch

    from storage import encode_state

    url = str(tmp_path / "s")
    train(tiny_config(**{"sisa.shards": 1}), url)
    store = SisaStore(url)
    head = store.shard_head(0)
    weights, extra = store.read_stage(head.stages[1])
    for state in extra["optimizer"]["state"].values():
        state["momentum_buffer"] = torch.zeros_like(state["momentum_buffer"])
    rel = f"{gen_dir(shard_prefix(0), 1)}/stage-002"
    meta = store.stage_meta(head.stages[1].dir)
    ref = store.write_stage(rel, weights, extra, {k: meta[k] for k in ("stage", "ids_hash")})
    ref = dataclasses.replace(ref, ids_hash=head.stages[1].ids_hash)
    stages = [s.to_body() for s in (head.stages[0], ref, head.stages[2])]
    store.commit_head(shard_prefix(0), 1, head.body | {"stages": stages})
    assert encode_state(extra)  # the tampered state is a valid checkpoint
    report = verify(url)
    checks = report.shards[0].stages
    assert not checks[1].state_match and not checks[1].mismatched_tensors
    assert not report.identical


def test_the_head_references_what_it_loads(tmp_path):
    """A stage folder replaced behind the head's back is refused, not loaded."""
    url = str(tmp_path / "s")
    train(tiny_config(**{"sisa.shards": 1}), url)
    store = SisaStore(url)
    head = store.shard_head(0)
    ref = dataclasses.replace(head.stages[-1], manifest="0" * 64)
    with pytest.raises(Exception, match="refusing to load"):
        store.read_stage(ref)
