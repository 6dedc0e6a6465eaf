import numpy as np
import pytest

from sisa.serving.aggregate import accuracy, aggregate, decide


def test_average_and_vote():
    probs = np.array(
        [
            [[0.6, 0.4, 0.0]],
            [[0.0, 0.55, 0.45]],
            [[0.0, 0.45, 0.55]],
        ],
        dtype=np.float32,
    )  # [S=3, n=1, C=3]
    avg = aggregate(probs, "average")
    assert np.allclose(avg, [[0.2, 0.4666667, 0.3333333]])
    assert decide(avg).tolist() == [1]
    votes = aggregate(probs, "vote")
    assert np.allclose(votes, [[1 / 3, 1 / 3, 1 / 3]])


def test_vote_ties_go_to_the_lowest_class_whatever_the_shard_order():
    probs = np.array([[[0.1, 0.9]], [[0.9, 0.1]]], dtype=np.float32)
    assert decide(aggregate(probs, "vote")).tolist() == [0]
    assert decide(aggregate(probs[::-1], "vote")).tolist() == [0]


def test_bad_input():
    with pytest.raises(ValueError, match="unknown method"):
        aggregate(np.zeros((1, 1, 2)), "max")
    with pytest.raises(ValueError):
        aggregate(np.zeros((0, 1, 2)), "average")
    assert accuracy(np.array([1, 0]), np.array([1, 1])) == 0.5


def test_a_tie_within_one_shard_votes_for_the_lowest_class():
    assert aggregate(np.array([[[0.5, 0.5]]], dtype=np.float32), "vote").tolist() == [[1.0, 0.0]]
