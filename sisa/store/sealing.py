"""How a store finds the keys that open its artifacts (``storage.encryption``).

The store's training record holds its ``[storage]`` settings and its key scope; the
key-encryption key (KEK) comes from the caller, never from the store: ``SISA_STORAGE__KEK``,
else the file ``storage.kek_file`` names. Every process that opens an encrypted store (a
shard job on Ray, a serving replica) therefore needs one of them, on its own node.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sisa.config import StorageConfig
from sisa.config.storage import KEK_ENV
from storage import Store
from storage.crypto import parse_kek
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
    """Before a training writes anything: the key store lies apart from the store, and
    this process can find the KEK the way every later one will."""
    if cfg.encryption == "none" or cfg.key_store is None:
        return
    check_apart(url, cfg.key_store, options)
    if cfg.kek is not None and not os.environ.get(KEK_ENV):
        raise ValueError(
            f"storage.kek: give it as {KEK_ENV} (or in storage.kek_file), which every "
            "process that opens the store reads; a value set on the command line reaches "
            "this process's config only"
        )
    resolve_kek(cfg)


def check_apart(store_url: str, key_store: str, options: dict[str, Any]) -> None:
    """Refuse a key store inside the store, or holding it: a copy of the store would then
    carry the keys that open it."""
    a = Store(store_url, options).url.rstrip("/") + "/"
    b = Store(key_store, options).url.rstrip("/") + "/"
    if a.startswith(b) or b.startswith(a):
        raise ValueError(
            f"storage.key_store: {key_store!r} overlaps the store {store_url!r}; keep the "
            "keys in a location of their own, or a copy of the store copies its keys"
        )


def open_sealing(
    url: str,
    options: dict[str, Any],
    cfg: StorageConfig,
    scope: str | None,
    kek: bytes | None = None,
) -> Sealing | None:
    """The sealing of a store whose record says ``cfg`` and ``scope``; None unencrypted."""
    if cfg.encryption == "none":
        return None
    if scope is None or cfg.key_store is None:
        raise ValueError(f"{url}: an encrypted store's record lacks its key store or scope")
    check_apart(url, cfg.key_store, options)
    same = Store(url, options).protocol == Store(cfg.key_store).protocol
    keys = FileKeyStore(cfg.key_store, resolve_kek(cfg, kek), options if same else None)
    return Sealing(keys, scope)
