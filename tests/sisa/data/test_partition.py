import numpy as np
import pytest

from sisa.config import SisaConfig
from sisa.data.partition import MISSING, Locator, Tiers, assign, place, risk_tiers
from sisa.store.layout import TEST_PART

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
    parts = {0: make([5, 1, 9]), 1: make([2]), TEST_PART: make([7, 3])}
    located = Locator(parts).locate(make([9, 2, 3, 100]))
    assert located.part.tolist() == [0, 1, TEST_PART, MISSING]
    assert located.row.tolist() == [2, 0, 1, -1]
    wrong_kind = np.array(["5"]) if kind == "int" else np.array([5])
    assert Locator(parts).locate(wrong_kind).part.tolist() == [MISSING]
    assert Locator({0: make([])}).locate(make([1])).part.tolist() == [MISSING]


# -- deletion-aware placement ----------------------------------------------------------


def risky_layout(strategy, ids, labels, groups, risk, shards=20, slices=10, reserved=2, late=3):
    tiers = Tiers(threshold=0.5, shards=reserved, slices=late)
    return assign(
        ids,
        labels,
        groups,
        seed=3,
        strategy=strategy,
        shards=shards,
        slices=slices,
        risk=risk,
        tiers=tiers,
    )


def group_risk(groups):
    """One risk per group (group sharding needs a group's points in one tier)."""
    return np.array([0.9 if int(g[1:]) % 10 == 0 else 0.02 for g in groups])


@pytest.mark.parametrize("strategy", ["uniform", "stratified", "group"])
def test_deletion_aware_placement_is_a_pure_function_of_the_point(points, strategy):
    ids, labels, groups = points
    risk = group_risk(groups)
    shard, slice_ = risky_layout(strategy, ids, labels, groups, risk)
    keep = np.random.default_rng(2).random(N) < 0.6  # place a subset: nobody moves
    s2, r2 = risky_layout(strategy, ids[keep], labels[keep], groups[keep], risk[keep])
    assert np.array_equal(s2, shard[keep]) and np.array_equal(r2, slice_[keep])
    order = np.random.default_rng(1).permutation(N)
    s3, r3 = risky_layout(strategy, ids[order], labels[order], groups[order], risk[order])
    assert np.array_equal(s3, shard[order]) and np.array_equal(r3, slice_[order])
    one = risky_layout(strategy, ids[7:8], labels[7:8], groups[7:8], risk[7:8])
    assert (one[0][0], one[1][0]) == (shard[7], slice_[7])


@pytest.mark.parametrize("strategy", ["uniform", "stratified", "group"])
def test_risky_points_land_in_the_reserved_shards_and_the_last_slices(points, strategy):
    ids, labels, groups = points
    risk = group_risk(groups)
    risky = risk >= 0.5
    shard, slice_ = risky_layout(strategy, ids, labels, groups, risk)
    assert set(shard[risky]) == {0, 1} and set(slice_[risky]) == {7, 8, 9}
    assert set(shard[~risky]) == set(range(2, 20)) and set(slice_[~risky]) == set(range(10))
    if strategy == "group":  # a person still lives in one slice of one shard
        for g in np.unique(groups)[:40]:
            rows = groups == g
            assert len(set(shard[rows])) == 1 and len(set(slice_[rows])) == 1
    else:  # balanced in expectation within each tier
        safe = np.bincount(shard[~risky], minlength=20)[2:]
        assert safe.min() > 0.7 * safe.mean() and safe.max() < 1.3 * safe.mean()
        late = np.bincount(slice_[risky], minlength=10)[7:]
        assert late.min() > 0.75 * late.mean()


def test_with_one_shard_risky_points_share_it_in_its_last_slices(points):
    ids, labels, groups = points
    risk = group_risk(groups)
    shard, slice_ = risky_layout("uniform", ids, labels, groups, risk, shards=1, reserved=1)
    assert set(shard) == {0}
    assert set(slice_[risk >= 0.5]) == {7, 8, 9} and set(slice_[risk < 0.5]) == set(range(10))


@pytest.mark.parametrize(
    "shards, slices, shard_fraction, slice_fraction, expected",
    [
        (20, 10, 0.05, 0.5, (1, 5)),
        (20, 10, 0.1, 0.25, (2, 3)),  # 2.5 rounds up
        (5, 4, 0.05, 0.01, (1, 1)),  # at least one shard and one slice
        (2, 4, 0.9, 1.0, (1, 4)),  # the other points keep at least one shard
        (1, 3, 0.5, 0.5, (1, 2)),  # one shard: shared
    ],
)
def test_tiers_from_the_config(shards, slices, shard_fraction, slice_fraction, expected):
    cfg = SisaConfig(
        shards=shards,
        slices=slices,
        deletion_risk="column",
        risky_shard_fraction=shard_fraction,
        risky_slice_fraction=slice_fraction,
    )
    tiers = risk_tiers(cfg)
    assert tiers is not None and (tiers.shards, tiers.slices) == expected
    assert tiers.threshold == cfg.risk_threshold
    assert risk_tiers(SisaConfig(shards=shards, slices=slices)) is None


def test_place_reads_the_stored_arrays_and_ignores_risk_unless_asked(points):
    ids, labels, groups = points
    risk = group_risk(groups)
    arrays = {"ids": ids, "y": labels, "groups": groups, "risk": risk, "X": np.zeros((N, 2))}
    plain = place(SisaConfig(shards=7, slices=5, seed=3), arrays)
    assert all(
        np.array_equal(a, b) for a, b in zip(plain, layout("uniform", ids, labels), strict=True)
    )
    aware = SisaConfig(shards=7, slices=5, seed=3, deletion_risk="column")
    shard, slice_ = place(aware, arrays)
    assert set(shard[risk >= 0.5]) == {0} and set(slice_[risk >= 0.5]) == {2, 3, 4}
    with pytest.raises(ValueError, match=r"sisa\.deletion_risk .*no risk values"):
        place(aware, {"ids": ids, "y": labels})


def test_group_sharding_refuses_a_group_split_across_tiers(points):
    ids, labels, groups = points
    risk = group_risk(groups)
    risk[groups == "g3"] = np.linspace(0, 1, 5)  # one person, two tiers
    with pytest.raises(ValueError, match=r"sisa\.risk_threshold.*'g3'"):
        risky_layout("group", ids, labels, groups, risk)
