"""Deletion-aware placement end to end: risky points train into reserved shards and late
slices, forgetting them retrains little, and the result still equals training from scratch
without them (``verify`` and an independent store agree)."""

from __future__ import annotations

import numpy as np
import pytest

from sisa.data.dataset import DataError
from sisa.deletion import compliance
from sisa.deletion.accept import accept, forget
from sisa.store.artifacts import SisaStore
from sisa.training.train import train
from tests.conftest import tiny_config, write_digits_npz
from tests.sisa.deletion.test_accept import assert_equals_scratch, layout

AWARE = {
    "sisa.shards": 4,
    "sisa.slices": 4,
    "sisa.risky_shard_fraction": 0.25,  # one shard of four
    "sisa.risky_slice_fraction": 0.5,  # its last two slices
}


@pytest.fixture
def trained(tmp_path):
    def make(name="store", drop=frozenset(), groups=False, risk=False, **overrides):
        source = write_digits_npz(
            tmp_path / f"{name}.npz", drop=set(drop), groups=groups, risk=risk
        )
        url = str(tmp_path / name)
        train(tiny_config(**{"data.source": str(source)} | overrides), url)
        return url

    return make


def test_forgetting_risky_points_retrains_one_shard_from_a_late_slice(trained):
    overrides = AWARE | {"sisa.deletion_risk": "column"}
    url = trained(risk=True, **overrides)
    ids, shards, slices = layout(url)
    risky = ids % 7 == 0
    assert set(shards[risky]) == {0} and set(slices[risky]) == {2, 3}
    assert set(shards[~risky]) == {1, 2, 3} and set(slices[~risky]) == {0, 1, 2, 3}
    head = SisaStore(url).shard_head(0)
    assert [s.n for s in head.stages][:2] == [0, 0]  # slices 1-2 of shard 0 are empty

    late = [int(i) for i in ids[risky & (slices == 3)][:2]]
    acc = accept(url, late[:1])  # comply: shard 0 serves stage 3, which never saw it
    assert acc.start_stages == {0: 4} and compliance.current(SisaStore(url)).shards[0].stage == 3
    earlier = int(ids[risky & (slices == 2)][0])
    acc = accept(url, [earlier])  # stage 2 trained on no point: shard 0 leaves the vote
    assert acc.start_stages == {0: 3} and compliance.current(SisaStore(url)).shards[0].stage == 0
    report = forget(url, late[1:])  # processes the open requests with it
    assert [(r.shard, r.start_stage, r.trained) for r in report.shards] == [(0, 3, [3, 4])]
    victims = [*late, earlier]
    assert_equals_scratch(trained, url, victims, risk=True, **overrides)


def test_a_risk_function_with_group_sharding_keeps_people_whole_and_exact(trained):
    overrides = AWARE | {
        "sisa.sharding": "group",
        "sisa.deletion_risk": "tests.sisa.risks:by_group",
    }
    url = trained(groups=True, **overrides)
    store = SisaStore(url)
    arrays = store.read_data(store.shard_head(0).data, features=False)
    people = {int(g.rsplit("-", 1)[1]) for g in arrays["groups"].tolist()}
    assert people and all(p % 3 == 0 for p in people)  # shard 0 holds the risky people
    assert set(np.unique(arrays["risk"])) == {0.8}  # the function's values, stored
    report = forget(url, group="person-3")
    assert [r.shard for r in report.shards] == [0] and report.shards[0].start_stage >= 3
    gone = [1000 + i for i in range(12, 16)]  # person-3's points
    assert_equals_scratch(trained, url, gone, groups=True, **overrides)


def test_training_without_the_risk_it_needs_writes_nothing(trained, tmp_path):
    with pytest.raises(DataError, match=r"sisa\.deletion_risk = 'column' needs"):
        trained(**AWARE, **{"sisa.deletion_risk": "column"})
    assert not (tmp_path / "store").exists()
    with pytest.raises(DataError, match="not a function of each point alone"):
        trained(name="ranked", **AWARE, **{"sisa.deletion_risk": "tests.sisa.risks:by_rank"})
    assert not (tmp_path / "ranked").exists()


def test_a_csv_risk_column_places_like_the_same_npz_array(tmp_path):
    """A table's 'risk' column reaches placement as an .npz array does (it was dropped
    from in-memory sources before, and 'column' risk then failed on CSV)."""
    import pandas as pd

    arrays = dict(np.load(write_digits_npz(tmp_path / "d.npz", risk=True)))
    frame = pd.DataFrame(arrays["X"], columns=[f"f{j}" for j in range(64)])
    frame.insert(0, "id", arrays["ids"])
    frame.insert(1, "label", arrays["y"])
    frame.insert(2, "risk", arrays["risk"])
    frame.to_csv(tmp_path / "d.csv", index=False)
    overrides = AWARE | {"sisa.deletion_risk": "column"}
    places = []
    for source in ("d.npz", "d.csv"):
        url = str(tmp_path / source.replace(".", "-"))
        train(tiny_config(**{"data.source": str(tmp_path / source)} | overrides), url)
        store = SisaStore(url)
        places.append([sorted(store.read_data(store.shard_head(k).data, features=False)["ids"]
                              .tolist()) for k in range(4)])  # fmt: skip
    assert places[0] == places[1]
    risky = set(arrays["ids"][arrays["risk"] >= 0.5].tolist())
    assert sum(bool(risky & set(ids)) for ids in places[1]) == 1  # all in the reserved shard


def _digits_table(path, risk_column: str | None) -> None:
    """The digits with risk as a CSV table, its risk under ``risk_column`` (None: none)."""
    import pandas as pd

    arrays = dict(np.load(write_digits_npz(path.with_suffix(".npz"), risk=True)))
    frame = pd.DataFrame(arrays["X"], columns=[f"f{j}" for j in range(64)])
    frame.insert(0, "id", arrays["ids"])
    frame.insert(1, "label", arrays["y"])
    if risk_column is not None:
        frame.insert(2, risk_column, arrays["risk"])
    frame.to_csv(path, index=False)


def test_a_renamed_risk_column_places_and_trains_as_the_default_named_one(tmp_path):
    """``data.risk_column = "p_delete"`` reads the risk from that column: the same points in
    the same shards and slices, and the same weights, as a table whose column is ``risk``;
    named but missing, it is refused with nothing written."""
    from sisa.evidence.status import status

    overrides = AWARE | {"sisa.deletion_risk": "column"}
    stores = {}
    for column in ("risk", "p_delete"):
        source = tmp_path / f"{column}.csv"
        _digits_table(source, column)
        url = str(tmp_path / f"store-{column}")
        train(
            tiny_config(**{"data.source": str(source), "data.risk_column": column} | overrides), url
        )
        stores[column] = url
    named, renamed = (layout(stores[c]) for c in ("risk", "p_delete"))
    for a, b in zip(named, renamed, strict=True):
        assert np.array_equal(a, b)
    ids, shards, slices = renamed
    risky = ids % 7 == 0
    assert set(shards[risky]) == {0} and set(slices[risky]) == {2, 3}  # the risk was read
    store = SisaStore(stores["p_delete"])
    stored = [store.read_data(store.shard_head(k).data, features=False)["risk"] for k in range(4)]
    assert set(np.unique(np.concatenate(stored))) == {0.9, 0.02}  # the column, stored
    assert store.intent()["input_shape"] == [64]  # and no feature
    weights = {c: [s["weights_sha256"] for s in status(u)["shards"]] for c, u in stores.items()}
    assert weights["risk"] == weights["p_delete"]

    _digits_table(tmp_path / "none.csv", None)
    url = tmp_path / "store-none"
    missing = {"data.source": str(tmp_path / "none.csv"), "data.risk_column": "p_delete"}
    with pytest.raises(DataError, match=r"missing column 'p_delete' \(data\.risk_column"):
        train(tiny_config(**missing | overrides), str(url))
    assert not url.exists() or SisaStore(str(url)).files() == []
