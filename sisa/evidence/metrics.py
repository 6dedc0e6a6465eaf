"""Accuracy-based evidence of unlearning: accuracies, their gap to a reference, Tug-of-War.

The reference is a model trained from scratch without the forget set: the outcome that
exact unlearning promises. An unlearned model is judged by how close it lands to that
reference on three splits: the forget set F, the retain set R (training data kept) and the
test set T. Every figure here is a pure function of predicted probabilities and labels,
so it is tested on constructed cases where the answer is known.

For SISA the reference is its own from-scratch retrain, which it equals bitwise; its gaps
are 0 and its ToW is 1 by construction. The figures matter for approximate methods.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EPS = 1e-12  # floor on probabilities, so a confident mistake has a finite loss


def accuracy(proba: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy: mean over examples of [argmax_c p(c|x) = y].  proba [n, C], y [n]."""
    proba, y = np.asarray(proba), np.asarray(y)
    if len(y) == 0:
        raise ValueError("accuracy of an empty set is undefined")
    if proba.shape[0] != len(y):
        raise ValueError(f"{proba.shape[0]} rows of probabilities for {len(y)} labels")
    return float(np.mean(proba.argmax(axis=1) == y))


def true_class_proba(proba: np.ndarray, y: np.ndarray) -> np.ndarray:
    """p(y|x) per example.  proba [n, C], y [n] -> [n]."""
    return np.asarray(proba)[np.arange(len(y)), np.asarray(y)]


def cross_entropy(proba: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-example loss ℓ = −log max(p(y|x), 1e−12), the membership attacks' signal. -> [n]"""
    return -np.log(np.maximum(true_class_proba(proba, y), EPS))


@dataclass(frozen=True)
class SplitAccuracy:
    """Accuracy of one model on the forget, retain and test sets (fractions in [0, 1])."""

    forget: float
    retain: float
    test: float


def split_accuracy(proba: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> SplitAccuracy:
    """Accuracies from each split's probabilities; keys ``forget``, ``retain``, ``test``."""
    return SplitAccuracy(**{k: accuracy(proba[k], labels[k]) for k in ("forget", "retain", "test")})


def accuracy_gaps(model: SplitAccuracy, reference: SplitAccuracy) -> SplitAccuracy:
    """Signed gaps acc(model) − acc(reference) per split; positive on the forget set means
    the model still knows the forgotten points better than a model that never saw them."""
    return SplitAccuracy(
        forget=model.forget - reference.forget,
        retain=model.retain - reference.retain,
        test=model.test - reference.test,
    )


def tug_of_war(model: SplitAccuracy, reference: SplitAccuracy) -> float:
    """Tug-of-War (Zhao et al., "What makes unlearning hard and what to do about it",
    NeurIPS 2024, §3):

        ToW = (1 − |a_F − a'_F|) · (1 − |a_R − a'_R|) · (1 − |a_T − a'_T|)

    with a the model's and a' the reference's accuracy on each split. 1 means the model is
    indistinguishable from the reference by accuracy; each term punishes a gap on one split,
    so forgetting too much costs as much as forgetting too little.
    """
    gaps = accuracy_gaps(model, reference)
    return float((1 - abs(gaps.forget)) * (1 - abs(gaps.retain)) * (1 - abs(gaps.test)))


def tug_of_war_mia(
    model: SplitAccuracy, reference: SplitAccuracy, mia_model: float, mia_reference: float
) -> float:
    """ToW-MIA (Zhao et al. 2024, §3): ToW with the forget-set accuracy term replaced by the
    gap in a membership-inference score on the forget set,

        ToW-MIA = (1 − |m_F − m'_F|) · (1 − |a_R − a'_R|) · (1 − |a_T − a'_T|),

    m being the SVC-MIA efficacy with the confidence feature (``sisa.evidence.mia.svc_mia``),
    a fraction in [0, 1], each model attacked by its own SVC.
    """
    for name, value in (("mia_model", mia_model), ("mia_reference", mia_reference)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be a fraction in [0, 1], got {value}")
    gaps = accuracy_gaps(model, reference)
    return float(
        (1 - abs(mia_model - mia_reference)) * (1 - abs(gaps.retain)) * (1 - abs(gaps.test))
    )
