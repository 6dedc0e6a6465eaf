"""The approximate methods by name, as the benchmark and the CLI refer to them."""

from __future__ import annotations

from sisa.evidence.baselines import (
    Method,
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
from sisa.evidence.scrub import scrub
from sisa.evidence.ssd import ssd

METHODS: dict[str, Method] = {
    "finetune": finetune,
    "gradient-ascent": gradient_ascent,
    "random-labels": random_labels,
    "neggrad+": neggrad_plus,
    "kl": kl_finetune,
    "scrub": scrub,
    "ssd": ssd,
    "l1-sparse": l1_sparse,
    "prune-finetune": prune_finetune,
    "eu-k": exact_unlearning_k,
    "cf-k": catastrophic_forgetting_k,
}
