"""Exact unlearning: after any deletions every shard equals training from scratch without
the deleted points. Checked two ways: with ``verify``, and independently by training a
second store from a file that never held the points and comparing weight hashes."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from sisa.data.partition import place
from sisa.deletion.accept import UnknownIDError, forget, plan_forget
from sisa.evidence.status import status
from sisa.evidence.verify import verify
from sisa.store.artifacts import SisaStore
from sisa.store.layout import gen_dir, shard_prefix
from sisa.training.train import train
from storage import decode_arrays
from tests.conftest import tiny_config, write_digits_npz


def layout(url):
    """(ids, shard, slice) of every training point in the store."""
    store = SisaStore(url)
    cfg = store.config()
    ids, shards, slices = [], [], []
    for k in range(cfg.sisa.shards):
        arrays = store.read_data(store.shard_head(k).data, features=False)
        _, slice_of = place(cfg.sisa, arrays, store.placement_key())
        ids += arrays["ids"].tolist()
        shards += [k] * len(slice_of)
        slices += slice_of.tolist()
    return np.array(ids), np.array(shards), np.array(slices)


def weights_by_shard(url):
    """Each shard's final weights, by the hash of the tensors (a sealed file's own bytes
    differ from store to store)."""
    return [s["state_hash"] for s in status(url)["shards"]]


def snapshot(url):
    """Every file's hash, but the lease's: who held the store, not what it holds."""
    store = SisaStore(url)
    return {
        rel: hashlib.sha256(store.fs.read_bytes(rel)).hexdigest()
        for rel in store.fs.walk()
        if not rel.startswith("locks/")
    }


@pytest.fixture
def trained(tmp_path):
    """A store trained on a digits file; returns (url, config overrides, file factory)."""

    def make(name="store", drop=frozenset(), groups=False, **overrides):
        source = write_digits_npz(tmp_path / f"{name}.npz", drop=set(drop), groups=groups)
        cfg = tiny_config(**{"data.source": str(source)} | overrides)
        url = str(tmp_path / name)
        train(cfg, url)
        return url

    return make


def assert_equals_scratch(trained, url, deleted, groups=False, **overrides):
    """The forgetful store equals a store trained on a file without ``deleted``."""
    scratch = trained("scratch", drop=set(deleted), groups=groups, **overrides)
    assert weights_by_shard(url) == weights_by_shard(scratch)
    report = verify(url)
    assert report.identical and report.same_environment


def test_deletion_in_first_slice_retrains_whole_shard(trained):
    url = trained()
    ids, shards, slices = layout(url)
    victim = int(ids[(shards == 1) & (slices == 0)][0])
    report = forget(url, [victim])
    assert [r.shard for r in report.shards] == [1]
    assert report.shards[0].start_stage == 1 and report.shards[0].trained == [1, 2, 3]
    assert_equals_scratch(trained, url, [victim])


def test_a_shard_job_reports_where_its_time_went(trained):
    from sisa.training.jobs import PHASES

    url = trained()
    ids, shards, slices = layout(url)
    report = forget(url, [int(ids[(shards == 2) & (slices == 0)][0])])
    (result,) = report.shards
    assert tuple(result.phases) == PHASES
    assert result.phases["train"] > 0 and result.phases["checkpoint"] > 0
    assert result.phases["load"] > 0 and result.phases["purge"] > 0  # old stages swept
    assert sum(result.phases.values()) <= result.seconds


def test_deletion_in_last_slice_retrains_last_stage_only(trained):
    url = trained()
    ids, shards, slices = layout(url)
    victim = int(ids[(shards == 0) & (slices == 2)][0])
    report = forget(url, [victim])
    assert report.shards[0].start_stage == 3 and report.shards[0].trained == [3]
    assert_equals_scratch(trained, url, [victim])


def test_trailing_points_belong_to_a_slice_and_are_unlearned(trained):
    """The points at the end of a shard (n mod R in the original code) are in a slice."""
    url = trained()
    store = SisaStore(url)
    head = store.shard_head(2)
    arrays = store.read_data(head.data, features=False)
    final = head.stages[-1]
    from sisa.ids import id_set_hash

    assert final.ids_hash == id_set_hash(arrays["ids"])  # last stage saw every point
    trailing = [int(i) for i in arrays["ids"][-3:]]
    forget(url, trailing)
    assert_equals_scratch(trained, url, trailing)


def test_many_ids_in_several_shards_retrain_each_shard_once(trained):
    url = trained()
    ids, shards, slices = layout(url)
    victims = [int(ids[(shards == k) & (slices == s)][0]) for k in (0, 2) for s in (1, 2)]
    before = snapshot(url)
    assert plan_forget(SisaStore(url), victims).start_stages == {0: 2, 2: 2}  # a preview
    assert snapshot(url) == before
    report = forget(url, victims)
    assert sorted(r.shard for r in report.shards) == [0, 2]
    assert all(r.start_stage == 2 and r.trained == [2, 3] for r in report.shards)
    assert status(url)["shards"][1]["generation"] == 0  # untouched shard
    assert_equals_scratch(trained, url, victims)


def test_repeated_deletions(trained):
    url = trained()
    ids, shards, _ = layout(url)
    deleted = []
    for k in (0, 0, 1, 2):
        victim = int(ids[shards == k][len(deleted) * 5])
        forget(url, [victim])
        deleted.append(victim)
    assert [s["generation"] for s in status(url)["shards"]] == [2, 1, 1]
    assert_equals_scratch(trained, url, deleted)


def test_forget_a_whole_group(trained):
    url = trained(groups=True, **{"sisa.sharding": "group"})
    report = forget(url, group="person-10")
    assert sorted(report.removed + report.removed_from_test) == [1040, 1041, 1042, 1043]
    assert len(report.shards) == 1  # a group lives in one shard
    assert len({r.start_stage for r in report.shards}) == 1
    deleted = [1040, 1041, 1042, 1043]
    assert_equals_scratch(trained, url, deleted, groups=True, **{"sisa.sharding": "group"})
    again = forget(url, group="person-10")
    assert again.already_deleted == ["person-10"] and not again.shards


def test_dropout_and_adam_stay_exact(trained):
    """Stochastic layers and optimizer moments survive checkpoint/resume bitwise."""
    overrides = {"model.dropout": 0.3, "optim.name": "adam", "optim.lr": 0.01}
    url = trained(**overrides)
    ids, shards, slices = layout(url)
    victim = int(ids[(shards == 0) & (slices == 1)][0])
    forget(url, [victim])
    assert_equals_scratch(trained, url, [victim], **overrides)


def test_purge_deletes_every_file_that_saw_a_deleted_point(trained):
    url = trained()
    ids, shards, slices = layout(url)
    victim = int(ids[(shards == 1) & (slices == 1)][0])
    store = SisaStore(url)
    before = store.shard_head(1)
    report = forget(url, [victim])
    stale = [before.data.dir] + [s.dir for s in before.stages if s.stage >= 2]
    for rel in stale:
        assert not store.fs.walk(rel), f"{rel} survived the purge"
    assert f"{gen_dir(shard_prefix(1), 0)}.json" not in store.fs.walk(shard_prefix(1))
    assert report.purged
    # stage 1 never saw the point: it is reused, not retrained
    assert store.shard_head(1).stages[0].dir == before.stages[0].dir
    for rel in store.fs.walk():
        if rel.endswith(".npz"):
            arrays = decode_arrays(store.fs.read_bytes(rel))
            if "ids" in arrays:
                assert victim not in arrays["ids"].tolist(), rel


def test_unknown_ids_change_nothing(trained):
    url = trained()
    known = int(layout(url)[0][0])
    before = snapshot(url)
    with pytest.raises(UnknownIDError, match="99999") as err:
        forget(url, [known, 99999, "nobody"])
    assert "nobody" in str(err.value)
    assert snapshot(url) == before


@pytest.mark.parametrize("ids, group", [([], None), ([1, 2], "x")])
def test_bad_requests(trained, ids, group):
    url = trained()
    before = snapshot(url)
    with pytest.raises(ValueError):
        forget(url, ids, group=group)
    assert snapshot(url) == before


def test_duplicates_and_unknown_group(trained):
    url = trained(groups=True, **{"sisa.sharding": "group"})
    known = int(layout(url)[0][0])
    with pytest.raises(ValueError, match="duplicate"):
        forget(url, [known, known])
    with pytest.raises(UnknownIDError, match="unknown group"):
        forget(url, group="person-99999")


def test_already_deleted_is_a_noop(trained):
    url = trained()
    victim = int(layout(url)[0][0])
    forget(url, [victim])
    before = snapshot(url)
    report = forget(url, [victim])
    assert report.already_deleted == [victim] and not report.removed and not report.shards
    assert snapshot(url) == before


def test_test_points_are_erased_without_retraining(trained):
    url = trained()
    store = SisaStore(url)
    test_ids = store.read_data(store.latest_head("test").data, features=False)["ids"]
    victim = int(test_ids[0])
    report = forget(url, [victim])
    assert report.removed_from_test == [victim] and not report.shards
    test_after = store.read_data(store.latest_head("test").data, features=False)["ids"]
    assert victim not in test_after.tolist() and len(test_after) == len(test_ids) - 1


def test_verify_catches_a_shard_that_was_not_unlearned(trained):
    """Drop a point from the data but keep the old weights: verify must say so."""
    url = trained()
    store = SisaStore(url)
    head = store.shard_head(0)
    arrays = store.read_data(head.data)
    kept = {k: v[1:] for k, v in arrays.items()}
    from sisa.ids import id_set_hash

    ref = store.write_data(f"{gen_dir(shard_prefix(0), 1)}/data", kept, id_set_hash(kept["ids"]))
    body = head.body | {"data": ref.to_body(), "n": len(kept["ids"])}
    store.commit_head(shard_prefix(0), 1, body)
    report = verify(url, shard=0)
    assert not report.identical
    assert not all(s.ids_match for s in report.shards[0].stages)
    assert report.shards[0].stages[-1].mismatched_tensors


def test_forgetting_is_cheaper_than_retraining(trained):
    url = trained()
    ids, shards, slices = layout(url)
    victim = int(ids[(shards == 2) & (slices == 2)][0])
    report = forget(url, [victim])
    full = sum(SisaStore(url).shard_head(k).stages[-1].samples for k in range(3))
    assert 0 < report.shards[0].samples < full / 3


def test_string_ids_from_csv_are_unlearned_exactly(tmp_path):
    """User CSV with string IDs: forget, then compare with a CSV that never held them."""
    import pandas as pd
    from sklearn.datasets import load_digits

    d = load_digits()
    frame = pd.DataFrame(d.data / 16.0, columns=[f"px{i}" for i in range(64)])
    frame.insert(0, "label", d.target)
    frame.insert(0, "id", [f"user-{i:04d}" for i in range(len(frame))])
    frame.to_csv(tmp_path / "all.csv", index=False)
    cfg = tiny_config(**{"data.source": str(tmp_path / "all.csv")})
    url = str(tmp_path / "store")
    train(cfg, url)
    ids, shards, _ = layout(url)
    victims = [str(ids[shards == 0][3]), str(ids[shards == 2][0])]
    report = forget(url, victims)
    assert sorted(report.removed) == sorted(victims)
    with pytest.raises(UnknownIDError, match="user-9999"):
        forget(url, ["user-9999"])
    assert forget(url, victims[:1]).already_deleted == victims[:1]
    frame[~frame["id"].isin(victims)].to_csv(tmp_path / "kept.csv", index=False)
    scratch = str(tmp_path / "scratch")
    train(tiny_config(**{"data.source": str(tmp_path / "kept.csv")}), scratch)
    assert weights_by_shard(url) == weights_by_shard(scratch)
    assert verify(url).identical


def test_global_rng_state_does_not_matter(trained):
    """Every draw (dropout) comes from the step's position, never from global state."""
    import torch

    overrides = {"model.dropout": 0.5}
    torch.manual_seed(1)
    url = trained(**overrides)
    victim = int(layout(url)[0][0])
    torch.manual_seed(2)
    forget(url, [victim])
    torch.manual_seed(3)
    assert_equals_scratch(trained, url, [victim], **overrides)
