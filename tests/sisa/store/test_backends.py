"""Train, forget and verify on every storage backend: memory://, file:// and s3:// (moto)."""

from __future__ import annotations

import uuid

import pytest

from sisa.deletion.accept import forget
from sisa.evidence.status import status
from sisa.evidence.verify import verify
from sisa.store.artifacts import SisaStore
from sisa.training.train import train
from tests.conftest import tiny_config


# s3 (a moto server) in the slow lane: CI runs it, the development lane keeps under 3 min
@pytest.fixture(params=["memory", "file", pytest.param("s3", marks=pytest.mark.slow)])
def backend(request, tmp_path):
    if request.param == "memory":
        return f"memory://sisa-{uuid.uuid4().hex}", None
    if request.param == "file":
        return f"file://{tmp_path}/store", None
    bucket_url, options = request.getfixturevalue("s3_server")
    return f"{bucket_url}/{uuid.uuid4().hex}", options


@pytest.mark.parametrize("sealed", [False, True], ids=["plain", "sealed"])
def test_lifecycle_is_identical_on_every_backend(backend, tmp_path, monkeypatch, sealed):
    """Train, forget and verify; sealed, with its key store on the same kind of backend.
    The bits are those of a plaintext store on local disk, and a sealed store holds one
    live key per live artifact after a forget."""
    import secrets

    from storage import Store

    url, options = backend
    cfg = tiny_config(**{"sisa.shards": 2, "sisa.slices": 2})
    keys = url.rsplit("/", 1)[0] + f"/keys-{uuid.uuid4().hex}"
    if url.startswith("memory://"):
        keys = f"memory://sisa-keys-{uuid.uuid4().hex}"
    if sealed:
        monkeypatch.setenv("SISA_STORAGE__KEK", secrets.token_hex(32))
        storage = {"storage.encryption": "aes-256-gcm", "storage.key_store": keys}
        train(tiny_config(**{"sisa.shards": 2, "sisa.slices": 2} | storage), url, options)
    else:
        train(cfg, url, options)
    forget(url, [10, 20, 30], storage_options=options)
    report = verify(url, storage_options=options)
    assert report.identical
    # the same bits as on local disk (placed alike: a key store keys the placement)
    reference = str(tmp_path / "reference")
    train(cfg, reference, placement_like=SisaStore(url, options) if sealed else None)
    forget(reference, [10, 20, 30])
    kinds = ["state_hash"] if sealed else ["state_hash", "weights_sha256"]  # sealed bytes differ
    for kind in kinds:
        got = [s[kind] for s in status(url, options)["shards"]]
        assert got == [s[kind] for s in status(reference)["shards"]]
    # nothing left in the store mentions a purged generation
    store = SisaStore(url, options)
    live = {ref.dir for k in range(2) for ref in store.shard_head(k).stages}
    stage_dirs = {rel.rsplit("/", 1)[0] for rel in store.fs.walk("shards") if "/stage-" in rel}
    assert stage_dirs == live
    if sealed:  # and no key of one: one per live artifact, with the test data and the salt
        artifacts = sum(1 + len(store.shard_head(k).stages) for k in range(2)) + 2
        found = [r for r in Store(keys, options).walk("") if r.endswith(".key")]
        assert len(found) == artifacts
