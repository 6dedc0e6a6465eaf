"""Each approximate method does what its definition says, on a tiny model and fixed seeds,
and none touches the model it starts from."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from sisa.config import ConfigError
from sisa.evidence.approximate import Examples, baseline_config, cross_entropy_loss, train_on
from sisa.evidence.baselines import (
    catastrophic_forgetting_k,
    exact_unlearning_k,
    finetune,
    gradient_ascent,
    kl_finetune,
    l1_sparse,
    neggrad_plus,
    prune_finetune,
    random_labels,
)
from sisa.evidence.methods import METHODS
from sisa.evidence.metrics import accuracy, cross_entropy
from sisa.evidence.rum import RUM
from sisa.evidence.scrub import scrub
from sisa.evidence.ssd import ssd
from sisa.training.models import MLP


def blobs(n: int, seed: int) -> Examples:
    """Three Gaussian classes in 8 dimensions."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    centres = np.random.default_rng(99).normal(0, 2.0, (3, 8))
    return Examples((centres[y] + rng.normal(0, 1.0, (n, 8))).astype(np.float32), y)


@pytest.fixture(scope="module")
def trained() -> tuple[nn.Module, Examples, Examples]:
    """A model trained on forget ∪ retain (forget: 30 points, some with flipped labels so
    there is something to unlearn)."""
    forget, retain = blobs(30, 1), blobs(300, 2)
    forget = Examples(forget.X, (forget.y + (np.arange(30) % 2)) % 3)  # memorised noise
    torch.manual_seed(0)
    model = MLP((8,), 3, (64,), 0.0)
    both = Examples(np.r_[forget.X, retain.X], np.r_[forget.y, retain.y])
    cfg = baseline_config({"epochs": 150, "lr": 0.05, "batch_size": 32})
    train_on(model, both, cfg, cross_entropy_loss, torch.Generator().manual_seed(0))
    return model.eval(), forget, retain


def proba(model: nn.Module, ex: Examples) -> np.ndarray:
    with torch.no_grad():
        return torch.softmax(model(torch.as_tensor(ex.X)), 1).numpy()


def forget_loss(model: nn.Module, ex: Examples) -> float:
    return float(cross_entropy(proba(model, ex), ex.y).mean())


def same(a: nn.Module, b: nn.Module) -> bool:
    return all(
        torch.equal(x, y)
        for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


CFG = baseline_config({"epochs": 3, "lr": 0.05, "batch_size": 16})


ALL = dict(METHODS) | {"rum": RUM(memorization=np.linspace(0, 1, 30))}


def hooks_of(model: nn.Module) -> list[object]:
    return [h for m in model.modules() for h in (*m._forward_pre_hooks, *m._forward_hooks)] + [
        h for p in model.parameters() for h in (p._backward_hooks or {})
    ]


@pytest.mark.parametrize("name", sorted(ALL))
def test_every_method_leaves_the_original_alone_and_is_deterministic(trained, name) -> None:
    model, forget, retain = trained
    before = copy.deepcopy(model)
    first = ALL[name](model, forget, retain, CFG)
    assert same(model, before) and not model.training and not hooks_of(model)
    assert first is not model
    assert same(first, ALL[name](model, forget, retain, CFG))
    assert not first.training and not hooks_of(first)  # nothing left attached
    with pytest.raises(ValueError, match="forget set is empty"):
        ALL[name](model, Examples(forget.X[:0], forget.y[:0]), retain, CFG)


def test_the_model_remembers_its_forget_set_to_begin_with(trained) -> None:
    model, forget, retain = trained
    assert accuracy(proba(model, forget), forget.y) == 1.0  # the flipped labels too


@pytest.mark.parametrize("method", [gradient_ascent, neggrad_plus, random_labels])
def test_methods_that_push_away_from_the_forget_set_raise_its_loss(trained, method) -> None:
    model, forget, retain = trained
    out = method(model, forget, retain, CFG)
    assert forget_loss(out, forget) > 10 * forget_loss(model, forget)
    assert accuracy(proba(out, forget), forget.y) < 0.75


def test_kl_term_holds_fine_tuning_to_the_original_on_the_retain_set(trained) -> None:
    model, forget, retain = trained

    def divergence(out: nn.Module) -> float:
        p, q = proba(model, retain), proba(out, retain)
        return float((p * (np.log(p + 1e-12) - np.log(q + 1e-12))).sum(1).mean())

    cfg = baseline_config({"epochs": 3, "lr": 0.05, "batch_size": 16, "kl_weight": 10})
    held = divergence(kl_finetune(model, forget, retain, cfg))
    assert held < 0.5 * divergence(finetune(model, forget, retain, cfg))
    unweighted = baseline_config({"epochs": 3, "lr": 0.05, "batch_size": 16, "kl_weight": 0})
    assert same(
        kl_finetune(model, forget, retain, unweighted), finetune(model, forget, retain, unweighted)
    )


def test_neggrad_plus_keeps_the_retain_set(trained) -> None:
    model, forget, retain = trained
    out = neggrad_plus(model, forget, retain, CFG)
    assert accuracy(proba(out, retain), retain.y) >= accuracy(proba(model, retain), retain.y) - 0.05


def test_scrub_max_steps_push_the_forget_set_away_and_min_steps_keep_the_rest(trained) -> None:
    model, forget, retain = trained
    out = scrub(model, forget, retain, CFG)
    without_max = scrub(model, forget, retain, CFG.model_copy(update={"scrub_max_epochs": 0}))
    assert forget_loss(out, forget) > 1.5 * forget_loss(without_max, forget)
    assert accuracy(proba(out, retain), retain.y) >= accuracy(proba(model, retain), retain.y) - 0.05
    # no max-steps and the CE term alone: exactly fine-tuning on the retain set
    plain = CFG.model_copy(update={"scrub_max_epochs": 0, "scrub_alpha": 0.0, "scrub_gamma": 1.0})
    assert same(scrub(model, forget, retain, plain), finetune(model, forget, retain, plain))


def test_ssd_dampens_the_weights_only_the_forget_set_uses() -> None:
    """Feature 0 is nonzero only in the forget set, so only the weights reading it are
    far more important to F than to D: those shrink by λ·I_D/I_F, the rest stay."""
    rng = np.random.default_rng(0)
    retain = Examples(
        np.c_[np.zeros(200), rng.normal(size=(200, 3))].astype(np.float32), rng.integers(0, 2, 200)
    )
    forget = Examples(
        np.c_[np.full(10, 3.0), rng.normal(size=(10, 3))].astype(np.float32), rng.integers(0, 2, 10)
    )
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 2))
    out = ssd(model, forget, retain, baseline_config({"ssd_alpha": 10.0, "ssd_lambda": 1.0}))
    w0, w1 = model[0].weight.detach(), out[0].weight.detach()  # [2, 4]
    ratio = w1[:, 0] / w0[:, 0]
    assert (ratio < 1).all() and (ratio > 0).all()  # feature 0: dampened, not zeroed
    assert torch.equal(w1[:, 1:], w0[:, 1:])  # shared features: untouched


def test_l1_sparse_ends_with_smaller_weights_than_plain_fine_tuning(trained) -> None:
    model, forget, retain = trained

    def l1(m: nn.Module) -> float:
        return sum(float(w.detach().abs().sum()) for n, w in m.named_parameters() if "weight" in n)

    strong = baseline_config({"epochs": 3, "lr": 0.05, "batch_size": 16, "l1_gamma": 0.01})
    assert l1(l1_sparse(model, forget, retain, strong)) < 0.9 * l1(
        finetune(model, forget, retain, strong)
    )


def test_pruned_weights_stay_zero_through_fine_tuning(trained) -> None:
    model, forget, retain = trained
    out = prune_finetune(model, forget, retain, baseline_config({"epochs": 2, "prune_ratio": 0.5}))
    weights = torch.cat([m.weight.flatten() for m in out.modules() if isinstance(m, nn.Linear)])
    assert (weights == 0).float().mean().item() == pytest.approx(0.5, abs=0.01)


def test_layer_reset_changes_only_the_last_k_layers(trained) -> None:
    model, forget, retain = trained
    cfg = baseline_config({"epochs": 1, "reset_layers": 1})
    first, last = (name for name, m in model.named_modules() if isinstance(m, nn.Linear))
    for method in (exact_unlearning_k, catastrophic_forgetting_k):
        out = method(model, forget, retain, cfg)
        layers = dict(out.named_modules())
        assert torch.equal(layers[first].weight, dict(model.named_modules())[first].weight)
        assert not torch.equal(layers[last].weight, dict(model.named_modules())[last].weight)
    with pytest.raises(ConfigError, match="baselines.reset_layers"):
        exact_unlearning_k(model, forget, retain, baseline_config({"reset_layers": 3}))


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ConfigError, match=r"baselines.lr: .*greater than 0"):
        baseline_config({"lr": 0})
    with pytest.raises(ConfigError, match="baselines.epoch: unknown setting"):
        baseline_config({"epoch": 3})
