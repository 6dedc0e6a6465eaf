"""Membership-inference attacks used as evidence of forgetting.

An attack tells members (points a model trained on) from non-members by the model's
outputs. After unlearning, the forget set should look to the attack as it looks on the
reference model that never saw it: often, but not always, like non-members. So each
attack returns a score for the model, and the evidence is its gap to the reference's.

- ``loss_threshold_attack``: one threshold on the loss (Yeom et al., CSF 2018).
- ``logistic_loss_attack``: logistic regression on losses, cross-validated (SCRUB).
- ``svc_mia``: a support-vector classifier on one confidence feature, trained on the
  model's retain vs test outputs, applied to the forget set (the MIA used by RUM).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score, roc_curve
from sklearn.model_selection import StratifiedShuffleSplit, cross_val_score
from sklearn.svm import SVC

from sisa.evidence.metrics import EPS, true_class_proba


@dataclass(frozen=True)
class ThresholdAttack:
    """How well one loss threshold separates members from non-members."""

    auc: float  # P(ℓ_member < ℓ_nonmember) + ½·P(tie): 0.5 = chance, 1 = perfect
    balanced_accuracy: float  # best ½(TPR + TNR) over all thresholds τ
    threshold: float  # the τ that achieves it: "member" when ℓ ≤ τ


def _check(members: np.ndarray, nonmembers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    members, nonmembers = np.asarray(members, float), np.asarray(nonmembers, float)
    if members.ndim != 1 or nonmembers.ndim != 1:
        raise ValueError("losses must be 1-D, one per example")
    if len(members) == 0 or len(nonmembers) == 0:
        raise ValueError("an attack needs at least one member and one non-member")
    return members, nonmembers


def loss_threshold_attack(member_loss: np.ndarray, nonmember_loss: np.ndarray) -> ThresholdAttack:
    """The loss-threshold attack (Yeom et al., "Privacy risk in machine learning", CSF
    2018): guess "member" when the loss ℓ ≤ τ, since training lowers the loss of the
    points trained on.

        AUC    = P(ℓ_m < ℓ_n) + ½ P(ℓ_m = ℓ_n)      (the area under the ROC over all τ)
        BalAcc = max_τ ½ (P(ℓ_m ≤ τ) + P(ℓ_n > τ))

    member_loss [m], nonmember_loss [n]: per-example losses.
    """
    members, nonmembers = _check(member_loss, nonmember_loss)
    truth = np.r_[np.ones(len(members)), np.zeros(len(nonmembers))]  # [m + n]
    score = -np.r_[members, nonmembers]  # a lower loss is more "member"
    auc = float(roc_auc_score(truth, score))
    fpr, tpr, thresholds = roc_curve(truth, score)
    best = int(np.argmax(tpr + 1 - fpr))
    return ThresholdAttack(auc, float((tpr[best] + 1 - fpr[best]) / 2), float(-thresholds[best]))


LR_MIA_MIN = 6  # per side: a 10% hold-out of 2n examples must hold one of each (n >= 6)


def logistic_loss_attack(
    forget_loss: np.ndarray, test_loss: np.ndarray, *, splits: int = 5, seed: int = 0
) -> float:
    """The MIA of SCRUB (Kurmanji et al., "Towards unbounded machine unlearning", NeurIPS
    2023; ``MIA_experiments.ipynb`` of its code): a logistic regression on the loss alone
    learns to tell forget examples (1) from test examples (0). The larger side is
    subsampled (with ``seed``) to the size of the smaller; losses are clipped to ±100; the
    accuracy is the mean over ``splits`` stratified shuffle splits, 10% held out each:

        MIA = mean over splits of accuracy(LR(ℓ) → forget?)

    About 0.5 means the losses do not give the forget set away. The reference's own figure
    is the target, since a model that never saw F can still fit it better than unseen data
    (or worse, for a class it never saw). Pass test examples of the forget set's classes
    only (``evidence`` does), or the attack learns the classes instead of membership.
    forget_loss [m], test_loss [n]; needs ``LR_MIA_MIN`` of each.
    """
    forget, test = _check(forget_loss, test_loss)
    n = min(len(forget), len(test))
    if n < LR_MIA_MIN:
        raise ValueError(
            f"the logistic-regression attack needs at least {LR_MIA_MIN} examples of each set, "
            f"got {len(forget)} forget and {len(test)} test"
        )
    rng = np.random.default_rng(seed)
    forget = rng.choice(forget, n, replace=False)
    test = rng.choice(test, n, replace=False)
    X = np.clip(np.r_[forget, test], -100, 100)[:, None]  # [2n, 1]
    y = np.r_[np.ones(n), np.zeros(n)]  # [2n]: 1 = forget
    cv = StratifiedShuffleSplit(n_splits=splits, test_size=0.1, random_state=seed)
    return float(cross_val_score(LogisticRegression(), X, y, cv=cv).mean())


FEATURES = ("confidence", "entropy", "modified_entropy", "correctness")


def confidence_features(proba: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """The SVC-MIA's features per example (Song & Mittal, USENIX Security 2021): the true
    class's confidence p_y, the entropy H = −Σ_c p_c log p_c, the modified entropy

        M = −(1 − p_y) log p_y − Σ_{c≠y} p_c log(1 − p_c),

    which, unlike H, knows the label, and correctness [argmax p = y].
    proba [n, C], y [n] -> feature -> [n]."""
    p = np.clip(np.asarray(proba, float), EPS, 1 - EPS)  # [n, C]
    py = true_class_proba(p, y)  # [n]
    entropy = -(p * np.log(p)).sum(axis=1)  # [n]
    others = -(p * np.log(1 - p)).sum(axis=1) + py * np.log(1 - py)  # [n]: Σ over c ≠ y
    return {
        "confidence": py,
        "entropy": entropy,
        "modified_entropy": -(1 - py) * np.log(py) + others,
        "correctness": (p.argmax(axis=1) == np.asarray(y)).astype(float),
    }


def svc_mia(
    retain: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    forget: tuple[np.ndarray, np.ndarray],
    *,
    feature: str = "confidence",
    max_examples: int = 5000,
    seed: int = 0,
) -> float:
    """The SVC-MIA "MIA-efficacy" of Jia et al. ("Model sparsity can simplify machine
    unlearning", NeurIPS 2023), the MIA that RUM's ToW-MIA uses (with ``confidence``).

    An RBF support-vector classifier (C = 3, γ = 1/features) on one ``feature`` learns the
    model's members, |T| retain examples drawn with ``seed`` (label 1), from its
    non-members, the test examples (label 0); it then classifies the forget set:

        MIA-efficacy = |{x ∈ F : SVC(x) = non-member}| / |F|

    High means F looks unseen. A model that never saw F does not score 1, as it tells its
    own training data from test data only so well; its score is the target. Each argument
    is (probabilities [n, C], labels [n]) of the evaluated model on that split; sets above
    ``max_examples`` are subsampled with ``seed``.
    """
    if feature not in FEATURES:
        raise ValueError(f"feature must be one of {FEATURES}, got {feature!r}")
    if min(len(retain[1]), len(test[1]), len(forget[1])) == 0:
        raise ValueError("the SVC-MIA needs retain, test and forget examples")
    rng = np.random.default_rng(seed)
    n_test = min(len(test[1]), max_examples)
    n_members = min(len(retain[1]), n_test)
    members = rng.choice(len(retain[1]), n_members, replace=False)
    nonmembers = rng.choice(len(test[1]), n_test, replace=False)
    X = np.r_[
        confidence_features(retain[0][members], retain[1][members])[feature],
        confidence_features(test[0][nonmembers], test[1][nonmembers])[feature],
    ][:, None]  # [n_members + n_test, 1]
    y = np.r_[np.ones(n_members), np.zeros(n_test)]  # 1 = member
    attack = SVC(C=3, gamma="auto", kernel="rbf").fit(X, y)
    target = confidence_features(*forget)[feature][:, None]  # [|F|, 1]
    return float(1.0 - attack.predict(target).mean())
