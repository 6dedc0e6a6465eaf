"""RUM, the Refined-Unlearning Meta-algorithm (Zhao et al., "What makes unlearning hard and
what to do about it", NeurIPS 2024, arXiv 2406.01257).

Approximate methods fail unevenly: points the model memorised (rare, atypical) are hard
to unlearn, typical points are easy, and a forget set that mixes both is the hardest.
RUM (1) refines the forget set into homogeneous groups by how memorised each point is,
then (2) unlearns the groups one after another, each with the method that suits it.

Memorisation (Feldman's leave-one-out score) costs many retrained models; RUM's cheap
proxy, used here, is the confidence a point's true class gets during training, averaged
over epochs (the C-proxy): memorised points are learnt late and reluctantly, so their
mean confidence is low. ``memorization = 1 − C``.

For a given forget set, the groups are its thirds by the proxy's rank (the paper builds
its forget sets from the extremes and the middle of the whole training set instead), and
they are unlearned from low to high memorisation, the order the paper found best, each
step with the whole forget set left out of the retain set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sisa.evidence.approximate import BaselineConfig, Examples, batches, sgd, tensors
from sisa.evidence.baselines import Method, finetune, neggrad_plus

GROUPS = ("low", "mid", "high")


def fit_tracking_confidence(
    model: nn.Module, data: Examples, cfg: BaselineConfig, epochs: int
) -> np.ndarray:
    """Train ``model`` in place on ``data`` (CE, SGD, seeded by ``cfg.seed``) and return
    each example's memorisation proxy, 1 − C with C the C-proxy of RUM's code: the mean,
    over epochs, of the true-class probability in the training forward pass that each
    example's batch takes (train mode, before that step's update).  -> [n] in [0, 1]."""
    if epochs < 1 or len(data) == 0:
        raise ValueError(
            f"the proxy needs at least one epoch over data; got {epochs} "
            f"epochs over {len(data)} examples"
        )
    gen = torch.Generator().manual_seed(cfg.seed)
    model.train()
    opt = sgd(model, cfg)
    total = np.zeros(len(data))  # [n]
    for idx in batches(len(data), cfg.batch_size, epochs, gen):
        xb, yb = tensors(data, idx)
        logits = model(xb)  # [B, C]
        with torch.no_grad():
            total[idx.numpy()] += torch.softmax(logits, 1).gather(1, yb[:, None])[:, 0].numpy()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(logits, yb).backward()
        opt.step()
    model.eval()
    return 1.0 - total / epochs


def memorization_groups(
    memorization: np.ndarray, edges: tuple[float, float] | None = None
) -> dict[str, np.ndarray]:
    """Split examples into low / mid / high memorisation: by the ``edges`` (two proxy
    values) if given, else into thirds by rank. -> group -> indices into ``memorization``."""
    memorization = np.asarray(memorization, float)
    if edges is None:
        order = np.argsort(memorization, kind="stable")  # [n], least memorised first
        return dict(zip(GROUPS, np.array_split(order, 3), strict=True))
    lo, hi = edges
    if not lo <= hi:
        raise ValueError(f"edges must be ordered, got {edges}")
    return {
        "low": np.flatnonzero(memorization < lo),
        "mid": np.flatnonzero((memorization >= lo) & (memorization < hi)),
        "high": np.flatnonzero(memorization >= hi),
    }


def default_methods() -> dict[str, Method]:
    """Cheap fine-tuning where unlearning is easy, NegGrad+ where it is hard (the paper's
    finding; its exact pairing per group is a choice, not a prescription)."""
    return {"low": finetune, "mid": neggrad_plus, "high": neggrad_plus}


@dataclass(frozen=True, kw_only=True)
class RUM:
    """The meta-algorithm as a method: refine by ``memorization``, then unlearn the groups
    in ``order``, each with ``methods[group]`` applied to the model the previous group
    left. The retain set of every step is the full retain set."""

    memorization: np.ndarray  # [|F|] proxy of each forget example, aligned with the forget set
    methods: dict[str, Method] = field(default_factory=default_methods)
    order: Sequence[str] = GROUPS
    edges: tuple[float, float] | None = None

    def __call__(
        self, model: nn.Module, forget: Examples, retain: Examples, cfg: BaselineConfig
    ) -> nn.Module:
        if len(forget) == 0:
            raise ValueError("the forget set is empty: there is nothing to unlearn")
        if len(self.memorization) != len(forget):
            raise ValueError(
                f"{len(self.memorization)} memorisation scores for {len(forget)} forget examples"
            )
        if set(self.order) != set(GROUPS) or set(self.methods) != set(GROUPS):
            raise ValueError(f"RUM needs a method and a place in the order for each of {GROUPS}")
        groups = memorization_groups(self.memorization, self.edges)
        for group in self.order:
            rows = groups[group]
            if len(rows):
                part = Examples(forget.X[rows], forget.y[rows])
                model = self.methods[group](model, part, retain, cfg)
        return model
