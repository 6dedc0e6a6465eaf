"""How a store finds the keys that open its artifacts (``storage.encryption``).

The store's training record holds its ``[storage]`` settings and its key scope; the
key-encryption key (KEK) comes from the caller, never from the store: ``SISA_STORAGE__KEK``,
else the file ``storage.kek_file`` names. Every process that opens an encrypted store (a
shard job on Ray, a serving replica) therefore needs one of them, on its own node.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from sisa.config import StorageConfig
from sisa.config.storage import KEK_ENV
from storage import Store
from storage.crypto import kek_id, parse_kek
from storage.keys import FileKeyStore, Sealing


def resolve_kek(cfg: StorageConfig, given: bytes | None = None) -> bytes:
    """The KEK of an encrypted store: ``given``, else ``SISA_STORAGE__KEK``, else the file
    ``storage.kek_file``; ValueError naming where to put it."""
    if given is not None:
        return given
    if os.environ.get(KEK_ENV):
        return parse_kek(os.environ[KEK_ENV], KEK_ENV)
    if cfg.kek_file:
        try:
            text = Path(cfg.kek_file).expanduser().read_text()
        except OSError as exc:
            raise ValueError(f"storage.kek_file: cannot read {cfg.kek_file!r}: {exc}") from None
        return parse_kek(text, "storage.kek_file")
    raise ValueError(
        f"storage.kek: this store is encrypted ({cfg.encryption}); give its key-encryption "
        f"key as {KEK_ENV} or in the file storage.kek_file names"
    )


def check_encryption(url: str, options: dict[str, Any], cfg: StorageConfig) -> None:
    """Before a training writes anything: a bucket that keeps deleted objects holds only
    sealed ones; the key store lies apart from the store and keeps no copies; and this
    process can find the KEK the way every later one will."""
    kept = Store(url, options).retention()
    unsealed = cfg.encryption == "none"
    if unsealed and kept is not None and _keeps(kept) and not cfg.allow_versioned:
        raise ValueError(
            f"storage.encryption: bucket {kept['bucket']!r} has {_what(kept)}, so "
            "every object a purge deletes (the data and checkpoints of forgotten "
            "points) would survive as a noncurrent version. Encrypt the store "
            "(storage.encryption = 'aes-256-gcm': those versions are then sealed "
            "under destroyed keys), or set storage.allow_versioned = true if you "
            "remove noncurrent versions yourself"
        )
    if cfg.key_store is None:
        return
    keys = Store(cfg.key_store, _options_for(url, cfg, options))
    check_apart(Store(url, options).url, keys.url)
    if cfg.kek is not None and not os.environ.get(KEK_ENV):
        raise ValueError(
            f"storage.kek: give it as {KEK_ENV} (or in storage.kek_file), which every "
            "process that opens the store reads; a value set on the command line reaches "
            "this process's config only"
        )
    resolve_kek(cfg)
    check_keeps_no_copies(keys)


def check_keeps_no_copies(keys: Store) -> None:
    """Refuse a key store that keeps deleted objects (bucket versioning, object lock): a
    destroyed key would survive there, and every copy of the store would open again."""
    kept = keys.retention()
    if kept is not None and _keeps(kept):
        raise ValueError(
            f"storage.key_store: bucket {kept['bucket']!r} has {_what(kept)}, so a destroyed data "
            "key would survive as a noncurrent version and the artifacts it sealed could be "
            "opened again; keep keys in a bucket that never had versioning or object lock"
        )


def _keeps(kept: dict[str, Any]) -> bool:
    return kept["versioning"] is not None or bool(kept["object_lock"])


def _what(kept: dict[str, Any]) -> str:
    return "object lock" if kept["object_lock"] else f"versioning {kept['versioning']}"


def _options_for(url: str, cfg: StorageConfig, options: dict[str, Any]) -> dict[str, Any] | None:
    """``storage.key_store_options``, else the store's own options for a key store on the
    same backend."""
    assert cfg.key_store is not None
    if cfg.key_store_options is not None:
        return cfg.key_store_options
    return options if _scheme(url) == _scheme(cfg.key_store) else None


def _scheme(url: str) -> str:
    return url.split("://", 1)[0] if "://" in url else "file"  # a bare path: local disk


def check_apart(store_url: str, key_store_url: str) -> None:
    """Refuse a key store inside the store, or holding it (both URLs canonical, as
    ``Store.url``): a copy of the store would then carry the keys that open it."""
    a, b = store_url.rstrip("/") + "/", key_store_url.rstrip("/") + "/"
    if a.startswith(b) or b.startswith(a):
        raise ValueError(
            f"storage.key_store: {key_store_url!r} overlaps the store {store_url!r}; keep "
            "the keys in a location of their own, or a copy of the store copies its keys"
        )


def open_keys(
    url: str,
    options: dict[str, Any],
    cfg: StorageConfig,
    scope: str | None,
    kek: bytes | None = None,
) -> Sealing | None:
    """The keys of a store whose record says ``cfg`` and ``scope`` (its key store, under
    its scope); None for a store without a key store. They seal its artifacts only where
    ``cfg.encryption`` says so."""
    if cfg.key_store is None:
        return None
    if scope is None:
        raise ValueError(f"{url}: the record of a store with a key store lacks its scope")
    own = Store(url, options).url
    keys = _key_store(cfg.key_store, resolve_kek(cfg, kek), _options_for(url, cfg, options))
    check_apart(own, keys.url)
    return Sealing(keys, scope, owner=own)


_KEY_STORES: dict[tuple[str, str, str], FileKeyStore] = {}  # one per key store and KEK


def _key_store(url: str, kek: bytes, options: dict[str, Any] | None) -> FileKeyStore:
    """The process's one ``FileKeyStore`` for (URL, options, KEK): its KEK check and its
    short-lived cache of unwrapped keys serve every store object that opens it."""
    cache_key = (url, json.dumps(options or {}, sort_keys=True, default=str), kek_id(kek))
    if cache_key not in _KEY_STORES:
        _KEY_STORES[cache_key] = FileKeyStore(url, kek, options)
    return _KEY_STORES[cache_key]
