"""Selective Synaptic Dampening (Foster et al., "Fast machine unlearning without
retraining through selective synaptic dampening", AAAI 2024, arXiv 2308.07707).

No training: the importance of each parameter θ_i to a dataset is the diagonal of the
Fisher information, estimated as the mean over batches of the squared gradient of the
loss, I_i = E[(∂L/∂θ_i)²]. Parameters far more important to the forget set F than to the
whole training data D are specialised to F, and are shrunk:

    if I_F,i > α · I_D,i:   θ_i ← min(λ · I_D,i / I_F,i, 1) · θ_i
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sisa.evidence.approximate import BaselineConfig, Examples, tensors, trainable_copy


def importances(model: nn.Module, data: Examples, batch_size: int) -> list[torch.Tensor]:
    """Per parameter, the mean over batches of the squared batch-loss gradient."""
    params = list(model.parameters())
    total = [torch.zeros_like(p) for p in params]
    batches = torch.arange(len(data)).split(batch_size)
    for idx in batches:
        xb, yb = tensors(data, idx)
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(xb), yb).backward()
        for acc, p in zip(total, params, strict=True):
            if p.grad is not None:
                acc += p.grad.detach() ** 2
    model.zero_grad(set_to_none=True)
    return [acc / max(len(batches), 1) for acc in total]


def ssd(model: nn.Module, forget: Examples, retain: Examples, cfg: BaselineConfig) -> nn.Module:
    """A dampened copy of ``model``: importances on D = F ∪ R and on F (batches of
    ``cfg.batch_size``, the model in eval mode), selection by ``ssd_alpha``, scaling by
    ``ssd_lambda``."""
    out, _ = trainable_copy(model, cfg, forget)
    out.eval()  # importances of the model as it predicts (no dropout)
    everything = Examples(np.concatenate([forget.X, retain.X]), np.r_[forget.y, retain.y])
    on_all = importances(out, everything, cfg.batch_size)
    on_forget = importances(out, forget, cfg.batch_size)
    with torch.no_grad():
        for p, i_d, i_f in zip(out.parameters(), on_all, on_forget, strict=True):
            selected = i_f > cfg.ssd_alpha * i_d  # [*p.shape]
            beta = torch.clamp(cfg.ssd_lambda * i_d / i_f.clamp_min(1e-30), max=1.0)
            p.mul_(torch.where(selected, beta, torch.ones_like(beta)))
    return out
