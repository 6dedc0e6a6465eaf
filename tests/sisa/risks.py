"""Deletion-risk functions that tests name in ``sisa.deletion_risk``
(``tests.sisa.risks:by_id`` ...)."""

from __future__ import annotations

import numpy as np

NOT_CALLABLE = 0.5


def by_id(ids: np.ndarray, labels: np.ndarray, groups: np.ndarray | None) -> np.ndarray:
    """Every fifth ID is likely to be deleted: a function of each point alone."""
    return np.where(np.asarray(ids) % 5 == 0, 0.9, 0.01)


def by_group(ids: np.ndarray, labels: np.ndarray, groups: np.ndarray | None) -> np.ndarray:
    """One risk per person: every third group (``person-<k>``) is likely to leave."""
    numbers = np.array([int(str(g).rsplit("-", 1)[1]) for g in groups])
    return np.where(numbers % 3 == 0, 0.8, 0.05)


def by_rank(ids: np.ndarray, labels: np.ndarray, groups: np.ndarray | None) -> np.ndarray:
    """Normalised over the batch: a point's value depends on the others (not allowed)."""
    ranks = np.argsort(np.argsort(np.asarray(ids)))
    return ranks / max(len(ids) - 1, 1)


def two_columns(ids: np.ndarray, labels: np.ndarray, groups: np.ndarray | None) -> np.ndarray:
    return np.zeros((len(ids), 2))


def percent(ids: np.ndarray, labels: np.ndarray, groups: np.ndarray | None) -> np.ndarray:
    """Percentages, not probabilities: out of range."""
    return np.full(len(ids), 40.0)
