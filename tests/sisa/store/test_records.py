"""The typed records of a head: they read what a head holds and write it back key for key,
so a head written after a retrain has the form of one written before the records existed."""

from __future__ import annotations

import dataclasses

import pytest

from sisa.store.artifacts import SisaStore
from sisa.store.records import DataRef, StageRef
from sisa.training.train import train

STAGE = {
    "dir": "shards/00000/g000000/stage-001",
    "manifest": "a" * 64,
    "weights_sha256": "b" * 64,
    "stage": 1,
    "ids_hash": "c" * 64,
    "parent": None,
    "state_hash": "d" * 64,
    "n": 30,
    "samples": 90,
    "step": 3,
    "fingerprint": {"torch": "2.13.0"},
}


def test_a_stage_record_writes_back_the_body_it_read_in_its_key_order():
    ref = StageRef.from_body(STAGE)
    assert ref.to_body() == STAGE and list(ref.to_body()) == list(STAGE)
    assert ref.parent is None and "parent" in ref.to_body()  # null stays null


def test_a_body_without_the_optional_fields_stays_without_them():
    old = {k: STAGE[k] for k in ("dir", "manifest", "weights_sha256", "stage")}
    ref = StageRef.from_body(old)
    assert ref.to_body() == old and ref.fingerprint is None
    assert dataclasses.replace(ref, n=5).to_body() == old | {"n": 5}  # a set field is kept


def test_a_data_record_writes_x_files_only_when_chunked():
    one = {"dir": "shards/00001/g000000/data", "manifest": "e" * 64, "n": 12}
    assert DataRef.from_body(one).to_body() == one
    assert DataRef.from_body(one).x_files == ("X.npz",)
    chunked = one | {"x_files": ["X-00000.npz", "X-00001.npz"]}
    assert DataRef.from_body(chunked).to_body() == chunked


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"dir": None, "manifest": "m", "n": 3}, "dir must be str"),
        ({"dir": "d", "manifest": "m", "n": True}, "n must be int"),
        ({"dir": "d", "manifest": "m", "n": "3"}, "n must be int"),
        ({"dir": "d", "manifest": "m", "n": 3, "x_files": []}, "x_files must be a list"),
    ],
)
def test_a_malformed_data_record_is_refused_naming_the_field(body, message):
    with pytest.raises(ValueError, match=message):
        DataRef.from_body(body)


def test_a_malformed_stage_record_is_refused_naming_the_field():
    with pytest.raises(ValueError, match="stage must be int"):
        StageRef.from_body(STAGE | {"stage": "1"})
    with pytest.raises(KeyError):
        StageRef.from_body({k: v for k, v in STAGE.items() if k != "weights_sha256"})


def test_every_head_of_a_trained_store_round_trips(tmp_path, tiny):
    url = str(tmp_path / "s")
    train(tiny(), url)
    store = SisaStore(url)
    for shard in range(3):
        head = store.shard_head(shard)
        assert [s.to_body() for s in head.stages] == head.body["stages"]
        assert head.data.to_body() == head.body["data"]
        assert [s.stage for s in head.stages] == [1, 2, 3]
