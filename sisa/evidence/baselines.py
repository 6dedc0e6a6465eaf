"""Approximate unlearning methods, the baselines exact SISA is compared against.

Each method has one interface, ``method(model, forget, retain, config) -> model``: it
starts from a model trained on everything (forget ∪ retain), never changes it, and returns
a new model meant to behave as if the forget set had not been trained on. None of them can
prove that; the evidence metrics (``sisa.evidence.metrics``, ``mia``, ``quality``) measure
how close each gets to a model retrained from scratch. They run on one monolithic model,
as in the literature.

Every method is deterministic given ``config.seed``: batches are drawn from a seeded
generator and any re-initialisation happens under a seeded RNG.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
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
    """Passes over the data a method trains on (the retain set, or the forget set for
    gradient ascent and random labels)."""
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
    except Exception as err:  # pydantic's ValidationError
        errors = getattr(err, "errors", None)
        if errors is None:
            raise
        problems = [
            f"baselines.{'.'.join(map(str, e['loc']))}: "
            + ("unknown setting" if e["type"] == "extra_forbidden" else e["msg"])
            for e in errors()
        ]
        raise ConfigError("; ".join(problems)) from None


Method = Callable[[nn.Module, Examples, Examples, BaselineConfig], nn.Module]


def _batches(n: int, size: int, epochs: int, gen: torch.Generator) -> Iterator[torch.Tensor]:
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen)
        yield from order.split(size)


def _tensors(ex: Examples, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    rows = idx.numpy()
    return (
        torch.as_tensor(ex.X[rows], dtype=torch.float32),  # [B, *f]
        torch.as_tensor(ex.y[rows], dtype=torch.int64),  # [B]
    )


def _sgd(model: nn.Module, cfg: BaselineConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9)


def _start(model: nn.Module, cfg: BaselineConfig) -> tuple[nn.Module, torch.Generator]:
    """A trainable copy of ``model`` (the original is never touched) and the seeded stream."""
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
    opt = opt or _sgd(model, cfg)
    step = 0
    for idx in _batches(len(data), cfg.batch_size, epochs or cfg.epochs, gen):
        xb, yb = _tensors(data, idx)
        opt.zero_grad(set_to_none=True)
        loss(model, xb, yb, step).backward()
        opt.step()
        step += 1
    return step


def _ce(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, step: int) -> torch.Tensor:
    return F.cross_entropy(model(xb), yb)


def finetune(
    model: nn.Module, forget: Examples, retain: Examples, cfg: BaselineConfig
) -> nn.Module:
    """Fine-tune on the retain set alone (catastrophic forgetting of F): minimise CE(R)."""
    out, gen = _start(model, cfg)
    train_on(out, retain, cfg, _ce, gen)
    return out.eval()


def gradient_ascent(
    model: nn.Module, forget: Examples, retain: Examples, cfg: BaselineConfig
) -> nn.Module:
    """Gradient ascent / NegGrad (Golatkar et al. 2020; Thudi et al. 2022): maximise
    CE(F), i.e. minimise −CE(F), on the forget set only."""
    out, gen = _start(model, cfg)
    train_on(out, forget, cfg, lambda m, x, y, s: -F.cross_entropy(m(x), y), gen)
    return out.eval()


def random_labels(
    model: nn.Module, forget: Examples, retain: Examples, cfg: BaselineConfig
) -> nn.Module:
    """Random labelling (Golatkar et al. 2020; Fan et al., SalUn 2024): relabel each forget
    example with a class drawn uniformly (its own included, as in the reference code), then
    fine-tune on those and the retain set shuffled together."""
    out, gen = _start(model, cfg)
    with torch.no_grad():
        classes = model(torch.as_tensor(forget.X[:1], dtype=torch.float32)).shape[1]
    labels = np.random.default_rng(cfg.seed).integers(0, classes, len(forget))  # [|F|]
    relabelled = Examples(forget.X, labels)
    both = Examples(np.concatenate([relabelled.X, retain.X]), np.r_[relabelled.y, retain.y])
    train_on(out, both, cfg, _ce, gen)
    return out.eval()


def _paired(data: Examples, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of ``n`` examples of ``data``, drawn with replacement from the stream."""
    rows = torch.randint(len(data), (n,), generator=gen)
    return _tensors(data, rows)


def neggrad_plus(
    model: nn.Module, forget: Examples, retain: Examples, cfg: BaselineConfig
) -> nn.Module:
    """NegGrad+ / gradient difference (Kurmanji et al. 2023): each step on a retain batch
    and a forget batch minimises α·CE(R) − (1 − α)·CE(F)."""
    out, gen = _start(model, cfg)
    a = cfg.neggrad_alpha

    def loss(m: nn.Module, x: torch.Tensor, y: torch.Tensor, step: int) -> torch.Tensor:
        xf, yf = _paired(forget, len(y), gen)
        return a * F.cross_entropy(m(x), y) - (1 - a) * F.cross_entropy(m(xf), yf)

    train_on(out, retain, cfg, loss, gen)
    return out.eval()


def kl_teacher(
    student: nn.Module, teacher: nn.Module, x: torch.Tensor, temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """T²·KL(softmax(z_t/T) ‖ softmax(z_s/T)) on a batch, averaged over examples, and the
    student's logits z_s [B, C]."""
    logits = student(x)  # [B, C]
    with torch.no_grad():
        target = F.log_softmax(teacher(x) / temperature, dim=1)  # [B, C]
    log_student = F.log_softmax(logits / temperature, dim=1)  # [B, C]
    kl = F.kl_div(log_student, target, log_target=True, reduction="batchmean")
    return temperature**2 * kl, logits


def kl_finetune(
    model: nn.Module, forget: Examples, retain: Examples, cfg: BaselineConfig
) -> nn.Module:
    """KL-regularised fine-tuning: fine-tune on the retain set while a KL term holds the
    model's retain predictions to the original's (SCRUB's min-step without its max-steps;
    the literature has no single canonical form),

        loss = CE(R) + w · KL(p_original ‖ p_model) on R.
    """
    out, gen = _start(model, cfg)
    teacher = copy.deepcopy(model).eval()

    def loss(m: nn.Module, x: torch.Tensor, y: torch.Tensor, step: int) -> torch.Tensor:
        kl, logits = kl_teacher(m, teacher, x)
        return F.cross_entropy(logits, y) + cfg.kl_weight * kl

    train_on(out, retain, cfg, loss, gen)
    return out.eval()


def _weights(model: nn.Module) -> list[nn.Parameter]:
    """The weight matrices / kernels (not biases) of the layers that have them, in order."""
    return [m.weight for m in model.modules() if isinstance(m, nn.Linear | nn.Conv2d)]


def l1_sparse(
    model: nn.Module, forget: Examples, retain: Examples, cfg: BaselineConfig
) -> nn.Module:
    """ℓ1-sparse fine-tuning (Jia et al., "Model sparsity can simplify machine unlearning",
    NeurIPS 2023): fine-tune on R with CE + γ_e ‖θ‖₁ over all parameters, the weight
    decaying linearly by epoch, γ_e = γ · (1 − e/E) for e = 0..E−1."""
    out, gen = _start(model, cfg)
    opt = _sgd(out, cfg)
    for epoch in range(cfg.epochs):
        gamma = cfg.l1_gamma * (1 - epoch / cfg.epochs)

        def loss(m: nn.Module, x: torch.Tensor, y: torch.Tensor, step: int) -> torch.Tensor:
            l1 = sum(p.abs().sum() for p in m.parameters())
            return F.cross_entropy(m(x), y) + gamma * l1  # noqa: B023 (used in this epoch)

        train_on(out, retain, cfg, loss, gen, epochs=1, opt=opt)
    return out.eval()


def prune_finetune(
    model: nn.Module, forget: Examples, retain: Examples, cfg: BaselineConfig
) -> nn.Module:
    """Prune, then fine-tune (Jia et al. 2023): zero the ``prune_ratio`` smallest-magnitude
    weights over all layers at once, then fine-tune on R with the mask held fixed."""
    out, gen = _start(model, cfg)
    weights = _weights(out)
    if cfg.prune_ratio > 0:
        magnitudes = torch.cat([w.detach().abs().flatten() for w in weights])
        k = int(cfg.prune_ratio * len(magnitudes))
        cut = magnitudes.kthvalue(k).values if k > 0 else magnitudes.min() - 1
        masks = [(w.detach().abs() > cut).float() for w in weights]
        for w, mask in zip(weights, masks, strict=True):
            w.data.mul_(mask)
            w.register_hook(lambda g, mask=mask: g * mask)  # pruned weights stay 0
    train_on(out, retain, cfg, _ce, gen)
    return out.eval()


def _layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.Linear | nn.Conv2d)]


def _tune_last(model: nn.Module, cfg: BaselineConfig, reinit: bool) -> nn.Module:
    out, gen = _start(model, cfg)
    layers = _layers(out)
    if cfg.reset_layers > len(layers):
        raise ConfigError(
            f"baselines.reset_layers: {cfg.reset_layers} is more than the model's "
            f"{len(layers)} layers with weights"
        )
    last = layers[-cfg.reset_layers :]
    for p in out.parameters():
        p.requires_grad_(False)
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        for layer in last:
            if reinit:
                layer.reset_parameters()
            for p in layer.parameters():
                p.requires_grad_(True)
    return out


def exact_unlearning_k(
    model: nn.Module, forget: Examples, retain: Examples, cfg: BaselineConfig
) -> nn.Module:
    """EU-k (Goel et al., "Towards adversarial evaluation of unlearning", 2022): re-
    initialise the last k layers and train them on R, the earlier layers frozen."""
    out = _tune_last(model, cfg, reinit=True)
    train_on(out, retain, cfg, _ce, torch.Generator().manual_seed(cfg.seed))
    return out.eval()


def catastrophic_forgetting_k(
    model: nn.Module, forget: Examples, retain: Examples, cfg: BaselineConfig
) -> nn.Module:
    """CF-k (Goel et al. 2022): fine-tune only the last k layers on R, the rest frozen."""
    out = _tune_last(model, cfg, reinit=False)
    train_on(out, retain, cfg, _ce, torch.Generator().manual_seed(cfg.seed))
    return out.eval()
