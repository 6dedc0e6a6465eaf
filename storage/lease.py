"""A lease: at most one live holder of a named lock in a store, and crashes free it.

A lease is taken by an exclusive create of a small JSON file naming its holder (host, pid,
process start time, a random token) and a heartbeat time. A holder that dies without
releasing leaves the file behind, so a lease counts as **stale**, and is broken, when:

- its holder ran on this host and that process is gone (or is a different process that
  reused the pid); this frees a killed holder at once, or
- its heartbeat is older than ``ttl`` seconds (holders on other hosts, which this host
  cannot ask). A live holder rewrites its heartbeat every ``ttl / 4`` seconds, or
- its holder is this very process, which has let go of it: a release that could not reach
  the store (an object store that was down) leaves the record, and this process must not
  wait ``ttl`` for itself when it retries.

Breaking a stale lease and taking it again is not atomic on every backend. A breaker
re-reads the lease just before deleting it and deletes only the stale record it judged,
which leaves a window of one read between two breakers. The lease orders cooperating
processes; the commit protocol's exclusive creates stay the last line of defence against
a writer that lost its lease.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import socket
import threading
import time
from pathlib import Path
from typing import Any

from storage.commit import StorageError
from storage.fs import Store

log = logging.getLogger(__name__)

_HELD: set[str] = set()  # tokens of the leases this process holds now


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
    """``with Lease(store, "locks/process.json", ttl=600): ...`` holds the lease inside."""

    def __init__(self, store: Store, rel: str, ttl: float = 600.0) -> None:
        self.store, self.rel, self.ttl = store, rel, float(ttl)
        self.token = secrets.token_hex(8)
        # the record of a dead holder this acquire broke: a holder that stops on an error
        # releases its lease, one that was killed leaves it, so this tells a crash apart
        self.broke: dict[str, Any] | None = None
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def _body(self) -> bytes:
        pid = os.getpid()
        holder = {
            "host": socket.gethostname(),
            "machine": _machine(),
            "pid": pid,
            "started": _start_time(pid),
            "token": self.token,
            "heartbeat": time.time(),
        }
        return json.dumps(holder, sort_keys=True).encode()

    def holder(self) -> dict[str, Any] | None:
        """The current holder's record, or None when the lease is free."""
        try:
            raw = self.store.read_bytes(self.rel)
        except FileNotFoundError:
            return None
        try:
            body = json.loads(raw)
            return body if isinstance(body, dict) else {}
        except ValueError:
            return {}  # a torn or foreign file: treated as stale below

    def _stale(self, holder: dict[str, Any]) -> bool:
        beat = holder.get("heartbeat")
        if not isinstance(beat, (int, float)) or time.time() - beat > self.ttl:
            return True
        pid = holder.get("pid")
        same_machine = holder.get("machine", _machine()) == _machine()
        if holder.get("host") == socket.gethostname() and same_machine and isinstance(pid, int):
            if pid == os.getpid() and holder.get("started") == _start_time(pid):
                return holder.get("token") not in _HELD  # ours, and we let go of it
            return not _alive(pid, holder.get("started"))
        return False

    def acquire(self, wait: float = 0.0, poll: float = 0.05) -> Lease:
        """Take the lease, waiting up to ``wait`` seconds for a live holder to let go."""
        self.store.require_atomic_create("a lease")
        deadline = time.monotonic() + wait
        while True:
            # Held from before the create: another thread of this process that reads the
            # record in the instant after it lands must not judge it let go (``_stale``).
            _HELD.add(self.token)
            try:
                self.store.write_bytes(self.rel, self._body(), exclusive=True)
                break
            except FileExistsError:
                _HELD.discard(self.token)
                holder = self.holder()
                if holder is None:
                    continue  # released between our create and our read
                if self._stale(holder):
                    if self.holder() == holder:  # not replaced by a breaker that was faster
                        self.store.delete(self.rel)
                        self.broke = holder
                    continue
                if time.monotonic() >= deadline:
                    raise LeaseHeldError(
                        f"{self.store.url_of(self.rel)} is held by pid {holder.get('pid')} on "
                        f"{holder.get('host')}; another process is working on this store"
                    ) from None
                time.sleep(poll)
            except BaseException:
                _HELD.discard(self.token)
                raise
        self._stop.clear()
        self._beat = threading.Thread(target=self._heartbeat, daemon=True)
        self._beat.start()
        return self

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.ttl / 4):
            try:
                holder = self.holder()
                if not holder or holder.get("token") != self.token:
                    return  # broken by someone who judged us dead; stop touching it
                self.store.write_bytes(self.rel, self._body())
            except Exception:  # noqa: BLE001 - a storage hiccup: try again next beat
                continue

    def release(self) -> None:
        """Stop the heartbeat and delete the record if it is still ours.

        The lease counts as let go even when the delete fails (StorageIOError): this
        process may take it again at once, and others once it is stale.
        """
        _HELD.discard(self.token)
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
            self._beat = None
        holder = self.holder()
        if holder and holder.get("token") == self.token:
            self.store.delete(self.rel)

    def __enter__(self) -> Lease:
        """Acquire (without waiting) unless held already: ``with lease.acquire(wait=30):``."""
        return self if self.token in _HELD else self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        try:
            self.release()
        except Exception:
            if exc_type is None:
                raise
            # The body's error is what the caller must see; the record stays until stale.
            log.warning("could not release %s", self.store.url_of(self.rel), exc_info=True)
