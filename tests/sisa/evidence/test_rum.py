"""RUM: the memorisation proxy ranks atypical points higher, the forget set is refined into
thirds, and the groups are unlearned from low to high memorisation."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from sisa.evidence.approximate import Examples, baseline_config
from sisa.evidence.rum import RUM, fit_tracking_confidence, memorization_groups
from sisa.training.models import MLP
from tests.sisa.evidence.test_baselines import blobs, same


def test_points_with_flipped_labels_score_as_memorised() -> None:
    data = blobs(300, 3)
    flipped = np.arange(0, 300, 10)  # [30]: labels that contradict their cluster
    y = data.y.copy()
    y[flipped] = (y[flipped] + 1) % 3
    torch.manual_seed(0)
    model = MLP((8,), 3, (64,), 0.0)
    memo = fit_tracking_confidence(
        model, Examples(data.X, y), baseline_config({"lr": 0.05, "batch_size": 32}), epochs=40
    )
    assert memo.shape == (300,) and ((memo >= 0) & (memo <= 1)).all()
    typical = np.setdiff1d(np.arange(300), flipped)
    assert memo[flipped].mean() > 0.5 > 0.2 > memo[typical].mean()
    # the 30 most memorised points are mostly the flipped ones
    assert len(np.intersect1d(np.argsort(memo)[-30:], flipped)) >= 24
    assert not model.training


def test_groups_are_thirds_by_rank_or_cut_at_edges() -> None:
    memo = np.array([0.9, 0.1, 0.5, 0.3, 0.7, 0.2, 0.8])
    groups = memorization_groups(memo)
    assert [sorted(memo[g]) for g in groups.values()] == [[0.1, 0.2, 0.3], [0.5, 0.7], [0.8, 0.9]]
    cut = memorization_groups(memo, edges=(0.25, 0.75))
    assert {k: sorted(memo[v]) for k, v in cut.items()} == {
        "low": [0.1, 0.2],
        "mid": [0.3, 0.5, 0.7],
        "high": [0.8, 0.9],
    }
    with pytest.raises(ValueError, match="ordered"):
        memorization_groups(memo, edges=(0.8, 0.2))


def test_rum_unlearns_the_groups_in_order_each_from_the_last_model() -> None:
    forget = Examples(np.arange(6, dtype=np.float32)[:, None], np.arange(6) % 2)
    retain = Examples(np.zeros((4, 1), np.float32), np.zeros(4, int))
    memo = np.array([0.9, 0.1, 0.5, 0.3, 0.7, 0.2])
    calls = []

    def recorder(group: str):
        def method(model: nn.Module, f: Examples, r: Examples, cfg) -> nn.Module:
            calls.append((group, sorted(f.X[:, 0].tolist()), len(r), model.tag))
            out = copy.deepcopy(model)
            out.tag = model.tag + [group]
            return out

        return method

    start = nn.Linear(1, 2)
    start.tag = []
    rum = RUM(memorization=memo, methods={g: recorder(g) for g in ("low", "mid", "high")})
    out = rum(start, forget, retain, baseline_config())
    assert calls == [
        ("low", [1.0, 5.0], 4, []),  # memorisation 0.1, 0.2
        ("mid", [2.0, 3.0], 4, ["low"]),  # 0.5, 0.3
        ("high", [0.0, 4.0], 4, ["low", "mid"]),  # 0.9, 0.7
    ]
    assert out.tag == ["low", "mid", "high"]
    with pytest.raises(ValueError, match="5 memorisation scores for 6 forget examples"):
        RUM(memorization=memo[:5])(start, forget, retain, baseline_config())


def test_rum_with_its_default_methods_changes_a_copy() -> None:
    data = blobs(120, 4)
    torch.manual_seed(0)
    model = MLP((8,), 3, (16,), 0.0)
    cfg = baseline_config({"epochs": 2, "lr": 0.05, "batch_size": 16})
    memo = fit_tracking_confidence(model, data, cfg, epochs=5)
    forget, retain = Examples(data.X[:30], data.y[:30]), Examples(data.X[30:], data.y[30:])
    before = copy.deepcopy(model)
    out = RUM(memorization=memo[:30])(model, forget, retain, cfg)
    assert same(model, before) and not same(out, model)
