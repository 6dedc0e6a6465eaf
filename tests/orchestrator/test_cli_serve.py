"""``sisa serve`` from the command line: bad settings end before Ray starts; a real server
joins the session's Ray cluster, answers on loopback and stops cleanly on Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from orchestrator import logs
from orchestrator.cli import main
from sisa.training.train import train
from tests.conftest import tiny_config
from tests.orchestrator.test_serve import TOKEN, free_port, layout, pick

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    url = str(tmp_path_factory.mktemp("cli-serve") / "s")
    train(tiny_config(), url)
    return url


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--set", "sisa.shards=3"], "serving.* settings only"),
        (["--set", "serving.port=0"], "serving.port: Input should be greater than or equal to 1"),
        (["--port", "70000"], "serving.port"),
        (["--set", "serving.output=logits"], "serving.output"),
        (["--set", "serving.token=short"], "serving.token: Value error, must be at least 16"),
    ],
)
def test_bad_settings_fail_in_one_line(store, capsys, argv, message):
    assert main(["serve", "--store", store, *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sisa: error:") and message in err and "\n" not in err
    assert "short" not in err  # a token is never echoed


def test_an_untrained_store_is_refused(tmp_path, capsys):
    assert main(["serve", "--store", str(tmp_path / "nothing")]) == 2
    assert "not a trained store" in capsys.readouterr().err


def serve_process(store: str, cluster, *flags: str) -> subprocess.Popen:
    """``sisa serve`` in a process of its own, joined to the session's cluster, or with a
    cluster of its own when ``cluster`` is None."""
    env = dict(os.environ, SISA_SERVING__TOKEN=TOKEN, PYTHONPATH=str(ROOT))
    env.pop("RAY_ADDRESS", None)
    argv = ["serve", "--store", store, *flags]
    if cluster is not None:
        argv += ["--ray-address", cluster.get_runtime_context().gcs_address]
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
        # as a shell's background job: SIGINT arrives ignored, and must still stop it
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )


@pytest.mark.ray
@pytest.mark.timeout(600)
def test_serve_answers_on_loopback_and_stops_on_interrupt_in_the_background(store, ray_cluster):
    requests = pytest.importorskip("requests")
    port = free_port()
    proc = serve_process(store, ray_cluster, "--port", str(port))
    try:
        first = proc.stdout.readline()
        assert first.startswith(f"serving {store} at http://127.0.0.1:{port}"), first
        assert "POST /forget: on" in proc.stdout.readline()
        base = f"http://127.0.0.1:{port}"
        assert requests.get(f"{base}/healthz", timeout=30).json()["ok"] is True
        answer = requests.post(f"{base}/predict", json={"rows": [[0.5] * 64]}, timeout=30)
        assert answer.status_code == 200 and len(answer.json()["labels"]) == 1
        forget = requests.post(
            f"{base}/forget",
            json={"ids": [pick(store, 1, 2)]},
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=60,
        )
        assert forget.status_code == 202, forget.text
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err[-2000:]
    assert err.splitlines()[-1] == "sisa: server stopped"
    rid = forget.json()["request_id"]  # its event, for people
    assert f"sisa: forget request={rid} requests=[] points=1 shards=[1]" in err
    for noise in ("Traceback", "Error", "failed", "Connecting to existing Serve app"):
        assert noise not in err, err[-2000:]
    try:  # on a joined cluster only the application goes; Serve's proxy may stay
        gone = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code != 200
    except requests.ConnectionError:
        gone = True
    assert gone
    from ray import serve

    serve.shutdown()  # this test started Serve on the shared cluster; later ones need a new port


@pytest.fixture(scope="module")
def named_store(tmp_path_factory):
    """A store whose IDs are names, so that any trace of one in a log is found."""
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("cli-serve-named")
    d = load_digits()
    ids = np.array([f"patient-{i:05d}" for i in range(len(d.target))])
    source = root / "named.npz"
    np.savez(source, X=(d.data / 16.0).astype(np.float32), y=d.target, ids=ids)
    train(tiny_config(**{"data.source": str(source)}), str(root / "s"))
    return str(root / "s")


@pytest.mark.ray
@pytest.mark.timeout(600)
def test_serve_writes_one_json_object_per_event_and_never_a_raw_id(named_store):
    """Forgets (accepted and refused), the retrain that follows and the stop, each one
    JSON line on stderr, with request IDs, batch numbers, durations and outcomes; the IDs
    forgotten, and the unknown one the refusal named, appear in none. The server starts a
    Ray cluster of its own, whose start-up says nothing but JSON either."""
    requests = pytest.importorskip("requests")

    store = named_store
    ids, shards, slices = layout(store)
    victims = [str(ids[(shards == s) & (slices == 1)][0]) for s in (0, 2)]
    port, unknown = free_port(), "patient-99999"
    proc = serve_process(store, None, "--port", str(port), "--log-format", "json")
    events = []

    def next_event() -> dict:
        line = proc.stderr.readline()
        assert line, f"sisa serve stopped: {proc.stderr.read()[-2000:]}"
        events.append(json.loads(line))  # every line is one JSON object
        return events[-1]

    try:
        while next_event()["event"] != "serving":
            pass
        base, auth = f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {TOKEN}"}
        forget = requests.post(f"{base}/forget", json={"ids": victims}, headers=auth, timeout=60)
        assert forget.status_code == 202, forget.text
        refused = requests.post(f"{base}/forget", json={"ids": [unknown]}, headers=auth, timeout=60)
        assert refused.status_code == 422 and unknown in refused.text  # the client's own
        while next_event()["event"] != "batch":
            pass
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=180)
    events += [json.loads(line) for line in err.splitlines()]
    assert proc.returncode == 0 and out == ""
    by_name: dict[str, list[dict]] = {}
    for e in events:
        by_name.setdefault(e["event"], []).append(e)
        assert set(e) <= logs.FIELDS | {"time", "level", "event"}, e
        assert e["time"].endswith("Z") and e["level"] in ("info", "warning")
    (serving,) = by_name["serving"]
    assert serving["url"] == base and serving["forget"] is True
    assert serving["metrics"] == f"{base}/metrics" and serving["retrain"] == "background"
    accepted, rejected = by_name["forget"]
    request_id = forget.json()["request_id"]
    assert accepted["request"] == request_id and accepted["outcome"] == "compliant"
    assert accepted["points"] == 2 and accepted["shards"] == [0, 2] and accepted["seconds"] > 0
    assert rejected == rejected | {"request": None, "outcome": "rejected"}
    (batch,) = by_name["batch"]
    assert batch["batch"] == 1 and batch["requests"] == [request_id]
    assert batch["outcome"] == "purged" and batch["shards"] == [0, 2] and batch["seconds"] > 0
    assert events[-1]["event"] == "stopped"
    assert "patient-" not in err and "patient-" not in "\n".join(map(json.dumps, events))
