"""The training environment: the switches that make it deterministic, and its fingerprint.

The contract. A shard's weights are bitwise reproducible only when, in the process that
trains them:

* ``torch.use_deterministic_algorithms(True)`` is on, cuDNN benchmarking is off (it picks
  among algorithms by timing, so two runs may pick differently) and TF32 is off (the
  fingerprint promises float32 arithmetic);
* on CUDA, ``CUBLAS_WORKSPACE_CONFIG`` is ``:4096:8`` or ``:16:8`` **before cuBLAS first
  runs in the process**: PyTorch reads it once, when it sizes its cuBLAS workspace, so a
  value set later has no effect while torch's own check would pass. ``configure`` sets
  it when absent and CUDA is still uninitialised, and refuses otherwise: a value that is
  not deterministic, or none at all after CUDA started. Processes that train call
  ``configure`` before anything touches CUDA (shard jobs do it first thing). A value a
  user sets in ``os.environ`` after their own CUDA work cannot be detected; set it in the
  environment that starts the process instead;
* the intra-op thread count is fixed (``resources.threads``).

Bitwise equality is then promised between runs with the same fingerprint on
``ENVIRONMENT_KEYS``: torch version, device, dtype, threads, CPU architecture, and on
CUDA the GPU model, its compute capability, the CUDA runtime and cuDNN. The driver and
numpy are recorded for the reader, not compared: kernels come with torch's CUDA runtime,
and numpy only orders integers here.
"""

from __future__ import annotations

import os
import platform
import re
from typing import Any

import numpy as np
import torch

from sisa.config import Config

CUBLAS_ENV = "CUBLAS_WORKSPACE_CONFIG"
DETERMINISTIC_CUBLAS = (":4096:8", ":16:8")  # what CUDA documents as deterministic
ENVIRONMENT_KEYS = (
    "torch", "device", "dtype", "threads", "machine", "gpu", "capability", "cuda", "cudnn",
)  # fmt: skip


class DeterminismError(RuntimeError):
    """This process cannot train deterministically as configured; the message says why."""


def require_device(device: str) -> None:
    """Raise a clear error when ``device`` is not usable in this process."""
    if device == "cuda" and not torch.cuda.is_available():
        why = (
            f"torch {torch.__version__} is built without CUDA"
            if torch.version.cuda is None
            else "this process sees no CUDA device (none installed, or CUDA_VISIBLE_DEVICES "
            "hides them)"
        )
        raise RuntimeError(
            f"resources.device = 'cuda' but {why}; use resources.device = 'cpu', or run "
            "where a GPU is (on Ray: resources.num_gpus > 0)"
        )


def _check_cublas() -> None:
    value = os.environ.get(CUBLAS_ENV)
    if value is None:
        if torch.cuda.is_initialized():
            raise DeterminismError(
                f"CUDA was initialised in this process before {CUBLAS_ENV} was set, so "
                "cuBLAS may already run non-deterministically; set "
                f"{CUBLAS_ENV}=:4096:8 in the environment that starts the process"
            )
        os.environ[CUBLAS_ENV] = DETERMINISTIC_CUBLAS[0]
    elif value not in DETERMINISTIC_CUBLAS:
        raise DeterminismError(
            f"{CUBLAS_ENV}={value!r} makes cuBLAS non-deterministic; training on cuda "
            f"needs {' or '.join(DETERMINISTIC_CUBLAS)} (or leave it unset)"
        )


def configure(threads: int, device: str = "cpu") -> None:
    """Pin the determinism switches of this process; call before any CUDA work.

    Raises ``DeterminismError`` when cuBLAS cannot be deterministic here, and
    ``RuntimeError`` when ``device`` is ``cuda`` and no GPU is visible.
    """
    if device == "cuda":
        _check_cublas()
        require_device(device)
    else:
        os.environ.setdefault(CUBLAS_ENV, DETERMINISTIC_CUBLAS[0])  # for CUDA used later
    if not torch.are_deterministic_algorithms_enabled():
        torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def nvidia_driver() -> str | None:
    """The NVIDIA kernel driver's version where Linux says it cheaply; else None."""
    try:
        with open("/proc/driver/nvidia/version") as f:
            found = re.search(r"Kernel Module\s+(\S+)", f.read())
    except OSError:
        return None
    return found.group(1) if found else None


def environment_fingerprint(config: Config) -> dict[str, Any]:
    """What bitwise equality depends on beyond the config (see ``ENVIRONMENT_KEYS``).

    On CUDA it describes the device this process trains on: inside a Ray task, the GPU
    Ray assigned (``CUDA_VISIBLE_DEVICES`` makes it device 0).
    """
    device = config.resources.device
    on_gpu = device == "cuda" and torch.cuda.is_available()
    gpu = capability = cuda = cudnn = driver = None
    if on_gpu:
        index = torch.cuda.current_device()
        gpu = torch.cuda.get_device_name(index)
        capability = "{}.{}".format(*torch.cuda.get_device_capability(index))
        cuda = torch.version.cuda
        cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        driver = nvidia_driver()
    return {
        "torch": torch.__version__,
        "numpy": np.__version__,
        "device": device,
        "device_name": gpu or platform.processor() or platform.machine(),
        "machine": platform.machine(),
        "dtype": "float32",
        "threads": config.resources.threads,
        "deterministic": True,
        "gpu": gpu,
        "capability": capability,
        "cuda": cuda,
        "cudnn": cudnn,
        "driver": driver,
    }


def environment_differences(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The ``ENVIRONMENT_KEYS`` on which two fingerprints differ, as ``key: a -> b``.

    A key a fingerprint lacks (written before it was recorded) reads as None, which is
    what a CPU fingerprint holds for the GPU keys.
    """
    return [
        f"{k}: {recorded.get(k)} -> {current.get(k)}"
        for k in ENVIRONMENT_KEYS
        if recorded.get(k) != current.get(k)
    ]
