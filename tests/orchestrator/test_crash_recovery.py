"""Deletion processing survives real process kills at every crash point.

A subprocess accepts two deletion requests (touching three shards, different slices, and
the test set) and processes them; ``SISA_CRASH_AT`` SIGKILLs it at one named step: inside
``accept`` (before/after the journal write, after compliance) or inside ``process`` (after
the lease, the plan, a data commit, one optimizer step into a stage, a stage commit, around
a head commit, in the middle of a sweep, after the retrain, serving switch, tombstones, a
receipt). A second subprocess restarts: it re-submits only what was not acknowledged and
runs ``process``. Proven:

- the end state is bitwise identical to an uninterrupted run (heads, every artifact's
  bytes, tombstones, journal, batch plans, receipts, serving state, and the set of files);
- every acknowledged request has a receipt, and re-submitting a journaled request is an
  idempotent no-op reported as already deleted;
- no data artifact anywhere still holds a deleted ID;
- two kills in a row resume as well, and a request accepted after a crash waits for the
  next batch instead of joining the resumed one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from sisa.deletion import compliance, receipts
from sisa.deletion.accept import accept
from sisa.deletion.batch import process
from sisa.faults import ENV
from sisa.store.artifacts import SisaStore
from sisa.store.journal import Journal
from sisa.store.layout import TEST_PART, TEST_PREFIX
from sisa.training.train import train
from storage import decode_arrays, read_doc
from tests.conftest import tiny_config, write_digits_npz
from tests.sisa.deletion.test_accept import layout

ROOT = Path(__file__).resolve().parents[2]

ACCEPT_POINTS = ["before-journal", "after-journal", "after-compliance"]
PROCESS_POINTS = [
    "process-locked",
    "after-plan",
    "after-data-commit",
    "mid-stage",
    "after-stage-commit",
    "before-head-commit",
    "after-head-commit",
    "mid-sweep",
    "after-retrain",
    "after-serving",
    "after-tombstones",
    "after-receipt",
]

# Runs ops = [["accept", [ids...]] | ["process"], ...] against a store; prints one JSON line
# per op, flushed, right after it returns (a printed request ID is an acknowledgement).
DRIVER = """
import json, sys
from sisa.deletion.batch import process
from sisa.deletion.accept import accept

url, ops = sys.argv[1], json.loads(sys.argv[2])
for op in ops:
    if op[0] == "accept":
        a = accept(url, op[1])
        out = {"op": "accept", "request_id": a.request_id, "already": a.already_deleted}
    else:
        r = process(url)
        out = {"op": "process", "seqs": r.plan.seqs if r else None,
               "resumed": r.resumed if r else None,
               "receipts": [x["seq"] for x in r.receipts] if r else []}
    print(json.dumps(out), flush=True)
"""


def drive(url, ops, crash_at=None):
    """Run DRIVER in a fresh interpreter; (return code, printed records)."""
    env = {k: v for k, v in os.environ.items() if k != ENV}
    if crash_at is not None:
        env[ENV] = crash_at
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, str(url), json.dumps(ops)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=ROOT,
    )
    records = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    if crash_at is None:
        assert done.returncode == 0, done.stderr
    return done.returncode, records


def acknowledged(records):
    return [r["request_id"] for r in records if r["op"] == "accept" and r["request_id"]]


# -- fixtures: one trained store per module, copied per test ------------------------------


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("crash")
    source = write_digits_npz(root / "digits.npz", drop=set(range(1600, 1797 + 1000)))
    url = root / "base"  # 600 digits, 3 shards x 3 slices, a 16-unit MLP
    train(tiny_config(**{"data.source": str(source), "sisa.epochs": 2}), str(url))
    return url


@pytest.fixture(scope="module")
def requests(base):
    """Three requests: R1 and R2 make the crashed batch, R3 arrives later."""
    ids, shards, slices = layout(str(base))

    def point(shard, slice_, nth=0):
        return int(ids[(shards == shard) & (slices == slice_)][nth])

    store = SisaStore(str(base))
    test_ids = store.read_data(store.latest_head(TEST_PREFIX).data, features=False)["ids"]
    r1 = [point(0, 1), point(1, 2), int(test_ids[0])]
    r2 = [point(2, 0), point(0, 2)]
    r3 = [point(1, 1)]
    return r1, r2, r3


def copy_of(base, tmp_path, name):
    url = tmp_path / name
    shutil.copytree(base, url)
    return url


@pytest.fixture(scope="module")
def reference(base, requests, tmp_path_factory):
    """End state of the uninterrupted run: accept R1, accept R2, process."""
    r1, r2, _ = requests
    url = copy_of(base, tmp_path_factory.mktemp("ref"), "ref")
    for ids in (r1, r2):
        assert accept(str(url), ids).request_id is not None
    report = process(str(url))
    assert report is not None and report.plan.seqs == [1, 2] and not report.resumed
    assert process(str(url)) is None
    state = end_state(url)
    # the scenario is not trivial: three shards retrained, the test set cut, two receipts
    assert [state["heads"][f"shards/{k:05d}"]["generation"] for k in range(3)] == [1, 1, 1]
    assert state["heads"][TEST_PREFIX]["generation"] == 1
    assert len(state["receipts"]) == 2
    return state


# -- the end state, without what legitimately differs (times, random request IDs) ---------

_HEAD_DOC = re.compile(r"^(.*)/g(\d{6,})\.json$")
# a plan's calibration (seconds per sample, and its source) is measured timing, not state
_PLAN_KEYS = ("through", "seqs", "shards", "test_removed", "samples", "full_retrain_samples")
_RECEIPT_DROP = {"request", "accepted_at", "compliant_at", "retrained_at", "purged_at", "prev"}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def end_state(url):
    store = SisaStore(str(url))
    fs = store.fs
    config = store.config()
    journal = Journal(store)
    # the lease's records say who held the store, not what it holds
    files = sorted(rel for rel in fs.walk("") if not rel.startswith(("serving/", "locks/")))
    heads, payloads = {}, {}
    for rel in files:
        if not rel.startswith(("shards/", "test/")):
            continue
        if _HEAD_DOC.match(rel):
            continue
        payloads[rel] = sha(fs.read_bytes(rel))  # data, weights, state, manifests
    for prefix in [f"shards/{k:05d}" for k in range(config.sisa.shards)] + [TEST_PREFIX]:
        head = store.latest_head(prefix)
        # when it was committed, and under which lease token: who wrote it, not what
        body = {k: v for k, v in head.body.items() if k not in ("committed_at", "fence")}
        heads[prefix] = body  # generation, data ref (ids hash via manifest), stage refs
        for ref in [head.data] + head.stages:  # everything a head references is there
            assert f"{ref.dir}/MANIFEST.json" in payloads
    for prefix, body in heads.items():
        if prefix == TEST_PREFIX:
            continue
        for ref in body["stages"]:
            weights = payloads[f"{ref['dir']}/weights.safetensors"]
            assert weights == ref["weights_sha256"]
    tombs = store.tombstones()
    plans = {}
    for name in fs.listdir("batches"):
        if not name.startswith("b"):  # the batch log, whose copies these are
            continue
        body = read_doc(fs, f"batches/{name}")
        plans[name] = {k: body[k] for k in _PLAN_KEYS}
    serving_state = compliance.current(store)
    receipt_bodies = []
    for seq in journal.receipted():
        body = receipts.read(store, seq)
        kept = {k: v for k, v in body.items() if k not in _RECEIPT_DROP | {"batch"}}
        batch = body["batch"]
        kept["batch"] = {
            "through": batch["through"],
            "requests": batch["requests"],
            "planned": {k: batch["planned"][k] for k in ("shards", "samples")},
        }
        receipt_bodies.append(kept)
    chain = receipts.verify_chain(store, journal.receipted())
    assert chain.ok, chain.problems
    return {
        "files": files,
        "payloads": payloads,
        "heads": heads,
        "tombstones": {
            "generation": tombs.generation,
            "entries": sorted((e["hash"], e["part"], e["request"]) for e in tombs.body["entries"]),
            "groups": tombs.body["groups"],
        },
        "journal": [
            {"seq": r.seq, "entries": r.entries, "group": r.group, "reason": r.reason}
            for r in journal.all_requests()
        ],
        "open": [r.seq for r in journal.open_requests()],
        "plans": plans,
        "receipts": receipt_bodies,
        "serving": {
            "through": serving_state.through,
            "shards": {
                k: (s.generation, s.stage, s.ref.dir if s.ref else None, s.pending)
                for k, s in serving_state.shards.items()
            },
        },
    }


def weights_state(state):
    """Per shard, per stage: the checkpoint hashes only (generations may differ)."""
    return {
        prefix: [(s["stage"], s["state_hash"], s["weights_sha256"], s["ids_hash"]) for s in body]
        for prefix, head in state["heads"].items()
        if (body := head.get("stages")) is not None
    } | {TEST_PREFIX: state["heads"][TEST_PREFIX]["data"]["manifest"]}


def stored_ids(url):
    """Every ID held by any data artifact anywhere in the store."""
    store = SisaStore(str(url))
    seen = set()
    for rel in store.fs.walk(""):
        if rel.endswith("ids.npz"):
            seen.update(decode_arrays(store.fs.read_bytes(rel))["ids"].tolist())
    return seen


def assert_recovered(url, reference, acked, deleted):
    """Bitwise the uninterrupted end state; nothing acknowledged lost; nothing left."""
    state = end_state(url)
    assert state == reference
    assert state["open"] == []
    final = SisaStore(str(url)).config().sisa.slices
    for _, stage, ref_dir, pending in state["serving"]["shards"].values():
        assert stage == final and ref_dir is not None and pending == []  # nothing held back
    store = SisaStore(str(url))
    journal = Journal(store)
    for request_id in acked:
        assert receipts.exists(store, journal.find(request_id).seq), request_id
    assert not stored_ids(url) & set(deleted)


def assert_compliant(url):
    """Right after a kill, every journaled request is already out of the served models."""
    store = SisaStore(str(url))
    state = compliance.current(store)
    for request in Journal(store).open_requests():
        for shard in request.parts - {TEST_PART}:
            head = store.shard_head(shard)
            if int(head.body.get("journal_seq", 0)) < request.seq:
                assert state.shards[shard].stage <= min(request.slices(shard))
                assert request.seq in state.shards[shard].pending


# -- the tests ----------------------------------------------------------------------------


def test_every_crash_point_in_the_product_is_exercised():
    named = set()
    for path in (ROOT / "sisa").glob("*.py"):
        named.update(re.findall(r'crash_point\("([^"]+)"\)', path.read_text()))
    covered = set(ACCEPT_POINTS + PROCESS_POINTS)
    assert named - covered == set(), "crash points without a kill test"
    assert len(covered) >= 10


@pytest.mark.parametrize("point", ACCEPT_POINTS + PROCESS_POINTS)
def test_a_kill_at_any_point_recovers_to_the_uninterrupted_state(
    base, requests, reference, tmp_path, point
):
    r1, r2, _ = requests
    url = copy_of(base, tmp_path, "s")
    code, records = drive(url, [["accept", r1], ["accept", r2], ["process"]], crash_at=point)
    assert code == -signal.SIGKILL, f"the driver was not killed at {point}"
    acked = acknowledged(records)
    assert not any(r["op"] == "process" for r in records)
    assert_compliant(url)

    journal = Journal(SisaStore(str(url)))
    journaled = {r.seq for r in journal.all_requests()}
    assert journal.receipted() == ([1] if point == "after-receipt" else [])
    if point in ACCEPT_POINTS:  # killed inside the first accept: nothing acknowledged
        assert acked == []
        assert journaled == (set() if point == "before-journal" else {1})
        retry = [["accept", r1], ["accept", r2]]  # the client retries both
    else:
        assert len(acked) == 2 and journaled == {1, 2}
        retry = []
    code, again = drive(url, [*retry, ["process"]])
    if point in ACCEPT_POINTS:
        first, second, processed = again
        if point == "before-journal":  # never journaled: accepted now
            assert first["request_id"] is not None and first["already"] == []
        else:  # journaled but unacknowledged: the retry is a no-op, reported as such
            assert first["request_id"] is None and sorted(first["already"]) == sorted(r1)
        assert second["request_id"] is not None and second["already"] == []
        acked += acknowledged([first, second])
    else:
        (processed,) = again
    assert processed["seqs"] == [1, 2]
    assert processed["resumed"] == (point in PROCESS_POINTS[1:])
    assert_recovered(url, reference, acked, r1 + r2)


@pytest.mark.parametrize("first,second", [("after-stage-commit", "mid-sweep")])
def test_two_kills_in_a_row_still_recover(base, requests, reference, tmp_path, first, second):
    r1, r2, _ = requests
    url = copy_of(base, tmp_path, "s")
    code, records = drive(url, [["accept", r1], ["accept", r2], ["process"]], crash_at=first)
    assert code == -signal.SIGKILL
    acked = acknowledged(records)
    assert len(acked) == 2
    code, records = drive(url, [["process"]], crash_at=second)
    assert code == -signal.SIGKILL and records == []
    assert_compliant(url)
    _, (processed,) = drive(url, [["process"]])
    assert processed["seqs"] == [1, 2] and processed["resumed"]
    assert_recovered(url, reference, acked, r1 + r2)


@pytest.fixture(scope="module")
def later_references(base, requests, tmp_path_factory):
    """R1+R2 in one batch then R3 in the next; and all three in a single batch."""
    r1, r2, r3 = requests
    root = tmp_path_factory.mktemp("later")
    two = copy_of(base, root, "two-batches")
    accept(str(two), r1)
    accept(str(two), r2)
    assert process(str(two)).plan.seqs == [1, 2]
    accept(str(two), r3)
    assert process(str(two)).plan.seqs == [3]
    one = copy_of(base, root, "one-batch")
    for ids in (r1, r2, r3):
        accept(str(one), ids)
    assert process(str(one)).plan.seqs == [1, 2, 3]
    return end_state(two), end_state(one)


@pytest.mark.parametrize("point", ["after-stage-commit", "after-receipt"])
def test_a_request_accepted_after_a_kill_waits_for_the_next_batch(
    base, requests, later_references, tmp_path, point
):
    r1, r2, r3 = requests
    two_batches, one_batch = later_references
    url = copy_of(base, tmp_path, "s")
    code, records = drive(url, [["accept", r1], ["accept", r2], ["process"]], crash_at=point)
    assert code == -signal.SIGKILL
    acked = acknowledged(records)
    _, (late, resumed, following, idle) = drive(
        url, [["accept", r3], ["process"], ["process"], ["process"]]
    )
    acked += acknowledged([late])
    assert late["request_id"] is not None
    assert resumed["resumed"] and resumed["seqs"] == [1, 2]  # the crashed batch, exactly
    assert 3 not in resumed["receipts"]
    assert following["seqs"] == [3] and not following["resumed"] and following["receipts"] == [3]
    assert idle["seqs"] is None
    state = end_state(url)
    assert weights_state(state) == weights_state(one_batch)  # exact, however batched
    assert_recovered(url, two_batches, acked, r1 + r2 + r3)
