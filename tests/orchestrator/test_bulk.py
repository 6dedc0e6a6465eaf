"""Bulk predictions over real HTTP on loopback: npy and Arrow IPC bodies, answers in the
format ``Accept`` asks for, and the same limits and checks as JSON, with the same codes."""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
import pytest
import requests

from orchestrator.bulk import ARROW, NPY, accepted
from sisa.config import ServingConfig
from sisa.serving.predictor import Predictor
from sisa.training.train import train
from tests.conftest import tiny_config
from tests.orchestrator.local_app import InProcessBackend, serving


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    url = str(tmp_path_factory.mktemp("bulk") / "s")
    train(tiny_config(), url)
    return url


@pytest.fixture(scope="module")
def rows(store):
    width = int(np.prod(Predictor(store).snapshot.ensemble.input_shape))
    return np.random.default_rng(0).uniform(0, 16, size=(50, width))  # [50, 64] float64


def _server(store, **settings):
    from orchestrator.api import build_app

    app = build_app(InProcessBackend(store), ServingConfig(**settings), None)
    return serving(app)


@pytest.fixture(scope="module")
def base(store):
    with _server(store, max_rows=100, max_body_bytes=64 << 10) as address:
        yield address


def npy(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=True)
    return buffer.getvalue()


def arrow(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def columns(rows) -> pa.Table:
    return pa.table({f"f{i}": rows[:, i] for i in range(rows.shape[1])})


def post(base, body: bytes, kind: str, accept: str | None = None, query: str = ""):
    headers = {"Content-Type": kind} | ({"Accept": accept} if accept else {})
    return requests.post(f"{base}/predict{query}", data=body, headers=headers, timeout=60)


def test_npy_and_arrow_bodies_answer_as_json_does(base, store, rows):
    expected = Predictor(store).predict(rows.astype(np.float32), probabilities=True)
    as_json = requests.post(f"{base}/predict", json={"rows": rows.tolist()}, timeout=60).json()
    assert as_json["labels"] == expected.labels.tolist()
    fixed = pa.table(
        {"x": pa.FixedSizeListArray.from_arrays(pa.array(rows.reshape(-1)), rows.shape[1])}
    )
    for body, kind in ((npy(rows), NPY), (arrow(columns(rows)), ARROW), (arrow(fixed), ARROW)):
        answer = post(base, body, kind)
        assert answer.status_code == 200, answer.text
        assert answer.json() == as_json
    scored = post(base, npy(rows), NPY, query="?probabilities=true").json()
    np.testing.assert_array_equal(np.float32(scored["probabilities"]), expected.probabilities)


def test_an_npy_answer_holds_the_labels_or_the_scores_and_says_the_rest_in_headers(
    base, store, rows
):
    expected = Predictor(store).predict(rows.astype(np.float32), probabilities=True)
    answer = post(base, npy(rows), NPY, accept=NPY)
    assert answer.status_code == 200 and answer.headers["content-type"] == NPY
    labels = np.load(io.BytesIO(answer.content), allow_pickle=False)
    assert labels.dtype == np.int64 and labels.tolist() == expected.labels.tolist()
    assert json.loads(answer.headers["x-sisa-classes"]) == list(expected.classes)
    assert answer.headers["x-sisa-model-version"] == expected.version
    assert int(answer.headers["x-sisa-model-through"]) == expected.through
    scores = post(base, npy(rows), NPY, accept=NPY, query="?probabilities=true")
    got = np.load(io.BytesIO(scores.content), allow_pickle=False)
    np.testing.assert_array_equal(got, expected.probabilities)
    # a JSON body may ask for a binary answer too
    from_json = requests.post(
        f"{base}/predict", json={"rows": rows.tolist()}, headers={"Accept": NPY}, timeout=60
    )
    assert np.load(io.BytesIO(from_json.content)).tolist() == expected.labels.tolist()


def test_an_arrow_answer_holds_labels_values_and_scores_and_the_rest_as_metadata(base, store, rows):
    expected = Predictor(store).predict(rows.astype(np.float32), probabilities=True)
    answer = post(base, arrow(columns(rows)), ARROW, accept=ARROW, query="?probabilities=true")
    assert answer.status_code == 200 and answer.headers["content-type"] == ARROW
    table = pa.ipc.open_stream(pa.BufferReader(answer.content)).read_all()
    assert table.column("label").to_pylist() == expected.labels.tolist()
    assert table.column("label_value").to_pylist() == list(expected.label_names)
    scores = np.stack(table.column("probabilities").to_numpy(zero_copy_only=False))
    np.testing.assert_array_equal(scores.astype(np.float32), expected.probabilities)
    meta = {k.decode(): v.decode() for k, v in table.schema.metadata.items()}
    assert json.loads(meta["classes"]) == list(expected.classes)
    assert meta["version"] == expected.version and int(meta["through"]) == expected.through


def test_accept_picks_by_q_then_order_and_defaults_to_json():
    assert accepted(None) == "application/json" and accepted("*/*") == "application/json"
    assert accepted(f"{NPY}, {ARROW}") == NPY
    assert accepted(f"{NPY};q=0.5, {ARROW}") == ARROW
    assert accepted(f"text/html, {ARROW};q=0.1") == ARROW
    assert accepted(f"{NPY};q=0") == "application/json"


def _bad(rows):
    nan = rows.copy()
    nan[3, 5] = np.nan
    return [
        (npy(nan), NPY, 422, "row 3"),
        (npy(rows[:, :10]), NPY, 422, "features"),
        (npy(rows.astype(bool)), NPY, 422, "real numbers"),
        (npy(np.array([["a"] * rows.shape[1]])), NPY, 422, "real numbers"),
        (npy(np.array([[object()]], dtype=object)), NPY, 422, "real numbers"),
        (npy(np.zeros((0, rows.shape[1]))), NPY, 422, "empty"),
        (npy(rows[0]), NPY, 422, "2-D"),
        (npy(np.zeros((101, rows.shape[1]))), NPY, 413, "serving.max_rows"),
        (npy(np.zeros((200, rows.shape[1]))), NPY, 413, "serving.max_body_bytes"),
        (b"not an array", NPY, 400, "not an .npy"),
        (b"\x93NUMPY garbage", NPY, 400, "not an .npy"),
        (arrow(pa.table({"a": [1.0, None]})), ARROW, 422, "null"),
        (arrow(pa.table({"a": ["x", "y"]})), ARROW, 422, "real numbers"),
        (b"not arrow", ARROW, 400, "not an Arrow"),
    ]


@pytest.mark.parametrize("case", range(14))
def test_binary_bodies_are_checked_as_json_is_with_the_same_codes(base, rows, case):
    body, kind, status, fragment = _bad(rows)[case]
    answer = post(base, body, kind)
    assert answer.status_code == status, answer.text
    assert fragment in answer.text


def test_bad_query_and_labels_only_servers_are_refused(base, store, rows):
    bad = post(base, npy(rows), NPY, query="?probabilities=yes")
    assert bad.status_code == 422 and "probabilities" in bad.text
    with _server(store, output="labels") as strict:
        refused = post(strict, npy(rows), NPY, query="?probabilities=true")
        assert refused.status_code == 403 and "labels only" in refused.text
        assert post(strict, npy(rows), NPY).status_code == 200
    hidden = requests.post(f"{base}/predict.binary", data=npy(rows), timeout=60)
    assert hidden.status_code == 404  # reached only through /predict


def test_the_binary_route_is_documented_beside_json(base):
    schema = requests.get(f"{base}/openapi.json", timeout=60).json()
    operation = schema["paths"]["/predict"]["post"]
    assert {"application/json", NPY, ARROW} <= set(operation["requestBody"]["content"])
    assert {NPY, ARROW} <= set(operation["responses"]["200"]["content"])
    assert "/predict.binary" not in schema["paths"]


def test_a_json_body_with_a_bad_probabilities_query_is_refused(base, rows):
    answer = requests.post(
        f"{base}/predict?probabilities=", json={"rows": rows[:1].tolist()}, timeout=60
    )
    assert answer.status_code == 422 and "probabilities" in answer.text
