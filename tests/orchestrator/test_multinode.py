"""A Ray cluster of several nodes on this machine, with checkpoints and data on S3 (moto on
127.0.0.1): the same bits as in process, jobs spread over the nodes, the data never in the
driver, and a local store that the nodes do not share refused before anything is written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.executors import InProcessExecutor
from sisa.deletion.accept import forget
from sisa.evidence.status import status
from sisa.training.train import train
from tests.conftest import tiny_config
from tests.orchestrator.multinode import CONFIG, FORGET

pytestmark = [pytest.mark.ray, pytest.mark.s3]
ROOT = Path(__file__).resolve().parents[2]


def _weights(url: str, options: dict) -> list[str]:
    return [s["weights_sha256"] for s in status(url, options)["shards"]]


def test_multi_node_s3_run_equals_the_in_process_run(s3_server, tmp_path):
    bucket, options = s3_server
    local = str(tmp_path / "local")
    train(tiny_config(**CONFIG), local, executor=InProcessExecutor(progress=False))
    trained = _weights(local, {})
    forget(local, FORGET, executor=InProcessExecutor(progress=False))

    child = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.orchestrator.multinode",
            f"{bucket}/multinode",
            json.dumps(options),
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert child.returncode == 0, child.stderr[-3000:]
    out = json.loads(child.stdout.strip().splitlines()[-1])

    assert out["nodes"] == 3
    assert len(set(out["train_placements"])) == 2  # both worker nodes trained shards
    assert not out["driver_generated_data"]
    assert out["trained"] == trained
    assert out["forgotten"] == _weights(local, {})
    assert out["verified"]
    assert "do not see this process's copy" in out["unshared"]
    assert out["unshared_left"] == []
