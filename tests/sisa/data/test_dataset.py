"""Tests for sisa.data.dataset: loaders, validation and the per-ID train/test split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sisa.data.dataset import DataError, Dataset, split_train_test, validate
from sisa.data.loaders import load_digits_dataset, load_file, load_source, synthetic_purchase


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_digits_dataset()


@pytest.fixture(scope="module")
def purchase() -> Dataset:
    return synthetic_purchase(5000, seed=3)


def _frame(string_ids: bool, with_groups: bool) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 12
    df = pd.DataFrame(
        {
            "id": [f"p{i:03d}" for i in range(n)] if string_ids else np.arange(100, 100 + n),
            "f0": rng.random(n),
            "label": rng.integers(0, 3, n),
            "f1": rng.random(n),
        }
    )
    df.loc[0, "label"] = 2  # max label fixes num_classes = 3
    if with_groups:
        df["group"] = [f"g{i % 4}" for i in range(n)] if string_ids else np.arange(n) % 4
    return df


def _write_npz(path: Path, **arrays: np.ndarray) -> str:
    np.savez(path, **arrays)
    return str(path)


def _good_arrays(n: int = 6) -> dict[str, np.ndarray]:
    return {
        "ids": np.arange(n, dtype=np.int64),
        "X": np.arange(n * 3, dtype=np.float32).reshape(n, 3),
        "y": np.arange(n, dtype=np.int64) % 2,
    }


# ---- built-in sources -------------------------------------------------------------------


def test_digits_shape_dtype_classes(digits: Dataset) -> None:
    assert len(digits) == 1797
    assert digits.X.shape == (1797, 64) and digits.X.dtype == np.float32
    assert digits.feature_shape == (64,)
    assert digits.X.min() >= 0.0 and digits.X.max() <= 1.0
    assert digits.y.dtype == np.int64 and digits.num_classes == 10
    assert set(np.unique(digits.y).tolist()) == set(range(10))
    assert np.array_equal(digits.ids, np.arange(1797)) and digits.ids.dtype == np.int64
    assert len(np.unique(digits.ids)) == len(digits)
    assert digits.groups is None


def test_synthetic_purchase_shape_binary_labels(purchase: Dataset) -> None:
    assert purchase.X.shape == (5000, 600) and purchase.X.dtype == np.uint8
    assert set(np.unique(purchase.X).tolist()) <= {0, 1}
    assert 0 < purchase.X.mean() < 0.2  # sparse, like purchase histories
    assert np.array_equal(purchase.ids, np.arange(5000))
    assert purchase.num_classes == 100
    assert purchase.y.min() >= 0 and purchase.y.max() < 100
    assert len(np.unique(purchase.y)) >= 80


def test_synthetic_purchase_deterministic(purchase: Dataset) -> None:
    again = synthetic_purchase(5000, seed=3)
    assert again == purchase
    other = synthetic_purchase(300, seed=4, num_classes=10)
    assert other.X.shape == (300, 600) and other.num_classes == 10
    assert not np.array_equal(other.X, purchase.X[:300])


def test_synthetic_purchase_is_learnable(purchase: Dataset) -> None:
    from sklearn.neighbors import NearestCentroid

    train, test = purchase.take(np.arange(4000)), purchase.take(np.arange(4000, 5000))
    model = NearestCentroid().fit(train.X, train.y)
    accuracy = float((model.predict(test.X) == test.y).mean())
    assert accuracy > 5 / purchase.num_classes


def test_load_source_dispatch(tmp_path: Path, digits: Dataset) -> None:
    assert load_source("digits", n=0, seed=0) == digits
    small = load_source("synthetic-purchase", n=200, seed=1)
    assert len(small) == 200 and small.X.dtype == np.uint8
    path = _write_npz(tmp_path / "d.npz", **_good_arrays())
    assert len(load_source(path, n=0, seed=0, num_classes=4)) == 6


# ---- files ------------------------------------------------------------------------------


@pytest.mark.parametrize("string_ids", [False, True])
@pytest.mark.parametrize("with_groups", [False, True])
def test_csv_and_parquet_load_equal(tmp_path: Path, string_ids: bool, with_groups: bool) -> None:
    df = _frame(string_ids, with_groups)
    df.to_csv(tmp_path / "d.csv", index=False)
    df.to_parquet(tmp_path / "d.parquet", index=False)
    from_csv = load_file(str(tmp_path / "d.csv"))
    from_parquet = load_file(str(tmp_path / "d.parquet"))
    assert from_csv == from_parquet
    assert from_csv.num_classes == 3
    assert from_csv.X.shape == (12, 2) and from_csv.X.dtype == np.float32
    np.testing.assert_allclose(from_csv.X[:, 0], df["f0"].to_numpy(), rtol=1e-6)
    assert from_csv.ids.dtype.kind == ("U" if string_ids else "i")
    assert from_csv.ids.tolist() == df["id"].tolist()
    if with_groups:
        assert from_csv.groups is not None
        assert from_csv.groups.tolist() == df["group"].tolist()
    else:
        assert from_csv.groups is None


def test_csv_keeps_leading_zero_ids_and_binary_features(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("id,a,label,b\n007,1,0,0\n008,0,1,1\n")
    ds = load_file(str(path), num_classes=5)
    assert ds.ids.tolist() == ["007", "008"]
    assert ds.X.dtype == np.uint8 and ds.X.tolist() == [[1, 0], [0, 1]]
    assert ds.num_classes == 5


@pytest.mark.parametrize("with_groups", [False, True])
def test_npz_round_trip(tmp_path: Path, purchase: Dataset, with_groups: bool) -> None:
    ds = purchase.take(np.arange(50))
    if with_groups:
        ds = Dataset(
            ids=ds.ids.astype(str), X=ds.X, y=ds.y, num_classes=ds.num_classes, groups=ds.ids % 7
        )
    path = _write_npz(tmp_path / "d.npz", **ds.to_arrays())
    loaded = load_file(path, num_classes=ds.num_classes)
    assert loaded == ds
    assert loaded.X.dtype == np.uint8
    assert Dataset.from_arrays(ds.to_arrays(), ds.num_classes) == ds


def test_fsspec_url(tmp_path: Path) -> None:
    path = _write_npz(tmp_path / "d.npz", **_good_arrays())
    assert len(load_file(f"file://{path}")) == 6


# ---- bad input --------------------------------------------------------------------------


def _csv(tmp_path: Path, text: str) -> str:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("id,label,f\n1,0,0.5\n2,1,0.1\n1,1,0.2\n", r"duplicate IDs: 1\b"),
        ("id,label,f\na,0,0.5\nb,1,nan\n", r"NaN or infinite features at IDs 'b'"),
        ("id,label,f\na,0,inf\nb,1,0.1\n", r"NaN or infinite features at IDs 'a'"),
        ("id,label,f\n1,0,0.5\n2,5,0.1\n", r"out of range \[0, 3\) at IDs 2: values 5"),
        ("id,label,f\n1,0,0.5\n2,-1,0.1\n", r"out of range .* IDs 2: values -1"),
        ("id,label,f\n1,0,0.5\n2,1.5,0.1\n", r"not integers at IDs 2: values 1.5"),
        ("id,label,f\n1,0,0.5\n2,,0.1\n", r"not integers at IDs 2"),
        ("id,label,f\n", r"empty data"),
        ("", r"empty file"),
        ("label,f\n0,0.5\n", r"missing column 'id'"),
        ("id,f\n1,0.5\n", r"missing column 'label'"),
        ("id,label\n1,0\n2,1\n", r"no feature columns"),
        ("id,label,f\n1,0,0.5\n,1,0.1\n", r"column 'id' has missing values at rows 1"),
    ],
)
def test_bad_csv(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(DataError, match=match):
        load_file(_csv(tmp_path, text), num_classes=3)


def test_duplicate_string_ids_named_with_count(tmp_path: Path) -> None:
    rows = "".join(f"d{i},0,0.1\nd{i},1,0.2\n" for i in range(8))
    with pytest.raises(DataError, match=r"duplicate IDs: 'd0', .*\(8 in all\)"):
        load_file(_csv(tmp_path, "id,label,f\n" + rows))


def test_single_class_rejected(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="num_classes must be at least 2"):
        load_file(_csv(tmp_path, "id,label,f\n1,0,0.5\n2,0,0.1\n"))


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"X": np.zeros((5, 3), np.float32)}, r"ragged arrays: .*ids=6, X=5, y=6"),
        ({"y": np.zeros(7, np.int64)}, r"ragged arrays"),
        ({"y": np.zeros((6, 2), np.int64)}, r"labels must be one-dimensional"),
        ({"groups": np.zeros(4, np.int64)}, r"ragged arrays: .*groups=4"),
        ({"ids": np.arange(6, dtype=np.float64)}, r"IDs have dtype float64"),
        ({"groups": np.arange(6) / 2}, r"groups have dtype float64"),
        ({"extra": np.zeros(6)}, r"unknown arrays: extra"),
        (
            {k: np.zeros((0, 3) if k == "X" else 0, np.int64) for k in ("ids", "X", "y")},
            r"empty data",
        ),
    ],
)
def test_bad_npz(tmp_path: Path, change: dict[str, np.ndarray], match: str) -> None:
    path = _write_npz(tmp_path / "d.npz", **(_good_arrays() | change))
    with pytest.raises(DataError, match=match):
        load_file(path, num_classes=2)


def test_npz_missing_x(tmp_path: Path) -> None:
    arrays = _good_arrays()
    del arrays["X"]
    with pytest.raises(DataError, match=r"missing arrays: X"):
        load_file(_write_npz(tmp_path / "d.npz", **arrays))


def test_npz_object_array_is_not_unpickled(tmp_path: Path) -> None:
    arrays = _good_arrays()
    arrays["ids"] = np.array([1, "a", None, 4, 5, 6], dtype=object)
    path = _write_npz(tmp_path / "d.npz", **arrays)
    with pytest.raises(DataError, match=r"'ids' cannot be loaded safely"):
        load_file(path)


def test_unsupported_extension_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unsupported file extension 'json'"):
        load_file(str(tmp_path / "d.json"))
    with pytest.raises(DataError, match="no such file"):
        load_file(str(tmp_path / "absent.csv"))
    (tmp_path / "empty.npz").write_bytes(b"")
    with pytest.raises(DataError, match="cannot read"):
        load_file(str(tmp_path / "empty.npz"))


def test_validate_direct() -> None:
    a = _good_arrays()
    ok = validate(Dataset(ids=a["ids"], X=a["X"].astype(np.float64), y=a["y"], num_classes=2))
    assert ok.X.dtype == np.float32
    with pytest.raises(DataError, match="empty data"):
        validate(Dataset(ids=a["ids"][:0], X=a["X"][:0], y=a["y"][:0], num_classes=2))
    assert (
        len(
            validate(
                Dataset(ids=a["ids"][:0], X=a["X"][:0], y=a["y"][:0], num_classes=2),
                allow_empty=True,
            )
        )
        == 0
    )
    with pytest.raises(DataError, match="labels have dtype bool"):
        validate(Dataset(ids=a["ids"], X=a["X"], y=a["y"].astype(bool), num_classes=2))
    with pytest.raises(DataError, match="mix integers and strings"):
        validate(
            Dataset(
                ids=np.array([1, "a", 2, 3, 4, 5], dtype=object), X=a["X"], y=a["y"], num_classes=2
            )
        )
    with pytest.raises(DataError, match="missing arrays: y"):
        Dataset.from_arrays({"ids": a["ids"], "X": a["X"]}, 2)


# ---- split ------------------------------------------------------------------------------


def _sides(ds: Dataset, seed: int = 5, fraction: float = 0.3) -> dict[int, bool]:
    train, test = split_train_test(ds, seed, fraction)
    return {**dict.fromkeys(train.ids.tolist(), False), **dict.fromkeys(test.ids.tolist(), True)}


def test_split_deterministic_and_ordered(digits: Dataset) -> None:
    train, test = split_train_test(digits, 5, 0.3)
    again_train, again_test = split_train_test(digits, 5, 0.3)
    assert train == again_train and test == again_test
    assert len(train) + len(test) == len(digits)
    assert not set(train.ids.tolist()) & set(test.ids.tolist())
    assert np.all(np.diff(train.ids) > 0) and np.all(np.diff(test.ids) > 0)  # original order
    row = {int(i): r for r, i in enumerate(digits.ids)}
    assert np.array_equal(test.X, digits.X[[row[int(i)] for i in test.ids]])
    assert np.array_equal(test.y, digits.y[[row[int(i)] for i in test.ids]])
    other_train, _ = split_train_test(digits, 6, 0.3)
    assert not np.array_equal(train.ids, other_train.ids)  # the seed matters


def test_split_fraction_respected(digits: Dataset) -> None:
    _, test = split_train_test(digits, 0, 0.2)
    assert abs(len(test) / len(digits) - 0.2) < 0.04


@pytest.mark.parametrize("removed", [0, 1, 17, 500, 1796])
def test_removing_a_point_moves_no_other(digits: Dataset, removed: int) -> None:
    before = _sides(digits)
    after = _sides(digits.take(digits.ids != removed))
    del before[removed]
    assert after == before


def test_split_keeps_groups_and_string_ids() -> None:
    n = 200
    ids = np.array([f"u{i}" for i in range(n)])
    ds = validate(
        Dataset(
            ids=ids,
            X=np.zeros((n, 2), np.float32),
            y=np.arange(n) % 2,
            num_classes=2,
            groups=np.arange(n) // 4,
        )
    )
    train, test = split_train_test(ds, 1, 0.5)
    for side in (train, test):
        assert side.groups is not None
        index = [int(i[1:]) for i in side.ids]
        assert side.groups.tolist() == [i // 4 for i in index]
    sides = _sides(ds, 1, 0.5)
    assert _sides(ds.take(ds.ids != "u3"), 1, 0.5) == {k: v for k, v in sides.items() if k != "u3"}


def test_split_zero_fraction_and_bad_fraction(digits: Dataset) -> None:
    train, test = split_train_test(digits, 0, 0.0)
    assert train == digits and len(test) == 0 and test.feature_shape == (64,)
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match="test_fraction"):
            split_train_test(digits, 0, bad)


# -- deletion risk -----------------------------------------------------------------------


@pytest.mark.parametrize("ext", ["csv", "parquet"])
def test_a_risk_column_is_carried_and_is_not_a_feature(tmp_path: Path, ext: str) -> None:
    df = _frame(string_ids=False, with_groups=True)
    df["risk"] = np.linspace(0, 1, len(df))
    path = tmp_path / f"d.{ext}"
    df.to_csv(path, index=False) if ext == "csv" else df.to_parquet(path)
    ds = load_file(str(path))
    assert ds.risk is not None and ds.risk.dtype == np.float64
    assert np.allclose(ds.risk, np.linspace(0, 1, len(df))) and ds.X.shape[1] == 2
    half = ds.take(np.arange(len(ds)) % 2 == 0)
    assert half.risk is not None and np.array_equal(half.risk, ds.risk[::2])
    assert Dataset.from_arrays(ds.to_arrays(), ds.num_classes) == ds
    assert ds != Dataset(
        ids=ds.ids, X=ds.X, y=ds.y, num_classes=ds.num_classes, groups=ds.groups
    )  # risk differs


def test_npz_risk_round_trip(tmp_path: Path) -> None:
    arrays = _good_arrays() | {"risk": np.array([0, 0.5, 1, 1, 0.25, 0], np.float32)}
    ds = load_file(_write_npz(tmp_path / "r.npz", **arrays))
    assert ds.risk is not None and ds.risk.tolist() == [0, 0.5, 1, 1, 0.25, 0]
    assert "risk" in ds.to_arrays()


@pytest.mark.parametrize(
    "risk, match",
    [
        (np.array([0, 0.5, 1.5, 1, -0.1, 0]), r"risk outside \[0, 1\].*IDs 2, 4"),
        (np.array([0, np.nan, 0, 0, 0, 0]), r"risk outside .*missing.*IDs 1"),
        (np.array([True] * 6), "risk has dtype bool"),
        (np.array(["high"] * 6), "risk has dtype"),
        (np.zeros(5), "ragged arrays.*risk=5"),
    ],
)
def test_bad_npz_risk_names_the_ids(tmp_path: Path, risk: np.ndarray, match: str) -> None:
    path = _write_npz(tmp_path / "bad.npz", **_good_arrays(), risk=risk)
    with pytest.raises(DataError, match=match):
        load_file(path)


@pytest.mark.parametrize(
    "values, match",
    [
        (["0.1", "0.2", ""], r"risk outside \[0, 1\] \(or missing\) at IDs 'c'"),
        (["0.1", "2", "0.3"], r"at IDs 'b': values 2\.0"),
        (["low", "0.2", "0.3"], "column 'risk' has dtype"),
    ],
)
def test_bad_csv_risk_names_the_ids(tmp_path: Path, values: list[str], match: str) -> None:
    rows = [f"{i},{n % 2},1.5,{v}" for n, (i, v) in enumerate(zip("abc", values, strict=True))]
    path = tmp_path / "bad.csv"
    path.write_text("id,label,f0,risk\n" + "\n".join(rows) + "\n")
    with pytest.raises(DataError, match=match):
        load_file(str(path))
