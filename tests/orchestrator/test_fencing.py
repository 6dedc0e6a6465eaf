"""A processing holder frozen with SIGSTOP past its lease, while another process takes the
lease over and finishes the batch, changes nothing that any reader sees once it resumes.

The frozen holder is a real ``process`` in a subprocess, stopped at a named step
(``SISA_STOP_AT``): its heartbeat stops with it, so after ``lease_s`` the next process
takes the lease over under a newer token, fences every chain and processes the batch.
Then the first one gets SIGCONT. Proven, at every point:

- it stops with ``FencedError`` instead of finishing;
- the heads of every chain, the tombstones, the plans, the receipts, the serving state
  and every file those reference are byte for byte what they were before it resumed;
- what it wrote after it resumed is gone (``audit`` finds nothing unreferenced), and
  ``verify`` is bitwise.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from sisa.deletion import compliance
from sisa.deletion.accept import accept
from sisa.deletion.batch import process
from sisa.evidence.audit import audit
from sisa.evidence.verify import verify
from sisa.faults import STOP_ENV
from sisa.store.artifacts import SisaStore
from sisa.store.fencing import FENCE, chains
from sisa.store.layout import BATCHES, RECEIPTS, SERVING
from sisa.training.train import train
from tests.conftest import tiny_config, write_digits_npz
from tests.orchestrator.local_app import spawn
from tests.sisa.deletion.test_accept import layout

ROOT = Path(__file__).resolve().parents[2]
LEASE_S = 1.0
DRIVER = "import sys\nfrom sisa.deletion.batch import process\nprocess(sys.argv[1])\n"


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("fencing")
    source = write_digits_npz(root / "digits.npz", drop=set(range(900, 1797)))
    url = root / "base"  # 900 digits, 3 shards x 3 slices, a lease of one second
    train(tiny_config(**{"data.source": str(source), "deletion.lease_s": LEASE_S}), str(url))
    return url


def visible(url: Path) -> dict[str, str]:
    """Everything a reader reads: the newest head of every chain and of the serving state,
    every file those heads reference, every plan and receipt, and the served state."""
    store = SisaStore(str(url))
    seen: dict[str, str] = {}

    def add(rel: str) -> None:
        seen[rel] = hashlib.sha256(store.read_bytes(rel)).hexdigest()

    for prefix in [*chains(store), SERVING]:
        head = store.latest_head(prefix)
        if head is None:
            continue
        add(f"{prefix}/g{head.generation:06d}.json")
        refs = [head.data, *head.stages] if "data" in head.body else []
        for ref in refs:
            for rel in store.files(ref.dir):
                add(rel)
    for folder in (BATCHES, RECEIPTS):
        for name in store.names(folder):
            if not name.startswith("g"):  # the batch log's own heads are listed above
                add(f"{folder}/{name}")
    state = compliance.current(store)
    seen["served"] = repr(sorted((k, s.stage, s.ref) for k, s in state.shards.items()))
    return seen


def stopped(pid: int) -> bool:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"


@pytest.mark.parametrize(
    "point", ["process-locked", "after-stage-commit", "mid-sweep", "after-tombstones"]
)
def test_a_holder_paused_past_its_lease_changes_nothing_readers_see(base, tmp_path, point):
    url = tmp_path / "s"
    shutil.copytree(base, url)
    ids, shards, slices = layout(str(url))
    first = [int(ids[(shards == 0) & (slices == 1)][0]), int(ids[(shards == 1) & (slices == 2)][0])]
    accept(str(url), first)
    accept(str(url), [int(ids[(shards == 2) & (slices == 0)][0])])
    holder = spawn(["-c", DRIVER, str(url)], **{STOP_ENV: f"{point}#1"})
    try:
        deadline = time.monotonic() + 120
        while not stopped(holder.pid):
            assert holder.poll() is None, holder.communicate()[1]
            assert time.monotonic() < deadline, f"the holder never reached {point}"
            time.sleep(0.05)
        time.sleep(LEASE_S * 1.5)  # its heartbeat is frozen: the lease goes stale
        report = process(str(url))  # takes the lease over, fences, finishes the batch
        assert report is not None and report.plan.seqs == [1, 2]
        assert report.resumed == (point != "process-locked")
        store = SisaStore(str(url))
        assert all(store.latest_head(p).body[FENCE] == 2 for p in chains(store))
        before = visible(url)
        os.kill(holder.pid, signal.SIGCONT)
        _, err = holder.communicate(timeout=120)
    finally:
        if holder.poll() is None:
            os.kill(holder.pid, signal.SIGCONT)
            holder.kill()
            holder.wait()
    assert holder.returncode != 0 and "FencedError" in err, err
    assert "another process took the store's lease over" in err
    assert visible(url) == before
    found = audit(str(url))
    assert found.ok, found.findings
    assert not [f for f in found.findings if f.kind != "store in use"]
    assert verify(str(url)).identical
