"""``sisa serve`` from the command line: bad settings end before Ray starts; a real server
joins the session's Ray cluster, answers on loopback and stops cleanly on Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.cli import main
from sisa.training.train import train
from tests.conftest import tiny_config
from tests.orchestrator.test_serve import TOKEN, free_port, pick

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


@pytest.mark.ray
@pytest.mark.timeout(600)
def test_serve_answers_on_loopback_and_stops_on_interrupt_in_the_background(store, ray_cluster):
    requests = pytest.importorskip("requests")
    port = free_port()
    env = dict(os.environ, SISA_SERVING__TOKEN=TOKEN, PYTHONPATH=str(ROOT))
    address = ray_cluster.get_runtime_context().gcs_address
    argv = ["serve", "--store", store, "--port", str(port), "--ray-address", address]
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
        # as a shell's background job: SIGINT arrives ignored, and must still stop it
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
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
    for noise in ("Traceback", "Error", "failed", "Connecting to existing Serve app"):
        assert noise not in err, err[-2000:]
    try:  # on a joined cluster only the application goes; Serve's proxy may stay
        gone = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code != 200
    except requests.ConnectionError:
        gone = True
    assert gone
    from ray import serve

    serve.shutdown()  # this test started Serve on the shared cluster; later ones need a new port
