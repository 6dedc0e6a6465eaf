"""The cost model: the paper's formulas, and the exact count a plan uses."""

from __future__ import annotations

import numpy as np
import pytest

from sisa.config import SisaConfig
from sisa.deletion.cost import (
    expected_cost,
    full_retrain_samples,
    layout_table,
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


def test_expected_cost_is_the_papers_closed_form_under_uniform_placement():
    # S=10, R=3, e=2: one epoch per stage and 20 points per slice, so no rounding enters
    cfg = SisaConfig(shards=10, slices=3, epochs=2)
    counts = np.full((10, 3), 20)  # N = 600
    mass = np.full((10, 3), 1 / 30)
    for k in (1, 5, 40):
        cost = expected_cost(cfg, counts, mass, k)
        assert cost.touched_points == pytest.approx(paper_batched_points(600, 10, k))
        assert cost.shards_touched == pytest.approx(10 * (1 - 0.9**k))
    one = expected_cost(cfg, counts, mass, 1)
    assert one.samples == pytest.approx(paper_request_cost(600, 10, 3, 2.0))
    assert expected_cost(cfg, counts, mass, 0).samples == 0


def test_expected_cost_matches_a_monte_carlo_simulation():
    rng = np.random.default_rng(0)
    cfg = SisaConfig(shards=6, slices=4, epochs=3)
    n = 900
    shard_of, slice_of = rng.integers(0, 6, n), rng.integers(0, 4, n)
    weight = np.where(rng.random(n) < 0.1, 30.0, 1.0)  # a skewed request distribution
    prob = weight / weight.sum()
    counts = layout_table(shard_of, slice_of, 6, 4)
    mass = layout_table(shard_of, slice_of, 6, 4, prob)
    assert counts.sum() == n and mass.sum() == pytest.approx(1.0)
    for k in (1, 8, 60):
        samples, points = [], []
        for _ in range(3000):
            drawn = rng.choice(n, size=k, p=prob)  # independent requests
            start = {}
            for i in drawn.tolist():
                start[shard_of[i]] = min(start.get(shard_of[i], 4), slice_of[i])
            samples.append(
                sum(retrain_samples(cfg, counts[s].tolist(), r + 1) for s, r in start.items())
            )
            points.append(sum(counts[s].sum() for s in start))
        cost = expected_cost(cfg, counts, mass, k)
        assert cost.samples == pytest.approx(np.mean(samples), rel=0.03)
        assert cost.touched_points == pytest.approx(np.mean(points), rel=0.03)


def test_expected_cost_refuses_what_is_not_a_distribution():
    cfg = SisaConfig(shards=2, slices=2)
    with pytest.raises(ValueError, match="probability distribution"):
        expected_cost(cfg, np.ones((2, 2)), np.full((2, 2), 0.5), 1)
    with pytest.raises(ValueError, match=r"\[S, R\]"):
        expected_cost(cfg, np.ones((2, 2)), np.full(4, 0.25), 1)
