"""The GPU benchmark as far as a machine without a GPU can check it: it is registered in
the full suite only, refuses clearly (writing nothing) where there is no CUDA device, and
builds its figures and table right from figures made up here. Its measurements need a
GPU and come from a full run on one."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from benchmarks import gpu
from benchmarks.harness import BENCHMARKS, main, registry
from sisa.store.artifacts import SisaStore
from sisa.training.train import train
from tests.conftest import tiny_config


def test_it_runs_last_and_in_the_full_suite_only():
    assert BENCHMARKS[-1] == "gpu" and gpu.SUITES == ("full",)
    assert "gpu" in registry("full") and "gpu" not in registry("quick")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_without_a_gpu_it_says_so_and_writes_nothing(tmp_path, capsys):
    code = main(["run", "--suite", "full", "--only", "gpu", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 1
    assert "gpu: not run: gpu: no CUDA device here" in err and "Traceback" not in err
    assert err.rstrip().endswith("not run on this machine: gpu")
    assert list(tmp_path.iterdir()) == []


def test_helpers_read_a_store(tmp_path):
    url = str(tmp_path / "s")
    train(tiny_config(), url)
    store = SisaStore(url)
    weights = gpu.stage_weights(url)
    assert len(weights) == 3 and all(len(w) == 3 for w in weights)  # S = 3, R = 3
    assert weights[0][-1] == store.shard_head(0).body["stages"][-1]["weights_sha256"]
    assert len(gpu.stage_fingerprints(url)) == 9
    victims = gpu.one_id_per_shard(url)
    for k, victim in enumerate(victims):
        assert victim in store.read_data(store.shard_head(k).data, features=False)["ids"]
    assert victims == gpu.one_id_per_shard(url) and len(np.unique(victims)) == 3


FINGERPRINT = {
    "torch": "2.13.0+cu128", "gpu": "NVIDIA H100 80GB HBM3", "capability": "9.0",
    "cuda": "12.8", "cudnn": 91002, "driver": "570.1",
}  # fmt: skip


def made_up(identical: bool = True) -> tuple[dict, list[dict]]:
    exact = {
        "trained_twice_identical": True,
        "forgotten": 8,
        "verified_identical": True,
        "same_environment": True,
        "train_s": 20.0,
        "forget_s": 9.0,
        "verify_s": 18.0,
        "fingerprint": FINGERPRINT,
    }
    runs = [
        {
            "num_gpus": share,
            "at_once": min(int(1 / share), 8),
            "seconds": seconds,
            "task_seconds": [2.0, 4.0],
            "peak_gpu_mib": 600.0 * min(int(1 / share), 8),
            "identical": identical or share != 0.25,
            "environment_differences": [],
        }
        for share, seconds in ((1.0, 40.0), (0.5, 20.0), (0.25, 12.5), (0.125, 10.0))
    ]
    return exact, runs


def test_figures_give_throughput_and_speedup_against_one_gpu_per_task():
    exact, runs = made_up()
    f = gpu.figures(exact, runs, shards=8)
    assert [r["shards_per_s"] for r in f["packing"]] == [0.2, 0.4, 0.64, 0.8]
    assert [r["speedup"] for r in f["packing"]] == [1.0, 2.0, 3.2, 4.0]
    assert f["packing"][0]["mean_task_s"] == 3.0 and f["all_identical"]
    json.dumps(f)  # JSON-ready
    text = gpu.render(f, gpu.SIZES)
    assert "NVIDIA H100 80GB HBM3 (compute capability 9.0, CUDA 12.8" in text
    assert "| 0.125 | 8 | 10.0 | 0.80 | 4.00x | 3.0 | 4,800 | yes |" in text
    assert "Packing 8 shard tasks on the GPU (num_gpus = 0.125) trains 4.00x" in text
    assert "bitwise equal: **yes**." in text and "**NO**" not in text


def test_a_packing_that_differs_is_reported_not_hidden():
    exact, runs = made_up(identical=False)
    runs[1]["environment_differences"] = ["gpu: NVIDIA H100 80GB HBM3 -> NVIDIA A100"]
    f = gpu.figures(exact, runs, shards=8)
    text = gpu.render(f, gpu.SIZES)
    assert not f["all_identical"] and "bitwise equal: **NO**" in text
    assert "| 0.25 | 4 | 12.5 | 0.64 | 3.20x | 3.0 | 2,400 | **NO** |" in text
    assert "- num_gpus 0.5: gpu: NVIDIA H100 80GB HBM3 -> NVIDIA A100" in text
