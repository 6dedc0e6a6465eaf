import numpy as np
import pytest

from sisa.partition import MISSING, TEST, Locator, assign

N = 5000


def layout(strategy, ids, labels, groups=None, shards=7, slices=5):
    return assign(ids, labels, groups, seed=3, strategy=strategy, shards=shards, slices=slices)


@pytest.fixture
def points():
    rng = np.random.default_rng(0)
    ids = np.array([f"u{i}" for i in rng.permutation(N)])
    labels = rng.integers(0, 10, N)
    groups = np.array([f"g{i // 5}" for i in range(N)])
    return ids, labels, groups


@pytest.mark.parametrize("strategy", ["uniform", "stratified", "group"])
def test_assignment_is_a_pure_function_of_the_point(points, strategy):
    ids, labels, groups = points
    shard, slice_ = layout(strategy, ids, labels, groups)
    assert shard.min() >= 0 and shard.max() < 7 and slice_.min() >= 0 and slice_.max() < 5
    keep = np.ones(N, bool)
    keep[::3] = False  # remove a third of the points: nobody else moves
    s2, r2 = layout(strategy, ids[keep], labels[keep], groups[keep])
    assert np.array_equal(s2, shard[keep]) and np.array_equal(r2, slice_[keep])
    order = np.random.default_rng(1).permutation(N)  # row order does not matter either
    s3, r3 = layout(strategy, ids[order], labels[order], groups[order])
    assert np.array_equal(s3, shard[order]) and np.array_equal(r3, slice_[order])


def test_every_point_is_in_exactly_one_slice_and_shards_are_balanced(points):
    ids, labels, _ = points
    shard, slice_ = layout("uniform", ids, labels)
    counts = np.bincount(shard, minlength=7)
    assert counts.min() > 0.85 * N / 7 and counts.max() < 1.15 * N / 7
    assert np.bincount(slice_, minlength=5).sum() == N


def test_group_sharding_keeps_a_group_in_one_slice_of_one_shard(points):
    ids, labels, groups = points
    shard, slice_ = layout("group", ids, labels, groups)
    for g in np.unique(groups)[:50]:
        rows = groups == g
        assert len(set(shard[rows])) == 1 and len(set(slice_[rows])) == 1
    with pytest.raises(ValueError, match="groups"):
        layout("group", ids, labels, None)


def test_stratified_spreads_every_class_over_the_shards(points):
    ids, labels, _ = points
    shard, _ = layout("stratified", ids, labels)
    for c in range(10):
        counts = np.bincount(shard[labels == c], minlength=7)
        share = counts / counts.sum()
        assert share.min() > 0.08 and share.max() < 0.22
    # the class enters the key: the same IDs with other labels land elsewhere
    other, _ = layout("stratified", ids, (labels + 1) % 10)
    assert (other != shard).mean() > 0.5


def test_unknown_strategy():
    with pytest.raises(ValueError, match="sisa.sharding"):
        layout("random", np.arange(3), np.zeros(3, np.int64))


@pytest.mark.parametrize("kind", ["int", "str"])
def test_locator_finds_parts_and_rows(kind):
    make = (
        (lambda a: np.asarray(a)) if kind == "int" else (lambda a: np.array([f"p{i}" for i in a]))
    )
    parts = {0: make([5, 1, 9]), 1: make([2]), TEST: make([7, 3])}
    located = Locator(parts).locate(make([9, 2, 3, 100]))
    assert located.part.tolist() == [0, 1, TEST, MISSING]
    assert located.row.tolist() == [2, 0, 1, -1]
    wrong_kind = np.array(["5"]) if kind == "int" else np.array([5])
    assert Locator(parts).locate(wrong_kind).part.tolist() == [MISSING]
    assert Locator({0: make([])}).locate(make([1])).part.tolist() == [MISSING]
