"""The learning rate of every step, as a function of where the step is in a shard's training.

The exactness rule: the rate is a function of the position (stage r in 1..R, the fraction
of stage r done) and the config alone, never of a total step count. A deletion changes
how many steps a stage takes (it trains on fewer points), so a rate defined on a global
step would differ between a retrain from stage k and a run from scratch on the same
points, and between stages that a deletion did not touch and their originals. Defined on
the position, stage r's rates depend on (config, number of steps of stage r) only, and
that number is a function of the points of slices 1..r: stages < k, which a deletion keeps,
keep their rates, and a retrain of stages k..R gives each step the rate that a run from
scratch on the remaining points gives it.

Positions are exact fractions; the float rate comes from one fixed formula of them.
"""

from __future__ import annotations

import math
from fractions import Fraction

from sisa.config import OptimConfig


def step_position(stage: int, step: int, steps: int) -> Fraction:
    """Where (0-based) step ``step`` of the ``steps`` of (1-based) ``stage`` ends, in stage
    units: (stage - 1) + (step + 1) / steps, in (0, R]. The end, not the start: the first
    step under warmup moves the model, and the last step of stage R sits at R exactly."""
    if not 0 <= step < steps:
        raise ValueError(f"step {step} is not one of the stage's {steps} steps")
    return stage - 1 + Fraction(step + 1, steps)


def lr_factor(optim: OptimConfig, slices: int, position: Fraction) -> float:
    """The rate at ``position`` (stage units, in [0, R]) as a fraction of ``optim.lr``.

    Linear warmup up to ``warmup_stages``, then the schedule over what is left up to R.
    """
    warmup = Fraction(str(optim.warmup_stages))
    if position < warmup:
        return float(position / warmup)
    if optim.schedule == "constant":
        return 1.0
    after = position - warmup  # stage units since warmup ended
    if optim.schedule == "cosine":
        span = slices - warmup
        progress = min(Fraction(1), after / span) if span > 0 else Fraction(1)
        floor = optim.min_lr_ratio
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * float(progress)))
    # step: one decay at each multiple of step_stages that the step has ended past
    every = Fraction(str(optim.step_stages))
    decays = max(0, math.ceil(after / every) - 1)
    return optim.step_gamma**decays


def learning_rate(optim: OptimConfig, slices: int, stage: int, step: int, steps: int) -> float:
    """The rate of step ``step`` (0-based) of the ``steps`` of ``stage`` (1-based)."""
    return optim.lr * lr_factor(optim, slices, step_position(stage, step, steps))
