"""The learning-rate schedule: a function of (stage, fraction of the stage), so a retrain
from stage k gives every step the rate a run from scratch gives it; and the config refuses
schedules and options that cannot mean what they say."""

from __future__ import annotations

import math
import re
from fractions import Fraction

import numpy as np
import pytest
import torch

from sisa.config import ConfigError
from sisa.training.lr_schedule import learning_rate, lr_factor, step_position
from sisa.training.schedule import batch_bounds, epoch_lengths, stage_epochs, stage_samples
from sisa.training.trainer import (
    ShardData,
    checkpoint_payload,
    fresh_state,
    restore_state,
    state_digest,
    train_stage,
)
from tests.conftest import tiny_config


def optim(**overrides):
    return tiny_config(**{f"optim.{k}": v for k, v in overrides.items()}).optim


def rates(o, slices: int, steps: list[int]) -> list[list[float]]:
    """The rate of every step of stages 1..R, given each stage's number of steps."""
    return [
        [learning_rate(o, slices, stage, i, n) for i in range(n)]
        for stage, n in enumerate(steps, start=1)
    ]


def test_positions_are_the_end_of_each_step_in_stage_units():
    assert step_position(1, 0, 4) == Fraction(1, 4)
    assert step_position(3, 3, 4) == 3  # the last step of stage 3 ends at 3
    with pytest.raises(ValueError, match="steps"):
        step_position(1, 4, 4)


def test_the_default_is_the_configured_rate_at_every_step():
    o = optim()
    assert {r for stage in rates(o, 3, [5, 9, 14]) for r in stage} == {o.lr}


def test_warmup_ramps_linearly_then_holds():
    o = optim(warmup_stages=1.5)
    assert lr_factor(o, 3, Fraction(3, 10)) == pytest.approx(0.2)
    assert lr_factor(o, 3, Fraction(3, 4)) == 0.5
    assert lr_factor(o, 3, Fraction(3, 2)) == 1.0 == lr_factor(o, 3, Fraction(3))
    flat = [r for stage in rates(o, 3, [4, 8, 12]) for r in stage]
    ramp = flat[: 4 + 4]  # stage 1 and the first half of stage 2
    assert ramp == sorted(ramp) and 0 < ramp[0] < ramp[-1] == o.lr
    assert set(flat[8:]) == {o.lr}


def test_cosine_decays_from_the_end_of_warmup_to_the_minimum_at_the_end_of_stage_r():
    o = optim(schedule="cosine", warmup_stages=1, min_lr_ratio=0.1)
    per_stage = rates(o, 3, [4, 7, 10])
    assert per_stage[0][-1] == o.lr  # warmup ends with stage 1
    assert per_stage[-1][-1] == pytest.approx(0.1 * o.lr, rel=1e-15)  # the end of stage R
    decay = per_stage[1] + per_stage[2]
    assert decay == sorted(decay, reverse=True)
    assert lr_factor(o, 3, Fraction(2)) == pytest.approx(0.1 + 0.9 * 0.5)  # halfway: mean


def test_step_decay_counts_stages_after_warmup():
    o = optim(schedule="step", step_gamma=0.5, step_stages=1)
    assert [set(stage) for stage in rates(o, 3, [3, 6, 9])] == [{0.05}, {0.025}, {0.0125}]
    half = optim(schedule="step", step_gamma=0.5, step_stages=0.5, warmup_stages=1)
    assert [lr_factor(half, 3, Fraction(p, 4)) for p in (4, 5, 6, 7, 12)] == [
        1.0,
        1.0,
        1.0,
        0.5,
        0.5**3,
    ]


def test_a_stage_rates_depend_on_its_own_step_count_only():
    """A deletion changes the step counts of stages k..R: the rates of stages < k stay,
    and stages >= k get what a run from scratch with the new counts gives them."""
    o = optim(schedule="cosine", warmup_stages=0.5, min_lr_ratio=0.05)
    before = rates(o, 4, [10, 20, 31, 41])
    after = rates(o, 4, [10, 20, 30, 40])  # a point of slice 3 deleted
    assert after[:2] == before[:2]
    assert after[2:] != before[2:]
    assert all(r[-1] == before[i][-1] for i, r in enumerate(after))  # same ends of stages


def digits_shard(drop_from_slice: int | None = None) -> ShardData:
    """Digits as one shard in 4 slices; optionally without a few points of one slice."""
    from sklearn.datasets import load_digits

    d = load_digits()
    ids = np.arange(len(d.target), dtype=np.int64)[:400]  # [n]
    keep = np.ones(len(ids), dtype=bool)
    if drop_from_slice is not None:
        keep[np.flatnonzero(ids % 4 == drop_from_slice)[:20]] = False
    return ShardData(
        ids=ids[keep],
        X=(d.data[:400] / 16.0).astype(np.float32)[keep],
        y=d.target[:400].astype(np.int64)[keep],
        slice=(ids % 4)[keep],
    )


def train_recording(state, data, cfg, stages) -> list[list[float]]:
    """Train ``stages`` and return the rate each step ran with."""
    out: list[list[float]] = []

    def record() -> None:
        out[-1].append(state.optimizer.param_groups[0]["lr"])

    for stage in stages:
        out.append([])
        train_stage(state, data, cfg, 0, stage, on_step=record)
    return out


def test_a_retrain_from_stage_k_equals_a_fresh_run_rates_and_weights():
    cfg = tiny_config(
        **{
            "sisa.slices": 4,
            "optim.schedule": "cosine",
            "optim.warmup_stages": 1.5,
            "optim.min_lr_ratio": 0.1,
        }
    )
    full, less = digits_shard(), digits_shard(drop_from_slice=2)  # slice 2: stage 3 on
    fresh = fresh_state(cfg, 0, (64,), 10)
    scratch = train_recording(fresh, less, cfg, [1, 2, 3, 4])

    kept = fresh_state(cfg, 0, (64,), 10)
    original = train_recording(kept, full, cfg, [1, 2])  # stages a deletion of slice 2 keeps
    weights, extra = checkpoint_payload(kept)
    resumed = restore_state(cfg, 0, (64,), 10, weights, extra)
    retrained = train_recording(resumed, less, cfg, [3, 4])
    assert original + retrained == scratch
    assert len(scratch[3]) != sum(  # the deletion changed the step count of stage 4
        len(batch_bounds(n, 32))
        for n in epoch_lengths(stage_samples(stage_epochs(cfg.sisa), 400), 400)
    )
    a, b = checkpoint_payload(fresh), checkpoint_payload(resumed)
    assert all(torch.equal(a[0][k], b[0][k]) for k in a[0])
    assert state_digest(a[1]) == state_digest(b[1])


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"optim.name": "adamw", "optim.momentum": 0.5}, "optim.momentum"),
        ({"optim.warmup_stages": 3.5}, "optim.warmup_stages"),  # TINY has 3 slices
        ({"optim.warmup_stages": -1}, "optim.warmup_stages"),
        ({"optim.clip_norm": -1.0}, "optim.clip_norm"),
        ({"optim.clip_norm": 0}, "optim.clip_norm"),
        ({"optim.label_smoothing": 1.0}, "optim.label_smoothing"),
        ({"optim.schedule": "linear"}, "optim.schedule"),
        ({"optim.min_lr_ratio": 0.1}, "optim.min_lr_ratio"),  # constant has no minimum
        ({"optim.schedule": "cosine", "optim.step_gamma": 0.5}, "optim.step_gamma"),
        ({"optim.schedule": "step", "optim.step_stages": 0}, "optim.step_stages"),
        ({"optim.stage_accuracy": True}, "optim.stage_accuracy"),
        ({"optim.stage_accuracy": "test"}, "optim.stage_accuracy"),
    ],
)
def test_invalid_recipes_name_the_field(overrides, field):
    with pytest.raises(ConfigError, match=f"^{re.escape(field)}: "):
        tiny_config(**overrides)


def test_a_warmup_as_long_as_training_is_allowed():
    assert tiny_config(**{"optim.warmup_stages": 3}).optim.warmup_stages == 3


@pytest.mark.parametrize(
    "key, value",
    [
        ("name", "adamw"),
        ("schedule", "cosine"),
        ("warmup_stages", 0.5),
        ("clip_norm", 1.0),
        ("label_smoothing", 0.1),
        ("stage_accuracy", "train"),
    ],
)
def test_each_new_setting_enters_the_training_hash_only_when_set(key, value):
    base = tiny_config()
    assert tiny_config(**{f"optim.{key}": value}).training_hash() != base.training_hash()
    default = type(base.optim).model_fields[key].default
    assert tiny_config(**{f"optim.{key}": default}).training_hash() == base.training_hash()


def test_cosine_float_formula_is_exact_at_its_ends():
    o = optim(schedule="cosine", min_lr_ratio=0.25)
    assert lr_factor(o, 3, Fraction(0)) == 1.0
    assert lr_factor(o, 3, Fraction(3)) == 0.25 + 0.75 * 0.5 * (1 + math.cos(math.pi))
