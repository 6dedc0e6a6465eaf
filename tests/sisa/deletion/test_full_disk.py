"""A disk that fills up mid-batch, on a real (small) tmpfs: the error names the store and
the file and says that rerunning resumes; while the batch is unfinished ``audit`` says so
and passes; once there is space, the rerun ends bitwise where an uninterrupted run does."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from orchestrator.cli import main
from sisa.deletion.accept import accept
from sisa.evidence.audit import audit
from sisa.evidence.status import status
from storage import StorageIOError


def _mount(path: Path, kib: int, remount: bool = False) -> bool:
    options = f"{'remount,' if remount else ''}size={kib}k"
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True
    )
    return done.returncode == 0


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs we can mount, resize and unmount (root only; skipped elsewhere)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if shutil.which("mount") is None or not _mount(disk, 64):
        pytest.skip("mounting a tmpfs needs root")
    yield disk
    subprocess.run(["umount", str(disk)], capture_output=True)


def _size_kib(root: Path) -> int:
    """What the files take on a disk of 4 KiB blocks (tmpfs's page size)."""
    return sum(-(-p.stat().st_size // 4096) * 4 for p in root.rglob("*") if p.is_file())


def test_a_full_disk_mid_batch_names_the_file_and_the_rerun_resumes(
    url, tmp_path, small_disk, capsys
):
    reference = tmp_path / "reference"
    shutil.copytree(url, reference)
    assert _mount(small_disk, _size_kib(Path(url)) + 96, remount=True)  # room for a little
    store = small_disk / "s"
    shutil.copytree(url, store)
    victims = [1000, 1001, 1002]
    accept(str(store), victims)
    accept(str(reference), victims)

    capsys.readouterr()
    assert main(["process", "--store", str(store), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No space left on device" in err
    assert f"(store file://{store})" in err and f"file://{store}/" in err  # store and file
    assert "rerun 'sisa process' to resume" in err

    report = audit(str(store))  # leftovers of the unfinished batch: warnings, and it says so
    assert report.ok, report.violations
    kinds = {f.kind for f in report.findings}
    assert "unfinished batch" in kinds

    assert _mount(small_disk, 64 * 1024, remount=True)
    assert main(["process", "--store", str(store), "--no-progress"]) == 0
    out = capsys.readouterr().out  # an error stopped it, no crash: its lease was released
    assert "(resumed an unfinished batch)" in out and "crash" not in out
    assert main(["process", "--store", str(reference), "--no-progress"]) == 0
    weights = [s["weights_sha256"] for s in status(str(store))["shards"]]
    assert weights == [s["weights_sha256"] for s in status(str(reference))["shards"]]
    report = audit(str(store))
    assert report.ok and not report.findings, report.findings


def test_a_full_disk_on_write_is_a_storage_error_naming_the_url(small_disk):
    from storage import Store

    store = Store(str(small_disk / "s"))
    with pytest.raises(StorageIOError, match=r"file://.*/s/big.bin: could not write: No space"):
        store.write_bytes("big.bin", b"x" * (256 * 1024))
    assert not [p for p in (small_disk / "s").rglob("*") if p.is_file()]  # no temp left
