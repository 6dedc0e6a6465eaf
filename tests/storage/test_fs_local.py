"""Local-disk durability (temp file, fsync, rename) and path-component escaping."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest

import storage.fs as fs_module
from storage import (
    TEMP_PREFIX,
    StorageError,
    Store,
    escape_component,
    read_doc,
    unescape_component,
    write_doc,
)


def test_bare_path_means_local_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = Store("rel/store")
    assert store.protocol == "file"
    assert store.root == str(tmp_path / "rel" / "store")
    assert store.url == "file://" + str(tmp_path / "rel" / "store")
    store.write_bytes("a/b", b"x")
    assert (tmp_path / "rel" / "store" / "a" / "b").read_bytes() == b"x"
    assert store.url_of("a/b") == "file://" + str(tmp_path / "rel" / "store" / "a" / "b")


def _boom(*_args: object, **_kwargs: object) -> None:
    raise OSError("simulated crash during rename")


def test_crash_before_rename_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    store = Store(str(tmp_path))
    store.write_bytes("d/file", b"old")
    monkeypatch.setattr(fs_module.os, "replace", _boom)
    with pytest.raises(OSError, match="simulated"):
        store.write_bytes("d/file", b"new")
    with pytest.raises(OSError, match="simulated"):
        store.write_bytes("d/other", b"new")
    monkeypatch.undo()
    assert os.listdir(tmp_path / "d") == ["file"]  # no temp files, no partial "other"
    assert store.read_bytes("d/file") == b"old"


def test_crash_before_exclusive_publish_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(str(tmp_path))
    monkeypatch.setattr(fs_module.os, "link", lambda *_a, **_k: _boom())
    monkeypatch.setattr(fs_module.os, "replace", _boom)
    with pytest.raises(OSError, match="simulated"):
        write_doc(store, "heads/main.json", {"v": 1})
    monkeypatch.undo()
    assert os.listdir(tmp_path / "heads") == []
    write_doc(store, "heads/main.json", {"v": 1})
    assert read_doc(store, "heads/main.json") == {"v": 1}


def test_killed_writer_leaves_only_sweepable_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the process dies before cleanup, the leftover is in place and marked as temp."""
    store = Store(str(tmp_path))
    monkeypatch.setattr(fs_module.os, "replace", _boom)
    monkeypatch.setattr(fs_module.os, "unlink", lambda *_a, **_k: None)
    with pytest.raises(OSError):
        store.write_bytes("d/file", b"data")
    monkeypatch.undo()
    leftovers = os.listdir(tmp_path / "d")
    assert len(leftovers) == 1
    assert leftovers[0].startswith(TEMP_PREFIX)
    assert (tmp_path / "d" / leftovers[0]).read_bytes() == b"data"  # fully written before rename
    assert store.listdir("d") == leftovers
    assert not store.exists("d/file")


def test_write_fsyncs_file_and_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    monkeypatch.setattr(fs_module.os, "fsync", spy)
    Store(str(tmp_path)).write_bytes("a/b", b"x")
    assert synced == ["file", "dir"]


def test_exclusive_write_refuses_even_after_check(tmp_path: Path) -> None:
    """The link-based publish refuses a file that appeared after any existence check."""
    store = Store(str(tmp_path))
    (tmp_path / "doc.json").write_bytes(b"someone else")
    with pytest.raises(StorageError, match="already exists"):
        write_doc(store, "doc.json", {"v": 1})
    assert (tmp_path / "doc.json").read_bytes() == b"someone else"
    assert os.listdir(tmp_path) == ["doc.json"]


def test_files_get_normal_permissions(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        Store(str(tmp_path)).write_bytes("f", b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f").stat().st_mode) == 0o644


def test_store_pickles_by_url(tmp_path: Path) -> None:
    import pickle

    store = Store(str(tmp_path), {"auto_mkdir": False})
    clone = pickle.loads(pickle.dumps(store))
    assert (clone.url, clone.storage_options) == (store.url, store.storage_options)
    store.write_bytes("x", b"1")
    assert clone.read_bytes("x") == b"1"


TRICKY = [
    "../x",
    "a/b",
    ".",
    "..",
    "...",
    "%41",
    "%",
    "A",
    "user_42-x",
    "ünïcødé",
    "日本語",
    "emoji-🙂",
    "a b\tc\n",
    "back\\slash",
    "\x00",
    "MANIFEST.json",
    ".tmp-abc",
    "-",
    "CON",
]


@pytest.mark.parametrize("text", TRICKY)
def test_escape_roundtrip(text: str) -> None:
    escaped = escape_component(text)
    assert re.fullmatch(r"[A-Za-z0-9_%-]+", escaped)
    assert escaped not in ("", ".", "..")
    assert unescape_component(escaped) == text


def test_escape_examples_and_injectivity() -> None:
    assert escape_component("user_42-x") == "user_42-x"
    assert escape_component(".") == "%2E"
    assert escape_component("..") == "%2E%2E"
    assert escape_component("a/b") == "a%2Fb"
    assert escape_component("%41") == "%2541"
    assert escape_component("é") == "%C3%A9"
    assert len({escape_component(t) for t in TRICKY}) == len(TRICKY)


def test_escape_rejects_empty() -> None:
    with pytest.raises(ValueError):
        escape_component("")


@pytest.mark.parametrize("bad", ["", "%41", "%4", "%zz", "%c3%a9", "a/b", "a.b", "%FF", "%C3"])
def test_unescape_rejects_non_canonical(bad: str) -> None:
    with pytest.raises(ValueError):
        unescape_component(bad)


def test_walk_lists_a_symlinked_directory_without_entering_it(tmp_path: Path) -> None:
    """The fast local walk agrees with fsspec: a linked directory is an entry, not a subtree."""
    elsewhere = tmp_path / "elsewhere" / "x"
    elsewhere.mkdir(parents=True)
    (elsewhere / "f").write_bytes(b"1")
    store = Store(str(tmp_path / "store"))
    store.write_bytes("shards/a", b"a")
    os.symlink(tmp_path / "elsewhere", tmp_path / "store" / "shards" / "link")
    generic = store.fs.find(store.path("shards"), withdirs=False, detail=False)
    assert (
        store.walk("shards")
        == sorted("shards/" + p.rsplit("/", 1)[-1] for p in generic)
        == ["shards/a", "shards/link"]
    )


def test_walk_reports_an_unreadable_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A directory that cannot be read fails the walk; it does not vanish from an audit."""
    store = Store(str(tmp_path / "store"))
    store.write_bytes("shards/s0/f", b"1")
    locked = str(tmp_path / "store" / "shards" / "s0")
    real_scandir = os.scandir

    def scandir(path: str) -> object:
        if os.fspath(path) == locked:
            raise PermissionError(13, "Permission denied", path)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(PermissionError):
        store.walk("shards")
