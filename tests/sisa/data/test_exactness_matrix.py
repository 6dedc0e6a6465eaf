"""The exactness matrix: for every data source, data option and training statistic, one
store trained on the clinic table forgets in one go a point of a first slice, a point of a
last slice, a whole firm (a group) and the only patient of the class "rare"; then every
shard's weights are bitwise those of a store trained from scratch on the table without
those points (with the recorded vocabulary), ``verify`` agrees, and the vocabulary keeps
"rare". Each variant also shows that its option is in effect (it is recorded, and it moves
the weights away from the plain table's, or a source of the same points gives the same
weights), so an option that were silently ignored would fail here."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from sisa.data.dataset import DataError
from sisa.data.loaders import load_file
from sisa.deletion.accept import accept
from sisa.deletion.batch import process
from sisa.evidence.status import evaluate, status
from sisa.store.artifacts import SisaStore
from sisa.training.standardize import fit
from tests.sisa.data.tables import NOTE_WORDS, RARE, SITES, WARDS, clinic_frame, table_stores
from tests.sisa.data.test_text import tokenizer_file
from tests.sisa.deletion.test_accept import assert_equals_scratch, layout, weights_by_shard

VOCABULARY = ("no", "rare", "yes")
SCRATCH = {"data.classes": list(VOCABULARY)}  # a scratch table lacks "rare"
PIXELS = [f"px{j}" for j in range(64)]
ROW_GROUP = 37  # rows per Parquet row group: batches never line up with slices or files
GROUPS = {"sisa.sharding": "group"}  # a firm lives in one shard: the others keep their stages
SITE_REFERENCE = "site,ward\nsite-0,1\nsite-1,2\nsite-2,3\n"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Variant:
    """A source form (``table_stores``' ``ext``), table options, settings (a function of
    the test's folder, which writes the files they name) and a check that the settings are
    in effect: ``check(url, frame, settings, plain)`` with ``plain`` the plain table's
    weights per shard."""

    check: Callable[[str, pd.DataFrame, dict[str, Any], list[str]], None]
    ext: str = "csv"
    table: dict[str, bool] = dataclasses.field(default_factory=dict)
    settings: Callable[[Path], dict[str, Any]] = lambda _: {}
    row_group_size: int | None = None


def same_points(kind: Callable[[str], bool]):
    """A source of the plain table's points, of another form: the plain weights."""

    def check(url, frame, settings, plain):
        assert kind(SisaStore(url).config().data.source)
        assert weights_by_shard(url) == plain

    return check


def moved(check: Callable[..., None]):
    """``check`` and weights other than the plain table's, in every shard."""

    def both(url, frame, settings, plain):
        check(SisaStore(url), frame, settings)
        assert not set(weights_by_shard(url)) & set(plain)

    return both


def row_groups(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_row_groups


def is_parquet_file(source: str) -> bool:
    """A Parquet file of several row groups: it is streamed."""
    return source.endswith(".parquet") and row_groups(Path(source)) > 1


def is_parquet_folder(source: str) -> bool:
    """A folder of three Parquet files, each of several row groups."""
    parts = sorted(Path(source).glob("*.parquet"))
    return len(parts) == 3 and all(row_groups(p) > 1 for p in parts)


def onehot(tmp_path):
    return {
        "data.categorical_columns": ["site", "ward"],
        "data.categories": {"site": list(SITES), "ward": list(WARDS)},
    }


def check_onehot(store, frame, settings):
    data = store.config().data
    assert data.categorical_columns == ("site", "ward") and data.categorical_encoding == "onehot"
    assert store.intent()["input_shape"] == [3 + 3 + 64]


def ordinal(tmp_path):
    (tmp_path / "sites.csv").write_text(SITE_REFERENCE)
    return {
        "data.categorical_columns": ["site", "ward"],
        "data.categorical_encoding": "ordinal",
        "data.category_reference": str(tmp_path / "sites.csv"),
    }


def check_ordinal(store, frame, settings):
    import hashlib

    data = store.config().data
    assert data.categorical_encoding == "ordinal"
    assert data.category_reference_sha256 == hashlib.sha256(SITE_REFERENCE.encode()).hexdigest()
    assert store.intent()["input_shape"] == [1 + 1 + 64]
    X = store.read_data(store.shard_head(0).data)["X"]
    assert set(np.unique(X[:, 0]).tolist()) == {0.0, 1.0, 2.0}  # a site's index


def check_stage_scale(store, frame, settings):
    data = store.config().data
    assert data.scale == "standard" and data.scale_from == "stage"
    weights, _ = store.read_stage(store.shard_head(0).stages[0], state=False)
    assert "mean" in weights and "std" in weights  # this stage's statistics


CONSTANTS = {
    "data.scale": "standard",
    "data.scale_from": "constants",
    "data.scale_mean": [0.25],
    "data.scale_std": [0.5],
}


def check_constants(store, frame, settings):
    data = store.config().data
    assert data.scale_from == "constants" and data.scale_mean == (0.25,)
    assert data.scale_std == (0.5,)


def public_rows(tmp_path):
    """Features of 80 patients who are not in the training table, never deleted."""
    public = clinic_frame(n=480).iloc[400:].drop(columns=["patient_id", "diagnosis", "firm"])
    public.to_csv(tmp_path / "public.csv", index=False)
    return {
        "data.scale": "standard",
        "data.scale_from": "reference",
        "data.scale_reference": str(tmp_path / "public.csv"),
    }


def check_reference(store, frame, settings):
    data = store.config().data
    public = pd.read_csv(settings["data.scale_reference"])
    mean, _ = fit(public[PIXELS].to_numpy())
    assert data.scale_from == "reference" and data.scale_reference_sha256
    assert np.array_equal(np.asarray(data.scale_mean), mean)


def check_fill(store, frame, settings):
    data = store.config().data
    assert data.fill_missing == -1.0
    shards = [store.read_data(store.shard_head(k).data) for k in range(3)]
    trained = frame.set_index("patient_id").loc[np.concatenate([a["ids"] for a in shards])]
    X = np.concatenate([a["X"] for a in shards])  # the pixels are in [0, 1]: -1 is a fill
    assert (X == -1.0).sum() == trained[PIXELS].isna().sum().sum() > 0
    with pytest.raises(DataError, match="missing"):  # refused without the option
        load_file(data.source, data=data.model_copy(update={"fill_missing": None}))


WORDS = [w for words in NOTE_WORDS.values() for w in words]


def texts(tmp_path):
    tok = tokenizer_file(tmp_path / "tok.json", [" ".join(WORDS)])  # not the training data
    return {
        "data.text_column": "notes",
        "data.tokenizer": str(tok),
        "data.max_length": 8,
        "model.name": "textbag",
        "model.hidden": [8],
    }


def check_texts(store, frame, settings):
    cfg = store.config()
    assert cfg.data.text_column == "notes" and cfg.data.tokenizer_sha256
    assert cfg.model.name == "textbag" and cfg.model.vocab_size == len(WORDS) + 2  # pad, unk
    X = store.read_data(store.shard_head(0).data)["X"]
    assert X.dtype == np.int32 and X.shape[1:] == (8,)
    assert evaluate(store)["aggregate"] > 0.9  # the notes tell the diagnosis


RECIPE = {
    "optim.name": "adamw",
    "optim.lr": 0.01,
    "optim.weight_decay": 0.05,
    "optim.schedule": "cosine",
    "optim.warmup_stages": 0.5,
    "optim.min_lr_ratio": 0.1,
    "optim.clip_norm": 0.5,
    "optim.label_smoothing": 0.1,
    "optim.stage_accuracy": "train",
}


def check_recipe(store, frame, settings):
    optim = store.config().optim
    for key, value in RECIPE.items():
        assert getattr(optim, key.removeprefix("optim.")) == value, key
    assert all(s["accuracy"] is not None for s in status(store)["shards"])  # measured


VARIANTS = {
    "csv-mapping": Variant(check=same_points(lambda s: s.endswith(".csv"))),
    "parquet-file": Variant(
        ext="parquet", row_group_size=ROW_GROUP, check=same_points(is_parquet_file)
    ),
    "parquet-folder": Variant(
        ext="folder", row_group_size=ROW_GROUP, check=same_points(is_parquet_folder)
    ),
    "dataframe-in-memory": Variant(ext="memory", check=same_points(lambda s: s == "in-memory")),
    "onehot-given-categories": Variant(
        table={"extra": True}, settings=onehot, check=moved(check_onehot)
    ),
    "ordinal-category-reference": Variant(
        table={"extra": True}, settings=ordinal, check=moved(check_ordinal)
    ),
    "scale-per-stage": Variant(
        settings=lambda _: {"data.scale": "standard"}, check=moved(check_stage_scale)
    ),
    "scale-constants": Variant(settings=lambda _: CONSTANTS, check=moved(check_constants)),
    "scale-reference-table": Variant(settings=public_rows, check=moved(check_reference)),
    "fill-missing": Variant(
        table={"holes": True},
        settings=lambda _: {"data.fill_missing": -1.0},
        check=moved(check_fill),
    ),
    "text-textbag": Variant(table={"texts": True}, settings=texts, check=moved(check_texts)),
    "training-recipe": Variant(settings=lambda _: RECIPE, check=moved(check_recipe)),
}


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """Weights per shard of a store trained on the plain clinic CSV."""
    return weights_by_shard(table_stores(tmp_path_factory.mktemp("plain"))(**GROUPS))


def victims(url: str, frame: pd.DataFrame) -> tuple[list[str], list[str], str, dict[int, int]]:
    """The points, the firm, its patients and the start stage each shard must retrain
    from: RARE and a point of its shard's first slice (stage 1), a point of another
    shard's last slice (stage 3 only), and a firm of the third shard. A point with a
    missing feature is taken where there is one."""
    ids, shards, slices = layout(url)
    ids = np.array([str(i) for i in ids])
    where = {i: (int(k), int(r)) for i, k, r in zip(ids, shards, slices, strict=True)}
    missing = set(frame.loc[frame[PIXELS].isna().any(axis=1), "patient_id"])

    def pick(shard, slice_):
        candidates = [i for i in ids[(shards == shard) & (slices == slice_)] if i != RARE]
        return str(next((i for i in candidates if i in missing), candidates[0]))

    assert RARE in where  # trained on, not held out
    rare = where[RARE][0]
    alone, grouped = (k for k in range(3) if k != rare)
    points = [pick(rare, 0), pick(alone, 2), RARE]
    firms = frame.set_index("patient_id")["firm"]
    firm = firms[ids[shards == grouped][0]]
    members = firms.index[firms == firm].tolist()
    assert all(where.get(p, (None,))[0] == grouped for p in members)  # all of it, one shard
    starts = {rare: 1, alone: 3, grouped: 1 + min(where[p][1] for p in members)}
    return points, members, firm, starts


@pytest.mark.parametrize("name", VARIANTS)
def test_forgetting_in_one_go_equals_scratch(tmp_path, plain, name):
    variant = VARIANTS[name]
    settings = GROUPS | variant.settings(tmp_path)
    stores = table_stores(
        tmp_path, variant.ext, row_group_size=variant.row_group_size, **variant.table
    )
    url = stores(**settings)
    frame = clinic_frame(**variant.table)
    assert SisaStore(url).config().sisa.sharding == "group"
    variant.check(url, frame, settings, plain)

    points, members, firm, starts = victims(url, frame)
    if variant.table.get("holes"):
        assert {points[0], RARE} <= set(frame.loc[frame[PIXELS].isna().any(axis=1), "patient_id"])
    accept(url, points)
    accept(url, group=firm)
    report = process(url)  # one retrain for all four
    assert {p.shard: p.start_stage for p in report.plan.shards} == starts

    assert not set(points + members) & set(layout(url)[0].tolist())
    store = SisaStore(url)
    assert store.classes() == VOCABULARY and store.intent()["num_classes"] == 3
    assert_equals_scratch(stores, url, points + members, **SCRATCH | settings)
