"""The cost model: the paper's formulas, and the exact count a plan uses."""

from __future__ import annotations

import pytest

from sisa.config import SisaConfig
from sisa.cost import (
    full_retrain_samples,
    paper_batched_points,
    paper_request_cost,
    paper_speedup,
    retrain_samples,
    should_start,
)


def test_the_papers_formulas():
    # e·(N/S)·(2/3 + 1/(3R)) with N=1000, S=10, R=1, e=3: 3·100·1 = 300
    assert paper_request_cost(1000, 10, 1, 3.0) == pytest.approx(300.0)
    assert paper_speedup(1, 1) == pytest.approx(1.0)
    assert paper_speedup(20, 50) == pytest.approx(20 / (2 / 3 + 1 / 150))
    assert paper_batched_points(1000, 10, 1) == pytest.approx(100.0)
    assert paper_batched_points(1000, 1, 5) == pytest.approx(1000.0)
    assert paper_batched_points(1000, 10, 1000) == pytest.approx(1000.0, rel=1e-6)


def test_exact_retrain_samples_follow_the_equal_cost_schedule():
    cfg = SisaConfig(shards=1, slices=4, epochs=5)  # 2e/(R+1) = 2 epochs per stage
    counts = [10, 10, 10, 11]
    assert retrain_samples(cfg, counts, 1) == 2 * (10 + 20 + 30 + 41)
    assert retrain_samples(cfg, counts, 4) == 2 * 41
    assert retrain_samples(cfg, [0, 0, 0, 0], 1) == 0
    # The stages together cost what one monolithic model does (the schedule's promise)
    assert retrain_samples(SisaConfig(slices=1, epochs=5), [41], 1) == full_retrain_samples(cfg, 41)


def test_fractional_epochs_round_up_never_to_zero():
    cfg = SisaConfig(slices=9, epochs=1)  # 0.2 epochs per stage
    assert retrain_samples(cfg, [1] + [0] * 8, 9) == 1  # ceil(0.2 · 1)


@pytest.mark.parametrize(
    "age, window, deadline, predicted, start, reason",
    [
        (5.0, 5.0, 100.0, None, True, "window"),
        (1.0, 5.0, 100.0, None, False, "waiting"),
        (1.0, 60.0, 10.0, 9.5, True, "deadline"),  # waiting longer would miss the deadline
        (1.0, 60.0, 10.0, 2.0, False, "waiting"),
    ],
)
def test_should_start(age, window, deadline, predicted, start, reason):
    decision = should_start(age, window, deadline, predicted)
    assert (decision.start, decision.reason) == (start, reason)
    if not start:
        assert decision.wait == pytest.approx(min(window, deadline - (predicted or 0)) - age)
