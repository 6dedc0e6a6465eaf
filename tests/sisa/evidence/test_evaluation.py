"""The evidence of one model against its reference, from constructed outputs."""

from __future__ import annotations

import numpy as np
import pytest

from sisa.evidence.evaluation import Outputs, evidence
from sisa.evidence.mia import logistic_loss_attack


def confident(y: np.ndarray, p: float, rng: np.random.Generator, classes: int = 4) -> np.ndarray:
    """Probabilities putting about ``p`` on the label of each row."""
    py = np.clip(p + rng.normal(0, 0.02, len(y)), 0.3, 0.999)
    out = np.repeat(((1 - py) / (classes - 1))[:, None], classes, axis=1)
    out[np.arange(len(y)), y] = py
    return out


@pytest.fixture
def reference() -> Outputs:
    """A model that fits its training data (p ≈ 0.95) better than unseen data (p ≈ 0.6),
    and never saw the forget set."""
    rng = np.random.default_rng(0)
    labels = {s: rng.integers(0, 4, n) for s, n in (("forget", 60), ("retain", 400), ("test", 200))}
    proba = {
        "forget": confident(labels["forget"], 0.6, rng),
        "retain": confident(labels["retain"], 0.95, rng),
        "test": confident(labels["test"], 0.6, rng),
    }
    return Outputs(proba, labels)


def test_the_reference_against_itself_is_perfect(reference: Outputs) -> None:
    e = evidence(reference, reference)
    assert e["tow"] == 1.0 and e["tow_mia"] == 1.0
    assert e["gap_forget"] == e["gap_retain"] == e["gap_test"] == 0.0
    for k in ("mia_auc", "svc_mia", "lr_mia", "mia_balanced_accuracy"):
        assert e[k] == e[f"{k}_reference"]
    assert abs(e["mia_auc"] - 0.5) < 0.1  # the forget set looks like test data


def test_a_model_that_still_remembers_the_forget_set_is_caught(reference: Outputs) -> None:
    rng = np.random.default_rng(1)
    remembered = dict(reference.proba, forget=confident(reference.labels["forget"], 0.95, rng))
    e = evidence(Outputs(remembered, reference.labels), reference)
    assert e["mia_auc"] > 0.95 > 0.6 > e["mia_auc_reference"]
    assert e["svc_mia"] < 0.1 < 0.8 < e["svc_mia_reference"]  # forget set looks like members
    assert e["lr_mia"] > 0.9 and e["tow_mia"] < 0.3
    # accuracies: every label is still the argmax, so ToW sees nothing; ToW-MIA does
    assert e["tow"] == 1.0


def test_class_splits_are_reported_when_given(reference: Outputs) -> None:
    rng = np.random.default_rng(2)
    labels = dict(reference.labels, class_test=np.zeros(10, int), other_test=np.ones(10, int))
    proba = dict(
        reference.proba,
        class_test=confident(labels["class_test"], 0.9, rng),
        other_test=confident(labels["other_test"], 0.9, rng),
    )
    forgot = dict(proba, class_test=confident(np.full(10, 2), 0.9, rng))
    e = evidence(Outputs(proba, labels), Outputs(forgot, labels))
    assert (e["acc_class_test"], e["acc_class_test_reference"]) == (1.0, 0.0)
    assert e["acc_other_test"] == e["acc_other_test_reference"] == 1.0


def test_outputs_are_checked(reference: Outputs) -> None:
    with pytest.raises(ValueError, match=r"lack the split\(s\) \['test'\]"):
        Outputs({k: v for k, v in reference.proba.items() if k != "test"}, reference.labels)
    with pytest.raises(ValueError, match=r"probabilities without labels for \['extra'\]"):
        Outputs(dict(reference.proba, extra=reference.proba["test"]), reference.labels)
    with pytest.raises(ValueError, match="forget: 3 rows of probabilities for 60 labels"):
        Outputs(dict(reference.proba, forget=reference.proba["forget"][:3]), reference.labels)


def test_the_logistic_attack_compares_with_test_points_of_the_forget_sets_classes() -> None:
    """Forget set: class 0, whose losses are high everywhere (a hard class); other test
    classes have low losses. Against class-0 test points the forget set looks unseen;
    against the whole test set the attack would learn the class, not membership."""
    rng = np.random.default_rng(3)
    forget_y, test_y = np.zeros(300, int), np.r_[np.zeros(300, int), rng.integers(1, 4, 300)]
    proba = {
        "forget": confident(forget_y, 0.4, rng),
        "retain": confident(rng.integers(0, 4, 200), 0.95, rng),
        "test": np.r_[confident(test_y[:300], 0.4, rng), confident(test_y[300:], 0.95, rng)],
    }
    labels = {"forget": forget_y, "retain": rng.integers(0, 4, 200), "test": test_y}
    out = Outputs(proba, labels)
    assert abs(evidence(out, out)["lr_mia"] - 0.5) < 0.12
    unfiltered = logistic_loss_attack(out.loss("forget"), out.loss("test"))
    assert unfiltered > 0.6  # the whole test set gives the class away
    few = Outputs(dict(proba, forget=proba["forget"][:5]), dict(labels, forget=forget_y[:5]))
    assert evidence(few, few)["lr_mia"] is None  # too few forget points for the attack
