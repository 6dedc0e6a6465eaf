"""The request journal: write-once documents, contiguous numbers under concurrent
writers, request IDs that never become paths unchecked."""

from __future__ import annotations

import threading

import pytest

from sisa.store.artifacts import SisaStore
from sisa.store.journal import Entry, Journal, UnknownRequestError, parse_request_id
from sisa.store.layout import request_path
from storage import read_doc


def test_concurrent_appends_get_contiguous_distinct_numbers(tmp_path):
    store = SisaStore(str(tmp_path))
    journal = Journal(store)
    got: list[int] = []
    lock = threading.Lock()

    def submit(i: int) -> None:
        for j in range(5):
            request = journal.append([Entry(f"h{i}-{j}", 0, 0)], None, None)
            with lock:
                got.append(request.seq)

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == list(range(1, 21))
    hashes = {e.hash for seq in journal.seqs() for e in journal.read(seq).entries}
    assert len(hashes) == 20  # nothing overwritten


def test_a_request_document_round_trips_and_is_write_once(tmp_path):
    store = SisaStore(str(tmp_path))
    request = Journal(store).append([Entry("a", 1, 2), Entry("b", -1, None)], "g", "why")
    again = Journal(store).find(request.id)
    assert again == request and again.parts == {1, -1} and again.slices(1) == [2]
    assert read_doc(store.fs, request_path(1))["id"] == request.id
    from storage import StorageError, write_doc

    with pytest.raises(StorageError):
        write_doc(store.fs, request_path(1), {"forged": True})


@pytest.mark.parametrize(
    "bad", ["../../etc/passwd", "r1", "r000000001", "r000000001-XYZ", "r000000001-1234567g", ""]
)
def test_malformed_request_ids_are_refused_before_any_path_is_built(tmp_path, bad):
    with pytest.raises(UnknownRequestError, match="malformed request ID"):
        Journal(SisaStore(str(tmp_path))).find(bad)


def test_a_request_id_with_the_wrong_token_is_unknown(tmp_path):
    store = SisaStore(str(tmp_path))
    request = Journal(store).append([Entry("a", 0, 0)], None, None)
    seq = parse_request_id(request.id)
    assert seq == 1
    forged = f"r{seq:09d}-00000000" if not request.id.endswith("00000000") else request.id[:-1]
    with pytest.raises(UnknownRequestError, match="unknown request"):
        Journal(store).find(forged)
    with pytest.raises(UnknownRequestError, match="unknown request"):
        Journal(store).find("r000000002-abcdef01")


def test_open_requests_are_those_without_a_receipt(tmp_path):
    store = SisaStore(str(tmp_path))
    journal = Journal(store)
    for i in range(3):
        journal.append([Entry(str(i), 0, 0)], None, None)
    store.fs.write_bytes("receipts/r000000001.json", b"{}")
    assert [r.seq for r in journal.open_requests()] == [2, 3]
    assert [r.seq for r in journal.open_requests(through=2)] == [2]


def test_a_store_replaced_at_the_same_url_never_serves_cached_requests(tmp_path):
    """A long-running process sees a store restored from the same template (same salt)."""
    import shutil

    from sisa.deletion.accept import accept
    from sisa.deletion.batch import process
    from sisa.training.train import train
    from tests.conftest import tiny_config
    from tests.sisa.deletion.test_accept import layout

    template, url = tmp_path / "template", tmp_path / "s"
    train(tiny_config(), str(template))
    ids, _, _ = layout(str(template))
    first, second = int(ids[0]), int(ids[1])
    shutil.copytree(template, url)
    accept(str(url), [first])
    process(str(url))
    shutil.rmtree(url)
    shutil.copytree(template, url)  # the same store again: same salt, empty journal
    accept(str(url), [second])
    process(str(url))
    left, _, _ = layout(str(url))
    assert first in left.tolist() and second not in left.tolist()


def test_the_journal_refuses_a_backend_without_atomic_create(tmp_path):
    from storage import StorageError

    store = SisaStore(f"dir::file://{tmp_path}/chained")
    with pytest.raises(StorageError, match="atomic create-if-absent"):
        Journal(store).append([Entry("a", 0, 0)], None, None)
    assert not (tmp_path / "chained" / "journal").exists()
