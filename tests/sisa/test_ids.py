import numpy as np
import pytest

from sisa.ids import (
    as_id_array,
    bucket,
    canonical_id,
    fingerprints,
    hash_order,
    id_set_hash,
    salted_hash,
    seed_from,
    typed_ids,
)


def test_int_and_str_ids_are_distinct():
    assert fingerprints(np.array([7]))[0] != fingerprints(np.array(["7"]))[0]
    assert salted_hash(b"k" * 16, 7) != salted_hash(b"k" * 16, "7")


def test_canonical_id_rejects_floats_and_bools():
    assert canonical_id(np.int32(5)) == 5
    for bad in (1.0, True, None, b"x"):
        with pytest.raises(TypeError):
            canonical_id(bad)


def test_as_id_array_rejects_mixed_types():
    with pytest.raises(TypeError, match="mix"):
        as_id_array(np.array([1, "a"], dtype=object))
    assert as_id_array([1, 2]).dtype == np.int64
    assert as_id_array(["a", "b"]).dtype.kind == "U"


@pytest.mark.parametrize("ids", [np.arange(500), np.array([f"user-{i}" for i in range(500)])])
def test_hash_order_is_stable_under_removal(ids):
    fps = fingerprints(ids)
    order = ids[hash_order(fps, 3, "order", 1, 2, 0)]
    rng = np.random.default_rng(0)
    for removed in rng.choice(ids, 10, replace=False):
        keep = ids != removed
        sub = ids[keep][hash_order(fps[keep], 3, "order", 1, 2, 0)]
        assert list(sub) == [i for i in order if i != removed]


def test_hash_order_depends_on_context():
    fps = fingerprints(np.arange(100))
    assert not np.array_equal(
        hash_order(fps, 0, "order", 0, 1, 0), hash_order(fps, 0, "order", 0, 1, 1)
    )


def test_bucket_is_balanced_and_per_point():
    fps = fingerprints(np.arange(20_000))
    counts = np.bincount(bucket(fps, 10, 0, "shard"), minlength=10)
    assert counts.min() > 1800 and counts.max() < 2200
    assert np.array_equal(bucket(fps[:100], 10, 0, "shard"), bucket(fps, 10, 0, "shard")[:100])


def test_seed_and_set_hash():
    assert seed_from(0, "step", 1) != seed_from(0, "step", 2)
    assert 0 <= seed_from(1, 2, 3) < 2**63
    assert id_set_hash(np.array([3, 1, 2])) == id_set_hash(np.array([1, 2, 3]))
    assert id_set_hash(np.array([1, 2])) != id_set_hash(np.array([1, 2, 3]))


@pytest.mark.parametrize("text", ["\uff12\uff10", "\u0661\u0663", "21\n", " 21", "+21", "2_1", "²"])
def test_integer_ids_are_ascii_digits_only(text):
    """``\\d`` and ``int()`` take any Unicode digit: "２０" would delete point 20."""
    with pytest.raises(ValueError, match="not a 64-bit integer"):
        typed_ids([text], "int")
    assert typed_ids(["-21", "0021", 7], "int") == [-21, 21, 7]
    assert typed_ids([text], "str") == [text]  # a text store keeps it as it is
