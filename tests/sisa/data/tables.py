"""A table as users bring it, for the data tests: a clinic's CSV with its own column names
(``patient_id``, string ``diagnosis`` labels, a ``firm`` group of 20 patients, a text
column), built from the digits so that models learn something, and stores trained on it.

Options add what some tests need, and leave the default table (and every store trained on
it) as it was: ``extra`` a text ``site`` and an integer ``ward`` column (an integer column
is a feature by default), ``texts`` notes that tell the diagnosis, ``holes`` missing
feature cells."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from sisa.training.train import train
from tests.conftest import tiny_config

N = 400
RARE = "P0007"  # the only patient with the diagnosis "rare"
MAPPING = {
    "data.id_column": "patient_id",
    "data.label_column": "diagnosis",
    "data.group_column": "firm",
}
SITES = ("site-0", "site-1", "site-2")  # ``extra``: patient i is at SITES[i % 3]
WARDS = (1, 2, 3)  # ``extra``: patient i is in ward WARDS[i // 3 % 3]
# ``texts``: the words of the notes; a tokenizer fitted on them reads every note
NOTE_WORDS = {
    "yes": ("fever", "cough", "pain"),
    "no": ("fine", "well", "clear"),
    "rare": ("odd",),
    "filler": ("patient", "seen", "today", "the", "a"),
}


def holed(i: int) -> bool:
    """``holes``: whether patient i has a missing feature (every tenth, ``RARE`` too)."""
    return i % 10 == 7


def clinic_frame(
    n: int = N,
    drop: frozenset[str] | set[str] = frozenset(),
    *,
    extra: bool = False,
    texts: bool = False,
    holes: bool = False,
) -> pd.DataFrame:
    """``patient_id``, ``diagnosis`` (no / yes, and one "rare"), ``firm``, ``notes`` (text,
    left out of the features by default) and 64 feature columns, less ``drop``.

    ``extra``: ``site`` (text) and ``ward`` (integer) columns after ``notes``; ``texts``:
    notes of six words, three of them telling the diagnosis; ``holes``: one NaN feature
    cell for every patient i with ``holed(i)``."""
    from sklearn.datasets import load_digits

    d = load_digits()
    ids = [f"P{i:04d}" for i in range(n)]
    diagnosis = np.where(d.target[:n] >= 5, "yes", "no").astype(object)
    diagnosis[ids.index(RARE)] = "rare"
    notes = ["seen"] * n
    if texts:
        rng = np.random.default_rng(5)
        filler = list(NOTE_WORDS["filler"])
        notes = [
            " ".join(rng.permutation(list(rng.choice(NOTE_WORDS[label], 3)) + filler[:3]))
            for label in diagnosis
        ]
    frame = pd.DataFrame(
        {
            "patient_id": ids,
            "diagnosis": diagnosis,
            "firm": [f"firm-{i // 20}" for i in range(n)],
            "notes": notes,
        }
    )
    if extra:
        frame["site"] = [SITES[i % 3] for i in range(n)]
        frame["ward"] = [WARDS[i // 3 % 3] for i in range(n)]
    features = pd.DataFrame(d.data[:n] / 16.0, columns=[f"px{j}" for j in range(64)])
    if holes:
        for i in filter(holed, range(n)):
            features.iloc[i, 20 + i % 40] = np.nan
    frame = pd.concat([frame, features], axis=1)
    return frame[~frame["patient_id"].isin(list(drop))].reset_index(drop=True)


def write_table(
    path: Path,
    drop: frozenset[str] | set[str] = frozenset(),
    *,
    row_group_size: int | None = None,
    **options: bool,
) -> Path:
    """The clinic table (``clinic_frame``'s ``options``) less ``drop`` as ``path``: a CSV,
    a Parquet file, or (a path without a suffix) a folder of three Parquet files."""
    frame = clinic_frame(drop=drop, **options)
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    elif path.suffix:
        frame.to_parquet(path, row_group_size=row_group_size)
    else:
        path.mkdir(parents=True)
        for k, part in enumerate(np.array_split(np.arange(len(frame)), 3)):
            file = path / f"part-{k:05d}.parquet"
            frame.iloc[part].to_parquet(file, row_group_size=row_group_size)
    return path


def table_stores(
    tmp_path: Path, ext: str = "csv", *, row_group_size: int | None = None, **options: bool
):
    """``make(name, drop=..., groups=..., **overrides) -> url``: a store trained on the
    clinic table (without ``drop``), as ``tests/sisa/deletion/test_accept.py``'s
    ``assert_equals_scratch`` expects of its ``trained``. ``ext``: ``csv``, ``parquet``,
    ``folder`` (of Parquet files) or ``memory`` (a DataFrame given to ``train``);
    ``options`` go to ``clinic_frame``."""

    def make(name="store", drop=frozenset(), groups=False, **overrides):
        url = str(tmp_path / name)
        if ext == "memory":
            cfg = tiny_config(**MAPPING | overrides)
            train(cfg, url, data=clinic_frame(drop=set(drop), **options))
            return url
        path = tmp_path / (f"{name}-parts" if ext == "folder" else f"{name}.{ext}")
        source = write_table(path, drop=set(drop), row_group_size=row_group_size, **options)
        cfg = tiny_config(**MAPPING | {"data.source": str(source)} | overrides)
        train(cfg, url)
        return url

    return make
