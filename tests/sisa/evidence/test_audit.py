"""``audit`` passes a store that kept its promises and catches each way of breaking one:
tampered or truncated receipts, stale checkpoints put back, forged heads, raw IDs left in
metadata, corrupt checkpoints, and serving a checkpoint that saw a pending point."""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest

from sisa.deletion import receipts
from sisa.deletion.accept import accept, forget
from sisa.evidence.audit import audit, last_audit
from sisa.store.artifacts import SisaStore
from sisa.store.journal import Journal
from sisa.store.layout import SERVING, WEIGHTS, gen_dir, receipt_path, request_path, shard_prefix
from sisa.training.train import train
from storage import encode_arrays, read_doc, read_manifest, sha256_hex, write_doc
from storage.commit import canonical_json
from tests.conftest import tiny_config, write_digits_npz
from tests.sisa.deletion.test_accept import layout


@pytest.fixture(scope="module")
def trained_base(tmp_path_factory):
    url = tmp_path_factory.mktemp("audit") / "trained"
    train(tiny_config(), str(url))
    return url


@pytest.fixture(scope="module")
def string_base(tmp_path_factory):
    """A store whose IDs are strings ("user-0000", ...)."""
    from sklearn.datasets import load_digits

    folder = tmp_path_factory.mktemp("audit-str")
    d = load_digits()
    ids = np.array([f"user-{i:04d}" for i in range(len(d.target))])
    np.savez(folder / "users.npz", ids=ids, X=(d.data / 16).astype(np.float32), y=d.target)
    train(tiny_config(**{"data.source": str(folder / "users.npz")}), str(folder / "trained"))
    return folder / "trained"


@pytest.fixture
def url(trained_base, tmp_path):
    """A fresh copy of the trained store for one test."""
    shutil.copytree(trained_base, tmp_path / "store")
    return str(tmp_path / "store")


def victim(url, shard, slice_, nth=0):
    ids, shards, slices = layout(url)
    return ids[(shards == shard) & (slices == slice_)][nth].item()


@pytest.fixture
def forgotten(url):
    """The store after three processed requests; returns (url, the IDs they removed)."""
    store = SisaStore(url)
    test_point = store.read_data(store.latest_head("test").data, features=False)["ids"][0]
    requests = [[victim(url, 0, 0)], [victim(url, 1, 2), victim(url, 2, 1)], [test_point.item()]]
    for ids in requests:
        forget(url, ids)
    return url, [i for ids in requests for i in ids]


def forge(url, rel, change):
    """Rewrite a document the way an attacker with write access would: new self-hash."""
    store = SisaStore(url)
    body = read_doc(store.fs, rel)
    change(body)
    doc = {"body": body, "sha256": sha256_hex(canonical_json(body))}
    store.fs.write_bytes(rel, canonical_json(doc) + b"\n")


def kinds(report, severity="violation"):
    return {f.kind for f in report.findings if f.severity == severity}


def test_a_clean_store_after_several_forgets_audits_ok(forgotten):
    url, _ = forgotten
    files = len(SisaStore(url).fs.walk())
    report = audit(url)
    assert report.ok and report.chain.ok
    assert report.findings == []
    assert report.chain.length == report.requests == 3 and report.open_requests == 0
    assert report.chain.head == receipts.digest(receipts.read(SisaStore(url), 3))
    assert report.scanned_files == files  # every file there was
    as_dict = json.loads(json.dumps(report.to_dict()))
    assert as_dict["ok"] and as_dict["chain"]["head"] == report.chain.head
    assert audit(url, expect_head=report.chain.head).ok


def test_an_open_request_is_a_pending_warning_not_a_violation(forgotten):
    url, _ = forgotten
    accept(url, [victim(url, 2, 1, nth=3)])
    report = audit(url)
    assert report.ok, report.findings
    pending = [f for f in report.findings if f.kind == "pending deletion"]
    assert [(f.severity, f.path) for f in pending] == [
        ("warning", SisaStore(url).shard_head(2).data.dir)
    ]
    assert "1 point" in pending[0].detail
    assert (report.requests, report.open_requests, report.chain.length) == (4, 1, 3)


@pytest.mark.parametrize(
    "case, kind",
    [("pending", "serving a pending point"), ("stale", "serving a stale checkpoint")],
)
def test_serving_a_checkpoint_that_saw_the_point_is_a_violation(url, case, kind):
    store = SisaStore(url)
    final = store.shard_head(1).stages[-1]  # trained on every point of shard 1
    (accept if case == "pending" else forget)(url, [victim(url, 1, 0)])
    assert audit(url).ok  # shard 1 is left out of the vote, or serves its new generation
    latest = store.latest_head(SERVING)
    body = {k: v for k, v in latest.body.items() if k != "generation"}
    body["shards"] = [list(s) for s in body["shards"]]
    body["shards"][1][2:4] = [3, final.to_body()]
    store.commit_head(SERVING, latest.generation + 1, body)
    assert kinds(audit(url)) == {kind}


def test_a_receipt_edited_without_its_hash_is_caught(forgotten):
    url, _ = forgotten
    store = SisaStore(url)
    doc = json.loads(store.fs.read_bytes(receipt_path(2)))
    doc["body"]["shards"][0]["purged"] = []
    store.fs.write_bytes(receipt_path(2), json.dumps(doc).encode())
    report = audit(url)
    assert not report.ok and not report.chain.ok
    assert "tampered" in report.chain.problems[0]
    assert [(f.kind, f.path) for f in report.violations] == [("tampered document", receipt_path(2))]


def test_a_rewritten_middle_receipt_breaks_the_chain(forgotten):
    url, _ = forgotten
    forge(url, receipt_path(2), lambda body: body.update(purged_at=0.0))
    report = audit(url)
    assert not report.ok
    assert report.chain.problems == ["receipt 3 does not link to receipt 2: the chain is broken"]


@pytest.mark.parametrize("attack", ["rewrite", "truncate"])
def test_a_changed_tail_is_caught_only_with_the_anchored_head(forgotten, attack):
    url, _ = forgotten
    anchored = audit(url).chain.head
    if attack == "rewrite":
        forge(url, receipt_path(3), lambda body: body.update(purged_at=0.0))
    else:
        SisaStore(url).fs.delete(receipt_path(3))
    unanchored = audit(url)
    assert unanchored.ok  # the store alone cannot tell
    assert unanchored.chain.head != anchored
    report = audit(url, expect_head=anchored)
    assert not report.ok and report.chain.ok
    assert [f.detail.split(" (")[0] for f in report.violations] == [
        "chain head differs from the anchored one"
    ]


def test_a_deleted_middle_receipt_is_caught(forgotten):
    url, _ = forgotten
    SisaStore(url).fs.delete(receipt_path(2))
    report = audit(url)
    assert not report.ok and not report.chain.ok
    assert "missing" in report.chain.problems[0]
    assert [(f.kind, f.path) for f in report.violations] == [("missing receipt", receipt_path(2))]


def test_a_receipt_that_disagrees_with_its_request_is_caught(forgotten):
    """Receipts re-signed to claim fewer points than their journaled requests."""
    url, _ = forgotten
    forge(url, receipt_path(2), lambda body: body["ids"].pop())  # breaks link 3 too
    forge(url, receipt_path(3), lambda body: body.update(ids=[]))
    report = audit(url)
    assert {(f.kind, f.path) for f in report.violations} == {
        ("receipt differs from its request", receipt_path(2)),
        ("receipt differs from its request", receipt_path(3)),
    }


def test_tombstones_that_lost_a_purged_point_are_caught(forgotten):
    url, _ = forgotten
    store = SisaStore(url)
    rel = f"tombstones/g{store.tombstones().generation:06d}.json"
    forge(url, rel, lambda body: body["entries"].pop(0))
    report = audit(url)
    assert [(f.kind, f.path) for f in report.violations] == [("missing tombstone", receipt_path(1))]


def stage_files(store, ref):
    return {rel: store.fs.read_bytes(rel) for rel in store.fs.walk(ref.dir)}


def test_a_stale_checkpoint_put_back_is_caught(url):
    store = SisaStore(url)
    old = store.shard_head(1)  # a point of the first slice goes: all of generation 0 is stale
    saved = stage_files(store, old.stages[1]) | stage_files(store, old.data)
    forget(url, [victim(url, 1, 0)])
    assert audit(url).ok
    weights = saved[f"{old.stages[1].dir}/weights.safetensors"]
    saved["shards/00009/g000000/stage-001/weights.safetensors"] = weights  # no such shard
    for rel, data in saved.items():
        store.fs.write_bytes(rel, data)
    live = store.shard_head(1).stages[1].dir  # and old weights hidden in a live folder
    store.fs.write_bytes(f"{live}/old.safetensors", weights)
    report = audit(url)
    unreferenced = {f.path: f.detail for f in report.findings if f.kind == "unreferenced artifact"}
    assert set(unreferenced) == set(saved)
    assert "1 deleted" in unreferenced[f"{old.data.dir}/ids.npz"]
    assert [f.path for f in report.findings if f.kind == "unlisted file"] == [
        f"{live}/old.safetensors"
    ]
    assert kinds(report) == {"unreferenced artifact", "unlisted file"}


def test_old_weights_under_fresh_records_are_caught(url):
    """Old weights swapped into a live stage, with its manifest and head re-signed."""
    store = SisaStore(url)
    old = store.fs.read_bytes(f"{store.shard_head(1).stages[1].dir}/weights.safetensors")
    forget(url, [victim(url, 1, 0)])
    stages = [s.dir for s in store.shard_head(1).stages]
    store.fs.write_bytes(f"{stages[1]}/weights.safetensors", old)
    entry = {"sha256": sha256_hex(old), "size": len(old)}
    forge(url, f"{stages[1]}/MANIFEST.json", lambda b: b["files"].update({WEIGHTS: entry}))
    manifest = read_manifest(store.fs, stages[1]).sha256
    forge(
        url,
        f"{gen_dir(shard_prefix(1), 1)}.json",
        lambda b: b["stages"][1].update(manifest=manifest, weights_sha256=entry["sha256"]),
    )
    report = audit(url)
    assert {(f.kind, f.path) for f in report.findings} == {
        ("corrupt checkpoint", stages[1]),  # its recorded state hash is not the weights'
        ("broken lineage", stages[2]),  # stage 3 did not continue these weights
    }


@pytest.mark.parametrize("stale", ["stage", "data"])
def test_a_forged_head_referencing_stale_artifacts_is_caught(url, stale):
    store = SisaStore(url)
    old = store.shard_head(1)
    ref = old.stages[1] if stale == "stage" else old.data
    saved = stage_files(store, ref)
    forget(url, [victim(url, 1, 0)])
    for rel, data in saved.items():
        store.fs.write_bytes(rel, data)

    def point_at_stale(body):
        if stale == "stage":
            body["stages"][1] = ref.to_body() | {"ids_hash": body["stages"][1]["ids_hash"]}  # a lie
        else:
            body |= {"data": ref.to_body(), "n": old.body["n"]}

    forge(url, f"{gen_dir(shard_prefix(1), 1)}.json", point_at_stale)
    report = audit(url)
    unreferenced = {f.path for f in report.findings if f.kind == "unreferenced artifact"}
    assert not unreferenced & set(saved)  # the forged head references them
    if stale == "stage":
        assert {"checkpoint trained on other points", "broken lineage"} <= kinds(report)
    else:
        deleted = [f for f in report.findings if f.kind == "deleted point in live data"]
        assert [(f.path, f.detail) for f in deleted] == [(ref.dir, "1 purged point(s) or group(s)")]
        assert "checkpoint trained on other points" in kinds(report)


def test_a_raw_string_id_left_in_metadata_is_caught(string_base, tmp_path):
    shutil.copytree(string_base, tmp_path / "store")
    url = str(tmp_path / "store")
    gone = victim(url, 2, 1)
    assert isinstance(gone, str)
    forget(url, [gone], reason="ticket-17")
    assert audit(url).findings == []  # no false alarm on a string-ID store
    forge(url, request_path(1), lambda body: body.update(note=["kept", {"by": gone}]))
    store = SisaStore(url)
    write_doc(store.fs, "batches/notes.json", {"kept": victim(url, 0, 0)})  # not deleted
    store.fs.write_bytes("batches/leak.npz", encode_arrays({"ids": np.array(["user-x", gone])}))
    report = audit(url)
    assert {(f.kind, f.path) for f in report.violations} == {
        ("raw deleted ID in a document", request_path(1)),
        ("deleted point in a file", "batches/leak.npz"),
    }


def test_an_integer_id_spelled_as_text_is_caught_and_numbers_are_not_compared(url):
    gone = victim(url, 0, 2)
    forget(url, [gone])
    store = SisaStore(url)
    write_doc(store.fs, "batches/count.json", {"count": gone, "of": [gone, 1]})
    assert audit(url).ok  # numbers are counters, not IDs
    write_doc(store.fs, "batches/note.json", {"note": str(gone)})
    report = audit(url)
    assert [(f.kind, f.path) for f in report.violations] == [
        ("raw deleted ID in a document", "batches/note.json")
    ]


@pytest.mark.parametrize(
    "target, kind",
    [("weights.safetensors", "corrupt checkpoint"), ("ids.npz", "corrupt data")],
)
def test_corrupt_bytes_are_caught(forgotten, target, kind):
    url, _ = forgotten
    store = SisaStore(url)
    head = store.shard_head(0)
    folder = head.stages[1].dir if target == "weights.safetensors" else head.data.dir
    rel = f"{folder}/{target}"
    data = bytearray(store.fs.read_bytes(rel))
    data[len(data) // 2] ^= 1
    store.fs.write_bytes(rel, bytes(data))
    report = audit(url)
    assert [(f.kind, f.path) for f in report.violations] == [(kind, folder)]
    assert "does not match its manifest" in report.violations[0].detail


def test_temp_and_foreign_files_are_warnings(forgotten):
    url, _ = forgotten
    store = SisaStore(url)
    store.fs.write_bytes("notes.txt", b"mine")
    store.fs.write_bytes("journal/.tmp-0123-r000000009.json", b"{")
    report = audit(url)
    assert report.ok
    assert {(f.kind, f.path) for f in report.findings} == {
        ("foreign file", "notes.txt"),
        ("temp file", "journal/.tmp-0123-r000000009.json"),
    }
    assert kinds(report, "warning") == {"foreign file", "temp file"}
    assert Journal(store).seqs() == [1, 2, 3]


def test_a_forgotten_group_named_in_metadata_is_caught(tmp_path):
    source = write_digits_npz(tmp_path / "groups.npz", groups=True)
    url = str(tmp_path / "store")
    train(tiny_config(**{"data.source": str(source), "sisa.sharding": "group"}), url)
    forget(url, group="person-10")
    report = audit(url)
    assert report.findings == [] and report.chain.length == 1
    write_doc(SisaStore(url).fs, "batches/who.json", {"who": ["person-11", "person-10"]})
    report = audit(url)
    assert [(f.kind, f.path) for f in report.violations] == [
        ("raw deleted ID in a document", "batches/who.json")
    ]


def test_an_audit_records_its_verdict_for_metrics_and_the_dashboard(forgotten):
    url, _ = forgotten
    store = SisaStore(url)
    assert last_audit(store) is None
    before = sorted(store.fs.walk())
    audit(url, record=False)
    assert sorted(store.fs.walk()) == before  # asked not to: nothing written
    started = time.time()
    passed = audit(url)
    verdict = last_audit(store)
    assert verdict["ok"] is True and verdict["at"] >= started
    assert verdict["chain"] == {"ok": True, "length": 3, "head": passed.chain.head}
    assert verdict["violations"] == verdict["warnings"] == 0 and verdict["kinds"] == []
    forge(url, "receipts/r000000002.json", lambda body: body.update(reason="edited"))
    failed = audit(url)
    verdict = last_audit(store)
    assert not failed.ok and verdict["ok"] is False and verdict["violations"] >= 1
    assert "broken receipt chain" in verdict["kinds"] and verdict["chain"]["ok"] is False
    assert all("/" not in kind for kind in verdict["kinds"])
    for _ in range(3):
        audit(url)
    assert len(store.names("audits")) == 2  # the newest two are kept
