"""Forget sets to evaluate on, each labelled with the goal it tests.

"Untraining" and "unlearning" are different goals (Triantafillou et al., "Is your
algorithm unlearning or untraining?", arXiv 2604.07962):

- **untraining** removes the influence of specific training examples. The target is a
  model retrained from scratch without them, and the metrics compare against it (accuracy
  gaps, ToW, MIA gaps, forgetting quality). Random and memorisation-graded forget sets
  pose this problem.
- **unlearning** removes what the examples stand for, here a whole class. A model
  retrained without the class's training points is not enough of a target (it never
  learnt the class, but the retrain gap says nothing about held-out points of it). The
  measure is accuracy on the class's held-out test points, which should fall to what a
  model that never saw the class scores (0 for a classifier with no such output used),
  while the rest of the test set keeps its accuracy.

A scenario picks training rows only from their own attributes and a seed, so the same
scenario names the same points for every method it is run with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

Goal = Literal["untraining", "unlearning"]
SCENARIOS = ("random", "high-memorization", "low-memorization", "class")


@dataclass(frozen=True, kw_only=True)
class Scenario:
    """A forget set: training rows, the goal it tests, and for ``unlearning`` the class."""

    name: str
    goal: Goal
    forget: np.ndarray  # [|F|] sorted row indices into the training set
    forgotten_class: int | None = None

    def retain(self, n_train: int) -> np.ndarray:
        """The other training rows, sorted.  -> [n_train − |F|]"""
        keep = np.ones(n_train, bool)
        keep[self.forget] = False
        return np.flatnonzero(keep)


def _size(n_train: int, fraction: float) -> int:
    if not 0 < fraction < 1:
        raise ValueError(f"the forget fraction must be in (0, 1), got {fraction}")
    return max(1, round(fraction * n_train))


def random_forget(n_train: int, fraction: float, seed: int) -> Scenario:
    """A uniformly random ``fraction`` of the training rows (untraining)."""
    rows = np.random.default_rng(seed).choice(n_train, _size(n_train, fraction), replace=False)
    return Scenario(name="random", goal="untraining", forget=np.sort(rows))


def memorization_forget(memorization: np.ndarray, fraction: float, which: str) -> Scenario:
    """The ``fraction`` of rows with the ``high``est or ``low``est memorisation proxy
    (``sisa.evidence.rum.fit_tracking_confidence``; untraining). Ties keep row order."""
    if which not in ("high", "low"):
        raise ValueError(f"which must be 'high' or 'low', got {which!r}")
    memorization = np.asarray(memorization, float)
    k = _size(len(memorization), fraction)
    order = np.argsort(memorization, kind="stable")  # least memorised first
    rows = order[-k:] if which == "high" else order[:k]
    return Scenario(name=f"{which}-memorization", goal="untraining", forget=np.sort(rows))


def class_forget(y_train: np.ndarray, forgotten_class: int) -> Scenario:
    """Every training row of one class (unlearning)."""
    rows = np.flatnonzero(np.asarray(y_train) == forgotten_class)
    if len(rows) == 0:
        raise ValueError(f"class {forgotten_class} has no training rows")
    if len(rows) == len(y_train):
        raise ValueError(f"class {forgotten_class} is the whole training set; nothing would remain")
    return Scenario(name="class", goal="unlearning", forget=rows, forgotten_class=forgotten_class)


def scenario(
    name: str,
    *,
    y_train: np.ndarray,
    fraction: float,
    seed: int,
    memorization: np.ndarray | None = None,
    forgotten_class: int = 0,
) -> Scenario:
    """A scenario by name (``SCENARIOS``)."""
    if name == "random":
        return random_forget(len(y_train), fraction, seed)
    if name in ("high-memorization", "low-memorization"):
        if memorization is None:
            raise ValueError(f"scenario {name!r} needs the memorisation proxy of the training set")
        return memorization_forget(memorization, fraction, name.split("-")[0])
    if name == "class":
        return class_forget(y_train, forgotten_class)
    raise ValueError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}")
