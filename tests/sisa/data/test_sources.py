"""Sources read without holding their features: a ``.npz`` streamed out of its archive
gives what ``load_file`` gives, with the same checks and the same errors."""

from __future__ import annotations

import numpy as np
import pytest

from sisa.data.dataset import DataError
from sisa.data.loaders import load_file
from sisa.data.sources import InMemorySource, NpzSource, open_source
from tests.conftest import tiny_config

N = 257  # not a multiple of any chunk size used below


def _arrays(X: np.ndarray, string_ids: bool = False) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    ids = np.array([f"p{i:04d}" for i in range(N)]) if string_ids else np.arange(N) * 3 + 7
    return {
        "ids": ids,
        "X": X,
        "y": rng.integers(0, 4, N),
        "groups": np.array([f"g{i // 5}" for i in range(N)]),
        "risk": rng.random(N),
    }


def _streamed(path, rows: int) -> tuple:
    source = NpzSource(str(path), None)
    index = source.index()
    X = np.concatenate([chunk for _, chunk in source.chunks(rows)])
    return index, X


FEATURES = {
    "float64": np.random.default_rng(1).normal(size=(N, 6)),
    "binary int": np.random.default_rng(2).integers(0, 2, (N, 5)),
    "counts": np.random.default_rng(3).integers(0, 9, (N, 5)),
    "bool": np.random.default_rng(4).random((N, 7)) < 0.3,
    "images": np.random.default_rng(5).random((N, 2, 3, 3)).astype(np.float32),
    "fortran": np.asfortranarray(np.random.default_rng(6).normal(size=(N, 4))),
}


@pytest.mark.parametrize("kind", FEATURES)
@pytest.mark.parametrize("compressed", [False, True])
def test_a_streamed_npz_is_the_loaded_file(tmp_path, kind, compressed):
    path = tmp_path / "d.npz"
    (np.savez_compressed if compressed else np.savez)(path, **_arrays(FEATURES[kind]))
    whole = load_file(str(path))
    for rows in (1, 50, 10_000):
        index, X = _streamed(path, rows)
        assert index.x_dtype == whole.X.dtype and X.dtype == whole.X.dtype
        assert np.array_equal(X, whole.X) and index.feature_shape == whole.feature_shape
        assert np.array_equal(index.ids, whole.ids) and np.array_equal(index.y, whole.y)
        assert np.array_equal(index.groups, whole.groups)
        assert np.array_equal(index.risk, whole.risk) and index.risk is not None
        assert index.num_classes == whole.num_classes


def test_string_ids_and_the_in_memory_source_agree(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, **_arrays(FEATURES["float64"], string_ids=True))
    index, X = _streamed(path, 64)
    memory = InMemorySource(load_file(str(path)))
    assert np.array_equal(index.ids, memory.index().ids)
    assert np.array_equal(X, np.concatenate([c for _, c in memory.chunks(64)]))


def test_open_source_streams_npz_only():
    npz = tiny_config(**{"data.source": "/data/points.npz"}).data
    assert isinstance(open_source(npz, 0), NpzSource)  # nothing read yet


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a: a | {"ids": np.r_[a["ids"][:-1], a["ids"][0]]}, "duplicate IDs"),
        (lambda a: a | {"y": np.r_[a["y"][:-1], -1]}, "labels out of range"),
        (lambda a: a | {"X": a["X"][:-1]}, "with n = 257 IDs"),
        (lambda a: a | {"X": np.full((N, 2), "x")}, "must be numeric"),
        (lambda a: {k: v for k, v in a.items() if k != "y"}, "missing arrays: y"),
        (lambda a: a | {"extra": np.zeros(3)}, "unknown arrays: extra"),
    ],
)
def test_bad_files_are_refused_by_the_index(tmp_path, change, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **change(_arrays(FEATURES["float64"])))
    with pytest.raises(DataError, match=message):
        NpzSource(str(path), None).index()


def test_a_non_finite_feature_is_named_by_its_id(tmp_path):
    X = FEATURES["float64"].copy()
    X[200, 3] = np.nan
    path = tmp_path / "nan.npz"
    np.savez(path, **_arrays(X))
    with pytest.raises(DataError, match=r"NaN or infinite features at IDs 607"):
        NpzSource(str(path), None).index()


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        NpzSource(str(tmp_path / "none.npz"), None).index()
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="cannot read"):
        NpzSource(str(tmp_path / "broken.npz"), None).index()


def test_chunks_hold_a_byte_budget_however_wide_a_row(tmp_path, monkeypatch):
    import sisa.data.sources
    import sisa.data.streaming

    monkeypatch.setattr(sisa.data.streaming, "CHUNK_BYTES", 1000)  # where chunk_rows reads it
    path = tmp_path / "wide.npz"
    np.savez(path, **_arrays(FEATURES["float64"]))  # 48 bytes a row
    source = NpzSource(str(path), None)
    sizes = [len(chunk) for _, chunk in source.chunks()]
    assert sizes[0] == 1000 // 48 and sum(sizes) == N
    assert sisa.data.sources.chunk_rows(10**9) == 1  # a row wider than the budget: one at a time


def test_odd_archives_are_read_or_refused_as_load_file_does(tmp_path):
    import zipfile

    path = tmp_path / "plain.npz"
    np.savez(path, **_arrays(FEATURES["float64"]))
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr("README.txt", "notes")
    with pytest.raises(DataError, match="unknown arrays: README.txt"):
        NpzSource(str(path), None).index()
    with pytest.raises(DataError, match="unknown arrays"):
        load_file(str(path))

    bare = tmp_path / "bare.npz"  # members named without ".npy", which np.load reads
    with zipfile.ZipFile(bare, "w") as zf:
        for name, value in _arrays(FEATURES["float64"]).items():
            with zf.open(name, "w") as member:
                np.lib.format.write_array(member, np.asarray(value))
    assert np.array_equal(_streamed(bare, 100)[1], load_file(str(bare)).X)

    flat = tmp_path / "flat.npz"
    np.savez(flat, **(_arrays(FEATURES["float64"]) | {"ids": np.array(5)}))
    with pytest.raises(DataError, match="ids must be one-dimensional"):
        NpzSource(str(flat), None).index()


def test_every_feature_is_checked_before_the_index_is_given(tmp_path):
    """A bad value deep in the file fails the index, before a caller writes anything."""
    X = FEATURES["float64"].copy()
    X[-1, 0] = np.inf
    path = tmp_path / "late.npz"
    np.savez(path, **_arrays(X))
    with pytest.raises(DataError, match=r"NaN or infinite features at IDs 775"):
        NpzSource(str(path), None).index()
