"""An S3 store that goes down in the middle of training, of a deletion, of a read.

The server (moto on 127.0.0.1) is stopped at one exact request of the commit protocol and
started again with the same state; the client is the real s3fs. Proven: the operation
fails within seconds with a StorageIOError naming the file and the cause; readers then see
no partial commit (the artifact is uncommitted, ``latest_head`` is the previous head, a
sweep removes the leftovers); rerunning the operation completes, bitwise equal to an
uninterrupted run.
"""

from __future__ import annotations

import time

import pytest

from sisa.data.partition import place
from sisa.deletion.accept import accept, forget
from sisa.deletion.batch import process
from sisa.store.artifacts import SisaStore
from sisa.store.layout import gen_dir, shard_prefix
from sisa.training.train import train
from sisa.training.trainer import state_digest
from storage import StorageIOError, is_committed, tensor_hashes
from tests.conftest import tiny_config

pytest.importorskip("s3fs")
from tests.s3server import fresh_prefix, moto_server, stop_before  # noqa: E402

CONFIG = {"sisa.shards": 1}
SHARD = shard_prefix(0)


@pytest.fixture(scope="module")
def server():
    with moto_server("sisa-outage-sisa") as server:
        yield server


@pytest.fixture
def s3(server):
    """(server, a fresh store URL, bounded storage_options); the server runs afterwards."""
    with fresh_prefix(server) as prefix:
        yield prefix


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Uninterrupted runs on local disk: trained, and trained then one point forgotten."""
    root = tmp_path_factory.mktemp("reference")
    trained, forgot = str(root / "trained"), str(root / "forgot")
    train(tiny_config(**CONFIG), trained)
    train(tiny_config(**CONFIG), forgot)
    forget(forgot, [victim(forgot)])
    return checkpoints(trained), checkpoints(forgot)


def victim(url, options=None):
    """A point of the first slice: every stage of its shard is retrained without it."""
    store = SisaStore(url, options)
    arrays = store.read_data(store.shard_head(0).data, features=False)
    _, slice_of = place(store.config().sisa, arrays)
    return int(arrays["ids"][slice_of == 0][0])


def checkpoints(url, options=None):
    """Per stage of the shard: every tensor's hash and the optimizer state's digest."""
    store = SisaStore(url, options)
    out = {}
    for ref in store.shard_head(0).stages:
        weights, extra = store.read_stage(ref)
        out[ref.stage] = (tensor_hashes(weights), state_digest(extra))
    return out


def uncommitted(store):
    """Files under the shard that are neither a head nor part of a committed artifact."""
    return [
        rel
        for rel in store.fs.walk(SHARD)
        if rel.count("/") > 2 and not is_committed(store.fs, rel.rsplit("/", 1)[0])
    ]


def assert_failed_fast(server, err, url, rel):
    assert time.monotonic() - server.stopped_at < 10
    assert str(err.value).startswith(f"{url}/{rel}: could not write (EndpointConnectionError")


def test_training_cut_off_before_a_stage_commit_resumes_exactly(s3, reference, monkeypatch):
    server, url, options = s3
    stage = f"{gen_dir(SHARD, 0)}/stage-002"
    stop_before(monkeypatch, server, "_pipe_file", f"{stage}/MANIFEST.json")
    with pytest.raises(StorageIOError) as err:
        train(tiny_config(**CONFIG), url, options)
    assert_failed_fast(server, err, url, f"{stage}/MANIFEST.json")

    server.start()  # same objects as before the stop
    store = SisaStore(url, options)
    assert store.fs.exists(f"{stage}/weights.safetensors")  # the payload landed...
    assert not is_committed(store.fs, stage) and store.stage_meta(stage) is None  # ...alone
    assert store.latest_head(SHARD) is None and store.meta() is None  # nothing trained yet

    report = train(tiny_config(**CONFIG), url, options)  # the same call again
    assert report.shards[0].resumed == [1] and report.shards[0].trained == [2, 3]
    assert checkpoints(url, options) == reference[0]
    assert uncommitted(store) == []


def test_a_deletion_cut_off_before_a_stage_commit_keeps_the_previous_head(
    s3, reference, monkeypatch
):
    server, url, options = s3
    train(tiny_config(**CONFIG), url, options)
    point = victim(url, options)
    assert accept(url, [point], storage_options=options).request_id is not None
    before = SisaStore(url, options).shard_head(0)
    new = gen_dir(SHARD, before.generation + 1)
    stop_before(monkeypatch, server, "_pipe_file", f"{new}/stage-002/MANIFEST.json")
    with pytest.raises(StorageIOError) as err:  # the cause, not the lease it could not free
        process(url, options)
    assert_failed_fast(server, err, url, f"{new}/stage-002/MANIFEST.json")

    server.start()
    store = SisaStore(url, options)
    assert store.latest_head(SHARD) == before
    assert is_committed(store.fs, f"{new}/stage-001")  # committed, but no head names it
    assert not is_committed(store.fs, f"{new}/stage-002")
    leftovers = store.fs.walk(new)
    partial = [f"{new}/stage-002/{name}" for name in ("state.pt", "weights.safetensors")]
    assert uncommitted(store) == partial
    swept = store.sweep(SHARD)
    assert sorted(swept) == sorted(store.fs.url_of(rel) for rel in leftovers)
    assert store.fs.walk(new) == [] and store.latest_head(SHARD) == before

    report = process(url, options)  # this process takes its own lease again at once
    assert report is not None and report.resumed and len(report.receipts) == 1
    assert checkpoints(url, options) == reference[1]
    assert point not in SisaStore(url, options).read_data(store.shard_head(0).data)["ids"]


def test_a_checkpoint_read_cut_off_fails_clearly(s3, monkeypatch):
    server, url, options = s3
    train(tiny_config(**CONFIG), url, options)
    ref = SisaStore(url, options).shard_head(0).stages[0]
    weights, _ = SisaStore(url, options).read_stage(ref)
    stop_before(monkeypatch, server, "_cat_file", f"{ref.dir}/weights.safetensors")
    with pytest.raises(StorageIOError) as err:
        SisaStore(url, options).read_stage(ref)  # the manifest is read, then the server stops
    assert time.monotonic() - server.stopped_at < 10
    assert str(err.value).startswith(f"{url}/{ref.dir}/weights.safetensors: could not read")
    server.start()
    again, _ = SisaStore(url, options).read_stage(ref)
    assert tensor_hashes(again) == tensor_hashes(weights)
