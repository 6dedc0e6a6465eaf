"""SCRUB (Kurmanji et al., "Towards unbounded machine unlearning", NeurIPS 2023).

A student, initialised as the original model (the teacher), alternates two steps:

- max-step, a pass over the forget set: move away from the teacher, minimising −d;
- min-step, a pass over the retain set: stay with it and keep fitting the labels,
  minimising γ·CE(p_S, y) + α·d,

with d = T²·KL(softmax(z_T/T) ‖ softmax(z_S/T)) the distillation divergence. Only the
first ``scrub_max_epochs`` epochs have a max-step; the later min-steps repair what the
max-steps broke on the retain set.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from sisa.evidence.approximate import BaselineConfig, Examples, sgd, tensors, trainable_copy
from sisa.evidence.baselines import kl_teacher


def scrub(model: nn.Module, forget: Examples, retain: Examples, cfg: BaselineConfig) -> nn.Module:
    """SCRUB's student after ``cfg.epochs`` epochs (max-steps in the first
    ``cfg.scrub_max_epochs``), with the original model as the frozen teacher."""
    student, gen = trainable_copy(model, cfg, forget)
    teacher = copy.deepcopy(model).eval()
    opt = sgd(student, cfg)
    for epoch in range(cfg.epochs):
        if epoch < cfg.scrub_max_epochs and len(forget):
            for idx in torch.randperm(len(forget), generator=gen).split(cfg.batch_size):
                xb, _ = tensors(forget, idx)
                kl, _ = kl_teacher(student, teacher, xb, cfg.scrub_temperature)
                opt.zero_grad(set_to_none=True)
                (-kl).backward()
                opt.step()
        for idx in torch.randperm(len(retain), generator=gen).split(cfg.batch_size):
            xb, yb = tensors(retain, idx)
            kl, logits = kl_teacher(student, teacher, xb, cfg.scrub_temperature)
            loss = cfg.scrub_gamma * F.cross_entropy(logits, yb) + cfg.scrub_alpha * kl
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return student.eval()
