"""An S3 endpoint that goes down: every store operation fails in bounded time with a
StorageIOError naming the file's URL and the driver's error; a commit cut off before its
manifest is no commit; a read cut off returns nothing; retries and timeouts come from
storage_options. The S3 server and client are real (moto on 127.0.0.1, s3fs); the server
is stopped at an exact request and started again with the same state."""

from __future__ import annotations

import socket
import time

import pytest

from storage import (
    Lease,
    StorageError,
    StorageIOError,
    Store,
    UncommittedArtifactError,
    is_committed,
    read_artifact,
    read_file,
    write_artifact,
)

pytest.importorskip("s3fs")
from tests.s3server import fresh_prefix, moto_server, stop_before  # noqa: E402


@pytest.fixture(scope="module")
def server():
    with moto_server("sisa-outage-storage") as server:
        yield server


@pytest.fixture
def s3(server):
    """A fresh prefix on a running server; the server is running again afterwards."""
    with fresh_prefix(server) as (running, url, options):
        yield running, Store(url, options)


OPERATIONS = {
    "read": lambda store: store.read_bytes("a/file"),
    "write": lambda store: store.write_bytes("a/new", b"x"),
    "create": lambda store: store.write_bytes("a/new", b"x", exclusive=True),
    "exists": lambda store: store.exists("a/file"),
    "listdir": lambda store: store.listdir("a"),
    "versions": lambda store: store.versions("a"),
    "walk": lambda store: store.walk("a"),
    "delete": lambda store: store.delete("a/file"),
    "delete_tree": lambda store: store.delete_tree("a"),
}


@pytest.mark.parametrize("operation", sorted(OPERATIONS))
def test_every_operation_on_a_stopped_server_fails_fast_naming_the_url(s3, operation):
    """Never a botocore traceback, and never "absent" (exists False, an empty listing)
    for a store that did not answer."""
    server, store = s3
    store.write_bytes("a/file", b"payload")
    server.stop()
    started = time.monotonic()
    with pytest.raises(StorageIOError) as err:
        OPERATIONS[operation](store)
    assert time.monotonic() - started < 10
    assert isinstance(err.value, StorageError) and isinstance(err.value, OSError)
    message = str(err.value)
    assert message.startswith(f"{store.url}/a") and "EndpointConnectionError" in message
    assert type(err.value.__cause__).__name__ == "EndpointConnectionError"
    server.start()
    assert store.read_bytes("a/file") == b"payload"  # the restarted server has the state


def test_the_default_settings_give_up_on_a_refused_endpoint_in_seconds(s3):
    server, _ = s3
    store = Store(f"{server.url}/defaults", server.storage_options)  # no bounds of ours
    server.stop()
    started = time.monotonic()
    with pytest.raises(StorageIOError, match="could not read"):
        store.read_bytes("anything")
    assert time.monotonic() - started < 30  # about 5 s: 3 attempts with backoff


def test_retries_and_timeouts_come_from_storage_options(s3):
    """A silent endpoint (it accepts connections and never answers) times out once per
    attempt: with one attempt and a 0.5 s read timeout, the read fails in about 0.5 s."""
    server, _ = s3
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
        options = server.storage_options | {
            "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"},
            "retries": 1,
            "config_kwargs": {"retries": {"max_attempts": 1}, "read_timeout": 0.5},
        }
        store = Store(f"{server.url}/silent", options)
        started = time.monotonic()
        with pytest.raises(StorageIOError, match="ReadTimeoutError"):
            store.read_bytes("anything")
        assert time.monotonic() - started < 4
    assert store.fs.retries == 1
    assert Store(f"{server.url}/other", server.storage_options).fs.retries == 2  # not shared


def test_a_commit_cut_off_before_its_manifest_is_no_commit(s3, monkeypatch):
    server, store = s3
    files = {"weights.bin": b"w" * 1000, "state.bin": b"s" * 10}
    stop_before(monkeypatch, server, "_pipe_file", "art/MANIFEST.json")
    store = Store(store.url, store.storage_options)  # a client made with the hook
    with pytest.raises(StorageIOError) as err:
        write_artifact(store, "art", files, {"stage": 1})
    assert time.monotonic() - server.stopped_at < 10
    assert str(err.value).startswith(f"{store.url}/art/MANIFEST.json: could not write")
    server.start()
    assert store.walk("art") == ["art/state.bin", "art/weights.bin"]  # payloads landed...
    assert not is_committed(store, "art")  # ...and nothing commits them
    with pytest.raises(UncommittedArtifactError):
        read_file(store, "art", "weights.bin")
    manifest = write_artifact(store, "art", files, {"stage": 1})  # a retry completes it
    assert read_artifact(store, "art") == (manifest, files)


def test_a_read_cut_off_returns_nothing(s3, monkeypatch):
    server, store = s3
    files = {"weights.bin": b"w" * 1000}
    manifest = write_artifact(store, "art", files)
    stop_before(monkeypatch, server, "_cat_file", "art/weights.bin")  # after the manifest
    store = Store(store.url, store.storage_options)  # a client made with the hook
    with pytest.raises(StorageIOError) as err:
        read_file(store, "art", "weights.bin")
    assert str(err.value).startswith(f"{store.url}/art/weights.bin: could not read")
    server.start()
    assert read_file(store, "art", "weights.bin", manifest) == files["weights.bin"]


def test_a_lease_whose_release_failed_is_taken_again_by_its_process(s3):
    """The record stays on the store, but this process does not wait ``ttl`` for itself."""
    server, store = s3
    lease = Lease(store, "locks/process", ttl=600).acquire()
    server.stop()
    with pytest.raises(StorageIOError):
        lease.release()
    server.start()
    assert Lease(store, "locks/process").holder()["nonce"] == lease.nonce  # no .done
    again = Lease(store, "locks/process", ttl=600).acquire()
    assert again.token == 2 and not again.fence_needed  # its own, let go
    again.release()
    assert Lease(store, "locks/process").holder() is None


def test_a_lease_body_error_is_not_hidden_by_a_failed_release(s3):
    server, store = s3
    with pytest.raises(RuntimeError, match="the body failed"), Lease(store, "locks/p"):
        server.stop()
        raise RuntimeError("the body failed")
