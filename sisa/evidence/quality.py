"""Forgetting quality as the NeurIPS 2023 Machine Unlearning Challenge scored it
(Triantafillou et al., "Are we making progress in unlearning?", arXiv 2406.09073, and
the challenge's evaluation code).

Unlearning is (ε, δ)-close to retraining when no test tells the two apart with better
odds than e^ε. The challenge estimates ε per forget example x from N unlearned models
(the method run N times) and N retrained models (N trainings without the forget set):

1. φ = log p_y − log Σ_{c≠y} p_c per model (the logit-scaled confidence of the true class);
2. threshold tests on the two samples of N values of φ each give false-positive and
   false-negative rates, and each test bounds ε from below:

       ε ≥ max(log(1 − δ − FPR) − log FNR,  log(1 − δ − FNR) − log FPR),   δ = 1e−5;

   ε_x is the largest bound over the tests (∞ for a perfect split, capped at 50);
3. each example scores 2^(−⌊ε_x / 0.5⌋) if ε_x < ⌈ln(N − 1)⌉ (what N models can resolve),
   else 0; forgetting quality F is the mean score over the forget set, in [0, 1].

The tests are single thresholds (positive iff φ ≥ t) and, as in the challenge's code,
intervals (positive iff l ≤ φ ≤ r, for the sample with the smaller spread). A test where
exactly one rate is 0 is discarded, as the sample is too small to trust it. Few models
make the score coarse (N = 10 resolves only ε < 3): report N beside F.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DELTA = 1e-5
EPSILON_CAP = 50.0
BIN = 0.5
PEAKINESS = 0.01  # one sample's spread below 1% of the other's: a spike, ε = the cap
PER_UNIT = 100  # threshold grid points per unit of φ
LEFT_EDGES = 400  # interval tests: left edges tried per right edge


def logit_scaled_confidence(proba: np.ndarray, y: np.ndarray) -> np.ndarray:
    """φ = log p_y − log Σ_{c≠y} p_c, in float64.  proba [..., n, C], y [n] -> [..., n].

    From probabilities (what an ensemble serves), φ saturates where float32 rounds p_y
    to 1 (about ±100, against the challenge's float64 logits); the threshold tests only
    compare values, so a saturated example still counts, as an exact tie."""
    p = np.asarray(proba, np.float64)
    onehot = np.arange(p.shape[-1]) == np.asarray(y)[:, None]  # [n, C]
    py = np.where(onehot, p, 0.0).sum(-1)  # [..., n]
    rest = np.where(onehot, 0.0, p).sum(-1)  # [..., n]
    return np.log(py + 1e-45) - np.log(rest + 1e-45)


def _bounds(fpr: np.ndarray, fnr: np.ndarray) -> np.ndarray:
    """ε lower bound of each test; −∞ for a discarded test, ∞ for a perfect one."""
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.log(1 - DELTA - fpr) - np.log(fnr)
        b = np.log(1 - DELTA - fnr) - np.log(fpr)
    eps = np.maximum(0.0, np.fmax(a, b))
    eps = np.where(np.isnan(eps), -np.inf, eps)  # both rates 1: log of a negative, no bound
    eps = np.where((fpr == 0) & (fnr == 0), np.inf, eps)
    return np.where((fpr == 0) != (fnr == 0), -np.inf, eps)


def _rate_at_least(sorted_values: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Share of ``sorted_values`` that are ≥ each threshold in ``t``."""
    return 1 - np.searchsorted(sorted_values, t, side="left") / len(sorted_values)


def _rate_within(sorted_values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Share of ``sorted_values`` in [lo, hi], elementwise over the edge arrays."""
    inside = np.searchsorted(sorted_values, hi, side="right") - np.searchsorted(
        sorted_values, lo, side="left"
    )
    return np.maximum(inside, 0) / len(sorted_values)


def example_epsilon(unlearned: np.ndarray, retrained: np.ndarray, intervals: bool = True) -> float:
    """ε of one forget example from its φ under N unlearned and N retrained models."""
    u, r = np.sort(np.asarray(unlearned, float)), np.sort(np.asarray(retrained, float))
    pos, neg = (u, r) if np.median(u) >= np.median(r) else (r, u)
    spreads = sorted([np.ptp(pos), np.ptp(neg)])
    if spreads[1] > 0 and spreads[0] / spreads[1] < PEAKINESS:
        return EPSILON_CAP
    lo, hi = min(pos[0], neg[0]), max(pos[-1], neg[-1])
    t = np.linspace(lo, hi, max(math.ceil((hi - lo) * PER_UNIT), 1))  # [T]
    best = _bounds(_rate_at_least(neg, t), 1 - _rate_at_least(pos, t)).max(initial=-np.inf)
    if intervals and spreads[1] > 0:
        peaky, other = (pos, neg) if np.ptp(pos) <= np.ptp(neg) else (neg, pos)
        width = spreads[0]
        right = np.arange(peaky[0] + width - 2, peaky[-1] + 2, 1 / PER_UNIT)  # [Rr]
        left = right[:, None] + np.linspace(-width - 2, -width + 2, LEFT_EDGES)  # [Rr, L]
        right = np.broadcast_to(right[:, None], left.shape)
        fpr = _rate_within(other, left, right)  # [Rr, L]
        fnr = 1 - _rate_within(peaky, left, right)
        best = max(best, _bounds(fpr, fnr).max(initial=-np.inf))
    return float(min(max(best, 0.0), EPSILON_CAP))


def example_score(epsilon: float, models: int) -> float:
    """2^(−⌊ε/0.5⌋) below the largest ε that ``models`` per side can resolve, else 0."""
    if models < 3:
        raise ValueError(f"forgetting quality needs at least 3 models per side, got {models}")
    if epsilon >= math.ceil(math.log(models - 1)):
        return 0.0
    return 2.0 ** -math.floor(epsilon / BIN)


@dataclass(frozen=True)
class ForgettingQuality:
    score: float  # F: the mean example score, in [0, 1]; 1 = indistinguishable from retraining
    models: int  # N, per side: report it with F
    epsilons: np.ndarray  # [n] ε per forget example


def forgetting_quality(
    unlearned: np.ndarray, retrained: np.ndarray, intervals: bool = True
) -> ForgettingQuality:
    """F over the forget set. unlearned [N, n] and retrained [N, n]: φ of each forget
    example under each of N unlearned and N retrained models (``logit_scaled_confidence``)."""
    u, r = np.asarray(unlearned, float), np.asarray(retrained, float)
    if u.ndim != 2 or u.shape != r.shape:
        raise ValueError(f"need two [N, n] arrays of the same shape, got {u.shape} and {r.shape}")
    models = u.shape[0]
    if u.shape[1] == 0:
        raise ValueError("forgetting quality of an empty forget set is undefined")
    example_score(0.0, models)  # refuses too few models before the work
    eps = np.array([example_epsilon(u[:, j], r[:, j], intervals) for j in range(u.shape[1])])
    scores = [example_score(e, models) for e in eps]
    return ForgettingQuality(float(np.mean(scores)), models, eps)
