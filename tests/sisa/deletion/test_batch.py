"""Batched processing: coalescing, plans against what happened, request states, receipts,
and that no byte of the store keeps a deleted ID."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

import sisa.deletion.batch
from sisa.deletion import receipts
from sisa.deletion.accept import accept, forget
from sisa.deletion.batch import process
from sisa.deletion.cost import calibration
from sisa.deletion.lifecycle import request_status, request_statuses
from sisa.deletion.plan import BatchPlan, pending_plan
from sisa.evidence.verify import verify
from sisa.store.artifacts import SisaStore
from sisa.store.journal import Journal
from sisa.training.train import train
from tests.conftest import tiny_config
from tests.sisa.deletion.test_accept import layout, snapshot


def pick(url, shard, slice_, n=1):
    ids, shards, slices = layout(url)
    return [int(i) for i in ids[(shards == shard) & (slices == slice_)][:n]]


def test_requests_are_coalesced_each_shard_retrained_once_from_its_earliest_slice(url):
    for victims in ([*pick(url, 0, 3)], [*pick(url, 0, 1)], [*pick(url, 2, 2)]):
        accept(url, victims)
    before = snapshot(url)
    plan = pending_plan(SisaStore(url))
    assert snapshot(url) == before  # planning writes nothing
    assert {s.shard: s.start_stage for s in plan.shards} == {0: 2, 2: 3}
    report = process(url)
    assert sorted((r.shard, r.start_stage, tuple(r.trained)) for r in report.results) == [
        (0, 2, (2, 3, 4)),
        (2, 3, (3, 4)),
    ]
    assert report.samples == plan.samples == report.plan.samples  # the plan counted exactly
    assert [r["seq"] for r in report.receipts] == [1, 2, 3]
    assert {r["batch"]["through"] for r in report.receipts} == {3}
    assert process(url) is None  # nothing left
    assert verify(url).identical


def test_the_plan_predicts_seconds_from_this_stores_measured_cost(url):
    accept(url, pick(url, 1, 0))
    plan = pending_plan(SisaStore(url))
    assert plan.calibrated_from == "training" and plan.seconds_per_sample > 0
    assert plan.seconds_per_stage > 0 and plan.seconds_per_job >= 0
    slices = SisaStore(url).config().sisa.slices
    assert plan.stages == sum(slices - s.start_stage + 1 for s in plan.shards)
    assert plan.predicted_seconds == pytest.approx(
        plan.samples * plan.seconds_per_sample
        + plan.stages * plan.seconds_per_stage
        + len(plan.shards) * plan.seconds_per_job
    )
    assert plan.full_retrain_samples > plan.samples
    report = process(url)
    accept(url, pick(url, 2, 3))
    again = pending_plan(SisaStore(url))
    assert again.calibrated_from == "last batch"
    actual = receipts.read(SisaStore(url), 1)["batch"]["actual"]
    assert actual["stages"] == plan.stages and actual["jobs"] == len(report.results) == 1
    phases = actual["phases"]
    assert again.seconds_per_sample == pytest.approx(phases["train"] / actual["samples"])
    assert again.seconds_per_stage == pytest.approx(phases["checkpoint"] / actual["stages"])
    # the last batch, predicted by its own unit costs, takes what it took
    assert again.seconds_per_sample * actual["samples"] + again.seconds_per_stage * actual[
        "stages"
    ] + again.seconds_per_job * actual["jobs"] == pytest.approx(actual["compute_seconds"])


def test_a_stored_plan_with_fields_from_a_newer_writer_still_reads(url):
    accept(url, pick(url, 1, 0))
    plan = pending_plan(SisaStore(url))
    body = plan.to_body()
    newer = body | {"gpu_seconds": 1.5, "shards": [s | {"node": "n1"} for s in body["shards"]]}
    assert BatchPlan.from_body(newer) == plan
    with pytest.raises(TypeError, match="through"):
        BatchPlan.from_body({k: v for k, v in body.items() if k != "through"})


def test_a_calibration_without_phases_falls_back_to_seconds_per_sample():
    old = calibration(1000, 2.0, "training")  # a store trained before phases were recorded
    assert (old.seconds_per_sample, old.seconds_per_stage, old.seconds_per_job) == (0.002, 0, 0)
    assert old.seconds(500, stages=7, jobs=3) == pytest.approx(1.0)
    split = calibration(
        1000, 2.0, "training", phases={"train": 1.0, "checkpoint": 0.5}, stages=10, jobs=5
    )
    assert (split.seconds_per_sample, split.seconds_per_stage) == (0.001, 0.05)
    assert split.seconds_per_job == pytest.approx(0.1)
    assert split.seconds(1000, 10, 5) == pytest.approx(2.0)
    assert split.seconds(100, 10, 5) == pytest.approx(1.1)  # few samples, the same stages
    assert calibration(0, 2.0, "training").seconds(10) is None


def test_request_states_move_from_accepted_to_purged(url, monkeypatch):
    class Stop(Exception):
        pass

    def stop_at(name):
        if name == "after-retrain":
            raise Stop

    request_id = accept(url, pick(url, 1, 2)).request_id
    store = SisaStore(url)
    assert request_status(store, request_id).state == "compliant"
    monkeypatch.setattr(sisa.deletion.batch, "crash_point", stop_at)
    with pytest.raises(Stop):
        process(url)
    assert request_status(store, request_id).state == "retrained"
    monkeypatch.setattr(sisa.deletion.batch, "crash_point", lambda name: None)
    report = process(url)
    assert report.resumed
    status = request_status(store, request_id)
    assert status.state == "purged" and status.receipt["request"] == request_id
    assert [s.state for s in request_statuses(store)] == ["purged"]


def test_a_receipt_records_hashes_stages_checkpoints_and_purged_artifacts(url):
    store = SisaStore(url)
    victims = pick(url, 2, 1, n=2)
    old = store.shard_head(2)
    report = forget(url, victims, reason="ticket 4411")
    receipt = report.receipt
    new = store.shard_head(2)
    from sisa.ids import salted_hashes

    assert receipt["ids"] == sorted(salted_hashes(store.salt(), victims))
    assert receipt["reason"] == "ticket 4411"
    [shard] = receipt["shards"]
    assert shard["stages"] == [2, 3, 4]
    assert shard["old_checkpoint"] == old.stages[-1].state_hash
    assert shard["new_checkpoint"] == new.stages[-1].state_hash
    assert (shard["old_generation"], shard["new_generation"]) == (0, 1)
    stale = [old.data.dir] + [s.dir for s in old.stages[1:]]
    assert sorted(shard["purged"]) == sorted(stale + ["shards/00002/g000000.json"])
    for rel in shard["purged"]:
        assert not store.fs.exists(rel)
    assert old.stages[0].dir in {s.dir for s in new.stages}  # stage 1 reused
    assert (
        receipt["accepted_at"]
        <= receipt["compliant_at"]
        <= receipt["retrained_at"]
        <= receipt["purged_at"]
    )
    assert receipt["prev"] is None
    second = forget(url, pick(url, 0, 0)).receipt
    assert second["prev"] == receipts.digest(receipt)


def _all_bytes(url):
    """Every file's bytes, with .npz members decompressed (they may be deflated)."""
    store = SisaStore(url)
    for rel in store.fs.walk():
        raw = store.fs.read_bytes(rel)
        yield rel, raw
        if rel.endswith(".npz"):
            import io

            with zipfile.ZipFile(io.BytesIO(raw)) as z:
                for name in z.namelist():
                    yield f"{rel}:{name}", z.read(name)


@pytest.fixture
def string_store(tmp_path):
    from sklearn.datasets import load_digits

    d = load_digits()
    ids = np.array([f"patient-{i:05d}-x" for i in range(len(d.target))])
    np.savez(tmp_path / "d.npz", X=(d.data / 16).astype(np.float32), y=d.target, ids=ids)
    url = str(tmp_path / "s")
    train(tiny_config(**{"data.source": str(tmp_path / "d.npz")}), url)
    return url


def test_no_byte_of_the_store_holds_a_deleted_id_once_processed(string_store):
    url = string_store
    ids, shards, _ = layout(url)
    victims = [str(v) for v in ids[:3]] + [str(ids[shards == 2][5])]
    test_ids = SisaStore(url).read_data(SisaStore(url).latest_head("test").data, features=False)[
        "ids"
    ]
    victims.append(str(test_ids[0]))
    accept(url, victims, reason="erasure ticket 12")
    for rel, raw in _all_bytes(url):
        if not rel.startswith(("shards/", "test/")):  # journal, serving: hashes only
            assert not any(v.encode() in raw for v in victims), rel
    process(url)
    for rel, raw in _all_bytes(url):
        for v in victims:
            assert v.encode() not in raw and v.encode("utf-32-le") not in raw, (rel, v)
    kept = [str(v) for v in ids if str(v) not in victims][:3]
    seen = b"".join(raw for _, raw in _all_bytes(url))
    assert all(k.encode("utf-32-le") in seen for k in kept)  # the scan would see an ID


def test_a_reason_naming_a_deleted_id_is_refused_and_nothing_is_written(url):
    victim = pick(url, 0, 0)[0]
    before = snapshot(url)
    with pytest.raises(ValueError, match="reason names an ID"):
        accept(url, [victim], reason=f"user {victim} asked")
    assert snapshot(url) == before


def test_processing_is_idempotent(url):
    forget(url, pick(url, 1, 3))
    before = snapshot(url)
    assert process(url) is None
    assert snapshot(url) == before
    assert Journal(SisaStore(url)).receipted() == [1]


def test_a_sweep_deletes_files_planted_inside_a_live_artifact(url):
    store = SisaStore(url)
    live = store.shard_head(0).stages[-1].dir
    old = store.fs.read_bytes(f"{live}/weights.safetensors")
    store.fs.write_bytes(f"{live}/weights-old.safetensors", old)  # hidden stale copy
    store.fs.write_bytes(f"{live}/.tmp-leftover", b"x")
    forget(url, pick(url, 1, 3))  # any batch sweeps every part first
    assert sorted(store.fs.listdir(live)) == ["MANIFEST.json", "state.pt", "weights.safetensors"]


def test_an_overwrite_keeps_the_deletion_history_and_never_resurrects(tmp_path):
    from sisa.store.artifacts import StoreStateError
    from tests.conftest import write_digits_npz

    full = write_digits_npz(tmp_path / "full.npz")
    url = str(tmp_path / "s")
    train(tiny_config(**{"data.source": str(full)}), url)
    first = forget(url, [1000]).receipt
    open_id = accept(url, [1002]).request_id
    without = write_digits_npz(tmp_path / "without.npz", drop={1000, 1002})
    cfg = tiny_config(**{"data.source": str(without)})
    with pytest.raises(StoreStateError, match="not processed yet"):
        train(cfg, url, overwrite=True)
    process(url)
    train(cfg, url, overwrite=True)
    store = SisaStore(url)
    assert receipts.read(store, 1) == first  # the proof survives the overwrite
    assert request_status(store, open_id).state == "purged"
    with pytest.raises(StoreStateError, match="forgotten"):
        train(tiny_config(**{"data.source": str(full)}), url, overwrite=True)
    from sisa.evidence.audit import audit

    assert audit(url).ok


def test_a_reason_may_not_name_any_id_of_the_store(string_store):
    url = string_store
    ids, _, _ = layout(url)
    a, b, c = (str(v) for v in ids[:3])
    before = snapshot(url)
    for reason in (f"escalation re {b}", f"see ({b}).", f"ticket:{b}"):
        with pytest.raises(ValueError, match="reason names an ID"):
            accept(url, [a], reason=reason)  # b is live: it may be deleted later
    assert snapshot(url) == before
    forget(url, [c])
    with pytest.raises(ValueError, match="reason names an ID"):
        accept(url, [a], reason=f"after {c}")  # c was deleted before
    assert accept(url, [a], reason="ticket T-77, art. 17").request_id


def test_the_audit_finds_an_id_hidden_in_a_reason(string_store):
    from sisa.evidence.audit import audit
    from sisa.store.layout import request_path
    from storage import read_doc, sha256_hex
    from storage.commit import canonical_json

    url = string_store
    ids, _, _ = layout(url)
    a, b = str(ids[0]), str(ids[1])
    forget(url, [a], reason="ticket 9")
    store = SisaStore(url)
    body = read_doc(store.fs, request_path(1)) | {"reason": f"also about ({b})"}  # forged
    doc = {"body": body, "sha256": sha256_hex(canonical_json(body))}
    store.fs.write_bytes(request_path(1), canonical_json(doc) + b"\n")
    assert audit(url).ok  # b is live: mentioning it is not yet a leak
    forget(url, [b])
    assert "raw deleted ID in a document" in {f.kind for f in audit(url).findings}


def test_a_group_deleted_point_by_point_is_then_already_deleted(tmp_path):
    from tests.conftest import write_digits_npz

    source = write_digits_npz(tmp_path / "g.npz", groups=True)
    url = str(tmp_path / "s")
    train(tiny_config(**{"data.source": str(source), "sisa.sharding": "group"}), url)
    forget(url, [1040, 1041, 1042, 1043])  # every point of person-10, by ID
    before = snapshot(url)
    assert accept(url, group="person-10").already_deleted == ["person-10"]
    assert snapshot(url) == before


def test_resending_the_same_ids_finds_the_request_that_covers_them(url):
    """A client that lost its acknowledgement gets the request ID back."""
    x, y = pick(url, 0, 1)[0], pick(url, 2, 2)[0]
    first = accept(url, [x, y]).request_id
    again = accept(url, [y, x])
    assert again.request_id is None and again.earlier_requests == [first]
    process(url)
    assert accept(url, [x]).earlier_requests == [first]
