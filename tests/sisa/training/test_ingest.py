"""Ingest: the source streamed into the store part by part, the same rows as an in-memory
split, however it is chunked; generated data that never exists whole in one array."""

from __future__ import annotations

import numpy as np
import pytest

from sisa.data.dataset import DataError
from sisa.data.loaders import synthetic_purchase
from sisa.data.purchase import SyntheticPurchase
from sisa.data.sources import PurchaseSource, open_source
from sisa.evidence.status import status
from sisa.store.artifacts import SisaStore
from sisa.store.layout import TEST_PREFIX
from sisa.training.ingest import IngestJob, run_ingest_job
from sisa.training.train import prepare, train
from tests.conftest import tiny_config

PURCHASE = {"data.source": "synthetic-purchase", "data.n": 2000, "sisa.shards": 3}


def _ingest(config, url: str, chunk_rows: int):
    job = IngestJob(url=url, storage_options={}, config=config.stored(), chunk_rows=chunk_rows)
    return run_ingest_job(job, lambda units: None)


@pytest.mark.parametrize("chunk_rows", [150, None])
def test_parts_hold_the_rows_of_an_in_memory_split(tmp_path, chunk_rows):
    config = tiny_config(**PURCHASE)
    train_ds, test_ds, shard_of = prepare(config)
    ingested = _ingest(config, str(tmp_path / "s"), chunk_rows)
    store = SisaStore(str(tmp_path / "s"))
    assert (ingested.n_train, ingested.n_test) == (len(train_ds), len(test_ds))
    test = store.read_data(store.latest_head(TEST_PREFIX).data)
    assert np.array_equal(test["ids"], test_ds.ids) and np.array_equal(test["X"], test_ds.X)
    assert [j.shard for j in ingested.jobs] == [0, 1, 2]
    for job in ingested.jobs:
        rows = shard_of == job.shard
        got = store.read_data(job.data)
        for key, want in (("ids", train_ds.ids), ("y", train_ds.y), ("X", train_ds.X)):
            assert got[key].dtype == want.dtype
            assert np.array_equal(got[key], want[rows]), key
        parts = len(job.data.x_files)
        assert parts == (1 if chunk_rows is None else len(range(0, 2000, chunk_rows)))


def test_chunking_changes_no_bit_of_the_trained_store(tmp_path):
    """Trained from many feature files or one, and swept after every shard's head: the
    stores are identical, and every file a head names is still there."""
    config = tiny_config(**PURCHASE)
    chunked, whole = str(tmp_path / "chunked"), str(tmp_path / "whole")
    _ingest(config, chunked, 100)  # train() finds the parts committed and reuses them
    train(config, chunked)
    train(config, whole)
    assert [s["weights_sha256"] for s in status(chunked)["shards"]] == [
        s["weights_sha256"] for s in status(whole)["shards"]
    ]
    store = SisaStore(chunked)
    for shard in range(3):
        head = store.shard_head(shard)
        assert len(head.data.x_files) > 1
        assert len(store.read_data(head.data)["X"]) == head.body["n"]  # not swept away


def test_a_rerun_writes_only_the_missing_parts(tmp_path):
    config = tiny_config(**PURCHASE)
    url = str(tmp_path / "s")
    first = _ingest(config, url, 500)
    store = SisaStore(url)
    lost = first.jobs[1].data.dir
    store.fs.delete_tree(lost)  # as if the ingest died before this part's commit
    kept = {j.shard: j.data.manifest for j in first.jobs}
    again = _ingest(config, url, 500)
    assert {j.shard: j.data.manifest for j in again.jobs} == kept  # same bytes
    assert store.read_data(again.jobs[1].data)["ids"].size == again.jobs[1].data.n


def test_another_source_over_an_unfinished_store_is_refused(tmp_path):
    url = str(tmp_path / "s")
    _ingest(tiny_config(**PURCHASE), url, None)
    other = tiny_config(**(PURCHASE | {"data.n": 2001}))
    with pytest.raises(Exception, match="unfinished training with another config"):
        _ingest(other, url, None)


def _changed(arrays: dict, column: str) -> dict:
    out = {k: v.copy() for k, v in arrays.items()}
    if column == "y":
        out["y"][:5] = (out["y"][:5] + 1) % 10
    elif column == "X":
        out["X"][7, 3] += 0.5
    elif column == "groups":
        out["groups"][0] = "someone-else"
    return out


@pytest.mark.parametrize("source", ["npz", "csv"])
@pytest.mark.parametrize("column", ["y", "X", "groups"])
def test_a_resume_over_changed_data_with_the_same_ids_is_refused(tmp_path, source, column):
    """The data hash covers every stored column, so an interrupted training never mixes
    parts committed from one source with parts of another that has the same IDs."""
    from tests.conftest import write_digits_npz

    arrays = dict(np.load(write_digits_npz(tmp_path / "d.npz", groups=True)))

    def write(name, arrays):
        if source == "npz":
            np.savez(tmp_path / f"{name}.npz", **arrays)
            return str(tmp_path / f"{name}.npz")
        import pandas as pd

        frame = pd.DataFrame(arrays["X"], columns=[f"f{j}" for j in range(64)])
        frame.insert(0, "id", arrays["ids"])
        frame.insert(1, "label", arrays["y"])
        frame.insert(2, "group", arrays["groups"])
        frame.to_csv(tmp_path / f"{name}.csv", index=False)
        return str(tmp_path / f"{name}.csv")

    url = str(tmp_path / "s")
    first = write("first", arrays)
    _ingest(tiny_config(**{"data.source": first}), url, None)  # intent + data, no models
    moved = write("first", _changed(arrays, column))  # the same file, edited in place
    with pytest.raises(Exception, match="over other data.*--overwrite"):
        _ingest(tiny_config(**{"data.source": moved}), url, None)
    train(tiny_config(**{"data.source": moved}), url, overwrite=True)  # as it says


@pytest.mark.parametrize("rows", [1, 1000, 8192, 20_000])
def test_generated_chunks_are_the_in_memory_dataset(rows):
    whole = synthetic_purchase(3000, seed=5, num_classes=10)
    gen = SyntheticPurchase(3000, seed=5, num_classes=10)
    X = np.concatenate([chunk for _, chunk in gen.chunks(rows)])
    starts = [start for start, _ in gen.chunks(rows)]
    assert starts == list(range(0, 3000, rows))
    assert np.array_equal(X, whole.X) and np.array_equal(gen.labels(), whole.y)
    assert max(len(c) for _, c in gen.chunks(rows)) == min(rows, 3000)


def test_purchase_source_index_has_no_features():
    index = PurchaseSource(500, 1).index()
    assert index.feature_shape == (600,) and index.x_dtype == np.uint8
    assert np.array_equal(index.ids, np.arange(500)) and index.y.shape == (500,)


def test_bad_sizes_are_data_errors():
    with pytest.raises(DataError, match="need n >= 1"):
        PurchaseSource(0, 0)
    for missing in ("/no/such.npz", "/no/such.csv"):
        with pytest.raises(DataError, match="no such file"):
            open_source(tiny_config(**{"data.source": missing}).data, 0).index()


def test_a_relative_source_is_read_where_the_caller_meant(tmp_path, monkeypatch):
    from sisa.training.ingest import source_location

    monkeypatch.chdir(tmp_path)
    assert source_location("data/points.npz") == str(tmp_path / "data" / "points.npz")
    assert source_location("file://data/p.npz") == f"file://{tmp_path}/data/p.npz"
    for kept in ("digits", "synthetic-purchase", "s3://b/p.parquet", "simplecache::s3://b/x"):
        assert source_location(kept) == kept
    assert source_location("file:///abs/p.npz") == "file:///abs/p.npz"


def test_a_bad_file_changes_nothing_even_with_overwrite(tmp_path, digits_file):
    """Every feature is checked before the ingest clears or writes anything: retraining
    over a trained store from a damaged file leaves the store as it was."""
    good = digits_file()
    url = str(tmp_path / "s")
    config = tiny_config(**{"data.source": str(good)})
    train(config, url)
    before = [s["weights_sha256"] for s in status(url)["shards"]]
    arrays = dict(np.load(good))
    arrays["X"][-1, 0] = np.nan
    bad = tmp_path / "bad.npz"
    np.savez(bad, **arrays)
    with pytest.raises(DataError, match="NaN or infinite"):
        train(tiny_config(**{"data.source": str(bad)}), url, overwrite=True)
    assert [s["weights_sha256"] for s in status(url)["shards"]] == before
    fresh = tmp_path / "fresh"
    with pytest.raises(DataError, match="NaN or infinite"):
        train(tiny_config(**{"data.source": str(bad)}), str(fresh))
    assert not fresh.exists()


def test_a_history_without_its_training_record_is_never_erased(tmp_path):
    """An overwrite that died after deleting the training record (and with it the salt)
    leaves the deletion history; training again must neither erase it nor pair it with a
    new salt."""
    from sisa.deletion.accept import forget
    from sisa.store.artifacts import StoreStateError

    url = str(tmp_path / "s")
    train(tiny_config(), url)
    forget(url, [5])
    store = SisaStore(url)
    journal = store.fs.walk("journal")
    store.delete_training()  # as if the overwrite stopped right after clearing
    for overwrite in (True, False):
        with pytest.raises(StoreStateError, match="deletion history .* but no training record"):
            train(tiny_config(), url, overwrite=overwrite)
    assert store.fs.walk("journal") == journal and store.has_history()


def test_the_training_record_is_deleted_last(tmp_path, monkeypatch):
    url = str(tmp_path / "s")
    train(tiny_config(), url)
    store = SisaStore(url)
    deleted = []
    monkeypatch.setattr(store.fs, "delete_tree", deleted.append)
    store.delete_training()
    assert deleted[-1] == "config.json" and "STORE.json" in deleted
