"""Data passed to ``train`` in memory: a ``sisa.Dataset``, a dict of arrays, a pandas
DataFrame (by the column mapping), and a map-style torch dataset with its IDs. Each is
streamed into the store like a file, and forgetting from it equals training from scratch
on the same form without the points, bitwise."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sisa.data.dataset import DataError, Dataset
from sisa.deletion.accept import accept
from sisa.deletion.batch import process
from sisa.evidence.forgetting import EvidenceError, forgetting_evidence
from sisa.store.artifacts import SisaStore
from sisa.training.train import train
from tests.conftest import tiny_config
from tests.sisa.deletion.test_accept import assert_equals_scratch, layout, weights_by_shard

N = 400
NAMES = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])


def arrays(drop=frozenset()) -> dict[str, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    ids = np.arange(N, dtype=np.int64) + 1000
    keep = ~np.isin(ids, list(drop))
    return {
        "ids": ids[keep],
        "X": (d.data[:N] / 16.0).astype(np.float32)[keep],
        "y": d.target[:N].astype(np.int64)[keep],
        "groups": np.array([f"person-{i // 4}" for i in range(N)])[keep],
    }


def torch_form(a):
    import torch
    from torch.utils.data import TensorDataset

    return TensorDataset(torch.from_numpy(a["X"]), torch.from_numpy(a["y"])), a["ids"].tolist()


def form(kind: str, a: dict[str, np.ndarray]):
    """(data, ids) of ``kind`` holding the points ``a``."""
    if kind == "dataset":
        return Dataset(ids=a["ids"], X=a["X"], y=a["y"], num_classes=10, groups=a["groups"]), None
    if kind == "dict":
        return a | {"y": NAMES[a["y"]]}, None  # string labels: a vocabulary
    if kind == "frame":
        frame = pd.DataFrame({"key": a["ids"], "digit": NAMES[a["y"]], "who": a["groups"]})
        pixels = pd.DataFrame(a["X"], columns=[f"p{j}" for j in range(64)])
        return pd.concat([frame, pixels], axis=1), None
    return torch_form(a)


MAPPING = {"data.id_column": "key", "data.label_column": "digit", "data.group_column": "who"}


def memory_stores(tmp_path, kind):
    """``make(name, drop=..., **overrides)``: a store trained from ``kind`` in memory."""

    def make(name="store", drop=frozenset(), groups=False, **overrides):
        data, ids = form(kind, arrays(drop))
        url = str(tmp_path / name)
        train(tiny_config(**MAPPING | overrides), url, data=data, ids=ids)
        return url

    return make


@pytest.mark.parametrize("kind", ["dataset", "dict", "frame", "torch"])
def test_forgetting_from_data_given_in_memory_equals_scratch(tmp_path, kind):
    make = memory_stores(tmp_path, kind)
    url = make()
    store = SisaStore(url)
    assert store.config().data.source == "in-memory"
    if kind in ("dict", "frame"):
        assert store.classes() == tuple(sorted(NAMES.tolist()))
    ids, shards, slices = layout(url)
    victims = [
        int(ids[(shards == 0) & (slices == 0)][0]),
        int(ids[(shards == 2) & (slices == 2)][0]),
    ]
    accept(url, victims)
    process(url)
    overrides = {"data.classes": list(store.classes())} if store.classes() else {}
    assert_equals_scratch(make, url, victims, **overrides)


def test_the_order_of_a_torch_dataset_never_matters(tmp_path):
    a = arrays()
    forward, forward_ids = torch_form(a)
    backward, backward_ids = torch_form({k: v[::-1].copy() for k, v in a.items()})
    train(tiny_config(), str(tmp_path / "f"), data=forward, ids=forward_ids)
    train(tiny_config(), str(tmp_path / "b"), data=backward, ids=backward_ids)
    as_dict = str(tmp_path / "d")
    train(tiny_config(), as_dict, data={k: a[k] for k in ("ids", "X", "y")})
    assert weights_by_shard(str(tmp_path / "f")) == weights_by_shard(str(tmp_path / "b"))
    assert weights_by_shard(str(tmp_path / "f")) == weights_by_shard(as_dict)


def test_a_command_that_needs_the_source_asks_for_it_again(tmp_path):
    url = memory_stores(tmp_path, "dataset")()
    ids, _, _ = layout(url)
    accept(url, [int(ids[0])])
    process(url)
    with pytest.raises(EvidenceError, match="passed in memory.*give the data again"):
        forgetting_evidence(url, [int(ids[0])])


@pytest.mark.parametrize(
    ("data", "ids", "match"),
    [
        ({"ids": [1, 2], "X": [[0.0], [1.0]]}, None, "needs ids, X and y"),
        (object(), None, "data must be a sisa.Dataset"),
        ([(np.zeros(2), 0), (np.ones(2), 1)], None, "needs ids="),
        ([(np.zeros(2), 0), (np.ones(2), 1)], [1], "one ID per index"),
        ({"ids": [1, 2], "X": [[0.0], [np.nan]], "y": [0, 1]}, None, "NaN or infinite"),
    ],
)
def test_bad_data_in_memory_is_refused_with_nothing_written(tmp_path, data, ids, match):
    url = tmp_path / "store"
    with pytest.raises(DataError, match=match):
        train(tiny_config(), str(url), data=data, ids=ids)
    assert not url.exists() or SisaStore(str(url)).files() == []
