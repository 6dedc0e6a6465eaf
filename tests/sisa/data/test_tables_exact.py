"""Exactness over a table with its own column names and string labels, split by group:
after forgetting (first slice, last slice, a whole firm, the only point of a class) every
shard is bitwise what training from scratch on the table without those points gives, and
``verify`` agrees."""

from __future__ import annotations

import pytest

from sisa.deletion.accept import accept, forget
from sisa.deletion.batch import process
from sisa.evidence.audit import audit
from sisa.serving.predictor import Predictor
from sisa.store.artifacts import SisaStore
from tests.sisa.data.tables import RARE, clinic_frame, table_stores
from tests.sisa.deletion.test_accept import assert_equals_scratch, layout

VOCABULARY = ["no", "rare", "yes"]
# a scratch store trains on a table that may lack a class: it uses the recorded vocabulary
SCRATCH = {"data.classes": VOCABULARY}


@pytest.fixture
def stores(tmp_path):
    return table_stores(tmp_path)


def test_forgetting_in_the_first_and_the_last_slice_equals_scratch(stores):
    url = stores()
    ids, shards, slices = layout(url)
    first = str(ids[(shards == 1) & (slices == 0)][0])
    last = str(ids[(shards == 0) & (slices == 2)][0])
    accept(url, [first, last])
    report = process(url)
    assert {p.shard: p.start_stage for p in report.plan.shards} == {1: 1, 0: 3}
    assert_equals_scratch(stores, url, [first, last], **SCRATCH)


def test_forgetting_a_whole_firm_equals_scratch(stores):
    url = stores()
    ids, shards, _ = layout(url)
    number = int(str(ids[shards == 2][0])[1:]) // 20  # a firm of 20 patients in shard 2
    firm = [f"P{i:04d}" for i in range(20 * number, 20 * number + 20)]
    assert set(firm) <= set(ids.tolist())  # the group split never holds part of it out
    report = forget(url, group=f"firm-{number}")
    assert report.shards  # retrained
    assert_equals_scratch(stores, url, firm, **SCRATCH)


def test_forgetting_the_only_point_of_a_class_keeps_the_vocabulary(stores):
    url = stores()
    assert RARE in set(layout(url)[0].tolist())
    forget(url, [RARE])
    store = SisaStore(url)
    assert store.classes() == tuple(VOCABULARY) and store.intent()["num_classes"] == 3
    out = Predictor(url).predict(clinic_frame().iloc[:5, 4:].to_numpy(), probabilities=True)
    assert out.probabilities.shape == (5, 3) and out.classes == VOCABULARY
    assert out.label_names == [VOCABULARY[i] for i in out.labels]
    assert_equals_scratch(stores, url, [RARE], **SCRATCH)
    naive = SisaStore(stores("naive", drop={RARE}))  # recomputed from what remains: 2 classes
    assert naive.classes() == ("no", "yes") and naive.intent()["num_classes"] == 2
    report = audit(url)
    (finding,) = [f for f in report.findings if f.kind == "class without points"]
    assert finding.severity == "warning" and "'rare'" in finding.detail and report.ok


def test_a_parquet_table_trains_the_same_store_as_its_csv(tmp_path):
    from tests.sisa.deletion.test_accept import weights_by_shard

    csv = table_stores(tmp_path)("a")
    parquet = table_stores(tmp_path, "parquet")("b")
    assert weights_by_shard(csv) == weights_by_shard(parquet)
