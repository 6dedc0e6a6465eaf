"""Tables as they come: the column mapping, string labels, missing values, the group-aware
split, and the clear errors (with nothing written) for a table that does not fit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sisa.config import build_config
from sisa.data.columns import frame_dataset
from sisa.data.dataset import DataError, split_mask
from sisa.data.loaders import load_file
from sisa.store.artifacts import SisaStore
from sisa.store.layout import TEST_PREFIX
from sisa.training.train import train
from tests.conftest import tiny_config
from tests.sisa.data.tables import MAPPING, RARE, clinic_frame, write_table


def rules(**overrides):
    return build_config({}, MAPPING | overrides).data


def test_csv_parquet_and_frame_read_the_same_points_by_the_mapping(tmp_path: Path) -> None:
    csv, parquet = write_table(tmp_path / "c.csv"), write_table(tmp_path / "c.parquet")
    from_csv = load_file(str(csv), data=rules())
    assert from_csv == load_file(str(parquet), data=rules())
    assert from_csv == frame_dataset(clinic_frame(), rules(), from_text=False)
    assert from_csv.ids[0] == "P0000" and from_csv.groups[0] == "firm-0"
    assert from_csv.classes == ("no", "rare", "yes")  # sorted; class i is classes[i]
    assert from_csv.X.shape == (400, 64)  # the text column "notes" is no feature
    rare = from_csv.y[from_csv.ids == RARE]
    assert rare.tolist() == [1]


def test_feature_columns_select_and_order(tmp_path: Path) -> None:
    frame = clinic_frame()
    ds = frame_dataset(frame, rules(**{"data.feature_columns": ["px9", "px3"]}), from_text=False)
    assert np.array_equal(ds.X, frame[["px9", "px3"]].to_numpy(np.float32))


def test_integer_labels_keep_no_vocabulary() -> None:
    frame = pd.DataFrame({"id": [1, 2, 3], "label": [0, 2, 1], "f": [0.5, 0.1, 0.2]})
    ds = frame_dataset(frame, build_config().data, from_text=False)
    assert ds.classes is None and ds.num_classes == 3 and ds.y.tolist() == [0, 2, 1]


def test_declared_classes_fix_the_order_and_the_size() -> None:
    frame = pd.DataFrame({"id": [1, 2], "label": ["yes", "no"], "f": [0.5, 0.1]})
    declared = build_config({}, {"data.classes": ["yes", "maybe", "no"]}).data
    ds = frame_dataset(frame, declared, from_text=False)
    assert ds.classes == ("yes", "maybe", "no") and ds.y.tolist() == [0, 2] and ds.num_classes == 3


def test_integer_labels_of_any_value_follow_the_declared_classes(tmp_path: Path) -> None:
    """Labels 10 and 20 with ``data.classes = [20, 10]``: 20 is class 0 and 10 class 1 in
    the stored points, and predictions name the classes by their values."""
    from sklearn.datasets import load_digits

    from sisa.serving.predictor import Predictor

    d = load_digits()
    keep = d.target < 2  # [n] zeros and ones, told apart by any model
    X = (d.data[keep] / 16.0).astype(np.float32)  # [n, 64]
    labels = np.where(d.target[keep] == 0, 10, 20)  # [n]
    frame = pd.DataFrame(X, columns=[f"f{j}" for j in range(64)])
    frame.insert(0, "id", np.arange(len(labels)) + 500)
    frame.insert(1, "label", labels)
    frame.to_csv(tmp_path / "t.csv", index=False)
    url = str(tmp_path / "store")
    train(tiny_config(**{"data.source": str(tmp_path / "t.csv"), "data.classes": [20, 10]}), url)
    store = SisaStore(url)
    assert store.classes() == (20, 10) and store.intent()["num_classes"] == 2
    for k in range(3):
        arrays = store.read_data(store.shard_head(k).data, features=False)
        value = labels[arrays["ids"] - 500]  # [m] each stored point's label value
        assert arrays["y"].tolist() == [[20, 10].index(v) for v in value.tolist()]
    out = Predictor(url).predict(X[:40], probabilities=True)
    assert out.classes == [20, 10] and out.probabilities.shape == (40, 2)
    assert out.label_names == [[20, 10][i] for i in out.labels.tolist()]
    assert all(type(v) is int for v in out.label_names)  # the values, not class indices
    assert np.mean(np.array(out.label_names) == labels[:40]) > 0.9  # and the right ones


def test_fill_missing_fills_features_only(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("id,label,a,b\n1,x,0.5,\n2,y,,0.25\n")
    ds = load_file(str(path), data=build_config({}, {"data.fill_missing": -1.0}).data)
    assert ds.X.tolist() == [[0.5, -1.0], [-1.0, 0.25]]
    path.write_text("id,label,a\n1,x,0.5\n2,,0.1\n")  # a missing label is never filled
    with pytest.raises(DataError, match="missing labels at IDs 2"):
        load_file(str(path), data=build_config({}, {"data.fill_missing": -1.0}).data)


def test_group_split_keeps_every_group_on_one_side() -> None:
    frame = clinic_frame()
    groups = frame["firm"].to_numpy(str)
    held_out = split_mask(groups, 7, 0.2, "group")
    for firm in np.unique(groups):
        sides = set(held_out[groups == firm].tolist())
        assert len(sides) == 1, firm  # a 20-point firm is never on both sides
    by_id = split_mask(frame["patient_id"].to_numpy(str), 7, 0.2)
    assert any(len(set(by_id[groups == f].tolist())) == 2 for f in np.unique(groups))


def _sides(url: str) -> set[str]:
    store = SisaStore(url)
    return set(store.read_data(store.latest_head(TEST_PREFIX).data, features=False)["ids"].tolist())


def test_the_split_rule_is_recorded_and_a_store_without_one_keeps_the_id_split(
    tmp_path: Path,
) -> None:
    from sisa.data.sources import open_source
    from sisa.training.ingest import _intent_info

    source = write_table(tmp_path / "c.csv")
    cfg = tiny_config(**MAPPING | {"data.source": str(source)})
    train(cfg, str(tmp_path / "new"))
    assert SisaStore(str(tmp_path / "new")).intent()["split"] == "group"
    ids, groups = clinic_frame()["patient_id"].to_numpy(str), clinic_frame()["firm"].to_numpy(str)
    assert _sides(str(tmp_path / "new")) == set(ids[split_mask(groups, 7, 0.2, "group")])
    # a store whose training record predates the rule: an unfinished one is resumed by it
    old = SisaStore(str(tmp_path / "old"))
    index = open_source(cfg.data, cfg.sisa.seed).index()
    info = _intent_info(index, index.content_hash)
    del info["split"]
    old.write_intent(cfg, info)
    assert old.split_rule() == "id"
    train(cfg, old.url)
    assert _sides(old.url) == set(ids[split_mask(ids, 7, 0.2)])
    assert "split" not in old.intent()


def _untouched(url: str) -> None:
    assert not Path(url).exists() or SisaStore(url).files() == []


@pytest.mark.parametrize(
    ("change", "overrides", "match"),
    [
        ("drop diagnosis", {}, r"missing column 'diagnosis' \(data\.label_column"),
        ("drop patient_id", {}, r"missing column 'patient_id' \(data\.id_column"),
        ("", {"data.group_column": "company"}, r"missing column 'company' \(data\.group_column"),
        ("", {"data.classes": ["no", "yes"]}, r"labels outside data\.classes at IDs 'P0007'"),
        ("", {"data.feature_columns": ["px1", "notes"]}, r"non-numeric feature column 'notes'"),
        ("bool smoker", {}, r"feature column 'smoker' is boolean"),
        ("nan px3", {}, r"NaN or infinite features at IDs 'P0002'.*data\.fill_missing"),
        ("", {"data.feature_columns": ["px1", "firm"]}, r"names 'firm', which is data\.group"),
    ],
)
def test_a_table_that_does_not_fit_is_refused_with_nothing_written(
    tmp_path: Path, change: str, overrides: dict, match: str
) -> None:
    frame = clinic_frame()
    if change.startswith("drop"):
        frame = frame.drop(columns=[change.split()[1]])
    elif change == "bool smoker":
        frame["smoker"] = frame.index % 2 == 0
    elif change == "nan px3":
        frame.loc[2, "px3"] = np.nan
    path = tmp_path / "t.parquet"
    frame.to_parquet(path)
    url = str(tmp_path / "store")
    cfg = tiny_config(**MAPPING | {"data.source": str(path)} | overrides)
    with pytest.raises(DataError, match=match):
        train(cfg, url)
    _untouched(url)
    with pytest.raises(DataError, match=match):  # the same in memory
        train(cfg, url, data=frame)
    _untouched(url)


def test_a_boolean_config_value_is_refused() -> None:
    from sisa.config import ConfigError

    with pytest.raises(ConfigError, match="data.fill_missing: .*true/false"):
        build_config({}, {"data.fill_missing": True})
    with pytest.raises(ConfigError, match="data.classes: .*true/false"):
        build_config({}, {"data.classes": [True, False]})


def test_an_npz_file_with_missing_features_trains_only_with_fill_missing(tmp_path: Path) -> None:
    from tests.conftest import write_digits_npz

    path = write_digits_npz(tmp_path / "d.npz")
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["X"][3, 5] = np.nan
    np.savez(path, **arrays)
    url = str(tmp_path / "store")
    with pytest.raises(DataError, match="NaN or infinite features at IDs 1003"):
        train(tiny_config(**{"data.source": str(path)}), url)
    _untouched(url)
    train(tiny_config(**{"data.source": str(path), "data.fill_missing": 0.0}), url)
    filled = str(tmp_path / "filled.npz")
    arrays["X"][3, 5] = 0.0
    np.savez(filled, **arrays)
    train(tiny_config(**{"data.source": filled}), str(tmp_path / "zero"))
    from tests.sisa.deletion.test_accept import weights_by_shard

    assert weights_by_shard(url) == weights_by_shard(str(tmp_path / "zero"))
