"""A damaged journal entry (truncated, or failing its checksum) never stops the journal:
the readable requests are listed and processed, the damaged one is named by ``status``,
``requests``, ``process`` and ``audit`` until a journaled void closes it, which is allowed
only once its request was resubmitted (or was receipted before the damage)."""

from __future__ import annotations

import json

import pytest

from orchestrator.cli import main
from sisa.deletion.accept import accept
from sisa.deletion.batch import process
from sisa.evidence.audit import audit
from sisa.evidence.status import status
from sisa.store.artifacts import SisaStore
from sisa.store.journal import Journal
from sisa.store.layout import request_path
from tests.sisa.deletion.test_accept import layout


def truncate(url, seq, keep=50):
    path = f"{url}/{request_path(seq)}"
    with open(path, "rb") as f:
        raw = f.read()
    with open(path, "wb") as f:
        f.write(raw[:keep])


def live_ids(url):
    return set(layout(url)[0].tolist())


def cli(capsys, *argv):
    capsys.readouterr()
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_a_damaged_open_entry_is_named_everywhere_until_resubmitted_and_voided(url, capsys):
    a, b, c = sorted(live_ids(url))[:3]
    for point in (a, b, c):
        accept(url, [point])
    truncate(url, 2)
    store = SisaStore(url)
    assert Journal(store).damaged() == [2]
    info = status(url)
    assert info["pending_requests"] == [1, 3]
    assert info["damaged_journal_entries"] == ["journal/r000000002.json"]

    code, out, _ = cli(capsys, "status", "--store", url)
    assert code == 0 and "DAMAGED journal entry journal/r000000002.json" in out
    code, out, _ = cli(capsys, "requests", "--store", url)
    assert code == 0 and out.count("r00000000") == 3  # two readable requests, one flagged
    assert "journal/r000000002.json  DAMAGED" in out
    code, out, _ = cli(capsys, "requests", "--store", url, "--json")
    listed = json.loads(out)
    assert [r["state"] for r in listed][-1] == "damaged" and len(listed) == 3

    code, out, err = cli(capsys, "process", "--store", url, "--no-progress")
    assert code == 0 and "damaged journal entry journal/r000000002.json" in err
    assert a not in live_ids(url) and c not in live_ids(url) and b in live_ids(url)
    assert Journal(store).receipted() == [1, 3]
    report = audit(url)
    assert not report.ok
    assert [f.path for f in report.violations] == ["journal/r000000002.json"]
    assert report.violations[0].kind == "damaged journal entry"

    with pytest.raises(ValueError, match="never processed"):
        Journal(store).void(2, None)  # its points are unknowable: resubmit first
    code, _, err = cli(capsys, "void", "--store", url, "2")
    assert code == 2 and "resubmit it" in err
    first = Journal(store).read(1).id
    with pytest.raises(ValueError, match="not journaled after"):
        Journal(store).void(2, first)
    again = accept(url, [b]).request_id  # the operator resubmits the request
    code, out, _ = cli(capsys, "void", "--store", url, "2", "--resubmitted-as", again)
    assert code == 0 and "voids damaged entry 2" in out
    assert Journal(store).damaged() == []
    assert status(url)["damaged_journal_entries"] == []
    with pytest.raises(ValueError, match="not a damaged journal entry"):
        Journal(store).void(2, again)  # voided once
    process(url)
    assert b not in live_ids(url)
    report = audit(url)
    assert report.ok, report.violations
    assert [f.kind for f in report.findings if f.path == "journal/r000000002.json"] == [
        "voided journal entry"
    ]
    void = Journal(store).read(5)
    assert (void.voids, void.resubmitted_as, void.entries) == (2, again, ())
    code, out, _ = cli(capsys, "requests", "--store", url)
    assert "voids damaged entry 2" in out and "DAMAGED" not in out


def test_a_damaged_entry_of_a_purged_request_is_voided_without_resubmission(url, capsys):
    a = sorted(live_ids(url))[0]
    accept(url, [a])
    process(url)
    truncate(url, 1)
    store = SisaStore(url)
    assert status(url)["damaged_journal_entries"] == ["journal/r000000001.json"]
    assert not audit(url).ok
    code, out, _ = cli(capsys, "requests", "--store", url)
    assert code == 0 and "DAMAGED" in out
    assert accept(url, [sorted(live_ids(url))[0]]).request_id is not None  # forget goes on
    Journal(store).void(1, None)
    process(url)
    report = audit(url)
    assert report.ok, report.violations


def test_a_request_body_that_is_not_a_request_is_damaged_too(url):
    from storage import write_doc

    store = SisaStore(url)
    write_doc(store.fs, request_path(1), {"id": "r000000001-00000000", "seq": 1})  # no entries
    assert Journal(store).damaged() == [1]
    assert accept(url, [sorted(live_ids(url))[0]]).request_id.startswith("r000000002-")


@pytest.mark.parametrize("entry", ["0", "x", "\u0661", "-1", "journal/r00000000x.json"])
def test_void_refuses_a_malformed_entry_number(url, capsys, entry):
    code, _, err = cli(capsys, "void", "--store", url, entry)
    assert code == 2 and "malformed journal entry" in err, err
