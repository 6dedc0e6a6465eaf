"""Forgetting quality on samples whose ε can be worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sisa.evidence.quality import (
    EPSILON_CAP,
    _bounds,
    example_epsilon,
    example_score,
    forgetting_quality,
    logit_scaled_confidence,
)


def test_phi_is_the_log_odds_of_the_true_class() -> None:
    proba = np.array([[0.8, 0.15, 0.05], [0.5, 0.5, 0.0]])
    phi = logit_scaled_confidence(proba, np.array([0, 2]))
    assert phi[0] == pytest.approx(math.log(0.8 / 0.2))
    assert np.isfinite(phi[1]) and phi[1] < -100  # p_y = 0: very negative, not -inf
    stacked = logit_scaled_confidence(np.stack([proba, proba]), np.array([0, 2]))  # [N, n]
    assert stacked.shape == (2, 2) and (stacked[0] == phi).all()


def test_overlapping_samples_give_the_hand_computed_epsilon() -> None:
    """0..9 against 5..14: the best test, φ >= 9, misses 4 of 10 retrained values and
    takes 1 of 10 unlearned ones: ε = log(1 - δ - 0.4) - log(0.1)."""
    u, r = np.arange(10.0), np.arange(5.0, 15.0)
    expected = math.log(1 - 1e-5 - 0.4) - math.log(0.1)
    assert example_epsilon(u, r, intervals=False) == pytest.approx(expected, rel=1e-6)
    assert example_epsilon(u, r) == pytest.approx(expected, rel=1e-6)  # no interval does better
    assert example_epsilon(r, u) == pytest.approx(expected, rel=1e-6)  # symmetric


def test_identical_samples_score_one_and_separated_ones_zero() -> None:
    same = np.linspace(-1, 1, 20)
    assert example_epsilon(same, same) == pytest.approx(0.0, abs=1e-4)
    assert example_epsilon(np.arange(20.0), np.arange(100.0, 120.0)) == EPSILON_CAP
    spike = np.r_[np.zeros(19), 1e-6]  # one sample 1000x narrower than the other
    assert example_epsilon(spike, np.linspace(0, 3, 20)) == EPSILON_CAP


def test_an_interval_test_catches_a_peaked_sample_inside_a_wide_one() -> None:
    """Retrained values spread on both sides of a tight unlearned cluster with the same
    median: no single threshold separates them, an interval does."""
    tight = np.linspace(-0.05, 0.05, 10)
    wide = np.r_[np.linspace(-3, -1, 5), np.linspace(1, 3, 5)]
    assert example_epsilon(tight, wide, intervals=False) == pytest.approx(math.log(5), rel=1e-4)
    assert example_epsilon(tight, wide) == EPSILON_CAP  # interval: FPR = FNR = 0


def test_scores_halve_per_half_unit_of_epsilon_up_to_what_n_models_resolve() -> None:
    assert [example_score(e, 512) for e in (0.0, 0.49, 0.5, 1.2, 6.99)] == [
        1.0,
        1.0,
        0.5,
        0.25,
        2.0**-13,
    ]
    assert example_score(2.9, 10) == 2.0**-5 and example_score(3.0, 10) == 0.0  # ceil(ln 9) = 3
    with pytest.raises(ValueError, match="at least 3 models"):
        example_score(0.0, 2)


def test_forgetting_quality_averages_the_example_scores() -> None:
    rng = np.random.default_rng(0)
    retrained = rng.normal(0, 1, (20, 4))  # [N, n]
    unlearned = retrained.copy()
    unlearned[:, 3] += 100  # example 3 is told apart perfectly
    q = forgetting_quality(unlearned, retrained)
    assert q.models == 20 and q.epsilons.shape == (4,)
    assert q.epsilons[3] == EPSILON_CAP and q.epsilons[:3] == pytest.approx(0.0, abs=1e-4)
    assert q.score == pytest.approx(0.75)
    with pytest.raises(ValueError, match="same shape"):
        forgetting_quality(unlearned[:, :2], retrained)
    with pytest.raises(ValueError, match="empty forget set"):
        forgetting_quality(np.zeros((5, 0)), np.zeros((5, 0)))


def test_a_test_with_both_rates_one_bounds_nothing() -> None:
    """log(1 - δ - 1) is undefined: such a test is dropped, not allowed to poison the max."""
    bounds = _bounds(np.array([1.0, 0.1, 0.0, 0.0]), np.array([1.0, 0.4, 0.0, 0.5]))
    assert bounds[0] == -np.inf and bounds[2] == np.inf and bounds[3] == -np.inf
    assert bounds[1] == pytest.approx(math.log(1 - 1e-5 - 0.4) - math.log(0.1))
