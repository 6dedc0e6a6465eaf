"""The processing lease: one live holder at a time, and a dead holder never blocks for long.

Checked on local disk and on memory:// (the local store also against a real process that
is SIGKILLed while it holds the lease).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from storage import Lease, LeaseHeldError, StorageError, Store

REPO = Path(__file__).resolve().parents[2]
REL = "locks/process.json"


@pytest.fixture(params=["file", "memory"])
def lease_store(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "file":
        yield Store(str(tmp_path))
        return
    store = Store(f"memory://lease-test-{uuid.uuid4().hex}")
    yield store
    store.delete_tree("")


def holder_doc(store: Store) -> dict:
    return json.loads(store.read_bytes(REL))


def write_holder(store: Store, **fields) -> None:
    body = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": None,
        "token": "f" * 16,
        "heartbeat": time.time(),
    } | fields
    store.write_bytes(REL, json.dumps(body).encode())


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True,
                          capture_output=True, text=True)  # fmt: skip
    return int(proc.stdout)


def test_second_acquire_fails_naming_the_holder(lease_store):
    first = Lease(lease_store, REL).acquire()
    try:
        with pytest.raises(LeaseHeldError) as err:
            Lease(lease_store, REL).acquire()
        message = str(err.value)
        assert f"pid {os.getpid()}" in message and socket.gethostname() in message
        assert isinstance(err.value, StorageError)  # the CLI reports it as a one-line error
        assert holder_doc(lease_store)["token"] == first.token  # the loser changed nothing
    finally:
        first.release()


def test_release_frees_the_lease(lease_store):
    first = Lease(lease_store, REL).acquire()
    first.release()
    assert not lease_store.exists(REL)
    second = Lease(lease_store, REL).acquire()
    assert holder_doc(lease_store)["token"] == second.token
    first.release()  # releasing a lease someone else now holds leaves theirs alone
    assert holder_doc(lease_store)["token"] == second.token
    second.release()
    assert not lease_store.exists(REL)


def test_context_manager_holds_inside_only(lease_store):
    with Lease(lease_store, REL) as lease:
        assert holder_doc(lease_store)["token"] == lease.token
        with pytest.raises(LeaseHeldError):
            Lease(lease_store, REL).acquire()
    assert not lease_store.exists(REL)


def test_lease_of_a_sigkilled_process_is_broken_at_once(tmp_path):
    store = Store(str(tmp_path))
    code = (
        "import os, signal, sys\n"
        "from storage import Lease, Store\n"
        "Lease(Store(sys.argv[1]), sys.argv[2], ttl=600).acquire()\n"
        "print(os.getpid(), flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path), REL],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    left = holder_doc(store)
    assert left["pid"] == int(proc.stdout) and left["host"] == socket.gethostname()
    started = time.monotonic()
    lease = Lease(store, REL, ttl=600).acquire()  # wait=0: no waiting for the ttl
    try:
        assert time.monotonic() - started < 2
        assert holder_doc(store)["token"] == lease.token
    finally:
        lease.release()


def test_dead_holder_on_this_host_is_broken(lease_store):
    write_holder(lease_store, pid=dead_pid())
    lease = Lease(lease_store, REL, ttl=600).acquire()
    assert holder_doc(lease_store)["token"] == lease.token
    lease.release()


def test_reused_pid_is_not_mistaken_for_the_holder(lease_store):
    """Our own pid is alive, but its start time differs from the recorded one."""
    write_holder(lease_store, pid=os.getpid(), started="1")
    lease = Lease(lease_store, REL, ttl=600).acquire()
    assert holder_doc(lease_store)["token"] == lease.token
    lease.release()


def test_foreign_host_with_a_fresh_heartbeat_is_respected(lease_store):
    write_holder(lease_store, host="elsewhere.invalid", pid=dead_pid(), heartbeat=time.time())
    with pytest.raises(LeaseHeldError, match="elsewhere.invalid"):
        Lease(lease_store, REL, ttl=600).acquire()
    assert holder_doc(lease_store)["host"] == "elsewhere.invalid"


def test_foreign_host_with_an_old_heartbeat_is_broken(lease_store):
    write_holder(lease_store, host="elsewhere.invalid", heartbeat=time.time() - 61)
    lease = Lease(lease_store, REL, ttl=60).acquire()
    assert holder_doc(lease_store)["token"] == lease.token
    lease.release()


@pytest.mark.parametrize("raw", [b"", b"{not json", b"[1, 2]", b'{"host": "x"}'])
def test_torn_or_foreign_lease_file_counts_as_stale(lease_store, raw):
    lease_store.write_bytes(REL, raw)
    lease = Lease(lease_store, REL).acquire()
    assert holder_doc(lease_store)["token"] == lease.token
    lease.release()


def test_heartbeat_keeps_a_live_lease_fresh(lease_store):
    ttl = 0.4
    lease = Lease(lease_store, REL, ttl=ttl).acquire()
    try:
        first = holder_doc(lease_store)["heartbeat"]
        time.sleep(ttl * 0.75)  # three heartbeats' worth
        assert holder_doc(lease_store)["heartbeat"] > first
        time.sleep(ttl * 2)  # without heartbeats, the lease would now be stale
        assert time.time() - holder_doc(lease_store)["heartbeat"] < ttl
        with pytest.raises(LeaseHeldError):
            Lease(lease_store, REL, ttl=ttl).acquire()
        assert holder_doc(lease_store)["token"] == lease.token
    finally:
        lease.release()
    assert not lease_store.exists(REL)
    time.sleep(ttl / 2)  # the heartbeat thread stopped: nothing writes the file again
    assert not lease_store.exists(REL)


def test_heartbeat_stops_once_someone_else_took_the_lease(lease_store):
    ttl = 0.4
    lease = Lease(lease_store, REL, ttl=ttl).acquire()
    try:
        write_holder(lease_store, token="0" * 16, host="elsewhere.invalid")
        time.sleep(ttl)
        assert holder_doc(lease_store)["token"] == "0" * 16
    finally:
        lease.release()
    assert holder_doc(lease_store)["token"] == "0" * 16  # release leaves the new holder's


def test_acquire_waits_for_a_holder_that_releases(lease_store):
    first = Lease(lease_store, REL).acquire()
    timer = threading.Timer(0.3, first.release)
    started = time.monotonic()
    timer.start()
    try:
        second = Lease(lease_store, REL).acquire(wait=10, poll=0.02)
    finally:
        timer.join()
    elapsed = time.monotonic() - started
    assert 0.25 < elapsed < 5
    assert holder_doc(lease_store)["token"] == second.token
    second.release()


def test_acquire_gives_up_after_its_wait(lease_store):
    first = Lease(lease_store, REL).acquire()
    try:
        started = time.monotonic()
        with pytest.raises(LeaseHeldError):
            Lease(lease_store, REL).acquire(wait=0.3, poll=0.02)
        assert 0.25 < time.monotonic() - started < 5
    finally:
        first.release()


def test_racing_acquirers_get_one_holder(lease_store):
    winners, losers = [], []
    barrier = threading.Barrier(8)

    def contend() -> None:
        lease = Lease(lease_store, REL)
        barrier.wait()
        try:
            lease.acquire()
        except LeaseHeldError:
            losers.append(lease)
        else:
            winners.append(lease)

    threads = [threading.Thread(target=contend) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1 and len(losers) == 7
    assert holder_doc(lease_store)["token"] == winners[0].token
    winners[0].release()


def test_two_breakers_of_one_stale_lease_do_not_both_hold_it(lease_store, monkeypatch):
    """Breaking a stale lease must not delete the lease someone took a moment ago.

    The interleaving is forced: B judges the dead holder stale, A then breaks and takes
    the lease, then B goes on; B must re-check before deleting."""
    write_holder(lease_store, pid=dead_pid())
    a, b = Lease(lease_store, REL, ttl=600), Lease(lease_store, REL, ttl=600)
    judged = Lease._stale

    def stale(self, holder):
        verdict = judged(self, holder)
        if self is b and verdict and holder.get("token") == "f" * 16:
            a.acquire()  # A breaks the dead holder's lease and takes it, between B's steps
        return verdict

    monkeypatch.setattr(Lease, "_stale", stale)
    try:
        b.acquire()
        b_holds = True
    except LeaseHeldError:
        b_holds = False
    try:
        assert holder_doc(lease_store)["token"] == a.token, "A's live lease was deleted"
        assert not b_holds, "A and B both returned from acquire(): two holders"
    finally:
        b.release()
        a.release()


def test_a_backend_without_atomic_create_is_refused(tmp_path):
    from storage import StorageError

    chained = Store(f"dir::file://{tmp_path}/chained")
    assert not chained.atomic_create and Store(str(tmp_path)).atomic_create
    with pytest.raises(StorageError, match="atomic create-if-absent"):
        Lease(chained, "locks/process.json").acquire()


def test_a_holder_in_another_container_with_the_same_host_name_is_not_judged_by_pid(tmp_path):
    """Containers sharing a host name have their own pids: only the heartbeat counts."""
    import json
    import socket
    import time

    store = Store(str(tmp_path))
    other = {
        "host": socket.gethostname(),
        "machine": "another-boot/pid:[1]",
        "pid": 2**22 - 1,  # no such pid here
        "token": "t",
        "heartbeat": time.time(),
    }
    store.write_bytes("locks/process.json", json.dumps(other).encode())
    with pytest.raises(LeaseHeldError):
        Lease(store, "locks/process.json", ttl=60).acquire()
