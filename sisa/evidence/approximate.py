"""What the approximate methods share: their data, their config, and one seeded loop.

``Examples`` holds one split; ``BaselineConfig`` every method's hyperparameters, validated
in one place; ``trainable_copy`` and ``train_on`` give each method a copy of the model
(the original is never touched) and a deterministic SGD loop over seeded batch orders.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, ValidationError
from torch import nn

from sisa.config import ConfigError, _Section


@dataclass(frozen=True)
class Examples:
    """Features and labels of one split.  X [n, *f], y [n] (int64 classes)."""

    X: np.ndarray
    y: np.ndarray

    def __post_init__(self) -> None:
        if len(self.X) != len(self.y):
            raise ValueError(f"{len(self.X)} feature rows for {len(self.y)} labels")

    def __len__(self) -> int:
        return len(self.y)


class BaselineConfig(_Section):
    """Hyperparameters of the approximate methods; each names the method it serves."""

    epochs: int = Field(5, ge=1, le=10_000)
    """Passes over the data a method trains on: the retain set, the forget set (gradient
    ascent, KL) or both (random labels)."""
    lr: float = Field(0.01, gt=0)
    """SGD learning rate (momentum 0.9) of every method that trains."""
    batch_size: int = Field(64, ge=1)
    """Examples per step."""
    seed: int = Field(0, ge=0, lt=2**63)
    """Seed of batch order, random labels and re-initialisation."""
    neggrad_alpha: float = Field(0.95, gt=0, lt=1)
    """NegGrad+: loss = α·CE(retain) − (1 − α)·CE(forget)."""
    kl_weight: float = Field(1.0, ge=0)
    """KL fine-tuning: weight of KL(original ‖ model) on retain batches beside their CE."""
    scrub_max_epochs: int = Field(3, ge=0)
    """SCRUB: the first epochs, which start with a max-step pass over the forget set."""
    scrub_alpha: float = Field(0.5, ge=0)
    """SCRUB: weight of the retain distillation term in the min-step."""
    scrub_gamma: float = Field(1.0, ge=0)
    """SCRUB: weight of the retain cross-entropy in the min-step."""
    scrub_temperature: float = Field(4.0, gt=0)
    """SCRUB: distillation temperature T; the divergence is T²·KL(p_T^(1/T) ‖ p_S^(1/T))."""
    ssd_alpha: float = Field(10.0, gt=0)
    """SSD: a parameter is dampened where its forget importance exceeds α × its importance
    on all training data."""
    ssd_lambda: float = Field(1.0, gt=0)
    """SSD: dampening strength; such a parameter is scaled by min(λ·I_D / I_F, 1)."""
    l1_gamma: float = Field(5e-4, ge=0)
    """L1-sparse: starting weight of the L1 penalty, decaying linearly to 0."""
    prune_ratio: float = Field(0.5, ge=0, lt=1)
    """Prune-and-fine-tune: fraction of weights (smallest magnitude, globally) set to 0."""
    reset_layers: int = Field(1, ge=1)
    """EU-k / CF-k: the k last layers with weights that are re-initialised or tuned."""


def baseline_config(overrides: dict[str, object] | None = None) -> BaselineConfig:
    """Validate overrides (``{"lr": 0.1}``); errors name the field as ``baselines.lr``."""
    try:
        return BaselineConfig.model_validate(overrides or {})
    except ValidationError as err:
        problems = [
            f"baselines.{'.'.join(map(str, e['loc']))}: "
            + ("unknown setting" if e["type"] == "extra_forbidden" else e["msg"])
            for e in err.errors()
        ]
        raise ConfigError("; ".join(problems)) from None


def batches(n: int, size: int, epochs: int, gen: torch.Generator) -> Iterator[torch.Tensor]:
    """Row indices [B] of each batch: a fresh seeded permutation of the n rows per epoch."""
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen)
        yield from order.split(size)


def tensors(ex: Examples, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows ``idx`` [B] of ``ex`` as (features [B, *f] float32, labels [B] int64)."""
    rows = idx.numpy()
    return (
        torch.as_tensor(ex.X[rows], dtype=torch.float32),  # [B, *f]
        torch.as_tensor(ex.y[rows], dtype=torch.int64),  # [B]
    )


def sgd(model: nn.Module, cfg: BaselineConfig) -> torch.optim.Optimizer:
    """SGD with momentum 0.9 over the parameters that train."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9)


def trainable_copy(
    model: nn.Module, cfg: BaselineConfig, forget: Examples | None = None
) -> tuple[nn.Module, torch.Generator]:
    """A trainable copy of ``model`` (the original is never touched) and the seeded stream;
    refuses an empty forget set, which no method can unlearn."""
    if forget is not None and len(forget) == 0:
        raise ValueError("the forget set is empty: there is nothing to unlearn")
    out = copy.deepcopy(model)
    out.train()
    for p in out.parameters():
        p.requires_grad_(True)
    return out, torch.Generator().manual_seed(cfg.seed)


def train_on(
    model: nn.Module,
    data: Examples,
    cfg: BaselineConfig,
    loss: Callable[[nn.Module, torch.Tensor, torch.Tensor, int], torch.Tensor],
    gen: torch.Generator,
    epochs: int | None = None,
    opt: torch.optim.Optimizer | None = None,
) -> int:
    """Minimise ``loss(model, xb, yb, step)`` over ``data`` in place; returns the steps.
    ``opt`` continues an optimizer (and its momentum) across calls; default a new SGD."""
    if len(data) == 0:
        return 0
    opt = opt or sgd(model, cfg)
    step = 0
    for idx in batches(len(data), cfg.batch_size, epochs or cfg.epochs, gen):
        xb, yb = tensors(data, idx)
        opt.zero_grad(set_to_none=True)
        loss(model, xb, yb, step).backward()
        opt.step()
        step += 1
    return step


def cross_entropy_loss(
    model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, step: int
) -> torch.Tensor:
    """Plain cross-entropy, the loss of fine-tuning and of training from scratch."""
    return F.cross_entropy(model(xb), yb)
