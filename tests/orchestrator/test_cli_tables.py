"""A table with its own column names through the command line and HTTP: train from a
TOML config's column mapping, forget, process, verify; predictions carry the class names
beside the class indices (``sisa predict`` headers, ``/predict`` bodies)."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from orchestrator.cli import main
from tests.sisa.data.tables import RARE, clinic_frame, write_table

CONFIG = """
[data]
source = "clinic.csv"
id_column = "patient_id"
label_column = "diagnosis"
group_column = "firm"

[sisa]
shards = 3
slices = 3
epochs = 3
seed = 7

[model]
hidden = [16]
"""


def run(*argv):
    return main([str(a) for a in argv])


@pytest.fixture
def clinic(tmp_path):
    write_table(tmp_path / "clinic.csv")
    (tmp_path / "clinic.toml").write_text(CONFIG)
    url = str(tmp_path / "store")
    assert run("train", "--config", tmp_path / "clinic.toml", "--store", url, "--no-progress") == 0
    return url


def test_train_forget_process_verify_predict_a_clinic_table(clinic, tmp_path, capsys):
    assert run("forget", "--store", clinic, "--group", "firm-0", "--no-progress") == 0
    assert run("forget", "--store", clinic, "P0100", "--no-progress") == 0
    assert run("process", "--store", clinic, "--no-progress") == 0
    capsys.readouterr()
    assert run("verify", "--store", clinic, "--no-progress") == 0
    assert "VERIFIED" in capsys.readouterr().out
    assert run("audit", "--store", clinic) == 0  # firm-0 held the only "rare" patient
    assert "class without points" in capsys.readouterr().out
    rows = clinic_frame().drop(columns=["diagnosis"]).iloc[:4]
    rows.to_csv(tmp_path / "rows.csv", index=False)
    out = tmp_path / "pred.csv"
    assert run("predict", "--store", clinic, "--input", tmp_path / "rows.csv", "--output", out) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "id,prediction,label,score,no,rare,yes" and len(lines) == 5
    for line in lines[1:]:
        _, index, name, _, *scores = line.split(",")
        assert ["no", "rare", "yes"][int(index)] == name and len(scores) == 3


def test_evaluate_forgotten_on_a_store_trained_in_memory_asks_for_the_source(tmp_path, capsys):
    from sisa.training.train import train
    from tests.conftest import tiny_config

    url = str(tmp_path / "m")
    frame = clinic_frame()
    mapping = {"data.id_column": "patient_id", "data.label_column": "diagnosis"}
    train(tiny_config(**mapping | {"data.group_column": "firm"}), url, data=frame)
    assert run("forget", "--store", url, RARE, "--wait", "--no-progress") == 0
    capsys.readouterr()
    assert run("evaluate", "--store", url, "--forgotten", RARE, "--no-progress") == 2
    err = capsys.readouterr().err
    assert "passed in memory" in err and "give the data again" in err


class _Backend:
    """The API's backend, in process: the store's Predictor and the deployment's body."""

    id_kind, group_kind = "str", "str"

    def __init__(self, url: str) -> None:
        from sisa.serving.predictor import Predictor

        self.predictor = Predictor(url)
        self.input_shape = self.predictor.snapshot.ensemble.input_shape

    async def predict(self, x: np.ndarray, probabilities: bool) -> dict:
        from orchestrator.api import prediction_body

        return prediction_body(self.predictor.predict(x, probabilities=probabilities))


async def _call(app, method: str, path: str, body: bytes = b"") -> tuple[int, dict]:
    """One HTTP request straight into the ASGI app (no client library, no socket)."""
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "headers": headers, "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }  # fmt: skip
    await app(scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    payload = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, json.loads(payload)


def test_predict_over_http_returns_the_class_names(clinic):
    from orchestrator.api import build_app
    from sisa.config import ServingConfig

    app = build_app(_Backend(clinic), ServingConfig(), None)
    rows = clinic_frame().iloc[:3, 4:].to_numpy().tolist()
    request = json.dumps({"rows": rows, "probabilities": True}).encode()
    status, body = asyncio.run(_call(app, "POST", "/predict", request))
    assert status == 200, body
    assert body["classes"] == ["no", "rare", "yes"] and len(body["probabilities"][0]) == 3
    assert body["label_names"] == [body["classes"][i] for i in body["labels"]]
    _, openapi = asyncio.run(_call(app, "GET", "/openapi.json"))
    required = openapi["components"]["schemas"]["PredictResponse"]["required"]
    assert {"labels", "label_names", "classes"} <= set(required)


def test_status_names_the_recorded_classes(clinic, capsys):
    capsys.readouterr()
    assert run("status", "--store", clinic) == 0
    assert "classes: no, rare, yes (recorded at training)" in capsys.readouterr().out
    assert run("status", "--store", clinic, "--json") == 0
    assert json.loads(capsys.readouterr().out)["classes"] == ["no", "rare", "yes"]
