"""Forget sets: what each scenario picks, and the goal it is labelled with."""

from __future__ import annotations

import numpy as np
import pytest

from sisa.evidence.scenarios import (
    class_forget,
    memorization_forget,
    random_forget,
    scenario,
)


def test_random_forget_is_seeded_sorted_and_sized() -> None:
    a = random_forget(1000, 0.05, seed=3)
    assert a.goal == "untraining" and len(a.forget) == 50
    assert (np.diff(a.forget) > 0).all()
    assert (a.forget == random_forget(1000, 0.05, seed=3).forget).all()
    assert not (a.forget == random_forget(1000, 0.05, seed=4).forget).all()
    retain = a.retain(1000)
    assert len(retain) == 950 and not np.intersect1d(retain, a.forget).size
    with pytest.raises(ValueError, match="in \\(0, 1\\)"):
        random_forget(10, 1.0, 0)


def test_memorization_forget_takes_the_extremes() -> None:
    memo = np.array([0.5, 0.9, 0.1, 0.8, 0.2, 0.3, 0.7, 0.6, 0.4, 0.0])
    high = memorization_forget(memo, 0.2, "high")
    low = memorization_forget(memo, 0.2, "low")
    assert (high.name, high.goal, high.forget.tolist()) == (
        "high-memorization",
        "untraining",
        [1, 3],
    )
    assert (low.name, low.forget.tolist()) == ("low-memorization", [2, 9])
    with pytest.raises(ValueError, match="'high' or 'low'"):
        memorization_forget(memo, 0.2, "mid")


def test_class_forget_is_unlearning_of_every_row_of_the_class() -> None:
    y = np.array([0, 1, 2, 1, 1, 0])
    s = class_forget(y, 1)
    assert (s.goal, s.forgotten_class, s.forget.tolist()) == ("unlearning", 1, [1, 3, 4])
    with pytest.raises(ValueError, match="class 5 has no training rows"):
        class_forget(y, 5)
    with pytest.raises(ValueError, match="whole training set"):
        class_forget(np.zeros(4, int), 0)


def test_scenarios_by_name() -> None:
    y = np.arange(100) % 4
    memo = np.linspace(0, 1, 100)
    assert scenario("random", y_train=y, fraction=0.1, seed=0).name == "random"
    high = scenario("high-memorization", y_train=y, fraction=0.1, seed=0, memorization=memo)
    assert high.forget.tolist() == list(range(90, 100))
    assert scenario("class", y_train=y, fraction=0.1, seed=0, forgotten_class=2).goal == (
        "unlearning"
    )
    with pytest.raises(ValueError, match="needs the memorisation proxy"):
        scenario("low-memorization", y_train=y, fraction=0.1, seed=0)
    with pytest.raises(ValueError, match="unknown scenario 'all'"):
        scenario("all", y_train=y, fraction=0.1, seed=0)
