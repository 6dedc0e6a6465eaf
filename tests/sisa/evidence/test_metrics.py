"""Accuracy, its gap to the reference, and Tug-of-War on cases whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from sisa.evidence.metrics import (
    SplitAccuracy,
    accuracy,
    accuracy_gaps,
    cross_entropy,
    split_accuracy,
    tug_of_war,
    tug_of_war_mia,
)


def onehot(labels: list[int], classes: int = 3, p: float = 0.8) -> np.ndarray:
    out = np.full((len(labels), classes), (1 - p) / (classes - 1))
    out[np.arange(len(labels)), labels] = p
    return out


def test_accuracy_counts_argmax_hits() -> None:
    proba = onehot([0, 1, 2, 2])
    assert accuracy(proba, np.array([0, 1, 2, 0])) == 0.75
    assert accuracy(proba, np.array([1, 0, 0, 0])) == 0.0
    with pytest.raises(ValueError, match="empty"):
        accuracy(np.zeros((0, 3)), np.array([], int))
    with pytest.raises(ValueError, match="3 rows of probabilities for 2 labels"):
        accuracy(onehot([0, 1, 2]), np.array([0, 1]))


def test_cross_entropy_is_minus_log_true_class_probability() -> None:
    proba = np.array([[0.5, 0.5], [0.9, 0.1], [1.0, 0.0]])
    loss = cross_entropy(proba, np.array([0, 1, 1]))
    assert loss[:2] == pytest.approx([np.log(2), -np.log(0.1)])
    assert np.isfinite(loss[2]) and loss[2] == pytest.approx(-np.log(1e-12))


def test_split_accuracy_and_signed_gaps() -> None:
    labels = {"forget": np.array([0, 1]), "retain": np.array([0, 1, 2, 0]), "test": np.array([2])}
    model = split_accuracy(
        {"forget": onehot([0, 1]), "retain": onehot([0, 1, 2, 1]), "test": onehot([0])}, labels
    )
    assert model == SplitAccuracy(forget=1.0, retain=0.75, test=0.0)
    gaps = accuracy_gaps(model, SplitAccuracy(forget=0.5, retain=0.75, test=0.25))
    assert gaps == SplitAccuracy(forget=0.5, retain=0.0, test=-0.25)


def test_tug_of_war_is_one_for_the_reference_itself_and_multiplies_the_gaps() -> None:
    ref = SplitAccuracy(forget=0.8, retain=0.95, test=0.85)
    assert tug_of_war(ref, ref) == 1.0
    model = SplitAccuracy(forget=1.0, retain=0.85, test=0.95)  # gaps 0.2, 0.1, 0.1
    assert tug_of_war(model, ref) == pytest.approx(0.8 * 0.9 * 0.9)
    # forgetting too much costs as much as too little
    over = SplitAccuracy(forget=0.6, retain=0.85, test=0.95)
    assert tug_of_war(over, ref) == pytest.approx(tug_of_war(model, ref))


def test_tug_of_war_mia_swaps_the_forget_accuracy_term_for_the_mia_gap() -> None:
    ref = SplitAccuracy(forget=0.8, retain=0.95, test=0.85)
    model = SplitAccuracy(forget=0.1, retain=0.95, test=0.85)  # forget accuracy ignored
    assert tug_of_war_mia(model, ref, 0.7, 0.4) == pytest.approx(0.7)
    assert tug_of_war_mia(ref, ref, 0.4, 0.4) == 1.0
    with pytest.raises(ValueError, match="mia_model"):
        tug_of_war_mia(model, ref, 1.5, 0.4)
