"""Checking a request against earlier ones and journaling it is one atomic step, on every
backend with an atomic create: racing clients that send the same IDs get one request."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from sisa.deletion import receipts
from sisa.deletion.accept import accept
from sisa.deletion.batch import process
from sisa.evidence.status import status
from sisa.store.artifacts import SisaStore
from sisa.store.journal import Journal
from sisa.training.train import train
from tests.conftest import tiny_config

CONFIG = {"sisa.shards": 2, "sisa.slices": 2, "sisa.epochs": 1}


@pytest.fixture(params=["memory", "file", pytest.param("s3", marks=pytest.mark.slow)])
def store_url(request, tmp_path):
    if request.param == "memory":
        url, options = f"memory://sisa-{uuid.uuid4().hex}", None
    elif request.param == "file":
        url, options = f"file://{tmp_path}/store", None
    else:
        bucket_url, options = request.getfixturevalue("s3_server")
        url = f"{bucket_url}/{uuid.uuid4().hex}"
    train(tiny_config(**CONFIG), url, options)
    return url, options


def race(n_threads: int, work):
    barrier = threading.Barrier(n_threads)

    def run(k):
        barrier.wait()
        return work(k)

    with ThreadPoolExecutor(n_threads) as pool:
        return list(pool.map(run, range(n_threads)))


def test_one_id_sent_by_four_clients_at_once_is_one_request(store_url):
    url, options = store_url
    answers = race(4, lambda _: accept(url, [1000], storage_options=options))
    accepted = [a for a in answers if a.request_id is not None]
    assert len(accepted) == 1
    first = accepted[0].request_id
    for a in answers:
        if a.request_id is None:  # the others learn which request covers the point
            assert a.already_deleted == [1000] and a.earlier_requests == [first]
    assert len(Journal(SisaStore(url, options)).seqs()) == 1


def test_ten_ids_by_four_clients_are_each_deleted_once(store_url):
    url, options = store_url
    ids = list(range(1000, 1010))

    def client(k):
        order = np.random.default_rng(k).permutation(ids).tolist()
        return [accept(url, [i], storage_options=options) for i in order]

    answers = [a for per_client in race(4, client) for a in per_client]
    store = SisaStore(url, options)
    requests = Journal(store).all_requests()
    hashes = [e.hash for r in requests for e in r.entries]
    assert len(hashes) == len(set(hashes)) == 10  # each point in exactly one request
    assert sum(a.request_id is not None for a in answers) == len(requests)
    process(url, options)
    assert status(url, options)["deleted"] == 10
    assert len(Journal(store).receipted()) == len(requests)
    assert receipts.verify_chain(store, Journal(store).receipted()).ok
