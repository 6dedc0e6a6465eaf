"""The processing lease: one live holder at a time, numbered by a fencing token, and a
dead or stalled holder never blocks for long.

Checked on local disk and on memory:// (the local store also against real processes that
are SIGKILLed, or SIGSTOPped past their lease, while they hold it).
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
FOLDER = "locks/process"


@pytest.fixture(params=["file", "memory"])
def lease_store(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "file":
        yield Store(str(tmp_path))
        return
    store = Store(f"memory://lease-test-{uuid.uuid4().hex}")
    yield store
    store.delete_tree("")


def record(store: Store, number: int) -> dict:
    return json.loads(store.read_bytes(f"{FOLDER}/l{number:09d}.json"))


def newest(store: Store) -> dict | None:
    """The newest holder as a reader sees it (None when it let go)."""
    return Lease(store, FOLDER).holder()


def write_holder(store: Store, number: int = 1, raw: bytes | None = None, **fields) -> None:
    body = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": None,
        "nonce": "f" * 16,
        "remote": False,
        "owes_fence": False,
        "heartbeat": time.time(),
    } | fields
    data = json.dumps(body).encode() if raw is None else raw
    store.write_bytes(f"{FOLDER}/l{number:09d}.json", data)


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True,
                          capture_output=True, text=True)  # fmt: skip
    return int(proc.stdout)


def test_second_acquire_fails_naming_the_holder(lease_store):
    first = Lease(lease_store, FOLDER).acquire()
    try:
        with pytest.raises(LeaseHeldError) as err:
            Lease(lease_store, FOLDER).acquire()
        message = str(err.value)
        assert f"pid {os.getpid()}" in message and socket.gethostname() in message
        assert isinstance(err.value, StorageError)  # the CLI reports it as a one-line error
        assert newest(lease_store)["nonce"] == first.nonce  # the loser changed nothing
        assert Lease(lease_store, FOLDER).newest() == first.token == 1
    finally:
        first.release()


def test_each_holder_gets_a_larger_token_and_release_frees_the_lease(lease_store):
    tokens = []
    for _ in range(4):
        lease = Lease(lease_store, FOLDER).acquire()
        tokens.append(lease.token)
        assert newest(lease_store)["token"] == lease.token
        lease.release()
        assert newest(lease_store) is None  # let go: free
        assert lease.broke is None and not lease.fence_needed
    assert tokens == [1, 2, 3, 4]
    # each new holder prunes all but the previous holder's files
    names = lease_store.listdir(FOLDER)
    assert names == ["l000000003.done", "l000000003.json", "l000000004.done", "l000000004.json"]


def test_a_release_leaves_a_newer_holder_alone(lease_store):
    first = Lease(lease_store, FOLDER, ttl=0.2).acquire()
    first._stop.set()  # its heartbeat stops: stale after ttl
    time.sleep(0.3)
    second = Lease(lease_store, FOLDER, ttl=0.2).acquire()
    assert second.token == 2 and second.broke["nonce"] == first.nonce
    assert first.superseded() and not second.superseded()
    before = record(lease_store, 2)
    first.release()
    assert newest(lease_store)["nonce"] == second.nonce and record(lease_store, 2) == before
    second.release()


def test_context_manager_holds_inside_only(lease_store):
    with Lease(lease_store, FOLDER) as lease:
        assert newest(lease_store)["nonce"] == lease.nonce
        with pytest.raises(LeaseHeldError):
            Lease(lease_store, FOLDER).acquire()
    assert newest(lease_store) is None


def _holder_process(tmp_path: Path, ttl: float, then: str) -> subprocess.Popen:
    code = (
        "import json, os, signal, sys\n"
        "from storage import Lease, Store\n"
        f"lease = Lease(Store(sys.argv[1]), sys.argv[2], ttl={ttl}).acquire()\n"
        "print(os.getpid(), lease.token, flush=True)\n"
        f"{then}\n"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path), FOLDER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )


def test_lease_of_a_sigkilled_process_is_broken_at_once(tmp_path):
    store = Store(str(tmp_path))
    proc = _holder_process(tmp_path, 600, "os.kill(os.getpid(), signal.SIGKILL)")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, err
    pid, token = map(int, out.split())
    left = newest(store)
    assert left["pid"] == pid and left["host"] == socket.gethostname() and token == 1
    started = time.monotonic()
    lease = Lease(store, FOLDER, ttl=600).acquire()  # wait=0: no waiting for the ttl
    try:
        assert time.monotonic() - started < 2
        assert lease.token == 2 and lease.broke["pid"] == pid
        assert not lease.fence_needed  # it is dead, and it had no remote workers
    finally:
        lease.release()


@pytest.mark.slow  # seconds of waiting for a lease to go stale
def test_a_holder_paused_past_its_lease_is_taken_over_and_touches_nothing_after(tmp_path):
    """SIGSTOP freezes the holder and its heartbeat; the lease is taken over once the
    heartbeat is ``ttl`` old. Resumed, the old holder learns it was superseded, and its
    heartbeat writes nothing more (not even its own file)."""
    store = Store(str(tmp_path))
    ttl = 1.0
    proc = _holder_process(
        tmp_path,
        ttl,
        "sys.stdin.readline()\nprint(json.dumps(lease.superseded()), flush=True)\nlease.release()",
    )
    try:
        pid, token = map(int, proc.stdout.readline().split())
        time.sleep(ttl / 2)  # a beat or two
        os.kill(pid, signal.SIGSTOP)
        with pytest.raises(LeaseHeldError):  # still fresh: a paused holder is not dead
            Lease(store, FOLDER, ttl=ttl).acquire()
        time.sleep(ttl * 1.5)
        successor = Lease(store, FOLDER, ttl=ttl).acquire()
        assert successor.token == token + 1 and successor.broke["pid"] == pid
        assert successor.fence_needed  # alive, only late: it may write again
        files = {
            n: store.read_bytes(f"{FOLDER}/{n}")
            for n in store.listdir(FOLDER)
            if n[:10] == "l000000001"
        }
        os.kill(pid, signal.SIGCONT)
        time.sleep(ttl)  # the old heartbeat thread wakes up and finds it was superseded
        out, err = proc.communicate("go\n", timeout=60)
        assert json.loads(out) is True, err
        after = {
            n: store.read_bytes(f"{FOLDER}/{n}")
            for n in store.listdir(FOLDER)
            if n[:10] == "l000000001"
        }
        assert {n: after[n] for n in files} == files  # nothing rewritten
        assert set(after) - set(files) == {"l000000001.done"}  # it let go of its own
        assert newest(store)["nonce"] == successor.nonce
        successor.release()
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
            proc.wait()


def test_dead_holder_on_this_host_is_broken(lease_store):
    write_holder(lease_store, pid=dead_pid())
    lease = Lease(lease_store, FOLDER, ttl=600).acquire()
    assert lease.token == 2 and not lease.fence_needed
    lease.release()


def test_a_dead_holder_with_remote_workers_is_fenced(lease_store):
    write_holder(lease_store, pid=dead_pid(), remote=True)
    lease = Lease(lease_store, FOLDER, ttl=600).acquire()
    assert lease.token == 2 and lease.fence_needed  # its Ray tasks may still be running
    lease.release()


def test_reused_pid_is_not_mistaken_for_the_holder(lease_store):
    """Our own pid is alive, but its start time differs from the recorded one."""
    write_holder(lease_store, pid=os.getpid(), started="1")
    lease = Lease(lease_store, FOLDER, ttl=600).acquire()
    assert lease.token == 2
    lease.release()


def test_foreign_host_with_a_fresh_heartbeat_is_respected(lease_store):
    write_holder(lease_store, host="elsewhere.invalid", pid=dead_pid(), heartbeat=time.time())
    with pytest.raises(LeaseHeldError, match="elsewhere.invalid"):
        Lease(lease_store, FOLDER, ttl=600).acquire()
    assert newest(lease_store)["host"] == "elsewhere.invalid"


def test_foreign_host_with_an_old_heartbeat_is_broken_and_fenced(lease_store):
    write_holder(lease_store, host="elsewhere.invalid", heartbeat=time.time() - 61)
    lease = Lease(lease_store, FOLDER, ttl=60).acquire()
    assert lease.token == 2 and lease.fence_needed  # it may only be slow
    lease.release()


def test_a_fresh_heartbeat_file_keeps_an_old_record_alive(lease_store):
    write_holder(lease_store, host="elsewhere.invalid", heartbeat=time.time() - 61)
    beat = json.dumps({"heartbeat": time.time()}).encode()
    lease_store.write_bytes(f"{FOLDER}/l000000001.beat", beat)
    with pytest.raises(LeaseHeldError):
        Lease(lease_store, FOLDER, ttl=60).acquire()


@pytest.mark.parametrize("raw", [b"", b"{not json", b"[1, 2]", b'{"host": "x"}'])
def test_torn_or_foreign_lease_file_counts_as_stale(lease_store, raw):
    write_holder(lease_store, raw=raw)
    lease = Lease(lease_store, FOLDER).acquire()
    assert lease.token == 2 and lease.fence_needed  # nothing says it is dead
    lease.release()


def test_heartbeat_keeps_a_live_lease_fresh_and_never_rewrites_the_record(lease_store):
    ttl = 0.4
    lease = Lease(lease_store, FOLDER, ttl=ttl).acquire()
    written = lease_store.read_bytes(f"{FOLDER}/l000000001.json")
    try:
        first = newest(lease_store)["heartbeat"]
        time.sleep(ttl * 0.75)  # three heartbeats' worth
        assert newest(lease_store)["heartbeat"] > first
        time.sleep(ttl * 2)  # without heartbeats, the lease would now be stale
        assert time.time() - newest(lease_store)["heartbeat"] < ttl
        with pytest.raises(LeaseHeldError):
            Lease(lease_store, FOLDER, ttl=ttl).acquire()
        assert lease_store.read_bytes(f"{FOLDER}/l000000001.json") == written
    finally:
        lease.release()
    beat = lease_store.read_bytes(f"{FOLDER}/l000000001.beat")
    time.sleep(ttl / 2)  # the heartbeat thread stopped: nothing writes the file again
    assert lease_store.read_bytes(f"{FOLDER}/l000000001.beat") == beat


def test_heartbeat_stops_once_someone_else_took_the_lease(lease_store):
    ttl = 0.4
    lease = Lease(lease_store, FOLDER, ttl=ttl).acquire()
    try:
        time.sleep(ttl / 2)  # a beat
        write_holder(lease_store, number=2, nonce="0" * 16, host="elsewhere.invalid")
        time.sleep(ttl / 4)
        beat = lease_store.read_bytes(f"{FOLDER}/l000000001.beat")
        time.sleep(ttl)
        assert lease_store.read_bytes(f"{FOLDER}/l000000001.beat") == beat
        assert lease.superseded() and newest(lease_store)["nonce"] == "0" * 16
    finally:
        lease.release()
    assert newest(lease_store)["nonce"] == "0" * 16  # release leaves the new holder's


def test_acquire_waits_for_a_holder_that_releases(lease_store):
    first = Lease(lease_store, FOLDER).acquire()
    timer = threading.Timer(0.3, first.release)
    started = time.monotonic()
    timer.start()
    try:
        second = Lease(lease_store, FOLDER).acquire(wait=10, poll=0.02)
    finally:
        timer.join()
    elapsed = time.monotonic() - started
    assert 0.25 < elapsed < 5
    assert newest(lease_store)["nonce"] == second.nonce and second.token == 2
    second.release()


def test_acquire_gives_up_after_its_wait(lease_store):
    first = Lease(lease_store, FOLDER).acquire()
    try:
        started = time.monotonic()
        with pytest.raises(LeaseHeldError):
            Lease(lease_store, FOLDER).acquire(wait=0.3, poll=0.02)
        assert 0.25 < time.monotonic() - started < 5
    finally:
        first.release()


def test_racing_acquirers_get_one_holder(lease_store):
    winners, losers = [], []
    barrier = threading.Barrier(8)

    def contend() -> None:
        lease = Lease(lease_store, FOLDER)
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
    assert newest(lease_store)["nonce"] == winners[0].nonce and winners[0].token == 1
    winners[0].release()


def test_two_breakers_of_one_stale_lease_do_not_both_hold_it(lease_store, monkeypatch):
    """B judges the dead holder stale, A then takes the lease over, then B goes on: B's
    create of the same number fails, and B finds A alive."""
    write_holder(lease_store, pid=dead_pid())
    a, b = Lease(lease_store, FOLDER, ttl=600), Lease(lease_store, FOLDER, ttl=600)
    judged = Lease._stale

    def stale(self, holder):
        verdict = judged(self, holder)
        if self is b and verdict and holder.get("nonce") == "f" * 16:
            a.acquire()  # A takes the dead holder's lease over, between B's steps
        return verdict

    monkeypatch.setattr(Lease, "_stale", stale)
    try:
        b.acquire()
        b_holds = True
    except LeaseHeldError:
        b_holds = False
    try:
        assert newest(lease_store)["nonce"] == a.nonce, "A's live lease was replaced"
        assert not b_holds, "A and B both returned from acquire(): two holders"
    finally:
        b.release()
        a.release()


def test_a_backend_without_atomic_create_is_refused(tmp_path):
    chained = Store(f"dir::file://{tmp_path}/chained")
    assert not chained.atomic_create and Store(str(tmp_path)).atomic_create
    with pytest.raises(StorageError, match="atomic create-if-absent"):
        Lease(chained, FOLDER).acquire()


def test_a_holder_in_another_container_with_the_same_host_name_is_not_judged_by_pid(tmp_path):
    """Containers sharing a host name have their own pids: only the heartbeat counts."""
    store = Store(str(tmp_path))
    write_holder(store, machine="another-boot/pid:[1]", pid=2**22 - 1)  # no such pid here
    with pytest.raises(LeaseHeldError):
        Lease(store, FOLDER, ttl=60).acquire()


def test_superseded_holds_after_the_records_between_are_pruned(lease_store):
    first = Lease(lease_store, FOLDER, ttl=0.2).acquire()
    first._stop.set()  # it stalls
    time.sleep(0.3)
    for _ in range(3):  # three holders after it: the records of 1 and 2 are pruned
        Lease(lease_store, FOLDER, ttl=0.2).acquire().release()
    assert not lease_store.exists(f"{FOLDER}/l000000002.json")
    assert first.superseded()
    first.release()


@pytest.mark.parametrize("ended", ["released", "killed", "fenced"])
def test_a_holder_that_owed_a_fence_and_never_finished_it_is_fenced_again(lease_store, ended):
    """B took over from a holder that may still write, so it owed a fence; whether B
    then failed (it let go) or was killed, C fences unless B recorded it done."""
    store_folder = FOLDER
    late = Lease(lease_store, store_folder, ttl=600)

    def write(n: int, **fields: object) -> None:
        body = {"host": "elsewhere.invalid", "pid": 1, "nonce": "a" * 16, "remote": False}
        body |= {"heartbeat": time.time() - 10**6} | fields
        lease_store.write_bytes(f"{store_folder}/l{n:09d}.json", json.dumps(body).encode())

    write(1, owes_fence=False)  # A: stalled long ago
    b = Lease(lease_store, store_folder, ttl=600).acquire()
    assert b.fence_needed
    if ended == "fenced":
        b.fenced()
    b._stop.set()
    if ended in ("released", "fenced"):
        b.release()
    else:  # SIGKILLed: dead on this host, in process, so nothing of its own can write
        body = json.loads(lease_store.read_bytes(f"{store_folder}/l000000002.json"))
        here = {"host": socket.gethostname(), "pid": dead_pid(), "heartbeat": time.time()}
        write(2, owes_fence=body["owes_fence"], nonce=body["nonce"], **here)
    c = late.acquire()
    assert c.fence_needed == (ended != "fenced"), ended
    c.release()


def test_the_single_file_lease_of_an_older_version_is_respected(lease_store):
    """A process of a version before fencing tokens holds ``locks/process.json``."""
    old = {"host": "elsewhere.invalid", "pid": 1, "token": "f" * 16, "heartbeat": time.time()}
    lease_store.write_bytes(f"{FOLDER}.json", json.dumps(old).encode())
    with pytest.raises(LeaseHeldError, match="elsewhere.invalid"):
        Lease(lease_store, FOLDER, ttl=60).acquire()
    assert Lease(lease_store, FOLDER).holder()["host"] == "elsewhere.invalid"
    old["heartbeat"] = time.time() - 61  # stale: a crashed old holder blocks nothing
    lease_store.write_bytes(f"{FOLDER}.json", json.dumps(old).encode())
    lease = Lease(lease_store, FOLDER, ttl=60).acquire()
    assert lease.token == 1
    lease.release()
