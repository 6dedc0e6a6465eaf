"""All the evidence about one unlearned model against its reference, from their outputs.

The inputs are probabilities, not models, so the same code judges a torch module, a SISA
ensemble, or anything else that predicts: ``Outputs`` holds one model's probabilities and
the labels on the forget, retain and test sets (and, for a forgotten class, on that
class's held-out test points). ``evidence`` returns flat, JSON-ready figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from sisa.evidence.metrics import (
    accuracy,
    accuracy_gaps,
    cross_entropy,
    split_accuracy,
    tug_of_war,
    tug_of_war_mia,
)
from sisa.evidence.mia import LR_MIA_MIN, logistic_loss_attack, loss_threshold_attack, svc_mia

SPLITS = ("forget", "retain", "test")
CLASS_SPLITS = ("class_test", "other_test")  # unlearning a class: its test points, the rest


@dataclass(frozen=True)
class Outputs:
    """One model's probabilities [n, C] and the labels [n], per split."""

    proba: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]

    def __post_init__(self) -> None:
        missing = [s for s in SPLITS if s not in self.proba or s not in self.labels]
        if missing:
            raise ValueError(f"outputs lack the split(s) {missing}")
        unlabelled = sorted(set(self.proba) - set(self.labels))
        if unlabelled:
            raise ValueError(f"probabilities without labels for {unlabelled}")
        for split, p in self.proba.items():
            if len(p) != len(self.labels[split]):
                raise ValueError(
                    f"{split}: {len(p)} rows of probabilities for {len(self.labels[split])} labels"
                )

    def pair(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        return self.proba[split], self.labels[split]

    def loss(self, split: str) -> np.ndarray:
        return cross_entropy(*self.pair(split))


def _mia(out: Outputs, seed: int) -> dict[str, float | None]:
    threshold = loss_threshold_attack(out.loss("forget"), out.loss("test"))
    figures: dict[str, float | None] = {
        "mia_auc": threshold.auc,
        "mia_balanced_accuracy": threshold.balanced_accuracy,
        "svc_mia": svc_mia(out.pair("retain"), out.pair("test"), out.pair("forget"), seed=seed),
    }
    # SCRUB's attack compares with test points of the forget set's classes only, so that
    # it learns membership, not the classes (a forgotten class would be told apart anyway)
    same = np.isin(out.labels["test"], np.unique(out.labels["forget"]))  # [n_test]
    forget_loss, test_loss = out.loss("forget"), out.loss("test")[same]
    enough = min(len(forget_loss), len(test_loss)) >= LR_MIA_MIN
    figures["lr_mia"] = logistic_loss_attack(forget_loss, test_loss, seed=seed) if enough else None
    return figures


def evidence(model: Outputs, reference: Outputs, seed: int = 0) -> dict[str, Any]:
    """Accuracies, their gaps, ToW, ToW-MIA and the three MIAs of ``model``, each beside
    the reference's own figure (``*_reference``) where the reference is the target.

    The MIAs treat the forget set as the suspected members and the test set as the known
    non-members; ``svc_mia`` trains its attacker on each model's own retain vs test outputs.
    """
    acc, ref_acc = (split_accuracy(o.proba, o.labels) for o in (model, reference))
    gaps = accuracy_gaps(acc, ref_acc)
    mia, ref_mia = _mia(model, seed), _mia(reference, seed)
    figures: dict[str, Any] = {
        **{f"acc_{s}": getattr(acc, s) for s in SPLITS},
        **{f"acc_{s}_reference": getattr(ref_acc, s) for s in SPLITS},
        **{f"gap_{s}": getattr(gaps, s) for s in SPLITS},
        "tow": tug_of_war(acc, ref_acc),
        "tow_mia": tug_of_war_mia(acc, ref_acc, mia["svc_mia"], ref_mia["svc_mia"]),
        **mia,
        **{f"{k}_reference": v for k, v in ref_mia.items()},
    }
    for split in CLASS_SPLITS:
        if split in model.proba and len(model.labels[split]):
            figures[f"acc_{split}"] = accuracy(*model.pair(split))
            figures[f"acc_{split}_reference"] = accuracy(*reference.pair(split))
    return figures
