"""How much each stage trains: a defined function of the retained data.

With R slices and e epochs, the paper's equal-cost schedule gives every stage 2e/(R+1)
epochs. Stage r sees r/R of the shard, so the stages together cost
sum_r 2e/(R+1) * r/R * n = e * n sample-epochs: the cost of training one model on the
shard. 2e/(R+1) is usually fractional. Rounding it (as the original code did) can round a
stage down to zero; instead a stage trains on exactly ceil(epochs * n) samples, taken as
full passes over the stage's hash order plus a prefix of one more pass. Exact rational
arithmetic keeps that number independent of float rounding.
"""

from __future__ import annotations

import math
from fractions import Fraction

from sisa.config import SisaConfig


def stage_epochs(cfg: SisaConfig) -> Fraction:
    """Epochs per stage as an exact fraction (the same for every stage)."""
    total = Fraction(str(cfg.epochs))
    if cfg.epoch_schedule == "equal-cost":
        return total * 2 / (cfg.slices + 1)
    return total


def stage_samples(epochs: Fraction, n: int) -> int:
    """Samples stage trains on: ceil(epochs * n), never zero while there is data."""
    if n == 0:
        return 0
    return max(1, math.ceil(epochs * n))


def epoch_lengths(samples: int, n: int) -> list[int]:
    """Split ``samples`` into passes over ``n`` points: full passes, then a partial one."""
    if n == 0 or samples == 0:
        return []
    full, rest = divmod(samples, n)
    return [n] * full + ([rest] if rest else [])


def batch_bounds(length: int, batch_size: int) -> list[tuple[int, int]]:
    """[start, stop) of each batch within one pass; the last batch may be short."""
    return [(s, min(s + batch_size, length)) for s in range(0, length, batch_size)]
