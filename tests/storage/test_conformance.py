"""Every backend (memory://, file://, s3:// via moto) must behave identically under these tests."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch

from storage import (
    MANIFEST,
    ArtifactWriter,
    CorruptArtifactError,
    StorageError,
    Store,
    UncommittedArtifactError,
    UnknownFileError,
    canonical_json,
    decode_arrays,
    decode_state,
    decode_weights,
    encode_arrays,
    encode_state,
    encode_weights,
    escape_component,
    is_committed,
    read_artifact,
    read_doc,
    read_file,
    read_manifest,
    sha256_hex,
    state_hash,
    tensor_hashes,
    write_artifact,
    write_doc,
)

FILES = {"weights.bin": b"\x00\x01\x02" * 100, "extra": b"hello", "empty": b""}


def _overwrite_raw(store: Store, rel: str, data: bytes) -> None:
    """Bypass the Store and its checks, as disk rot or a stray process would."""
    store.fs.pipe_file(store.path(rel), data)
    store.fs.invalidate_cache()


# --- Store ---------------------------------------------------------------------------------


def test_bytes_roundtrip(store: Store) -> None:
    assert not store.exists("a/b/c.bin")
    store.write_bytes("a/b/c.bin", b"payload")
    assert store.read_bytes("a/b/c.bin") == b"payload"
    assert store.exists("a/b/c.bin")
    assert store.exists("a/b")
    store.write_bytes("a/b/c.bin", b"new")
    assert store.read_bytes("a/b/c.bin") == b"new"
    store.write_bytes("zero", b"")
    assert store.read_bytes("zero") == b""
    with pytest.raises(FileNotFoundError):
        store.read_bytes("a/missing")


def test_exclusive_write_refuses_existing(store: Store) -> None:
    store.write_bytes("once", b"first", exclusive=True)
    with pytest.raises(FileExistsError):
        store.write_bytes("once", b"second", exclusive=True)
    assert store.read_bytes("once") == b"first"


def test_listdir_and_walk(store: Store) -> None:
    for rel in ["a/1", "a/2", "a/sub/3", "b", "ab/4"]:
        store.write_bytes(rel, rel.encode())
    assert store.listdir() == ["a", "ab", "b"]
    assert store.listdir("a") == ["1", "2", "sub"]
    assert store.listdir("a/sub") == ["3"]
    assert store.walk() == ["a/1", "a/2", "a/sub/3", "ab/4", "b"]
    assert store.walk("a") == ["a/1", "a/2", "a/sub/3"]
    assert store.walk("a/sub") == ["a/sub/3"]
    for rel in store.walk("a"):  # walk results are store paths
        assert store.read_bytes(rel) == rel.encode()
    assert store.listdir("missing") == []
    assert store.walk("missing") == []
    assert store.listdir("b") == []


def test_listing_is_fresh_for_other_clients(store: Store) -> None:
    """A second client (as in another process) must see writes and deletes immediately."""
    other = Store(store.url, {**store.storage_options, "skip_instance_cache": True})
    assert other.listdir() == []
    store.write_bytes("d/x", b"1")
    assert other.listdir() == ["d"]
    assert other.walk("d") == ["d/x"]
    store.write_bytes("d/y", b"2")
    assert other.listdir("d") == ["x", "y"]
    store.delete("d/x")
    assert other.listdir("d") == ["y"]
    assert not other.exists("d/x")


def test_delete_and_delete_tree(store: Store) -> None:
    for rel in ["x/a/1", "x/a/deep/2", "x/ab/3", "x/c"]:
        store.write_bytes(rel, b"z")
    store.delete("x/c")
    assert not store.exists("x/c")
    store.delete("x/c")  # already gone: fine
    store.delete_tree("x/a")
    assert store.walk() == ["x/ab/3"]  # the sibling sharing a name prefix survives
    store.delete_tree("x/a")
    store.delete_tree("nothing/here")
    store.delete_tree("")
    assert store.walk() == []


BAD_RELS = ["../x", "a/../b", "..", ".", "a/./b", "/abs", "a\\b", "a//b", "a/", "s3://b/k"]


@pytest.mark.parametrize("rel", BAD_RELS)
def test_path_rejects_escapes(store: Store, rel: str) -> None:
    with pytest.raises(ValueError):
        store.path(rel)
    with pytest.raises(ValueError):
        store.write_bytes(rel, b"x")
    with pytest.raises(ValueError):
        store.read_bytes(rel)
    assert store.walk() == []


def test_escaped_component_stays_inside(store: Store) -> None:
    name = escape_component("../../etc/passwd")
    store.write_bytes(f"users/{name}", b"x")
    assert store.walk() == [f"users/{name}"]


def test_url_rebuilds_same_store(store: Store) -> None:
    store.write_bytes("k/v", b"data")
    assert store.url_of("k/v") == store.url + "/k/v"
    assert store.url_of("k/v").startswith(store.protocol + "://")
    again = Store(store.url, store.storage_options)
    assert again.read_bytes("k/v") == b"data"
    assert "secret" not in repr(store)


# --- commit protocol -----------------------------------------------------------------------


def test_artifact_roundtrip(store: Store) -> None:
    assert not is_committed(store, "art/1")
    manifest = write_artifact(store, "art/1", FILES, meta={"slice": 3, "ids": ("u1", "u2")})
    assert is_committed(store, "art/1")
    assert manifest.meta == {"slice": 3, "ids": ["u1", "u2"]}
    assert {n: (e.size, e.sha256) for n, e in manifest.files.items()} == {
        n: (len(d), sha256_hex(d)) for n, d in FILES.items()
    }
    assert read_manifest(store, "art/1") == manifest
    got_manifest, files = read_artifact(store, "art/1")
    assert got_manifest == manifest
    assert files == FILES
    assert read_file(store, "art/1", "extra") == b"hello"
    assert sorted(store.listdir("art/1")) == sorted([MANIFEST, *FILES])
    # Identity is the hash of the canonical manifest body.
    raw = json.loads(store.read_bytes(f"art/1/{MANIFEST}"))
    assert manifest.sha256 == raw["sha256"] == sha256_hex(canonical_json(raw["body"]))


def test_artifact_identity_depends_on_content(store: Store) -> None:
    a = write_artifact(store, "a", {"f": b"1"}, meta={"m": 1})
    b = write_artifact(store, "b", {"f": b"1"}, meta={"m": 1})
    c = write_artifact(store, "c", {"f": b"2"}, meta={"m": 1})
    d = write_artifact(store, "d", {"f": b"1"}, meta={"m": 2})
    assert a.sha256 == b.sha256
    assert len({a.sha256, c.sha256, d.sha256}) == 3


def test_artifact_never_overwritten(store: Store) -> None:
    write_artifact(store, "art", {"f": b"original"})
    with pytest.raises(StorageError, match="already committed"):
        write_artifact(store, "art", {"f": b"replacement"})
    assert read_artifact(store, "art")[1] == {"f": b"original"}


@pytest.mark.parametrize("name", ["a/b", "..", ".hidden", "", MANIFEST, "a\\b", "sp ace"])
def test_artifact_rejects_bad_names(store: Store, name: str) -> None:
    with pytest.raises(ValueError):
        write_artifact(store, "art", {"ok": b"1", name: b"2"})
    assert store.walk() == []


def test_unknown_file_name(store: Store) -> None:
    write_artifact(store, "art", {"f": b"1"})
    with pytest.raises(UnknownFileError) as info:
        read_file(store, "art", "g")
    assert isinstance(info.value, KeyError)
    assert "'g'" in str(info.value)


def test_detects_flipped_byte(store: Store) -> None:
    write_artifact(store, "art", FILES)
    corrupted = bytearray(FILES["weights.bin"])
    corrupted[17] ^= 0x01
    _overwrite_raw(store, "art/weights.bin", bytes(corrupted))
    result = None
    with pytest.raises(CorruptArtifactError) as info:
        result = read_file(store, "art", "weights.bin")
    assert result is None
    message = str(info.value)
    assert store.url_of("art/weights.bin") in message
    assert sha256_hex(FILES["weights.bin"]) in message
    assert sha256_hex(bytes(corrupted)) in message
    with pytest.raises(CorruptArtifactError):
        read_artifact(store, "art")
    assert read_file(store, "art", "extra") == b"hello"  # untouched files still verify


def test_detects_truncation_and_loss(store: Store) -> None:
    write_artifact(store, "art", FILES)
    _overwrite_raw(store, "art/weights.bin", FILES["weights.bin"][:-1])
    with pytest.raises(CorruptArtifactError, match="expected size 300"):
        read_file(store, "art", "weights.bin")
    store.delete("art/extra")
    with pytest.raises(CorruptArtifactError, match="missing"):
        read_file(store, "art", "extra")


def test_uncommitted_without_manifest(store: Store) -> None:
    # A writer that died after its payloads but before the manifest.
    store.write_bytes("art/weights.bin", FILES["weights.bin"])
    assert not is_committed(store, "art")
    with pytest.raises(UncommittedArtifactError, match="not committed") as info:
        read_artifact(store, "art")
    assert store.url_of("art") in str(info.value)
    with pytest.raises(UncommittedArtifactError):
        read_file(store, "art", "weights.bin")
    # The retry replaces the leftovers and commits.
    write_artifact(store, "art", FILES)
    assert read_artifact(store, "art")[1] == FILES


def test_artifact_written_file_by_file(store: Store) -> None:
    """A large artifact streams in one payload at a time; until the manifest it is garbage,
    and then it reads back exactly as one ``write_artifact`` of the same files would."""
    writer = ArtifactWriter(store, "big")
    for name, data in FILES.items():
        writer.add(name, data)
        assert not is_committed(store, "big")  # readers trust nothing yet
    with pytest.raises(ValueError, match="already written"):
        writer.add("extra", b"again")
    manifest = writer.commit({"parts": 2})
    assert read_artifact(store, "big") == (manifest, FILES)
    assert manifest == write_artifact(store, "same", FILES, meta={"parts": 2})
    with pytest.raises(StorageError, match="already committed"):
        ArtifactWriter(store, "big")
    # Two writers of one artifact: the second manifest loses, the first stays.
    first, second = ArtifactWriter(store, "race"), ArtifactWriter(store, "race")
    first.add("f", b"1")
    second.add("f", b"1")  # a retry writes the same bytes
    kept = first.commit()
    with pytest.raises(StorageError, match="committed"):
        second.commit()
    assert read_artifact(store, "race") == (kept, {"f": b"1"})


def test_detects_tampered_manifest(store: Store) -> None:
    write_artifact(store, "art", FILES, meta={"epochs": 3})
    rel = f"art/{MANIFEST}"
    original = store.read_bytes(rel)
    doc = json.loads(original)
    doc["body"]["meta"]["epochs"] = 4
    _overwrite_raw(store, rel, json.dumps(doc).encode())
    with pytest.raises(CorruptArtifactError, match="modified"):
        read_manifest(store, "art")
    # Re-pointing a file at other bytes is caught even with a matching size.
    doc = json.loads(original)
    doc["body"]["files"]["extra"]["sha256"] = sha256_hex(b"HELLO")
    _overwrite_raw(store, rel, json.dumps(doc).encode())
    with pytest.raises(CorruptArtifactError):
        read_artifact(store, "art")
    for garbage in [original[:-10], b"\xff\xfe", b"[]", b'{"body": {}, "sha256": 1}']:
        _overwrite_raw(store, rel, garbage)
        with pytest.raises(CorruptArtifactError):
            read_manifest(store, "art")


def test_manifest_with_valid_hash_but_bad_entries(store: Store) -> None:
    body = {"version": 1, "files": {"../x": {"sha256": "0" * 64, "size": 1}}, "meta": {}}
    write_doc(store, f"art/{MANIFEST}", body)
    with pytest.raises(CorruptArtifactError, match="malformed entry"):
        read_manifest(store, "art")


def test_doc_roundtrip_and_tamper(store: Store) -> None:
    body = {"head": "abc", "generation": 7, "name": "ünïcode"}
    digest = write_doc(store, "heads/main.json", body)
    assert digest == sha256_hex(canonical_json(body))
    assert read_doc(store, "heads/main.json") == body
    with pytest.raises(StorageError, match="already exists"):
        write_doc(store, "heads/main.json", {"head": "other"})
    assert read_doc(store, "heads/main.json") == body
    with pytest.raises(FileNotFoundError):
        read_doc(store, "heads/none.json")
    raw = store.read_bytes("heads/main.json").replace(b'"abc"', b'"abd"')
    _overwrite_raw(store, "heads/main.json", raw)
    with pytest.raises(CorruptArtifactError):
        read_doc(store, "heads/main.json")
    dup = b'{"body":{"a":1},"body":{"a":2},"sha256":"x"}'
    _overwrite_raw(store, "heads/main.json", dup)
    with pytest.raises(CorruptArtifactError):
        read_doc(store, "heads/main.json")


# --- payload encodings through the store ---------------------------------------------------


def _model_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    state = dict(model.state_dict())
    state["half"] = torch.randn(2, 2).to(torch.bfloat16)
    state["mask"] = torch.tensor([True, False])
    state["step"] = torch.tensor(5)
    state["view"] = torch.arange(12.0).reshape(3, 4).t()  # non-contiguous
    return state


def test_checkpoint_roundtrip_bitwise(store: Store) -> None:
    state = _model_state()
    layer = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1, momentum=0.9)
    layer(torch.ones(1, 2)).sum().backward()
    optimizer.step()  # populates momentum buffers (tensors inside nested dicts)
    train_state = {"optimizer": optimizer.state_dict(), "epoch": 2, "lr": 0.1, "seen": [1, 2]}
    write_artifact(
        store,
        "ckpt",
        {"weights.safetensors": encode_weights(state), "state.pt": encode_state(train_state)},
        meta={"state_hash": state_hash(state)},
    )
    manifest, files = read_artifact(store, "ckpt")
    loaded = decode_weights(files["weights.safetensors"])
    assert tensor_hashes(loaded) == tensor_hashes(state)
    assert state_hash(loaded) == manifest.meta["state_hash"]
    for name, tensor in state.items():
        assert loaded[name].dtype == tensor.dtype
        assert torch.equal(loaded[name], tensor)
    restored = decode_state(files["state.pt"])
    assert restored["epoch"] == 2 and restored["seen"] == [1, 2]
    assert restored["optimizer"]["param_groups"] == train_state["optimizer"]["param_groups"]
    for key, slot in train_state["optimizer"]["state"].items():
        assert torch.equal(
            restored["optimizer"]["state"][key]["momentum_buffer"], slot["momentum_buffer"]
        )


def test_tensor_hashes_see_every_bit() -> None:
    base = {"w": torch.zeros(3)}
    assert tensor_hashes(base) != tensor_hashes({"w": torch.tensor([0.0, -0.0, 0.0])})
    assert tensor_hashes(base) != tensor_hashes({"w": torch.zeros(3, dtype=torch.float64)})
    assert tensor_hashes(base) != tensor_hashes({"w": torch.zeros(1, 3)})
    assert state_hash({"a": torch.ones(1), "b": torch.zeros(1)}) != state_hash(
        {"a": torch.zeros(1), "b": torch.ones(1)}
    )


_SIDE_EFFECTS: list[str] = []


def _record(tag: str) -> str:
    _SIDE_EFFECTS.append(tag)
    return tag


class _Payload:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (_record, ("executed",))


def test_decode_state_refuses_arbitrary_objects(store: Store) -> None:
    buf = io.BytesIO()
    torch.save({"opt": _Payload()}, buf)
    store.write_bytes("evil.pt", buf.getvalue())
    data = store.read_bytes("evil.pt")
    _SIDE_EFFECTS.clear()
    with pytest.raises(ValueError, match="refusing"):
        decode_state(data)
    assert _SIDE_EFFECTS == []
    # The payload is live: a full unpickle would have run it.
    torch.load(io.BytesIO(data), weights_only=False)
    assert _SIDE_EFFECTS == ["executed"]


def test_arrays_reject_object_dtype(store: Store) -> None:
    with pytest.raises(ValueError, match="'user_ids'"):
        encode_arrays({"ok": np.arange(3), "user_ids": np.array(["a", 1], dtype=object)})
    with pytest.raises(ValueError, match="'rec'"):
        encode_arrays({"rec": np.zeros(2, dtype=[("id", object), ("x", "f4")])})
    # Bytes that would need pickle are refused on the way in, too.
    buf = io.BytesIO()
    np.savez(buf, ids=np.array(["a", None], dtype=object))
    store.write_bytes("evil.npz", buf.getvalue())
    with pytest.raises(ValueError):
        decode_arrays(store.read_bytes("evil.npz"))


def test_string_id_arrays_roundtrip(store: Store) -> None:
    arrays = {
        "ids": np.array(["user-1", "ü/../x", "", "%41"]),
        "raw_ids": np.array([b"a", b"\x00b"]),
        "x": np.arange(12, dtype=np.float32).reshape(3, 4),
        "y": np.array([1, -2, 3], dtype=np.int64),
        "scalar": np.array(7),
    }
    encoded = encode_arrays(arrays)
    assert encoded == encode_arrays(dict(reversed(arrays.items())))  # deterministic bytes
    write_artifact(store, "data", {"shard.npz": encoded})
    decoded = decode_arrays(read_file(store, "data", "shard.npz"))
    assert sorted(decoded) == sorted(arrays)
    for name, arr in arrays.items():
        assert decoded[name].dtype == arr.dtype
        assert decoded[name].shape == arr.shape
        np.testing.assert_array_equal(decoded[name], arr)
    # Plain numpy can read it as well.
    with np.load(io.BytesIO(encoded), allow_pickle=False) as npz:
        np.testing.assert_array_equal(npz["ids"], arrays["ids"])
