"""The cost of unlearning: the paper's model, the exact count for a plan, and calibration.

The paper (Bourtoule et al., §V-C) counts cost in sample-epochs. With N points, S shards,
R slices, e epochs and K requests:

- one request, with slicing: ``e·(N/S)·(2/3 + 1/(3R))`` in expectation, against ``e·N``
  for a monolithic model retrained from scratch, so the ideal speedup is
  ``S / (2/3 + 1/(3R))``;
- K requests batched: ``N·(1 − (1 − 1/S)^K)`` points' worth of shards are touched.

``expected_cost`` generalises both to any placement and request distribution (for
deletion-aware placement, docs/sharding.md): a shard is retrained from its earliest
touched slice, with the probability that K independent requests first touch it there.

A concrete plan knows which shards restart at which stage, so it counts exactly: a retrain
from stage r trains ``Σ_{s≥r} ceil(2e/(R+1) · n_s)`` samples, ``n_s`` being the points left
in slices 1..s (``sisa.training.schedule``). Seconds are predicted from what this store measured,
in its last processed batch or else in its training: optimizer time per sample, plus the
costs a sample count does not show, writing one stage's checkpoint and, per shard job,
loading its data and checkpoint and purging what it replaced. A retrain from a late slice
trains few samples per stage it writes, so a rate per sample alone would under-predict it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from sisa.config import SisaConfig
from sisa.training.schedule import stage_epochs, stage_samples


def paper_request_cost(n: int, shards: int, slices: int, epochs: float) -> float:
    """Expected sample-epochs to unlearn one point (paper, with slicing)."""
    return epochs * (n / shards) * (2 / 3 + 1 / (3 * slices))


def paper_speedup(shards: int, slices: int) -> float:
    """Ideal speedup of one deletion over retraining a monolithic model from scratch."""
    return shards / (2 / 3 + 1 / (3 * slices))


def paper_batched_points(n: int, shards: int, requests: int) -> float:
    """Expected points in the shards that K uniformly placed requests touch."""
    return n * (1 - (1 - 1 / shards) ** requests)


def layout_table(
    shard_of: np.ndarray,
    slice_of: np.ndarray,
    shards: int,
    slices: int,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """Per (shard, slice), the number of points, or the sum of ``weights`` ([n], such as
    each point's request probability) when given. [n], [n] -> [S, R]."""
    flat = np.asarray(shard_of) * slices + np.asarray(slice_of)  # [n]
    table = np.bincount(flat, weights=weights, minlength=shards * slices)
    return table.reshape(shards, slices)


@dataclass(frozen=True, kw_only=True)
class ExpectedCost:
    """What K requests are expected to cost, for a placement and a request distribution."""

    requests: int  # K
    touched_points: float  # points in the shards retrained (the paper's batched measure)
    samples: float  # samples the retrains train (sample-epochs), as ``retrain_samples``
    shards_touched: float  # expected number of shards retrained


def expected_cost(
    cfg: SisaConfig, counts: np.ndarray, mass: np.ndarray, requests: int
) -> ExpectedCost:
    """Expected cost of K = ``requests`` requests drawn independently from a distribution
    over points (a point drawn twice is deleted once), batched into one retrain.

    ``counts[k, r]``: points in slice r of shard k; ``mass[k, r]``: the probability that one
    request falls there (summing to 1). Shard k is retrained from its earliest touched
    slice r with probability (1 - M_{<r})^K - (1 - M_{<=r})^K, M being its mass in the
    slices before: the paper's model generalised to any placement and distribution. With
    uniform placement and requests it gives N(1 - (1 - 1/S)^K) touched points, and for
    one request e(N/S)(2/3 + 1/(3R)) samples. Counts are those before the deletion (a
    retrain trains on at most K points fewer).
    """
    counts = np.asarray(counts, dtype=np.int64)  # [S, R]
    mass = np.asarray(mass, dtype=np.float64)  # [S, R]
    if counts.shape != mass.shape or counts.ndim != 2:
        raise ValueError(f"counts and mass must both be [S, R], got {counts.shape}, {mass.shape}")
    if requests < 0 or (mass < 0).any() or not np.isclose(mass.sum(), 1.0):
        raise ValueError("mass must be a probability distribution and requests >= 0")
    before = np.concatenate([np.zeros((len(mass), 1)), np.cumsum(mass, axis=1)], axis=1)
    untouched = np.clip(1.0 - before, 0.0, 1.0) ** requests  # [S, R+1]: earliest slice >= r
    start = untouched[:, :-1] - untouched[:, 1:]  # [S, R]: P(earliest touched slice = r)
    samples = sum(
        start[k, r] * retrain_samples(cfg, counts[k].tolist(), r + 1)
        for k in range(counts.shape[0])
        for r in range(counts.shape[1])
        if start[k, r] > 0
    )
    touched = 1.0 - untouched[:, -1]  # [S]
    return ExpectedCost(
        requests=requests,
        touched_points=float(touched @ counts.sum(axis=1)),
        samples=float(samples),
        shards_touched=float(touched.sum()),
    )


def retrain_samples(cfg: SisaConfig, slice_counts: list[int], start_stage: int) -> int:
    """Exact samples a shard trains on when retrained from ``start_stage`` (1-based).

    ``slice_counts[s]`` is the number of points left in slice s (0-based).
    """
    epochs = stage_epochs(cfg)
    seen = itertools.accumulate(slice_counts)  # points in slices 1..r, for r = 1..R
    return sum(stage_samples(epochs, n) for r, n in enumerate(seen, 1) if r >= start_stage)


def full_retrain_samples(cfg: SisaConfig, n: int) -> int:
    """Samples of one monolithic model trained on ``n`` points for e epochs."""
    return stage_samples(Fraction(str(cfg.epochs)), n)


@dataclass(frozen=True, kw_only=True)
class Calibration:
    """Measured unit costs. Stores and batches recorded before their phases were only
    calibrate per sample (the stage and job terms are then 0)."""

    seconds_per_sample: float | None  # optimizer time (all compute, without phases)
    source: str  # "last batch", "training", or "none"
    seconds_per_stage: float = 0.0  # writing one stage's checkpoint
    seconds_per_job: float = 0.0  # the rest of a shard job: loading, purging

    def seconds(self, samples: int, stages: int = 0, jobs: int = 0) -> float | None:
        if self.seconds_per_sample is None:
            return None
        return (
            samples * self.seconds_per_sample
            + stages * self.seconds_per_stage
            + jobs * self.seconds_per_job
        )


def calibration(
    samples: int,
    seconds: float,
    source: str,
    *,
    phases: dict[str, float] | None = None,
    stages: int = 0,
    jobs: int = 0,
) -> Calibration:
    """Unit costs from a run's totals: ``seconds`` of compute over its jobs, split by
    ``phases`` (``sisa.training.jobs.PHASES``) when known, so that the run itself is predicted
    exactly: samples·train/samples + stages·checkpoint/stages + jobs·rest/jobs."""
    if samples <= 0 or seconds <= 0:
        return Calibration(seconds_per_sample=None, source="none")
    train, checkpoint = (phases or {}).get("train", 0.0), (phases or {}).get("checkpoint", 0.0)
    if train <= 0 or stages <= 0 or jobs <= 0:
        return Calibration(seconds_per_sample=seconds / samples, source=source)
    rest = max(seconds - train - checkpoint, 0.0)
    return Calibration(
        seconds_per_sample=train / samples,
        source=source,
        seconds_per_stage=checkpoint / stages,
        seconds_per_job=rest / jobs,
    )


@dataclass(frozen=True)
class Decision:
    start: bool
    reason: str  # "window", "deadline", "waiting"
    wait: float  # seconds until the batch would start on its own


def should_start(
    oldest_age: float, window: float, deadline: float, predicted_seconds: float | None
) -> Decision:
    """Whether a batch whose oldest request is ``oldest_age`` seconds old starts now.

    It waits up to ``window`` seconds for more requests to coalesce, but starts early when
    waiting would finish the oldest request after ``deadline`` (by the calibrated model).
    """
    if oldest_age >= window:
        return Decision(True, "window", 0.0)
    latest_start = deadline - (predicted_seconds or 0.0)
    if oldest_age >= latest_start:
        return Decision(True, "deadline", 0.0)
    return Decision(False, "waiting", min(window, latest_start) - oldest_age)
