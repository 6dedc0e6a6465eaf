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
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sisa.config import ConfigError
from sisa.evidence.approximate import (
    BaselineConfig,
    Examples,
    cross_entropy_loss,
    sgd,
    tensors,
    train_on,
    trainable_copy,
)

Method = Callable[[nn.Module, Examples, Examples, BaselineConfig], nn.Module]


def finetune(
    model: nn.Module, forget: Examples, retain: Examples, cfg: BaselineConfig
) -> nn.Module:
    """Fine-tune on the retain set alone (catastrophic forgetting of F): minimise CE(R)."""
    out, gen = trainable_copy(model, cfg, forget)
    train_on(out, retain, cfg, cross_entropy_loss, gen)
    return out.eval()


def gradient_ascent(
    model: nn.Module, forget: Examples, retain: Examples, cfg: BaselineConfig
) -> nn.Module:
    """Gradient ascent / NegGrad (Golatkar et al. 2020; Thudi et al. 2022): maximise
    CE(F), i.e. minimise −CE(F), on the forget set only."""
    out, gen = trainable_copy(model, cfg, forget)
    train_on(out, forget, cfg, lambda m, x, y, s: -F.cross_entropy(m(x), y), gen)
    return out.eval()


def random_labels(
    model: nn.Module, forget: Examples, retain: Examples, cfg: BaselineConfig
) -> nn.Module:
    """Random labelling (Golatkar et al. 2020; Fan et al., SalUn 2024): relabel each forget
    example with a class drawn uniformly (its own included, as in the reference code), then
    fine-tune on those and the retain set shuffled together."""
    out, gen = trainable_copy(model, cfg, forget)
    with torch.no_grad():  # the copy, in eval mode: the original's state is never touched
        classes = out.eval()(torch.as_tensor(forget.X[:1], dtype=torch.float32)).shape[1]
    out.train()
    labels = np.random.default_rng(cfg.seed).integers(0, classes, len(forget))  # [|F|]
    relabelled = Examples(forget.X, labels)
    both = Examples(np.concatenate([relabelled.X, retain.X]), np.r_[relabelled.y, retain.y])
    train_on(out, both, cfg, cross_entropy_loss, gen)
    return out.eval()


def _paired(data: Examples, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of ``n`` examples of ``data``, drawn with replacement from the stream."""
    rows = torch.randint(len(data), (n,), generator=gen)
    return tensors(data, rows)


def neggrad_plus(
    model: nn.Module, forget: Examples, retain: Examples, cfg: BaselineConfig
) -> nn.Module:
    """NegGrad+ / gradient difference (Kurmanji et al. 2023): each step on a retain batch
    and a forget batch minimises α·CE(R) − (1 − α)·CE(F)."""
    out, gen = trainable_copy(model, cfg, forget)
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
    out, gen = trainable_copy(model, cfg, forget)
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
    out, gen = trainable_copy(model, cfg, forget)
    opt = sgd(out, cfg)
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
    out, gen = trainable_copy(model, cfg, forget)
    weights = _weights(out)
    hooks = []
    if cfg.prune_ratio > 0:
        magnitudes = torch.cat([w.detach().abs().flatten() for w in weights])
        k = int(cfg.prune_ratio * len(magnitudes))
        cut = magnitudes.kthvalue(k).values if k > 0 else magnitudes.min() - 1
        masks = [(w.detach().abs() > cut).float() for w in weights]
        for w, mask in zip(weights, masks, strict=True):
            w.data.mul_(mask)
            hooks.append(w.register_hook(lambda g, mask=mask: g * mask))  # pruned stay 0
    train_on(out, retain, cfg, cross_entropy_loss, gen)
    for hook in hooks:
        hook.remove()  # the returned model trains freely, like any other
    return out.eval()


def _layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.Linear | nn.Conv2d)]


def _tune_last(model: nn.Module, forget: Examples, cfg: BaselineConfig, reinit: bool) -> nn.Module:
    out, _ = trainable_copy(model, cfg, forget)
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
    out = _tune_last(model, forget, cfg, reinit=True)
    train_on(out, retain, cfg, cross_entropy_loss, torch.Generator().manual_seed(cfg.seed))
    return out.eval()


def catastrophic_forgetting_k(
    model: nn.Module, forget: Examples, retain: Examples, cfg: BaselineConfig
) -> nn.Module:
    """CF-k (Goel et al. 2022): fine-tune only the last k layers on R, the rest frozen."""
    out = _tune_last(model, forget, cfg, reinit=False)
    train_on(out, retain, cfg, cross_entropy_loss, torch.Generator().manual_seed(cfg.seed))
    return out.eval()
