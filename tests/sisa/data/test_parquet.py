"""Parquet streamed by row group: the points are bitwise those of the table read whole (a
store trained from either has the same weights), a folder of files is one table, forgetting
from a streamed source equals scratch, and a bad source is refused with nothing written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from sisa.config import build_config
from sisa.data.dataset import DataError
from sisa.data.loaders import load_file
from sisa.data.parquet import ParquetSource
from sisa.data.sources import ImageFolderSource, folder_kind, open_source
from sisa.deletion.accept import forget
from sisa.store.artifacts import SisaStore
from sisa.training.train import train
from tests.conftest import tiny_config
from tests.sisa.data.tables import MAPPING, clinic_frame
from tests.sisa.deletion.test_accept import assert_equals_scratch, layout, weights_by_shard

ROW_GROUP = 37  # rows per row group: batches never line up with the slices or the files
SCRATCH = {"data.classes": ["no", "rare", "yes"]}  # the recorded vocabulary (test_tables_exact)


def streamed(data, rows: int | None = None):
    """(index, features) of a source read batch by batch."""
    source = open_source(data, 0)
    assert isinstance(source, ParquetSource)
    index = source.index()
    return index, np.concatenate([X for _, X in source.chunks(rows)])


def rules(source: Path, **overrides):
    return build_config({}, MAPPING | {"data.source": str(source)} | overrides).data


def write_folder(folder: Path, drop=frozenset()) -> Path:
    """The clinic table as three Parquet files of several row groups (and a ``_SUCCESS``
    marker, as Spark writes), less ``drop``."""
    frame = clinic_frame(drop=drop)
    folder.mkdir(parents=True)
    for k, part in enumerate(np.array_split(np.arange(len(frame)), 3)):
        frame.iloc[part].to_parquet(folder / f"part-{k:05d}.parquet", row_group_size=ROW_GROUP)
    (folder / "_SUCCESS").write_text("")
    return folder


def test_streamed_batches_are_the_whole_table(tmp_path: Path) -> None:
    path = tmp_path / "c.parquet"
    clinic_frame().to_parquet(path, row_group_size=ROW_GROUP)
    whole = load_file(str(path), data=rules(path))  # pandas reads the table whole
    for rows in (None, 50):
        index, X = streamed(rules(path), rows)
        assert X.dtype == whole.X.dtype == index.x_dtype and np.array_equal(X, whole.X)
        assert np.array_equal(index.ids, whole.ids) and np.array_equal(index.y, whole.y)
        assert np.array_equal(index.groups, whole.groups) and index.classes == whole.classes


def test_missing_values_binary_columns_and_nullable_integers_stream_as_read_whole(
    tmp_path: Path,
) -> None:
    """An integer column with a missing value in one row group only is float64 when read
    whole, so its other batches must go through float64 too (2**60 + 2**36 + 1 is another
    float32 that way); a boolean column with a missing value is no feature; NaN is filled."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    n, odd = 90, 2**60 + 2**36 + 1
    table = pa.table(
        {
            "id": pa.array(range(n)),
            "label": pa.array([i % 3 for i in range(n)]),
            "f": pa.array(np.linspace(0, 1, n)),
            "big": pa.array([None if i == 50 else odd + i % 2 for i in range(n)], pa.int64()),
            "h": pa.array([None if i % 7 == 0 else 0.5 for i in range(n)], pa.float64()),
            "flag": pa.array([None if i == 3 else i % 2 == 0 for i in range(n)]),  # object
        }
    )
    path = tmp_path / "m.parquet"
    pq.write_table(table, path, row_group_size=20)
    data = build_config({}, {"data.source": str(path), "data.fill_missing": -1.0}).data
    whole = load_file(str(path), data=data)
    index, X = streamed(data, rows=8)
    assert X.shape == (n, 3) and X.dtype == np.float32 and np.array_equal(X, whole.X)
    via_float64, direct = np.float32(np.float64(odd)), np.array([odd]).astype(np.float32)[0]
    assert X[0, 1] == via_float64 != direct and X[50, 1] == -1.0 and X[0, 2] == -1.0
    assert index.content_hash == streamed(data, rows=33)[0].content_hash  # batching: no part
    binary = tmp_path / "b.parquet"
    frame = pd.DataFrame({"id": range(n), "label": [0, 1] * 45, "a": [1, 0, 0] * 30})
    frame.to_parquet(binary, row_group_size=20)
    data = data.model_copy(update={"source": str(binary)})
    index, X = streamed(data)
    assert X.dtype == index.x_dtype == np.uint8
    assert np.array_equal(X, load_file(str(binary), data=data).X)


def test_a_store_from_streamed_parquet_equals_one_from_the_table_read_whole(tmp_path):
    path = tmp_path / "c.parquet"
    clinic_frame().to_parquet(path, row_group_size=ROW_GROUP)
    cfg = tiny_config(**MAPPING | {"data.source": str(path)})
    streamed_url, whole_url = str(tmp_path / "streamed"), str(tmp_path / "whole")
    train(cfg, streamed_url)
    train(cfg, whole_url, data=pd.read_parquet(path))  # held in memory, as before streaming
    assert weights_by_shard(streamed_url) == weights_by_shard(whole_url)
    store = SisaStore(streamed_url)
    assert store.classes() == ("no", "rare", "yes") and store.split_rule() == "group"


def test_a_folder_of_parquet_files_is_one_table(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "parts")
    single = tmp_path / "c.parquet"
    clinic_frame().to_parquet(single)
    assert folder_kind(str(folder)) == "parquet" and folder_kind(str(single)) is None
    index, X = streamed(rules(folder))
    one, X_one = streamed(rules(single))
    assert np.array_equal(X, X_one) and np.array_equal(index.ids, one.ids)
    assert index.content_hash == one.content_hash  # the content, not how it is cut in files
    whole = load_file(str(single), data=rules(single))
    assert np.array_equal(pd.read_parquet(folder)["patient_id"], whole.ids)  # pyarrow's order


def test_forgetting_from_a_streamed_parquet_folder_equals_scratch(tmp_path):
    def make(name="store", drop=frozenset(), groups=False, **overrides):
        folder = write_folder(tmp_path / f"{name}-parts", drop=set(drop))
        url = str(tmp_path / name)
        train(tiny_config(**MAPPING | {"data.source": str(folder)} | overrides), url)
        return url

    url = make()
    ids, shards, slices = layout(url)
    first = str(ids[(shards == 1) & (slices == 0)][0])
    last = str(ids[(shards == 0) & (slices == 2)][0])
    report = forget(url, [first, last])
    assert sorted(r.shard for r in report.shards) == [0, 1]
    assert_equals_scratch(make, url, [first, last], **SCRATCH)


def _untouched(url: str) -> None:
    assert not Path(url).exists() or SisaStore(url).files() == []


def test_a_folder_of_parquet_files_and_images_is_refused(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "mixed")
    (folder / "cat").mkdir()
    Image.new("L", (4, 4)).save(folder / "cat" / "0001.png")
    url = str(tmp_path / "store")
    with pytest.raises(DataError, match=r"holds both Parquet files \('part-00000.*and images"):
        train(tiny_config(**MAPPING | {"data.source": str(folder)}), url)
    _untouched(url)
    (folder / "cat" / "0001.png").unlink()
    for part in folder.glob("*.parquet"):
        part.unlink()
    Image.new("L", (4, 4)).save(folder / "cat" / "0002.png")  # images only: an image folder
    assert isinstance(open_source(rules(folder), 0), ImageFolderSource)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ("drop diagnosis", r"missing column 'diagnosis' \(data\.label_column; the columns are"),
        ("retype px1", r"part-00002.parquet' has other columns or types than .*part-00000"),
        ("duplicate", r"duplicate IDs: 'P0000'"),
    ],
)
def test_a_folder_that_does_not_fit_is_refused_with_nothing_written(
    tmp_path: Path, change: str, match: str
) -> None:
    folder = write_folder(tmp_path / "parts")
    last = folder / "part-00002.parquet"
    frame = pd.read_parquet(last)
    if change == "drop diagnosis":
        for part in folder.glob("*.parquet"):
            pd.read_parquet(part).drop(columns=["diagnosis"]).to_parquet(part)
    elif change == "retype px1":
        frame.assign(px1=frame["px1"].astype(str)).to_parquet(last)
    else:
        frame.assign(patient_id="P0000").iloc[:1].to_parquet(last)
    url = str(tmp_path / "store")
    with pytest.raises(DataError, match=match):
        train(tiny_config(**MAPPING | {"data.source": str(folder)}), url)
    _untouched(url)


def test_the_content_hash_covers_every_stored_column(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "parts")
    digest = streamed(rules(folder))[0].content_hash
    last = folder / "part-00002.parquet"
    frame = pd.read_parquet(last)
    last_row = frame.index[-1]
    swapped = "yes" if frame.loc[last_row, "diagnosis"] == "no" else "no"
    for column, value in (("px5", 0.123), ("diagnosis", swapped), ("firm", "firm-x")):
        changed = frame.copy()
        changed.loc[last_row, column] = value
        changed.to_parquet(last, row_group_size=ROW_GROUP)
        assert streamed(rules(folder))[0].content_hash != digest, column
    frame.to_parquet(last, row_group_size=ROW_GROUP)
    assert streamed(rules(folder))[0].content_hash == digest


def test_a_text_column_streams_as_read_whole(tmp_path: Path) -> None:
    from tests.sisa.data.test_text import CORPUS, tokenizer_file

    n = 60
    frame = pd.DataFrame({"id": range(n), "label": [i % 2 for i in range(n)]})
    frame["review"] = [CORPUS[i % len(CORPUS)] for i in range(n)]
    path = tmp_path / "t.parquet"
    frame.to_parquet(path, row_group_size=16)
    tok = str(tokenizer_file(tmp_path / "tok.json"))
    settings = {"data.text_column": "review", "data.tokenizer": tok, "data.max_length": 6}
    data = build_config({}, {"data.source": str(path)} | settings).data
    index, X = streamed(data, rows=5)
    whole = load_file(str(path), data=data)
    assert X.dtype == index.x_dtype == np.int32 and np.array_equal(X, whole.X)


def test_training_reads_the_features_one_row_group_at_a_time(tmp_path, monkeypatch) -> None:
    """Through ``train``, no read takes every column of the table: the index pass reads the
    index columns alone, and the features come in batches of at most one row group (a
    whole-file read, or a read across row groups, would hold more than one in memory)."""
    import pyarrow.parquet as pq

    path = tmp_path / "c.parquet"
    clinic_frame().to_parquet(path, row_group_size=ROW_GROUP)
    assert pq.ParquetFile(path).num_row_groups > 3
    index_columns = {"patient_id", "diagnosis", "firm"}
    reads: list[tuple[str, object]] = []  # (what read, the columns asked for; None: all)

    def spy(owner, name, columns_at):
        real = getattr(owner, name)

        def wrapper(*args, **kwargs):
            columns = kwargs.get("columns", args[columns_at] if len(args) > columns_at else None)
            reads.append((name, None if columns is None else list(columns)))
            return real(*args, **kwargs)

        monkeypatch.setattr(owner, name, wrapper)

    spy(pq.ParquetFile, "read", 1)  # (self, columns, ...)
    spy(pq.ParquetFile, "read_row_groups", 2)  # (self, row_groups, columns, ...)
    spy(pq, "read_table", 99)  # columns by keyword only
    spy(pd, "read_parquet", 2)  # (path, engine, columns, ...)
    sizes: list[int] = []
    features = ParquetSource._features

    def counted(self, rows=None):
        for start, X in features(self, rows):
            sizes.append(len(X))
            yield start, X

    monkeypatch.setattr(ParquetSource, "_features", counted)
    url = str(tmp_path / "store")
    train(tiny_config(**MAPPING | {"data.source": str(path)}), url)
    assert SisaStore(url).shard_head(0) is not None  # trained
    assert ("read", ["patient_id", "diagnosis", "firm"]) in reads  # the index pass
    wide = [
        (name, "every column" if cols is None else f"{len(cols)} columns")
        for name, cols in reads
        if cols is None or not set(cols) <= index_columns
    ]
    assert wide == [], f"reads of the whole table or of its features at once: {wide}"
    assert sizes and max(sizes) <= ROW_GROUP, sizes  # one row group at most per batch
    assert sum(sizes) >= len(clinic_frame())  # every row went through the feature reader
