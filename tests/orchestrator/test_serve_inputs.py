"""What ``sisa serve`` takes as input, without a server: the ``Predictor`` refuses rows whose
scores are not finite, naming them, and the /forget body of a store with groups says in
its schema exactly what it accepts."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from sisa.serving.ensemble import InputError
from sisa.serving.predictor import Predictor
from sisa.training.train import train
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    url = str(tmp_path_factory.mktemp("inputs") / "s")
    train(tiny_config(), url)
    return url


def test_rows_that_overflow_the_models_are_refused_by_name(store):
    """3e38 is finite in float32, but x @ W overflows: inf - inf = NaN in the scores."""
    predictor = Predictor(store)
    rows = np.full((5, 64), 0.5, dtype=np.float32)
    rows[2], rows[4] = 3e38, -3e38
    assert np.isfinite(rows).all()
    with pytest.raises(InputError, match=r"^rows 2, 4 give non-finite scores") as err:
        predictor.predict(rows, probabilities=True)
    assert err.value.rows == [2, 4]
    with pytest.raises(InputError, match=r"^row 0 gives non-finite") as err:
        predictor.predict_labels(rows[2:4])  # labels too: an argmax over NaN is no answer
    assert err.value.rows == [0]
    again = pickle.loads(pickle.dumps(err.value))  # as it crosses Ray
    assert again.rows == [0] and str(again) == str(err.value)
    fine = predictor.predict(rows[[0, 1, 3]], probabilities=True)
    assert np.isfinite(fine.probabilities).all()


def test_rows_with_non_finite_features_name_every_bad_row(store):
    rows = [[0.5] * 64, [0.5] * 63 + [float("nan")], [0.5] * 64, [np.inf] * 64]
    with pytest.raises(InputError, match=r"^rows 1, 3 hold NaN") as err:
        Predictor(store).predict(rows)
    assert err.value.rows == [1, 3]


def test_a_grouped_store_takes_ids_or_a_group_never_both_never_null():
    from orchestrator.api_schema import NO_GROUPS, forget_request

    body = forget_request("str", "str")
    schema = body.model_json_schema()
    assert schema["oneOf"] == [{"required": ["ids"]}, {"required": ["group"]}]
    assert schema["properties"]["group"]["type"] == "string"
    assert schema["properties"]["ids"]["items"]["type"] == "string"
    for bad in ({}, {"ids": ["a"], "group": "g"}, {"ids": None, "group": "g"}, {"ids": [1]}):
        with pytest.raises(ValueError):
            body.model_validate_json(json.dumps(bad))
    assert body.model_validate_json('{"group": "person-1"}').group == "person-1"
    ungrouped = forget_request("int", None).model_json_schema()
    assert "group" not in ungrouped["properties"] and ungrouped["required"] == ["ids"]
    assert "groups" in NO_GROUPS
