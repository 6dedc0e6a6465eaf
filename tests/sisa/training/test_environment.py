"""The determinism contract and the environment fingerprint, as far as a machine without a
GPU can check them honestly: the fingerprint's fields and what comparing them does, the
cuBLAS setting, and a clear error wherever cuda is asked of a process that has none.

What needs a GPU (bitwise equality on CUDA, packing shard tasks on one GPU) is measured by
``benchmarks/gpu.py`` on a machine that has one."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap

import pytest
import torch

from sisa.deletion.accept import forget
from sisa.deletion.batch import process
from sisa.evidence.verify import verify
from sisa.training.environment import (
    CUBLAS_ENV,
    ENVIRONMENT_KEYS,
    DeterminismError,
    configure,
    environment_differences,
    environment_fingerprint,
)
from sisa.training.jobs import EnvironmentMismatchError
from sisa.training.train import train
from tests.conftest import tiny_config, write_digits_npz
from tests.sisa.deletion.test_accept import layout, weights_by_shard

HERE = platform.machine()
no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")


@pytest.fixture
def trained(tmp_path):
    """Trains a store on digits (minus ``drop``) in this process; returns its URL."""

    def make(name: str = "store", drop: frozenset[int] = frozenset()) -> str:
        source = write_digits_npz(tmp_path / f"{name}.npz", drop=set(drop))
        train(tiny_config(**{"data.source": str(source)}), str(tmp_path / name))
        return str(tmp_path / name)

    return make


def test_a_cpu_fingerprint_records_every_key_and_no_gpu():
    fp = environment_fingerprint(tiny_config(**{"resources.threads": 2}))
    assert set(ENVIRONMENT_KEYS) <= set(fp)
    assert fp["device"] == "cpu" and fp["threads"] == 2 and fp["torch"] == torch.__version__
    assert fp["gpu"] is fp["capability"] is fp["cuda"] is fp["cudnn"] is fp["driver"] is None


def test_fingerprints_differ_on_what_bitwise_equality_depends_on():
    h100 = {
        "torch": "2.13.0+cu128", "device": "cuda", "dtype": "float32", "threads": 1,
        "machine": "x86_64", "gpu": "NVIDIA H100 80GB HBM3", "capability": "9.0",
        "cuda": "12.8", "cudnn": 91002, "driver": "570.1", "numpy": "2.3.0",
    }  # fmt: skip
    assert environment_differences(h100, dict(h100)) == []
    a100 = h100 | {"gpu": "NVIDIA A100-SXM4-80GB", "capability": "8.0"}
    assert environment_differences(h100, a100) == [
        "gpu: NVIDIA H100 80GB HBM3 -> NVIDIA A100-SXM4-80GB",
        "capability: 9.0 -> 8.0",
    ]
    assert environment_differences(h100, h100 | {"cudnn": 90100}) == ["cudnn: 91002 -> 90100"]
    # recorded for the reader, not compared: kernels ship with torch's CUDA runtime
    assert environment_differences(h100, h100 | {"driver": "580.2", "numpy": "2.4.0"}) == []
    # a fingerprint written before the GPU keys existed equals a CPU one
    cpu = environment_fingerprint(tiny_config())
    old = {k: cpu[k] for k in ("torch", "device", "dtype", "threads", "machine")}
    assert environment_differences(old, cpu) == []


def test_a_non_deterministic_cublas_setting_is_refused_for_cuda(monkeypatch):
    monkeypatch.setenv(CUBLAS_ENV, ":0:0")
    with pytest.raises(DeterminismError, match="CUBLAS_WORKSPACE_CONFIG=':0:0'"):
        configure(1, "cuda")
    configure(1, "cpu")  # cuBLAS plays no part on the CPU: the user's value stays
    assert os.environ[CUBLAS_ENV] == ":0:0"


@pytest.mark.parametrize("value", [":4096:8", ":16:8"])
def test_a_deterministic_cublas_setting_of_the_user_is_kept(monkeypatch, value):
    monkeypatch.setenv(CUBLAS_ENV, value)
    configure(1, "cpu")
    assert os.environ[CUBLAS_ENV] == value and torch.are_deterministic_algorithms_enabled()


def test_configure_sets_cublas_and_pins_the_switches(monkeypatch):
    monkeypatch.delenv(CUBLAS_ENV, raising=False)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    configure(1, "cpu")
    assert os.environ[CUBLAS_ENV] == ":4096:8"
    assert torch.backends.cudnn.benchmark is False and torch.backends.cudnn.allow_tf32 is False
    assert torch.backends.cuda.matmul.allow_tf32 is False


@no_gpu
def test_cuda_without_a_gpu_is_refused_before_anything_is_written(tmp_path):
    url = tmp_path / "s"
    with pytest.raises(RuntimeError, match="resources.device = 'cuda' but"):
        train(tiny_config(**{"resources.device": "cuda"}), str(url))
    assert not url.exists()


@no_gpu
def test_the_cli_says_so_in_one_line(tmp_path, capsys):
    from orchestrator.cli import main

    url = tmp_path / "s"
    code = main(["train", "--store", str(url), "--set", "resources.device='cuda'"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("sisa: error: resources.device = 'cuda' but")
    assert err.count("\n") == 1 and not url.exists()


def test_stages_from_another_environment_are_not_continued(trained, monkeypatch):
    """A retrain that would continue from a checkpoint trained elsewhere (here: another
    CPU architecture) is refused; back in the training environment it goes through."""
    url = trained()
    ids, shards, slices = layout(url)
    victim = int(ids[(shards == 0) & (slices == 2)][0])  # stages 1..2 would be kept
    monkeypatch.setattr("sisa.training.environment.platform.machine", lambda: "riscv64")
    with pytest.raises(EnvironmentMismatchError, match=f"machine: {HERE} -> riscv64"):
        forget(url, [victim])
    monkeypatch.undo()
    report = process(url)
    assert report is not None and report.results[0].trained == [3]
    assert verify(url).identical


def test_verify_names_how_the_environments_differ(trained, monkeypatch):
    url = trained()
    assert verify(url).same_environment
    monkeypatch.setattr("sisa.training.environment.platform.machine", lambda: "riscv64")
    report = verify(url, 0)
    assert not report.same_environment
    assert report.shards[0].environment_differences == [f"machine: {HERE} -> riscv64"]


def test_a_stage_committed_elsewhere_is_trained_again_not_resumed(trained, tmp_path):
    """A retrain killed after committing a stage in another environment is resumed here
    from before that stage: every stage of a shard comes from one environment."""
    url = trained()
    ids, shards, slices = layout(url)
    victim = int(ids[(shards == 1) & (slices == 0)][0])  # retrains stages 1..3
    script = textwrap.dedent(
        f"""
        import platform
        platform.machine = lambda: "riscv64"
        from sisa.deletion.accept import forget
        forget({url!r}, [{victim}])
        """
    )
    env = os.environ | {"SISA_CRASH_AT": "after-stage-commit"}
    died = subprocess.run([sys.executable, "-c", script], env=env, timeout=300)
    assert died.returncode != 0  # killed after committing stage 1 as riscv64
    report = process(url)
    assert report is not None and report.resumed
    assert report.results[0].resumed == [] and report.results[0].trained == [1, 2, 3]
    scratch = trained("scratch", drop=frozenset({victim}))
    assert weights_by_shard(url) == weights_by_shard(scratch)
    assert verify(url).same_environment
