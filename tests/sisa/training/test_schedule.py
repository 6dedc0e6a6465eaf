from fractions import Fraction

import pytest

from sisa.config import SisaConfig
from sisa.training.schedule import batch_bounds, epoch_lengths, stage_epochs, stage_samples


def test_equal_cost_schedule_matches_monolithic_cost():
    cfg = SisaConfig(slices=16, epochs=1)
    per_stage = stage_epochs(cfg)
    assert per_stage == Fraction(2, 17)
    n_per_slice = 100
    total = sum(per_stage * r * n_per_slice for r in range(1, 17))
    assert total == 1 * 16 * n_per_slice  # e * n


def test_no_stage_is_rounded_to_zero():
    # R=16, e=1: the original code rounds 2/17 epochs to 0 and skips stages.
    cfg = SisaConfig(slices=16, epochs=1)
    for n in (1, 3, 8, 100):
        assert stage_samples(stage_epochs(cfg), n) >= 1
    assert stage_samples(stage_epochs(cfg), 0) == 0


def test_fractional_epochs_are_exact_sample_counts():
    assert stage_samples(Fraction(5, 2), 10) == 25
    assert epoch_lengths(25, 10) == [10, 10, 5]
    assert stage_samples(Fraction(1, 3), 10) == 4  # ceil, never floor
    assert epoch_lengths(4, 10) == [4]


def test_per_stage_schedule():
    assert stage_epochs(SisaConfig(slices=4, epochs=3, epoch_schedule="per-stage")) == 3


def test_batches_cover_the_pass():
    assert batch_bounds(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert batch_bounds(0, 4) == []


@pytest.mark.parametrize("epochs", [0.1, 0.7, 1.0, 2.5, 20.0])
def test_epoch_lengths_sum_to_samples(epochs):
    n = 37
    samples = stage_samples(Fraction(str(epochs)), n)
    assert sum(epoch_lengths(samples, n)) == samples
    assert all(0 < length <= n for length in epoch_lengths(samples, n))
