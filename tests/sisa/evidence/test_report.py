"""Evidence for a store: its ensemble against a from-scratch reference on what it holds."""

from __future__ import annotations

import sys

import pytest

from sisa.deletion.accept import forget
from sisa.evidence.forgetting import EvidenceError, forgetting_evidence
from sisa.training.train import prepare, train
from tests.conftest import tiny_config

TRAIN_IDS = prepare(tiny_config())[0].ids  # [n_train]
FORGOTTEN = [int(i) for i in TRAIN_IDS[::200]]  # [8]
HELD = int(TRAIN_IDS[1])
TEST_ID = int(prepare(tiny_config())[1].ids[0])


@pytest.fixture
def forgotten_store(tmp_path):
    url = str(tmp_path / "store")
    train(tiny_config(), url)
    forget(url, FORGOTTEN)
    return url


def test_a_sisa_store_is_its_own_reference(forgotten_store):
    report = forgetting_evidence(forgotten_store, FORGOTTEN)
    assert report["identical"] is True and report["forgotten"] == len(FORGOTTEN) == 8
    assert report["held_out"] == 0
    f = report["figures"]
    assert f["tow"] == 1.0 and f["tow_mia"] == 1.0
    assert f["gap_forget"] == f["gap_retain"] == f["gap_test"] == 0.0
    for k in ("mia_auc", "svc_mia", "lr_mia"):
        assert f[k] == f[f"{k}_reference"]


def test_ids_still_held_or_unknown_are_refused(forgotten_store):
    with pytest.raises(EvidenceError, match="still in the store"):
        forgetting_evidence(forgotten_store, [FORGOTTEN[0], HELD])
    with pytest.raises(EvidenceError, match="not points of digits: 99999"):
        forgetting_evidence(forgotten_store, [FORGOTTEN[0], 99_999])
    with pytest.raises(EvidenceError, match="held-out test point"):
        forgetting_evidence(forgotten_store, [TEST_ID])
    with pytest.raises(EvidenceError, match="at least one"):
        forgetting_evidence(forgotten_store, [])


def test_a_reference_that_differs_is_reported(forgotten_store, monkeypatch):
    """Were the store not what training from scratch gives, the report says so: here the
    reference is trained with another seed."""
    module = sys.modules["sisa.training.train"]  # the package exports a function of that name
    real = module.train

    def other_seed(config, url, *args, **kwargs):
        changed = config.model_copy(update={"sisa": config.sisa.model_copy(update={"seed": 8})})
        return real(changed, url, *args, **kwargs)

    monkeypatch.setattr(module, "train", other_seed)
    report = forgetting_evidence(forgotten_store, FORGOTTEN)
    f = report["figures"]
    assert report["identical"] is False
    assert (f["gap_retain"], f["gap_test"]) != (0.0, 0.0) and f["tow"] < 1.0
