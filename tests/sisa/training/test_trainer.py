"""The trainer and shard jobs: initialisation per shard, resuming only what matches, and
the peak memory a job reports for sizing its task."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import sisa.training.jobs
from sisa.store.artifacts import SisaStore
from sisa.store.layout import gen_dir, shard_prefix
from sisa.training.jobs import ShardJob, peak_rss_bytes, run_shard_job
from sisa.training.train import train
from sisa.training.trainer import fresh_state
from tests.conftest import tiny_config


def test_each_shard_starts_from_its_own_initialisation():
    cfg = tiny_config()
    a, b = (fresh_state(cfg, k, (64,), 10).model for k in (0, 1))
    again = fresh_state(cfg, 0, (64,), 10).model
    first = next(iter(a.state_dict()))
    assert not torch.equal(a.state_dict()[first], b.state_dict()[first])
    assert torch.equal(a.state_dict()[first], again.state_dict()[first])


def test_a_retry_resumes_only_stages_trained_on_the_same_ids(tmp_path, monkeypatch):
    """A stage committed by an attempt on other data must be retrained, not resumed."""
    from sisa.ids import id_set_hash

    url = str(tmp_path / "s")
    train(tiny_config(**{"sisa.shards": 1}), url)
    store = SisaStore(url)
    arrays = store.read_data(store.shard_head(0).data)

    def job(generation: int, dropped_rows: int) -> ShardJob:
        kept = {k: v[dropped_rows:] for k, v in arrays.items()}
        rel = f"{gen_dir(shard_prefix(0), generation)}/data"
        data = store.write_data(rel, kept, id_set_hash(kept["ids"]))
        return ShardJob(
            url=url, storage_options={}, shard=0, generation=generation, start_stage=1, data=data
        )

    class Crash(Exception):
        pass

    def crash(name):
        if name == "after-stage-commit":
            raise Crash

    def attempt(j: ShardJob, crashing: bool):
        monkeypatch.setattr(
            sisa.training.jobs, "crash_point", crash if crashing else (lambda _: None)
        )
        return run_shard_job(j, lambda _: None)

    with pytest.raises(Crash):
        attempt(job(1, 1), crashing=True)  # commits stage 1 of generation 1, then dies
    same = attempt(job(1, 1), crashing=False)
    assert same.resumed == [1] and same.trained == [2, 3]

    with pytest.raises(Crash):
        attempt(job(2, 2), crashing=True)  # stage 1 of generation 2 on one data set...
    other = attempt(job(2, 3), crashing=False)  # ...retried on another
    assert other.resumed == [] and other.trained == [1, 2, 3]
    assert other.head.stages[0].ids_hash != same.head.stages[0].ids_hash


def test_a_shard_job_reports_the_peak_memory_of_its_process(tmp_path):
    """In bytes, at least what the process holds during the job and at most the machine's
    memory (a KiB/bytes mix-up fails one bound or the other), on both ways out of a job:
    training, and finding the head already committed."""
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    before = peak_rss_bytes()
    ballast = np.ones(64 << 20, dtype=np.uint8)  # 64 MiB touched, alive during the jobs
    url = str(tmp_path / "s")
    report = train(tiny_config(**{"sisa.shards": 2}), url)
    store = SisaStore(url)
    job = ShardJob(
        url=url,
        storage_options={},
        shard=0,
        generation=0,
        start_stage=1,
        data=store.shard_head(0).data,
    )
    done = run_shard_job(job, lambda _: None)
    assert done.trained == [] and done.samples == 0  # the early return
    peaks = [r.peak_rss_bytes for r in [*report.shards, done]]
    for peak in peaks:
        assert isinstance(peak, int)
        assert max(before, ballast.nbytes) <= peak <= physical
    assert peaks == sorted(peaks)  # a peak never falls within one process
