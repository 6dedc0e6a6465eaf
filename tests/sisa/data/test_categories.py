"""Categorical feature columns: one-hot and ordinal encodings by categories that are given
or read from a reference file recorded by sha256; an unseen value, a changed reference and
categories computed from the training data are refused; forgetting (the first slice, the
last slice, the only point of a category) stays bitwise what training from scratch gives,
and ``sisa predict`` reads its input through the same encoding."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from orchestrator.cli import main
from orchestrator.io import read_features
from sisa.config import DataConfig, build_config
from sisa.data.categories import categories_of
from sisa.data.columns import frame_dataset
from sisa.data.dataset import DataError
from sisa.data.loaders import load_file
from sisa.deletion.accept import accept
from sisa.deletion.batch import process
from sisa.store.artifacts import SisaStore
from sisa.training.train import train, with_categories
from tests.conftest import tiny_config
from tests.sisa.data.tables import MAPPING, clinic_frame
from tests.sisa.deletion.test_accept import assert_equals_scratch, layout

GIVEN = {
    "data.categorical_columns": ["color", "size"],
    "data.categories": {"color": ["red", "green", "blue"], "size": [1, 2, 3]},
}
REFERENCE = "color,size\nred,1\ngreen,2\nblue,3\nred,\n"  # first appearance; blanks skipped
LONER = "P0013"  # the only patient of site "site-x"
SITES = "site\nsite-0\nsite-1\nsite-2\nsite-x\nsite-1\n"


def small() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": [1, 2, 3, 4],
            "label": [0, 1, 0, 1],
            "a": [0.5, 0.25, 1.0, 0.0],
            "color": ["red", "blue", "red", "green"],
            "size": [2, 1, 2, 3],
        }
    )


def rules(**overrides: object) -> DataConfig:
    return build_config({}, GIVEN | overrides).data


def test_onehot_columns_sit_where_their_column_does_in_category_order() -> None:
    X = frame_dataset(small(), rules(), from_text=False).X
    expected = [  # a | color: red green blue | size: 1 2 3
        [0.5, 1, 0, 0, 0, 1, 0],
        [0.25, 0, 0, 1, 1, 0, 0],
        [1.0, 1, 0, 0, 0, 1, 0],
        [0.0, 0, 1, 0, 0, 0, 1],
    ]
    assert X.dtype == np.float32 and np.array_equal(X, np.array(expected, np.float32))
    picked = rules(**{"data.feature_columns": ["size", "color"]})  # their order; 0/1: uint8
    X = frame_dataset(small(), picked, from_text=False).X
    assert X.dtype == np.uint8 and X.tolist() == [row[4:] + row[1:4] for row in expected]


def test_ordinal_is_one_column_of_the_category_index() -> None:
    X = frame_dataset(small(), rules(**{"data.categorical_encoding": "ordinal"}), from_text=False).X
    expected = [[0.5, 0, 1], [0.25, 2, 0], [1.0, 0, 1], [0.0, 1, 2]]
    assert X.dtype == np.float32 and np.array_equal(X, np.array(expected, np.float32))


def test_reference_categories_equal_given_ones_in_csv_parquet_and_memory(tmp_path: Path) -> None:
    ref = tmp_path / "ref.csv"
    ref.write_text(REFERENCE)
    from_ref = build_config(
        {}, {**GIVEN, "data.categories": None, "data.category_reference": str(ref)}
    )
    assert categories_of(from_ref.data) == {
        "color": ("red", "green", "blue"),
        "size": ("1", "2", "3"),
    }
    frame = small()
    frame["id"] = ["007", "8", "9", "10"]
    frame["size"] = ["2", "1", "2", "3"]  # text in a DataFrame: matched by its text
    frame.to_csv(tmp_path / "t.csv", index=False)
    frame.to_parquet(tmp_path / "t.parquet")
    expected = frame_dataset(small(), rules(), from_text=False).X
    for source in ("t.csv", "t.parquet"):
        for data in (rules(), from_ref.data):
            ds = load_file(str(tmp_path / source), data=data)
            assert np.array_equal(ds.X, expected), (source, data.category_reference)
    assert np.array_equal(frame_dataset(frame, from_ref.data, from_text=False).X, expected)


def test_a_changed_reference_is_refused_wherever_the_source_is_read(tmp_path: Path) -> None:
    ref, source = tmp_path / "ref.csv", tmp_path / "t.csv"
    ref.write_text(REFERENCE)
    small().to_csv(source, index=False)
    overrides = {**GIVEN, "data.categories": None, "data.category_reference": str(ref)}
    recorded = with_categories(tiny_config(**overrides | {"data.source": str(source)}))
    assert recorded.data.category_reference_sha256 == hashlib.sha256(ref.read_bytes()).hexdigest()
    assert load_file(str(source), data=recorded.data).X.shape == (4, 7)
    ref.write_text(REFERENCE.replace("blue", "navy"))
    with pytest.raises(DataError, match="category reference .* changed since this store"):
        load_file(str(source), data=recorded.data)  # a retrain, verify, evaluate
    with pytest.raises(ValueError, match="changed since this store trained"):
        read_features(str(source), recorded.data)  # sisa predict's input
    with pytest.raises(DataError, match="changed since"):
        with_categories(recorded)  # training again under the record


def test_categories_are_never_computed_from_the_training_data(tmp_path: Path) -> None:
    from sisa.config import ConfigError

    with pytest.raises(
        ConfigError,
        match=r"data\.categorical_columns: column 'color' has no "
        r"categories: give them in data\.categories .*whole-set statistic",
    ):
        build_config({}, {"data.categorical_columns": ["color"]})
    unchecked = DataConfig.model_construct(categorical_columns=("color",))
    with pytest.raises(DataError, match="'color'.*has no categories.*never computed"):
        categories_of(unchecked)
    for bad, match in (
        ({"data.categories": {"color": ["red", True]}}, "strings or integers"),
        ({"data.categories": {"color": [7, "7"]}}, "must not repeat a category"),
        ({"data.categories": {"colour": ["red"]}}, "not in data.categorical_columns"),
        ({"data.categorical_encoding": True}, "true/false"),
    ):
        with pytest.raises(ConfigError, match=match):
            build_config({}, {"data.categorical_columns": ["color"], **bad})
    assert {"categories", "category_reference_sha256"} <= DataConfig.LATER_FIELDS


def _untouched(url: str) -> None:
    assert not Path(url).exists() or SisaStore(url).files() == []


def test_an_unseen_category_is_refused_naming_the_column_with_nothing_written(
    tmp_path: Path,
) -> None:
    ref = tmp_path / "ref.csv"
    ref.write_text(REFERENCE)
    frame = small()
    frame.loc[2, "color"] = "purple"
    frame.to_csv(tmp_path / "t.csv", index=False)
    url = str(tmp_path / "store")
    for overrides, match in (
        ({}, r"column 'color' .*not among data\.categories\['color'\]: 'purple'"),
        (
            {"data.categories": None, "data.category_reference": str(ref)},
            r"column 'color' .*a category not seen in the reference .*: 'purple'",
        ),
    ):
        cfg = tiny_config(**GIVEN | overrides | {"data.source": str(tmp_path / "t.csv")})
        with pytest.raises(DataError, match=match):
            train(cfg, url)
        _untouched(url)
        with pytest.raises(DataError, match=match):
            train(cfg, url, data=frame)
        _untouched(url)
    lacking = {"data.categories": {"color": ["red"]}, "data.category_reference": str(ref)}
    cfg = tiny_config(**GIVEN | lacking | {"data.source": str(tmp_path / "t.csv")})
    ref.write_text("colour\nred\n")
    with pytest.raises(DataError, match=r"has no column 'size' of data\.categorical_columns"):
        train(cfg, url)
    _untouched(url)


def site_frame(drop: frozenset[str] | set[str] = frozenset()) -> pd.DataFrame:
    """The clinic table with a text category (``site``, one patient alone at ``site-x``)
    and an integer one (``ward``), placed before the pixels."""
    frame = clinic_frame()
    sites = np.array([f"site-{i % 3}" for i in range(len(frame))], dtype=object)
    sites[frame["patient_id"] == LONER] = "site-x"
    frame.insert(4, "site", sites)
    frame.insert(5, "ward", [1 + i % 2 for i in range(len(frame))])
    return frame[~frame["patient_id"].isin(list(drop))].reset_index(drop=True)


def test_forgetting_with_categorical_columns_equals_scratch(tmp_path: Path, capsys) -> None:
    ref = tmp_path / "sites.csv"
    ref.write_text(SITES)
    categorical = {
        "data.categorical_columns": ["site", "ward"],
        "data.categories": {"ward": [1, 2, 3]},
        "data.category_reference": str(ref),
        "data.classes": ["no", "rare", "yes"],
    }

    def stores(name="store", drop=frozenset(), groups=False, **overrides):
        source = tmp_path / f"{name}.csv"
        site_frame(drop).to_csv(source, index=False)
        cfg = tiny_config(**MAPPING | categorical | {"data.source": str(source)} | overrides)
        train(cfg, str(tmp_path / name))
        return str(tmp_path / name)

    url = stores()
    store = SisaStore(url)
    assert (
        store.config().data.category_reference_sha256 == hashlib.sha256(SITES.encode()).hexdigest()
    )
    assert store.intent()["input_shape"] == [4 + 3 + 64]  # site-0, 1, 2, x; ward 1, 2, 3
    ids, shards, slices = layout(url)
    first = str(ids[(shards == 1) & (slices == 0)][0])
    last = str(ids[(shards == 0) & (slices == 2)][0])
    assert LONER in set(ids.tolist()) and LONER not in (first, last)
    accept(url, [first, last, LONER])
    process(url)
    assert_equals_scratch(stores, url, [first, last, LONER])  # same encoding without site-x

    rows = site_frame().drop(columns=["diagnosis"]).iloc[:3]
    rows.to_csv(tmp_path / "rows.csv", index=False)
    out = tmp_path / "pred.csv"
    argv = ["predict", "--store", url, "--input", str(tmp_path / "rows.csv"), "--output", str(out)]
    assert main(argv) == 0
    assert out.read_text().splitlines()[0] == "id,prediction,label,score,no,rare,yes"
    rows.loc[1, "site"] = "site-9"
    rows.to_csv(tmp_path / "rows.csv", index=False)
    capsys.readouterr()
    assert main(argv) != 0
    assert "a category not seen in the reference" in capsys.readouterr().err
