"""The deletion-service commands: forget, requests, plan, process, receipt, audit.

A request is journaled and compliant when ``forget`` returns (no retraining); ``plan`` says
what ``process`` will retrain and ``process`` does exactly that; receipts appear once a
request is purged. Bad input is a one-line ``sisa: error:`` with exit code 2 and leaves
every byte of the store (and of the folder around it) as it was.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import signal
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from sisa.deletion.lifecycle import request_status
from sisa.deletion.plan import pending_plan
from sisa.evidence.audit import audit
from sisa.evidence.verify import verify
from sisa.store.artifacts import SisaStore
from tests.conftest import lease_holder
from tests.orchestrator.test_cli import TINY_ARGS, _sisa, run
from tests.sisa.deletion.test_accept import layout

REQUEST_ID = re.compile(r"r\d{9}-[0-9a-f]{32}")
FORGET_KEYS = {
    "request_id",
    "removed",
    "removed_from_test",
    "already_deleted",
    "start_stages",
    "compliance_seconds",
    "rolled_back",
    "earlier_requests",
}
STATUS_KEYS = {
    "id",
    "seq",
    "state",
    "points",
    "test_points",
    "shards",
    "group",
    "reason",
    "accepted_at",
}
PLAN_KEYS = {
    "through",
    "requests",
    "seqs",
    "shards",
    "groups",
    "test_removed",
    "samples",
    "full_retrain_samples",
    "seconds_per_sample",
    "calibrated_from",
    "predicted_seconds",
    "paper",
    "planned_at",
    "stages",
    "seconds_per_stage",
    "seconds_per_job",
}
SHARD_PLAN_KEYS = {
    "shard",
    "generation",
    "start_stage",
    "removed",
    "remaining",
    "samples",
    "old_checkpoints",
    "old_dirs",
}
RECEIPT_KEYS = {
    "request",
    "seq",
    "reason",
    "ids",
    "group",
    "shards",
    "test_points",
    "accepted_at",
    "compliant_at",
    "retrained_at",
    "batch",
    "prev",
    "purged_at",
}
AUDIT_KEYS = {"ok", "chain", "findings", "scanned_files", "requests", "open_requests"}


def tree(root) -> dict[str, str]:
    """sha256 of every file below ``root`` (the store and whatever lies around it)."""
    root = Path(root)
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def cli(capsys, *argv):
    """Run the CLI in process: (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = run(*argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def cli_json(capsys, *argv):
    code, out, err = cli(capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def train_store(url, *extra):
    assert run("train", "--store", url, "--no-progress", *TINY_ARGS, *extra) == 0
    return str(url)


def pick(url, shard, slice_, skip=0):
    """An ID in this shard and (0-based) slice."""
    ids, shards, slices = layout(url)
    return ids[(shards == shard) & (slices == slice_)][skip].item()


def heads(url):
    """Shard -> (generation, state hash of every stage)."""
    store = SisaStore(url)
    k = store.config().sisa.shards
    return {
        shard: (h.generation, [s.state_hash for s in h.stages])
        for shard in range(k)
        for h in [store.shard_head(shard)]
    }


def request_state(url, request_id):
    return request_status(SisaStore(url), request_id).state


def write_string_npz(path, n=300, extra=()):
    """Digits with string IDs ``user-<i>``; ``extra`` replaces the first IDs."""
    from sklearn.datasets import load_digits

    d = load_digits()
    ids = [f"user-{i}" for i in range(n)]
    ids[: len(extra)] = list(extra)
    np.savez(path, X=(d.data[:n] / 16).astype(np.float32), y=d.target[:n], ids=np.array(ids))
    return path


# --------------------------------------------------------------------------------------
# Stores shared by the read-only tests (each test asserts it changed nothing).


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A folder with an integer store (one request purged), a string-ID store, a grouped
    store and an untrained path; bad input must leave every byte below it unchanged."""
    root = tmp_path_factory.mktemp("deletion-cli")
    ints = train_store(root / "ints")
    deleted = pick(ints, 0, 0)
    assert run("forget", "--store", ints, "--no-progress", "--wait", deleted) == 0
    strings = train_store(
        root / "strings", "--set", f"data.source={write_string_npz(root / 'strings.npz')}"
    )
    from sklearn.datasets import load_digits

    d = load_digits()
    n = 400
    np.savez(
        root / "groups.npz",
        X=(d.data[:n] / 16).astype(np.float32),
        y=d.target[:n],
        ids=np.arange(n),
        groups=np.array([f"{i // 4:04d}" for i in range(n)]),
    )
    grouped = train_store(
        root / "grouped",
        "--set",
        f"data.source={root / 'groups.npz'}",
        "--set",
        "sisa.sharding=group",
    )
    ids, _, _ = layout(ints)
    live = [i for i in ids.tolist() if i != deleted][:3]
    sids, _, _ = layout(strings)
    request = json.loads(
        _sisa("requests", "--store", ints, "--json").stdout
    )[0]["id"]  # fmt: skip
    return SimpleNamespace(
        root=root,
        ints=ints,
        strings=strings,
        grouped=grouped,
        untrained=str(root / "untrained"),
        deleted=deleted,
        live=live,
        string_live=sids.tolist()[:2],
        request=request,
    )


# (store, argv, files written into a scratch folder first, fragment of the error message)
BAD_INPUT = {
    "unknown ID": ("ints", ["forget", "999999"], {}, "unknown IDs"),
    "unknown among known": ("ints", ["forget", "{live0}", "999999"], {}, "999999"),
    "unknown string ID": ("strings", ["forget", "user-99999"], {}, "'user-99999'"),
    "no IDs": ("ints", ["forget"], {}, "give IDs"),
    "IDs file of blank lines": (
        "ints",
        ["forget", "--ids-file", "{dir}/blank.txt"],
        {"blank.txt": b"\n  \n\t\n\n"},
        "holds no IDs",
    ),
    "empty IDs file": (
        "ints",
        ["forget", "--ids-file", "{dir}/empty.txt"],
        {"empty.txt": b""},
        "holds no IDs",
    ),
    "unknown group": ("grouped", ["forget", "--group", "nobody"], {}, "unknown group"),
    "group on a store without groups": ("ints", ["forget", "--group", "0001"], {}, "no groups"),
    "IDs and a group": ("grouped", ["forget", "5", "--group", "0001"], {}, "not both"),
    "duplicate IDs": ("ints", ["forget", "{live0}", "{live1}", "{live0}"], {}, "duplicate IDs"),
    "duplicate as 007 and 7": ("ints", ["forget", "{live0}", "0{live0}"], {}, "duplicate IDs"),
    "duplicate across file and arguments": (
        "ints",
        ["forget", "{live0}", "--ids-file", "{dir}/dup.txt"],
        {"dup.txt": b"{live1}\n{live0}\n"},
        "duplicate IDs",
    ),
    "duplicate string IDs": ("strings", ["forget", "{s0}", "{s0}"], {}, "duplicate IDs"),
    "IDs file not UTF-8": (
        "ints",
        ["forget", "--ids-file", "{dir}/latin1.txt"],
        {"latin1.txt": b"{live0}\n\xff\xfe caf\xe9\n"},
        "not UTF-8",
    ),
    "IDs file with a NUL byte": (
        "ints",
        ["forget", "--ids-file", "{dir}/nul.txt"],
        {"nul.txt": b"{live0}\n{live1}\x00\n"},
        "malformed ID",
    ),
    "string IDs file with a NUL byte": (
        "strings",
        ["forget", "--ids-file", "{dir}/nul.txt"],
        {"nul.txt": b"{s0}\x00\n"},
        "malformed ID",
    ),
    "non-integer line": (
        "ints",
        ["forget", "--ids-file", "{dir}/words.txt"],
        {"words.txt": b"{live0}\nalice\n"},
        "not a 64-bit integer",
    ),
    "float line": (
        "ints",
        ["forget", "--ids-file", "{dir}/float.txt"],
        {"float.txt": b"{live0}.0\n"},
        "not a 64-bit integer",
    ),
    "missing IDs file": ("ints", ["forget", "--ids-file", "{dir}/nope.txt"], {}, "no such"),
    # Unicode digits are digits to a regex's \d, and int() reads them: ASCII only
    "fullwidth digits": ("ints", ["forget", "\uff12\uff10"], {}, "not a 64-bit integer"),
    "Arabic-Indic digits": ("ints", ["forget", "\u0661\u0663"], {}, "not a 64-bit integer"),
    "trailing newline": ("ints", ["forget", "21\n"], {}, "not a 64-bit integer"),
    "Unicode digits in a file": (
        "ints",
        ["forget", "--ids-file", "{dir}/digits.txt"],
        {"digits.txt": "{live0}\n\u0661\u0663\n".encode()},
        "not a 64-bit integer",
    ),
    "path-like ../x on integers": ("ints", ["forget", "../x"], {}, "not a 64-bit integer"),
    "path-like a/b on integers": ("ints", ["forget", "a/b"], {}, "not a 64-bit integer"),
    "path-like ../x on strings": ("strings", ["forget", "../x"], {}, "unknown IDs"),
    "path-like a/b on strings": ("strings", ["forget", "a/b"], {}, "unknown IDs"),
    "path-like in a file on strings": (
        "strings",
        ["forget", "--ids-file", "{dir}/paths.txt"],
        {"paths.txt": b"../../etc/passwd\n/abs/path\n"},
        "unknown IDs",
    ),
    "untrained store": ("untrained", ["forget", "1"], {}, "not a trained store"),
    "untrained store, string ID": ("untrained", ["forget", "a/b"], {}, "not a trained store"),
    "plan on untrained": ("untrained", ["plan"], {}, "not a trained store"),
    "process on untrained": ("untrained", ["process"], {}, "not a trained store"),
    "requests on untrained": ("untrained", ["requests"], {}, "not a trained store"),
    "audit on untrained": ("untrained", ["audit"], {}, "not a trained store"),
    "reason names the ID": (
        "ints",
        ["forget", "{live0}", "--reason", "customer asked to erase {live0} today"],
        {},
        "reason names an ID",
    ),
    "reason names the ID after '='": (
        "ints",
        ["forget", "{live0}", "{live1}", "--reason", "ids={live1}"],
        {},
        "reason names an ID",
    ),
    "reason names a string ID": (
        "strings",
        ["forget", "{s0}", "--reason", "erase {s0} please"],
        {},
        "reason names an ID",
    ),
    "reason names the group": (
        "grouped",
        ["forget", "--group", "0003", "--reason", "group 0003 left"],
        {},
        "reason names an ID",
    ),
    "reason on two lines": (
        "ints",
        ["forget", "{live0}", "--reason", "line one\nline two"],
        {},
        "one line",
    ),
    "receipt: path-like request ID": (
        "ints",
        ["receipt", "../../etc/passwd"],
        {},
        "malformed request ID",
    ),
    "receipt: malformed request ID": ("ints", ["receipt", "r1"], {}, "malformed request ID"),
    "receipt: unknown request": ("ints", ["receipt", "r000000099-deadbeef"], {}, "unknown request"),
    "receipt: right number, wrong token": (
        "ints",
        ["receipt", "{wrong_token}"],
        {},
        "unknown request",
    ),
    "requests: path-like request ID": (
        "ints",
        ["requests", "../../etc/passwd"],
        {},
        "malformed request ID",
    ),
    "requests: journal file name": (
        "ints",
        ["requests", "r000000001.json"],
        {},
        "malformed request ID",
    ),
    "requests: unknown request": (
        "ints",
        ["requests", "r000000002-0123abcd"],
        {},
        "unknown request",
    ),
    "requests: right number, wrong token": (
        "ints",
        ["requests", "{wrong_token}"],
        {},
        "unknown request",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUT), ids=list(BAD_INPUT))
def test_bad_input_is_one_line_and_changes_nothing(base, tmp_path, capsys, case):
    kind, argv, files, message = BAD_INPUT[case]
    token = base.request.split("-")[1]
    wrong = base.request.split("-")[0] + "-" + ("0" * 8 if token != "0" * 8 else "1" * 8)
    values = {
        "dir": str(tmp_path),
        "live0": str(base.live[0]),
        "live1": str(base.live[1]),
        "s0": base.string_live[0],
        "wrong_token": wrong,
    }
    for name, raw in files.items():
        for key, value in values.items():
            raw = raw.replace(f"{{{key}}}".encode(), value.encode())
        (tmp_path / name).write_bytes(raw)
    argv = [a.format(**values) for a in argv]
    before = tree(base.root)
    code, out, err = cli(capsys, argv[0], "--store", getattr(base, kind), *argv[1:])
    assert code == 2, (out, err)
    assert err.startswith("sisa: error:") and err.count("\n") == 1, err
    assert message in err, err
    assert "Traceback" not in err and out == ""  # no request ID for a refused request
    assert tree(base.root) == before
    assert not Path(base.untrained).exists()


REASONS = {
    "spaces": "erase {s0} please",
    "last word": "erase {s0}",
    "parentheses": "erase ({s0})",
    "full stop": "please erase {s0}.",
    "after a colon": "ticket:{s0}",
    "quoted": 'erase "{s0}"',
    "comma list": "{s1},{s0}",
}


@pytest.mark.parametrize("reason", list(REASONS.values()), ids=list(REASONS))
def test_a_reason_naming_a_string_id_is_refused(base, tmp_path, capsys, reason):
    """Receipts keep the reason for good, so it must not name a point being forgotten,
    whatever punctuation surrounds it ('(user-3)', 'user-3.', 'ticket:user-3')."""
    url = str(tmp_path / "strings")
    shutil.copytree(base.strings, url)  # this test may (wrongly) write a request
    s0, s1 = base.string_live
    before = tree(url)
    code, out, err = cli(
        capsys,
        "forget",
        "--store",
        url,
        "--no-progress",
        s0,
        "--reason",
        reason.format(s0=s0, s1=s1),
    )
    assert (code, out) == (2, ""), out
    assert err.startswith("sisa: error:") and "reason names an ID" in err
    assert tree(url) == before


def test_forgetting_a_deleted_id_again_is_an_idempotent_no_op(base, capsys):
    before = tree(base.root)
    code, out, err = cli(capsys, "forget", "--store", base.ints, "--no-progress", base.deleted)
    assert code == 0, err
    assert "already deleted" in out and str(base.deleted) in out
    assert REQUEST_ID.findall(out) == [base.request]  # the request that did it; no new one
    body = cli_json(capsys, "forget", "--store", base.ints, "--no-progress", base.deleted)
    assert body["request_id"] is None and body["already_deleted"] == [base.deleted]
    code, out, _ = cli(capsys, "forget", "--store", base.ints, "--wait", base.deleted)
    assert code == 0 and "already deleted" in out
    assert tree(base.root) == before


def test_read_only_commands_change_nothing(base, capsys):
    before = tree(base.root)
    for url in (base.ints, base.strings, base.grouped):
        for argv in (["plan"], ["requests"], ["audit", "--no-record"], ["status"]):
            assert cli(capsys, *argv, "--store", url)[0] == 0
            assert cli(capsys, *argv, "--store", url, "--json")[0] == 0
    assert cli(capsys, "receipt", "--store", base.ints, base.request)[0] == 0
    assert cli(capsys, "requests", "--store", base.ints, base.request)[0] == 0
    assert cli(capsys, "process", "--store", base.ints, "--no-progress")[1] == "nothing pending\n"
    assert tree(base.root) == before


# --------------------------------------------------------------------------------------
# The lifecycle on fresh stores.


def test_forget_plan_process_receipt_audit(tmp_path, capsys):
    url = train_store(tmp_path / "s")
    a, b, c = pick(url, 0, 2), pick(url, 1, 0), pick(url, 0, 1)
    untouched = heads(url)

    # forget: the request ID first, compliant at once, nothing retrained
    code, out, err = cli(capsys, "forget", "--store", url, "--no-progress", a, b)
    assert code == 0, err
    first = out.splitlines()[0]
    assert REQUEST_ID.fullmatch(first), out
    assert "pending" in out and "compliant" in out
    assert heads(url) == untouched
    body = cli_json(capsys, "forget", "--store", url, "--no-progress", c)
    assert set(body) == FORGET_KEYS
    second = body["request_id"]
    assert REQUEST_ID.fullmatch(second) and second.startswith("r000000002-")
    assert body["removed"] == [c] and body["already_deleted"] == []
    assert body["start_stages"] == {"0": 2} and 0 in body["rolled_back"]
    assert heads(url) == untouched
    # an ID in an open request is a no-op too
    again = cli_json(capsys, "forget", "--store", url, "--no-progress", a)
    assert again["request_id"] is None and again["already_deleted"] == [a]

    statuses = cli_json(capsys, "requests", "--store", url)
    assert [s["id"] for s in statuses] == [first, second]
    assert all(set(s) == STATUS_KEYS and s["state"] == "compliant" for s in statuses)
    assert statuses[0]["points"] == 2 and statuses[0]["shards"] == [0, 1]
    one = cli_json(capsys, "requests", "--store", url, first)
    assert one["state"] == "compliant" and "receipt" not in one
    code, out, _ = cli(capsys, "requests", "--store", url, first)
    assert out.strip() == f"{first}: compliant"

    # no receipt before processing: an error naming the state
    code, out, err = cli(capsys, "receipt", "--store", url, first)
    assert code == 2 and err.startswith("sisa: error:") and "compliant" in err

    # plan: what process will do
    plan = cli_json(capsys, "plan", "--store", url)
    assert set(plan) == PLAN_KEYS
    assert plan["requests"] == [first, second] and plan["seqs"] == [1, 2] and plan["through"] == 2
    assert all(set(s) == SHARD_PLAN_KEYS for s in plan["shards"])
    starts = {s["shard"]: s["start_stage"] for s in plan["shards"]}
    assert starts == {0: 2, 1: 1}
    assert plan["samples"] == sum(s["samples"] for s in plan["shards"]) > 0
    assert plan["samples"] < plan["full_retrain_samples"]
    code, out, _ = cli(capsys, "plan", "--store", url)
    assert "shard 0: stages 2..3" in out and "shard 1: stages 1..3" in out
    assert heads(url) == untouched

    # process: does what the plan said, and nothing else
    reports = cli_json(capsys, "process", "--store", url, "--no-progress")
    assert len(reports) == 1
    report = reports[0]
    assert set(report) == {"plan", "actual", "receipts", "purged"}
    assert set(report["actual"]) == {"samples", "compute_seconds", "seconds", "resumed"}
    ignore = {"planned_at", "predicted_seconds", "calibrated_from"}
    ignore |= {"seconds_per_sample", "seconds_per_stage", "seconds_per_job"}
    assert {k: v for k, v in report["plan"].items() if k not in ignore} == {
        k: v for k, v in plan.items() if k not in ignore
    }
    assert report["actual"]["samples"] == plan["samples"]  # predicted == trained
    assert report["actual"]["resumed"] is False
    assert report["receipts"] == [first, second] and report["purged"]
    now = heads(url)
    assert now[2] == untouched[2]  # untouched shard: same generation, same checkpoints
    for shard, start in starts.items():
        generation, hashes = now[shard]
        old_generation, old_hashes = untouched[shard]
        assert generation == old_generation + 1  # retrained once
        assert hashes[: start - 1] == old_hashes[: start - 1]  # stages before start reused
        assert all(
            h != o for h, o in zip(hashes[start - 1 :], old_hashes[start - 1 :], strict=True)
        )

    # receipts
    receipt = cli_json(capsys, "receipt", "--store", url, first)
    assert set(receipt) >= RECEIPT_KEYS
    assert receipt["request"] == first and receipt["seq"] == 1 and receipt["prev"] is None
    assert receipt["batch"]["through"] == 2
    assert receipt["batch"]["planned"]["shards"] == {"0": 2, "1": 1}
    assert receipt["batch"]["actual"]["samples"] == plan["samples"]
    assert {s["shard"]: s["stages"] for s in receipt["shards"]} == {0: [2, 3], 1: [1, 2, 3]}
    # the receipt names IDs by salted hash only (a hash may contain the ID's digits)
    assert receipt["ids"] and all(h not in (a, str(a)) for h in receipt["ids"])
    code, out, _ = cli(capsys, "receipt", "--store", url, second)
    assert code == 0 and out.startswith(f"receipt of {second} (request 2): purged")
    shown = cli_json(capsys, "requests", "--store", url, second)
    assert shown["state"] == "purged" and shown["receipt"]["request"] == second

    # nothing left
    assert cli(capsys, "process", "--store", url, "--no-progress")[1] == "nothing pending\n"
    assert cli_json(capsys, "process", "--store", url, "--no-progress") == []
    assert cli(capsys, "plan", "--store", url)[1] == "nothing pending\n"
    assert cli_json(capsys, "plan", "--store", url) is None

    # forget --wait ends purged
    d = pick(url, 2, 1)
    code, out, err = cli(capsys, "forget", "--store", url, "--no-progress", "--wait", d)
    assert code == 0, err
    third = out.splitlines()[0]
    assert REQUEST_ID.fullmatch(third) and f"receipt of {third}" in out and "purged" in out
    assert cli_json(capsys, "requests", "--store", url, third)["state"] == "purged"
    waited = cli_json(capsys, "forget", "--store", url, "--no-progress", "--wait", pick(url, 2, 0))
    assert waited["status"]["state"] == "purged" and waited["status"]["receipt"]

    # --state filters
    purged = cli_json(capsys, "requests", "--store", url, "--state", "purged")
    assert [s["state"] for s in purged] == ["purged"] * 4
    assert cli_json(capsys, "requests", "--store", url, "--state", "compliant") == []
    assert cli(capsys, "requests", "--store", url, "--state", "accepted")[1] == "no requests\n"
    cli(capsys, "forget", "--store", url, "--no-progress", pick(url, 2, 2))
    pending = cli_json(capsys, "requests", "--store", url, "--state", "compliant")
    assert [s["seq"] for s in pending] == [5]
    code, out, _ = cli(capsys, "requests", "--store", url, "--state", "purged")
    assert len(out.splitlines()) == 4 and all(" purged " in line for line in out.splitlines())

    # audit: a clean store passes, with an anchored head too
    assert cli(capsys, "process", "--store", url, "--no-progress")[0] == 0
    audit = cli_json(capsys, "audit", "--store", url)
    assert set(audit) == AUDIT_KEYS
    assert audit["ok"] is True and audit["chain"]["ok"] and audit["chain"]["length"] == 5
    assert audit["requests"] == 5 and audit["open_requests"] == 0
    assert not [f for f in audit["findings"] if f["severity"] == "violation"]
    head = audit["chain"]["head"]
    code, out, _ = cli(capsys, "audit", "--store", url, "--expect-head", head)
    assert code == 0 and "AUDIT PASSED" in out
    code, out, _ = cli(capsys, "audit", "--store", url, "--expect-head", "0" * 64)
    assert code == 1 and "AUDIT FAILED" in out
    assert verify(url).identical


def test_path_like_string_ids_are_forgotten_inside_the_store(tmp_path, capsys):
    """String IDs that look like paths are data, never file names."""
    weird = ["../../outside", "a/b", "..", "/etc/passwd"]
    source = write_string_npz(tmp_path / "paths.npz", extra=weird)
    url = train_store(tmp_path / "s", "--set", f"data.source={source}")
    present = set(layout(url)[0].tolist())
    ids = [w for w in weird if w in present]  # some may have fallen into the test split
    assert len(ids) >= 2
    around = {p for p in tree(tmp_path) if not p.startswith("s/")}
    code, out, err = cli(capsys, "forget", "--store", url, "--no-progress", "--wait", *ids)
    assert code == 0, err
    assert {p for p in tree(tmp_path) if not p.startswith("s/")} == around
    assert not (tmp_path.parent / "outside").exists()
    assert not set(ids) & set(layout(url)[0].tolist())
    audit = cli_json(capsys, "audit", "--store", url)
    assert audit["ok"], audit["findings"]
    assert verify(url).identical


@pytest.mark.slow  # real processes
def test_forget_in_a_real_process(tmp_path):
    """The request ID is the first line, printed before any retraining; a process killed
    while holding the processing lease does not block the next one."""
    url = train_store(tmp_path / "s")
    a, b = pick(url, 0, 1), pick(url, 1, 2)
    untouched = heads(url)
    done = _sisa("forget", "--store", url, "--no-progress", a)
    assert done.returncode == 0, done.stderr
    first = done.stdout.splitlines()[0]
    assert REQUEST_ID.fullmatch(first)
    assert heads(url) == untouched
    assert request_state(url, first) == "compliant"

    # --wait, killed once its batch plan is written: the ID was already out
    crashed = _sisa(
        "forget", "--store", url, "--no-progress", "--wait", b, env={"SISA_CRASH_AT": "after-plan"}
    )
    assert crashed.returncode == -signal.SIGKILL
    second = crashed.stdout.splitlines()[0]
    assert REQUEST_ID.fullmatch(second) and second.startswith("r000000002-")
    assert heads(url) == untouched

    # process, killed holding the lease; the next process breaks the lease at once
    crashed = _sisa(
        "process", "--store", url, "--no-progress", env={"SISA_CRASH_AT": "process-locked"}
    )
    assert crashed.returncode == -signal.SIGKILL
    assert lease_holder(url) is not None
    unfinished = pending_plan(SisaStore(url))  # the plan the killed forget committed
    assert unfinished.requests == [first, second]
    resumed = _sisa("process", "--store", url, "--no-progress", "--json")
    assert resumed.returncode == 0, resumed.stderr
    reports = json.loads(resumed.stdout)
    assert len(reports) == 1 and reports[0]["actual"]["resumed"] is True
    assert reports[0]["receipts"] == [first, second]
    assert [request_state(url, r) for r in (first, second)] == ["purged", "purged"]
    assert lease_holder(url) is None
    assert audit(url).ok
    assert verify(url).identical
