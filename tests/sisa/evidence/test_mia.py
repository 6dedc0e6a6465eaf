"""Membership-inference attacks on constructed losses and confidences."""

from __future__ import annotations

import numpy as np
import pytest

from sisa.evidence.mia import (
    confidence_features,
    logistic_loss_attack,
    loss_threshold_attack,
    svc_mia,
)


def test_threshold_attack_on_separated_overlapping_and_identical_losses() -> None:
    perfect = loss_threshold_attack(np.array([0.1, 0.2]), np.array([1.0, 2.0, 3.0]))
    assert (perfect.auc, perfect.balanced_accuracy) == (1.0, 1.0)
    assert 0.2 <= perfect.threshold < 1.0
    # members 1,2,3 vs non-members 2,4,5: 7 pairs ordered, 1 tie of 9 -> AUC 7.5/9;
    # the best threshold, loss <= 3, finds every member and 2 of 3 non-members
    mixed = loss_threshold_attack(np.array([1.0, 2.0, 3.0]), np.array([2.0, 4.0, 5.0]))
    assert mixed.auc == pytest.approx(7.5 / 9)
    assert mixed.balanced_accuracy == pytest.approx((1 + 2 / 3) / 2)
    assert mixed.threshold == 3.0
    same = loss_threshold_attack(np.ones(10), np.ones(10))
    assert (same.auc, same.balanced_accuracy) == (0.5, 0.5)
    # a model that fits its non-members better than its members: AUC below chance
    assert loss_threshold_attack(np.array([5.0, 6.0]), np.array([1.0, 2.0])).auc == 0.0


def test_threshold_attack_refuses_empty_or_malformed_sets() -> None:
    with pytest.raises(ValueError, match="at least one member"):
        loss_threshold_attack(np.array([]), np.array([1.0]))
    with pytest.raises(ValueError, match="1-D"):
        loss_threshold_attack(np.ones((2, 2)), np.ones(2))


def test_logistic_attack_finds_separable_losses_and_not_identical_ones() -> None:
    rng = np.random.default_rng(0)
    assert logistic_loss_attack(rng.uniform(0, 1, 200), rng.uniform(2, 3, 500)) == 1.0
    chance = logistic_loss_attack(rng.exponential(1, 2000), rng.exponential(1, 2000))
    assert abs(chance - 0.5) < 0.05
    with pytest.raises(ValueError, match="at least 6 examples of each set, got 5 forget"):
        logistic_loss_attack(np.ones(5), np.ones(10))
    # 6 of each is the fewest a 10% hold-out can split with one of each side held out
    assert 0.0 <= logistic_loss_attack(rng.uniform(0, 1, 6), rng.uniform(0, 1, 6)) <= 1.0


def test_confidence_features_by_hand() -> None:
    proba = np.array([[0.5, 0.25, 0.25]])
    f = {k: v[0] for k, v in confidence_features(proba, np.array([0])).items()}
    assert f["confidence"] == 0.5 and f["correctness"] == 1.0
    assert f["entropy"] == pytest.approx(-(0.5 * np.log(0.5) + 2 * 0.25 * np.log(0.25)))
    assert f["modified_entropy"] == pytest.approx(-0.5 * np.log(0.5) - 2 * 0.25 * np.log(0.75))
    # the same output with the label on a minority class: confidence and M change, H not
    g = {k: v[0] for k, v in confidence_features(proba, np.array([1])).items()}
    assert g["confidence"] == 0.25 and g["correctness"] == 0.0
    assert g["entropy"] == pytest.approx(f["entropy"])
    assert g["modified_entropy"] > f["modified_entropy"]


def outputs(rng: np.random.Generator, n: int, confidence: float) -> tuple[np.ndarray, ...]:
    """n examples of 4 classes whose true class gets about ``confidence``."""
    y = rng.integers(0, 4, n)
    p = np.full((n, 4), 0.0)
    py = np.clip(confidence + rng.normal(0, 0.03, n), 0.26, 0.999)
    p[:] = ((1 - py) / 3)[:, None]
    p[np.arange(n), y] = py
    return p, y


def test_svc_mia_efficacy_counts_forget_examples_that_look_unseen() -> None:
    rng = np.random.default_rng(1)
    retain, test = outputs(rng, 400, 0.97), outputs(rng, 400, 0.5)
    remembered = svc_mia(retain, test, outputs(rng, 100, 0.97))
    forgotten = svc_mia(retain, test, outputs(rng, 100, 0.5))
    assert remembered < 0.05 and forgotten > 0.95
    parts = zip(outputs(rng, 50, 0.97), outputs(rng, 50, 0.5), strict=True)
    half = tuple(np.r_[a, b] for a, b in parts)
    for feature in ("confidence", "entropy", "modified_entropy"):
        assert svc_mia(retain, test, half, feature=feature) == pytest.approx(0.5, abs=0.05)
    with pytest.raises(ValueError, match="needs retain, test and forget"):
        svc_mia(retain, test, (np.zeros((0, 4)), np.zeros(0, int)))
    with pytest.raises(ValueError, match="feature must be one of"):
        svc_mia(retain, test, half, feature="loss")
