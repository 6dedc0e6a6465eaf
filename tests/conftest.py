"""Shared fixtures: tiny configs, a digits file with IDs and groups, and real services
(one session-scoped Ray cluster, one moto S3 server on 127.0.0.1) started only by the
tests that need them."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

# The development lane, ``python -m pytest -m "not slow"``, stays under 3 minutes on 2
# cores by leaving out these files: the benchmarks' quick suites, the kill matrix, object
# store outages, Ray clusters, Ray Serve, the exactness matrix and the real backbones.
# CI runs every test.
SLOW_FILES = (
    "tests/benchmarks/",
    "tests/orchestrator/test_multinode.py",
    "tests/orchestrator/test_crash_recovery.py",
    "tests/orchestrator/test_fencing.py",  # holders paused past their lease
    "tests/orchestrator/test_scoring.py",  # Ray Data
    "tests/orchestrator/test_executors.py",
    "tests/orchestrator/test_serve.py",
    "tests/orchestrator/test_serve_inputs.py",
    "tests/orchestrator/test_serve_shutdown.py",
    "tests/orchestrator/test_api_schema.py",
    "tests/orchestrator/test_cli_serve.py",
    "tests/sisa/store/test_s3_outage.py",
    "tests/storage/test_outage.py",
    # twelve sources end to end, and the transformers models (their import alone is 3 s)
    "tests/sisa/data/test_exactness_matrix.py",
    "tests/sisa/training/test_backbone_models.py",
    "tests/sisa/training/test_lora_size.py",  # a ViT-B forward and backward
    "tests/sisa/store/test_encryption.py",  # some 25 sealed stores trained end to end
    "tests/test_install.py",
)


def pytest_collection_modifyitems(config, items):
    root = Path(__file__).resolve().parents[1]
    for item in items:
        rel = Path(item.fspath).resolve().relative_to(root).as_posix()
        if rel.startswith(SLOW_FILES):
            item.add_marker(pytest.mark.slow)


TINY = {
    "data": {"source": "digits", "test_fraction": 0.2},
    "sisa": {"shards": 3, "slices": 3, "epochs": 3, "seed": 7},
    "model": {"name": "mlp", "hidden": [16]},
    "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "batch_size": 32},
}


def tiny_config(**overrides):
    from sisa.config import build_config

    return build_config(TINY, overrides)


@pytest.fixture
def tiny():
    return tiny_config


def write_digits_npz(
    path: Path, *, drop: set[int] = frozenset(), groups: bool = False, risk: bool = False
) -> Path:
    """Digits as a user file with IDs (and groups of 4 points each, and a deletion risk:
    0.9 for every seventh ID, else 0.02), minus ``drop``."""
    from sklearn.datasets import load_digits

    d = load_digits()
    ids = np.arange(len(d.target), dtype=np.int64) + 1000
    keep = ~np.isin(ids, list(drop))
    arrays = {
        "X": (d.data / 16.0).astype(np.float32)[keep],
        "y": d.target.astype(np.int64)[keep],
        "ids": ids[keep],
    }
    if groups:
        arrays["groups"] = np.array([f"person-{i // 4}" for i in ids - 1000])[keep]
    if risk:
        arrays["risk"] = np.where(ids % 7 == 0, 0.9, 0.02)[keep]
    np.savez(path, **arrays)
    return path


def sealed_with_kek_file(folder: Path) -> dict:
    """Settings of an encrypted store whose key-encryption key lies in a file under
    ``folder`` (with its key store): what processes that do not inherit
    SISA_STORAGE__KEK, such as Ray's workers and Serve's replicas, read."""
    import secrets

    kek_file = folder / "kek.hex"
    kek_file.write_text(secrets.token_hex(32))
    return {
        "storage.encryption": "aes-256-gcm",
        "storage.key_store": str(folder / "keys"),
        "storage.kek_file": str(kek_file),
    }


@pytest.fixture
def digits_file(tmp_path):
    return lambda name="digits.npz", **kw: write_digits_npz(tmp_path / name, **kw)


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster for the whole session: 2 CPUs, no dashboard, small store."""
    ray = pytest.importorskip("ray")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=80 * 1024 * 1024,
        log_to_driver=False,
        configure_logging=False,
    )
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def s3_server():
    """A moto S3 server on 127.0.0.1 for the session: (endpoint URL, storage options)."""
    pytest.importorskip("s3fs")
    from tests.s3server import moto_s3

    with moto_s3() as server:
        yield server


def lease_holder(url) -> dict | None:
    """The store's processing lease holder as a reader sees it (None when it is free)."""
    from sisa.store.artifacts import SisaStore
    from sisa.store.layout import PROCESS_LOCK

    return SisaStore(str(url)).lease(PROCESS_LOCK, 600).holder()
