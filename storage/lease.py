"""A lease with a fencing token: one live holder of a named lock in a store at a time, a
crash frees it, and each holder is numbered so that writers can be fenced.

The lease is a folder of small files; holder ``n`` owns three:

```
l000000007.json    its record: host, pid, process start time, nonce, remote workers,
                   first heartbeat. Created once, exclusively; never rewritten.
l000000007.beat    its heartbeat, rewritten every ``ttl / 4`` by that holder only
l000000007.done    created when it lets go (a clean finish or an error)
```

**Taking the lease** is the exclusive create of the record numbered one past the newest,
allowed while the newest holder has let go or is stale. Racing acquirers race for one
name and one wins. Nothing is deleted to break a stale lease, so there is no window
between two breakers, and the numbers only grow: the number is the **fencing token**. A
newer record is proof that an older holder lost the lease, whatever that holder believes.

A holder counts as **stale**, and its lease is taken over, when:

- it ran on this machine and that process is gone (or is a different process that
  reused the pid); this frees a killed holder at once, or
- its heartbeat is older than ``ttl`` seconds (holders on other hosts, which this host
  cannot ask, and holders that stalled: a paused process beats no more), or
- it is this very process, which has let go of it: a release that could not reach the
  store (an object store that was down) leaves no ``.done``, and this process must not
  wait ``ttl`` for itself when it retries.

A holder that is only stale by its heartbeat may still be running, and so may the remote
workers of a dead one: ``fence_needed`` says so after the takeover, and the layer above
then fences the chains that holder could still write (``sisa.store.fencing``). A heartbeat
writes the holder's own file only, so a stalled holder that wakes up touches nothing of
its successor's. Records below the newest but one are pruned by each new holder.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import socket
import threading
import time
from pathlib import Path
from typing import Any

from storage.commit import StorageError
from storage.fs import Store

log = logging.getLogger(__name__)

_HELD: set[str] = set()  # nonces of the leases this process holds now
_RECORD = re.compile(r"^l([0-9]{9})\.json\Z")
_OWNED = re.compile(r"^l([0-9]{9})\.(json|beat|done|fenced)\Z")


class LeaseHeldError(StorageError):
    """Another live process holds the lease."""


def _machine() -> str:
    """Host name plus boot and pid-namespace IDs: a pid is only judged on the machine
    (and in the container) that issued it, even where containers share a host name."""
    parts = [socket.gethostname()]
    for path in ("/proc/sys/kernel/random/boot_id", "/proc/self/ns/pid"):
        with contextlib.suppress(OSError):
            parts.append(Path(path).read_text().strip() if "boot" in path else os.readlink(path))
    return "/".join(parts)


def _start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (Linux), which tells a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    return None if fields[0] == "Z" else fields[19]  # a zombie is already dead


def _alive(pid: int, started: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    now = _start_time(pid)
    if Path("/proc").is_dir() and now is None:
        return False  # gone between the two checks, or a zombie
    return started is None or now is None or now == started


class Lease:
    """``with Lease(store, "locks/process", ttl=600): ...`` holds the lease inside.

    ``remote``: the holder hands work to other processes (Ray workers) that outlive it if
    it dies, so a successor fences even a holder it knows is dead.
    """

    def __init__(self, store: Store, folder: str, ttl: float = 600.0, *, remote: bool = False):
        self.store, self.folder, self.ttl, self.remote = store, folder, float(ttl), remote
        self.nonce = secrets.token_hex(8)
        self.token: int | None = None  # the fencing token, while held
        # the record of the holder this acquire took over from: a holder that stops on an
        # error releases its lease, one that was killed or stalled leaves it
        self.broke: dict[str, Any] | None = None
        self.fence_needed = False  # ... and that holder, or its workers, may still write
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def _rel(self, number: int, kind: str = "json") -> str:
        return f"{self.folder}/l{number:09d}.{kind}"

    def newest(self) -> int:
        """The newest holder's token (0 before the first)."""
        numbers = [
            int(m.group(1)) for n in self.store.listdir(self.folder) if (m := _RECORD.match(n))
        ]
        return max(numbers, default=0)

    def superseded(self) -> bool:
        """Whether a newer holder has taken the lease over from this one."""
        return self.token is not None and self.newest() > self.token

    def holder(self) -> dict[str, Any] | None:
        """The newest holder's record with its latest heartbeat, or None when it let go
        (or a live holder of the single-file lease that versions before tokens wrote)."""
        number = self.newest()
        held = self._holder(number) if number else None
        return held if held is not None else self._legacy()

    def _legacy(self) -> dict[str, Any] | None:
        """A live holder of ``<folder>.json``, the lease before fencing tokens: a process
        of an older version, which must finish before this one starts."""
        try:
            body = json.loads(self.store.read_bytes(f"{self.folder}.json"))
        except (FileNotFoundError, ValueError):
            return None
        if not isinstance(body, dict) or self._stale(body | {"nonce": None}):
            return None
        return body

    def _holder(self, number: int) -> dict[str, Any] | None:
        if self.store.exists(self._rel(number, "done")):
            return None
        try:
            body = json.loads(self.store.read_bytes(self._rel(number)))
            body = body if isinstance(body, dict) else {}
        except FileNotFoundError:
            return {}  # pruned under us: judged stale, and the create below decides
        except ValueError:
            body = {}  # a torn or foreign file: treated as stale below
        with contextlib.suppress(FileNotFoundError, ValueError, TypeError):
            beat = json.loads(self.store.read_bytes(self._rel(number, "beat")))["heartbeat"]
            if isinstance(beat, int | float) and beat > body.get("heartbeat", 0):
                body["heartbeat"] = beat
        return body | {"number": number}

    def _same_machine(self, holder: dict[str, Any]) -> bool:
        return (
            holder.get("host") == socket.gethostname()
            and holder.get("machine", _machine()) == _machine()
            and isinstance(holder.get("pid"), int)
        )

    def _let_go(self, holder: dict[str, Any]) -> bool:
        """The holder is this process, and it released the lease (the ``.done`` is missing
        because the store was out when it tried)."""
        return (
            self._same_machine(holder)
            and self._this_process(holder)
            and holder.get("nonce") not in _HELD
        )

    def _stale(self, holder: dict[str, Any]) -> bool:
        beat = holder.get("heartbeat")
        if not isinstance(beat, int | float) or time.time() - beat > self.ttl:
            return True
        if self._same_machine(holder):
            if self._let_go(holder):
                return True
            return not self._this_process(holder) and not _alive(
                holder["pid"], holder.get("started")
            )
        return False

    @staticmethod
    def _this_process(holder: dict[str, Any]) -> bool:
        return holder["pid"] == os.getpid() and holder.get("started") == _start_time(os.getpid())

    def _must_fence(self, number: int, holder: dict[str, Any] | None) -> bool:
        """Whether taking over from holder ``number`` (``holder``: its record, None if it
        let go) means fencing: it, or its workers, could still write; or it owed a fence
        and never recorded one done (``fenced``), however it ended: the holder it took
        over from may be writing still."""
        if holder is not None and self._may_write(holder):
            return True
        if not number or self.store.exists(self._rel(number, "fenced")):
            return False
        try:
            record = json.loads(self.store.read_bytes(self._rel(number)))
        except (FileNotFoundError, ValueError):
            return True  # pruned under us, or torn: nothing says it fenced
        return not isinstance(record, dict) or record.get("owes_fence") is not False

    def fenced(self) -> None:
        """Record that this holder fenced what it owed (``fence_needed``): a successor need
        not fence again for the holder before it, whatever becomes of this one."""
        assert self.token is not None
        self.store.write_bytes(self._rel(self.token, "fenced"), b"{}")

    def _may_write(self, holder: dict[str, Any]) -> bool:
        """Whether a taken-over holder, or its workers, could still write to the store."""
        if holder.get("remote") is not False:
            return True  # remote workers, or a record too torn to tell
        if self._let_go(holder):
            return False
        if self._same_machine(holder) and not self._this_process(holder):
            return _alive(holder["pid"], holder.get("started"))
        return True  # elsewhere, or paused: only its heartbeat was judged

    def _body(self, number: int) -> bytes:
        pid = os.getpid()
        record = {
            "host": socket.gethostname(),
            "machine": _machine(),
            "pid": pid,
            "started": _start_time(pid),
            "nonce": self.nonce,
            "token": number,
            "remote": self.remote,
            "owes_fence": self.fence_needed,
            "heartbeat": time.time(),
        }
        return json.dumps(record, sort_keys=True).encode()

    def acquire(self, wait: float = 0.0, poll: float = 0.05) -> Lease:
        """Take the lease, waiting up to ``wait`` seconds for a live holder to let go."""
        self.store.require_atomic_create("a lease")
        deadline = time.monotonic() + wait
        while True:
            number = self.newest()
            holder = self._holder(number) if number else None
            legacy = self._legacy()
            if legacy is not None:
                holder = legacy  # its pid and host name the holder in the error below
            if holder is not None and (legacy is not None or not self._stale(holder)):
                if time.monotonic() >= deadline:
                    raise LeaseHeldError(
                        f"{self.store.url_of(self.folder)} is held by pid {holder.get('pid')} "
                        f"on {holder.get('host')}; another process is working on this store"
                    )
                time.sleep(poll)
                continue
            # the record says whether this holder owes a fence, so that a successor finishes
            # one it could not (``_must_fence``)
            self.fence_needed = self._must_fence(number, holder)
            # Held from before the create: another thread of this process that reads the
            # record in the instant after it lands must not judge it let go (``_let_go``).
            _HELD.add(self.nonce)
            try:
                self.store.write_bytes(
                    self._rel(number + 1), self._body(number + 1), exclusive=True
                )
            except FileExistsError:
                _HELD.discard(self.nonce)
                continue  # another acquirer took this number first: judge the new holder
            except BaseException:
                _HELD.discard(self.nonce)
                raise
            self.token, self.broke = number + 1, holder
            break
        self._prune(self.token - 1)
        self._stop.clear()
        self._beat = threading.Thread(target=self._heartbeat, daemon=True)
        self._beat.start()
        return self

    def _prune(self, below: int) -> None:
        """Delete the files of holders older than ``below``: the previous holder's stay, for
        whoever wants to know what the last takeover broke."""
        for name in self.store.listdir(self.folder):
            match = _OWNED.match(name)
            if match and int(match.group(1)) < below:
                with contextlib.suppress(StorageError):
                    self.store.delete(f"{self.folder}/{name}")

    def _heartbeat(self) -> None:
        assert self.token is not None
        beat = self._rel(self.token, "beat")
        while not self._stop.wait(self.ttl / 4):
            try:
                if self.superseded():
                    return  # taken over by someone who judged us stale; stop beating
                self.store.write_bytes(beat, json.dumps({"heartbeat": time.time()}).encode())
            except Exception:  # noqa: BLE001 - a storage hiccup: try again next beat
                continue

    def release(self) -> None:
        """Stop the heartbeat and mark the lease let go.

        The lease counts as let go even when the mark fails (StorageIOError): this
        process may take it again at once, and others once it is stale.
        """
        _HELD.discard(self.nonce)
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
            self._beat = None
        if self.token is None:
            return
        token, self.token = self.token, None
        done = json.dumps({"released_at": time.time()}).encode()
        with contextlib.suppress(FileExistsError):
            self.store.write_bytes(self._rel(token, "done"), done, exclusive=True)

    def __enter__(self) -> Lease:
        """Acquire (without waiting) unless held already: ``with lease.acquire(wait=30):``."""
        return self if self.nonce in _HELD else self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        try:
            self.release()
        except Exception:
            if exc_type is None:
                raise
            # The body's error is what the caller must see; the record stays until stale.
            log.warning("could not release %s", self.store.url_of(self.folder), exc_info=True)
