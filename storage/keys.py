"""Data keys kept outside the store, wrapped by a key-encryption key (KEK).

Crypto-shredding: every artifact is sealed with a data key of its own, and purging the
artifact destroys its key. A backup, a snapshot or an old object version of the artifact
then holds bytes that nothing can open, **provided the key store keeps no copies of its
own**: that is its contract (docs/threat-model.md). A key store is therefore a separate
location (another bucket or folder), never part of the store, and a real KMS can take
its place by implementing ``KeyStore``.

``FileKeyStore`` keeps each data key as one small file, wrapped with AES-256-GCM under the
KEK and bound to its key ID. Its first write records the KEK's public ID
(``crypto.kek_id``), so that opening it with another KEK fails at once with a clear error
instead of at the first unwrap.

Key IDs are ``<scope>/<artifact folder>/<random>``: a store's keys share its scope, and
each attempt at an artifact gets a fresh random part. The store can therefore find, by
prefix, every key ever made for a folder, including those of attempts that never
committed, and destroy all of them but the one its committed manifest names.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Protocol, runtime_checkable

from storage.crypto import SealError, kek_id, new_key, seal, unseal
from storage.errors import StorageError
from storage.fs import Store

KEK_DOC = "KEK-ID"  # the public ID of the KEK that wraps every key here
OWNER_DOC = "OWNER"  # in each scope: the URL of the one store whose keys lie there
KEY_SUFFIX = ".key"
CACHE_SECONDS = 2.0  # how long an unwrapped key is kept: a key destroyed elsewhere is
# refused by this process after at most that long
_KEY_PART = re.compile(r"[0-9a-f]{32}")
CACHE_KEYS = 256  # unwrapped data keys kept in memory (a store reads a few hundred at most)


class KeyDestroyedError(StorageError):
    """The data key is gone: its artifact was purged, and its bytes can never be read."""


@runtime_checkable
class KeyStore(Protocol):
    """Where data keys live. A KMS implements the same four calls; ``destroy`` must leave
    no copy from which the key could be recovered."""

    url: str

    def create(self, key_id: str, key: bytes | None = None) -> bytes:
        """A new data key stored under ``key_id`` (a new ID each time): random, or ``key``
        (a secret carried over from an earlier store)."""
        ...

    def get(self, key_id: str) -> bytes:
        """The data key; ``KeyDestroyedError`` if it was destroyed or never made."""
        ...

    def destroy(self, key_id: str) -> None:
        """Destroy the key for good; destroying a destroyed key is not an error."""
        ...

    def key_ids(self, prefix: str) -> list[str]:
        """Every key whose ID starts with the folder ``prefix`` (``scope/folder``)."""
        ...

    def claim(self, scope: str, owner: str) -> str:
        """Record ``owner`` (a store's URL) as the store whose keys lie under ``scope``, if
        none is recorded yet; return the one recorded."""
        ...


class FileKeyStore:
    """Data keys as files under an fsspec URL, each wrapped under the KEK."""

    def __init__(self, url: str, kek: bytes, storage_options: dict | None = None) -> None:
        self.fs = Store(url, storage_options)
        self.url = self.fs.url
        self._kek = kek
        self._kek_id = kek_id(kek)
        self._checked = False
        self._cache: OrderedDict[str, tuple[bytes, float]] = OrderedDict()  # id -> key, when
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"FileKeyStore({self.url!r})"  # never the KEK

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a key store holds the key-encryption key; it is never pickled")

    def _check_kek(self) -> None:
        """Refuse a KEK other than the one this key store was first written with."""
        if self._checked:
            return
        try:
            recorded = self.fs.read_bytes(KEK_DOC).decode().strip()
        except FileNotFoundError:
            try:
                self.fs.write_bytes(KEK_DOC, f"{self._kek_id}\n".encode(), exclusive=True)
                recorded = self._kek_id
            except FileExistsError:  # another writer recorded it first
                recorded = self.fs.read_bytes(KEK_DOC).decode().strip()
        if recorded != self._kek_id:
            raise ValueError(
                f"storage.kek: the key store {self.url} was written under another "
                f"key-encryption key (ID {recorded}); this one has ID {self._kek_id}"
            )
        self._checked = True

    def _rel(self, key_id: str) -> str:
        _check_key_id(key_id)
        return key_id + KEY_SUFFIX

    def create(self, key_id: str, key: bytes | None = None) -> bytes:
        self._check_kek()
        key = new_key() if key is None else bytes(key)
        wrapped = seal(self._kek, key, key_id.encode())
        self.fs.write_bytes(self._rel(key_id), wrapped, exclusive=True)
        self._remember(key_id, key)
        return key

    def get(self, key_id: str) -> bytes:
        with self._lock:
            cached = self._cache.get(key_id)
            if cached is not None and time.monotonic() - cached[1] < CACHE_SECONDS:
                return cached[0]
        self._check_kek()
        try:
            wrapped = self.fs.read_bytes(self._rel(key_id))
        except FileNotFoundError:
            raise KeyDestroyedError(
                f"data key {key_id} is not in {self.url}: it was destroyed when its artifact "
                "was purged, so these bytes can never be read"
            ) from None
        try:
            key = unseal(self._kek, wrapped, key_id.encode(), f"data key {key_id}")
        except SealError as exc:
            raise SealError(f"{exc} (in {self.url})") from None
        self._remember(key_id, key)
        return key

    def destroy(self, key_id: str) -> None:
        with self._lock:
            self._cache.pop(key_id, None)
        self.fs.delete(self._rel(key_id))

    def key_ids(self, prefix: str) -> list[str]:
        return sorted(
            rel[: -len(KEY_SUFFIX)]
            for rel in self.fs.walk(prefix.rstrip("/"))
            if rel.endswith(KEY_SUFFIX)
        )

    def claim(self, scope: str, owner: str) -> str:
        self._check_kek()
        rel = f"{scope}/{OWNER_DOC}"
        with contextlib.suppress(FileExistsError):  # recorded already: by whom, read below
            self.fs.write_bytes(rel, owner.encode(), exclusive=True)
        return self.fs.read_bytes(rel).decode()

    def _remember(self, key_id: str, key: bytes) -> None:
        with self._lock:
            self._cache[key_id] = (key, time.monotonic())
            self._cache.move_to_end(key_id)
            while len(self._cache) > CACHE_KEYS:
                self._cache.popitem(last=False)


def key_id(scope: str, folder: str, part: str) -> str:
    return f"{scope}/{folder}/{part}"


def split_key_id(key: str) -> tuple[str, str, str]:
    """(scope, artifact folder, random part) of a key ID."""
    scope, _, rest = key.partition("/")
    folder, _, part = rest.rpartition("/")
    return scope, folder, part


def _check_key_id(key: str) -> None:
    scope, folder, part = split_key_id(key)
    if not (_KEY_PART.fullmatch(scope) and folder and _KEY_PART.fullmatch(part)):
        raise ValueError(f"malformed data key ID {key!r}")


class Sealing:
    """What seals one store's artifacts: its key store and its scope there.

    Each attempt at an artifact gets a fresh data key (``new_key``); ``shred`` destroys
    every key under a folder of the store but those a committed manifest names. Purging
    calls it before deleting the bytes, so a crash in between leaves bytes no key opens."""

    def __init__(self, keys: KeyStore, scope: str, owner: str | None = None) -> None:
        if not _KEY_PART.fullmatch(scope):
            raise ValueError(f"malformed key scope {scope!r}")
        self.keys, self.scope, self.owner = keys, scope, owner
        self._owned = owner is None

    def require_owner(self) -> None:
        """Refuse to make or destroy keys for a store that is not the scope's own: a copy
        of a store (a backup restored elsewhere, a clone) shares its scope, and its purges
        would destroy the keys of the original's live artifacts."""
        if self._owned:
            return
        assert self.owner is not None
        recorded = self.keys.claim(self.scope, self.owner)
        if recorded != self.owner:
            raise StorageError(
                f"the keys of this store (scope {self.scope} in {self.keys.url}) belong to "
                f"the store at {recorded}; this one at {self.owner} is a copy of it, which "
                "may be read but not written or purged"
            )
        self._owned = True

    def __repr__(self) -> str:
        return f"Sealing({self.keys!r}, scope={self.scope})"

    def new_key(self, folder: str) -> tuple[str, bytes]:
        """(random part, data key) for a new attempt at the artifact in ``folder``."""
        self.require_owner()
        part = secrets.token_hex(16)
        return part, self.keys.create(key_id(self.scope, folder, part))

    def key(self, folder: str, part: str) -> bytes:
        return self.keys.get(key_id(self.scope, folder, part))

    def shred(
        self,
        prefix: str,
        keep: Mapping[str, str | None] | None = None,
        only: Callable[[str], bool] | None = None,
    ) -> list[str]:
        """Destroy the keys of every artifact at or below ``prefix`` except ``keep``: folder
        -> the key part its committed manifest names, or None to keep all of that folder's
        (a manifest that cannot be read now); ``only``, when given, says which folders'
        keys may go at all. Returns the IDs destroyed."""
        self.require_owner()
        keep = keep or {}
        gone = []
        for key in self.keys.key_ids(f"{self.scope}/{prefix}" if prefix else self.scope):
            _, folder, part = split_key_id(key)
            if folder in keep and keep[folder] in (None, part):
                continue
            if only is not None and not only(folder):
                continue
            self.keys.destroy(key)
            gone.append(key)
        return gone
