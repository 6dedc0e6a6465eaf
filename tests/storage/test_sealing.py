"""Sealed artifacts on every backend: per-artifact data keys in a key store apart from the
store, wrapped by the key-encryption key; bytes that open only in their own place; and
keys that, once shredded, leave nothing that opens."""

from __future__ import annotations

import pickle
import secrets
import uuid
from pathlib import Path

import pytest

from storage import CorruptArtifactError, StorageError, Store, read_file, read_manifest
from storage.commit import write_artifact
from storage.crypto import MAGIC, SealError, kek_id, parse_kek, seal, unseal
from storage.keys import FileKeyStore, KeyDestroyedError, KeyStore, Sealing

KEK = bytes(range(32))
SCOPE = "ab" * 16
FILES = {"weights.bin": b"the weights " * 40, "state.bin": b"optimizer moments"}


@pytest.fixture
def keys(store: Store, tmp_path: Path, request) -> FileKeyStore:
    """A key store on the store's backend, at a root of its own."""
    tag = uuid.uuid4().hex
    if store.protocol == "memory":
        url, options = f"memory://sisa-keys-{tag}", None
    elif store.protocol == "file":
        url, options = (tmp_path / "keys").as_uri(), None
    else:
        base, options = request.getfixturevalue("s3_server")
        url = f"{base}/k-{tag}"
    made = FileKeyStore(url, KEK, options)
    yield made
    if store.protocol != "file":
        made.fs.delete_tree("")


@pytest.fixture
def sealed(store: Store, keys: FileKeyStore) -> Store:
    store.sealing = Sealing(keys, SCOPE)
    return store


def test_a_sealed_artifact_stores_ciphertext_and_reads_back_plaintext(sealed, keys):
    manifest = write_artifact(sealed, "a/b", FILES, {"n": 2})
    assert manifest.key is not None and read_manifest(sealed, "a/b").key == manifest.key
    for name, plain in FILES.items():
        stored = sealed.read_bytes(f"a/b/{name}")
        assert stored.startswith(MAGIC) and plain not in stored
        assert manifest.files[name].size == len(stored)  # the checks are of stored bytes
        assert read_file(sealed, "a/b", name) == plain
    assert keys.key_ids(f"{SCOPE}/a/b") == [f"{SCOPE}/a/b/{manifest.key}"]  # one per artifact


def test_sealed_bytes_open_only_in_their_own_place_unaltered():
    key = secrets.token_bytes(32)
    blob = seal(key, b"features of a point", b"here")
    assert unseal(key, blob, b"here", "f") == b"features of a point"
    for where, data in ((b"there", blob), (b"here", blob[:-1] + bytes([blob[-1] ^ 1]))):
        with pytest.raises(SealError):
            unseal(key, data, where, "f")
    with pytest.raises(SealError, match="not sealed"):
        unseal(key, b"plain bytes", b"here", "f")
    with pytest.raises(SealError):
        unseal(secrets.token_bytes(32), blob, b"here", "f")


def test_a_file_moved_within_its_artifact_does_not_open(sealed):
    """Two files of one artifact share its key: only the binding to each file's name
    keeps one from passing for the other."""
    from dataclasses import replace

    from storage.commit import FileEntry, sha256_hex

    write_artifact(sealed, "one", {"a.bin": b"point a's features", "b.bin": b"point b's"})
    moved = sealed.read_bytes("one/a.bin")
    sealed.write_bytes("one/b.bin", moved)
    manifest = read_manifest(sealed, "one")
    files = manifest.files | {"b.bin": FileEntry(sha256_hex(moved), len(moved))}
    with pytest.raises(CorruptArtifactError, match="does not open"):
        read_file(sealed, "one", "b.bin", replace(manifest, files=files))  # checksums pass


def test_a_key_destroyed_by_another_process_is_refused_soon(keys, monkeypatch):
    import storage.keys as module

    key_id = f"{SCOPE}/a/{'02' * 16}"
    keys.create(key_id)
    keys.get(key_id)
    FileKeyStore(keys.url, KEK, keys.fs.storage_options).destroy(key_id)  # elsewhere
    monkeypatch.setattr(module, "CACHE_SECONDS", 0.0)  # the cache's time is up
    with pytest.raises(KeyDestroyedError):
        keys.get(key_id)


def test_a_scope_belongs_to_one_store(keys):
    sealing = Sealing(keys, SCOPE, owner="file:///stores/a")
    sealing.new_key("x")
    copy = Sealing(keys, SCOPE, owner="file:///elsewhere/a")
    with pytest.raises(StorageError, match="belong to the store at file:///stores/a"):
        copy.new_key("x")
    with pytest.raises(StorageError, match="is a copy of it"):
        copy.shred("")
    assert copy.key("x", sealing.new_key("x")[0])  # reading is not refused


def test_keys_are_32_bytes():
    with pytest.raises(ValueError, match="32 bytes, not 16"):
        seal(bytes(16), b"x", b"here")


def test_shredding_leaves_nothing_that_opens(sealed, keys):
    old = write_artifact(sealed, "shard/g1", FILES)
    new = write_artifact(sealed, "shard/g2", FILES)
    sealing = sealed.sealing
    leftover, _ = sealing.new_key("shard/g2")  # an attempt that never committed
    gone = sealing.shred("shard", {"shard/g2": new.key})
    assert sorted(gone) == sorted([f"{SCOPE}/shard/g1/{old.key}", f"{SCOPE}/shard/g2/{leftover}"])
    with pytest.raises(KeyDestroyedError, match="destroyed when its artifact was purged"):
        read_file(sealed, "shard/g1", "state.bin")
    assert read_file(sealed, "shard/g2", "state.bin") == FILES["state.bin"]
    assert sealing.shred("shard", {"shard/g2": None}) == []  # an unreadable manifest: keep


def test_each_attempt_at_an_artifact_gets_a_fresh_key(sealed):
    a, b = sealed.sealing.new_key("x"), sealed.sealing.new_key("x")
    assert a[0] != b[0] and a[1] != b[1]


def test_unsealed_and_sealed_stores_refuse_each_others_artifacts(store, keys):
    write_artifact(store, "plain", FILES)
    store.sealing = Sealing(keys, SCOPE)
    write_artifact(store, "sealed", FILES)
    with pytest.raises(CorruptArtifactError, match="is not sealed, but this store seals"):
        read_file(store, "plain", "state.bin")
    store.sealing = None
    with pytest.raises(StorageError, match="open its store with the key store"):
        read_file(store, "sealed", "state.bin")


def test_another_kek_is_refused_by_the_key_store(keys):
    keys.create(f"{SCOPE}/a/{'cd' * 16}")
    other = FileKeyStore(keys.url, bytes(32), keys.fs.storage_options)
    with pytest.raises(ValueError, match="storage.kek: the key store .* another key-encryption"):
        other.get(f"{SCOPE}/a/{'cd' * 16}")
    assert kek_id(KEK) != kek_id(bytes(32))


def test_the_key_store_never_shows_or_pickles_its_kek(keys):
    assert isinstance(keys, KeyStore)
    assert KEK.hex() not in repr(keys) and KEK.hex() not in repr(Sealing(keys, SCOPE))
    with pytest.raises(TypeError, match="never pickled"):
        pickle.dumps(keys)
    keys.create(f"{SCOPE}/a/{'ef' * 16}")
    stored = b"".join(keys.fs.read_bytes(rel) for rel in keys.fs.walk(""))
    assert KEK not in stored and KEK.hex().encode() not in stored


def test_a_destroyed_key_is_gone_from_the_key_store(keys):
    key_id = f"{SCOPE}/a/{'01' * 16}"
    keys.create(key_id)
    keys.destroy(key_id)
    keys.destroy(key_id)  # twice: not an error
    fresh = FileKeyStore(keys.url, KEK, keys.fs.storage_options)  # no cache
    with pytest.raises(KeyDestroyedError):
        fresh.get(key_id)
    with pytest.raises(KeyDestroyedError):
        keys.get(key_id)  # nor in this one's cache


@pytest.mark.parametrize("text", ["", "00" * 31, "zz" * 32, "00" * 33])
def test_a_malformed_kek_is_refused_without_being_echoed(text):
    with pytest.raises(ValueError, match="64 hex characters") as err:
        parse_kek(text, "SISA_STORAGE__KEK")
    assert not text or text not in str(err.value)
    assert parse_kek(" " + "0f" * 32 + "\n", "x") == bytes([15] * 32)
