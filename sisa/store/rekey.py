"""Moving an existing store's salt into a key store (``sisa rekey``).

A store trained without a key store keeps the salt of its ID hashes in its training
record, so anyone who reads the store can test a guessed ID against its journal,
tombstones and receipts. ``rekey`` stores that same salt in a key store and rewrites the
record to name the key instead of holding it. Every salted hash stays valid, so the
receipt chain is not rewritten and ``audit --expect-head`` still holds. The store's
ID-set hashes stay plain sha256, as they were written.

What rekey cannot reach: copies of the old record (backups, snapshots) still hold the
salt. In a bucket with versioning, rekey deletes the record's noncurrent versions where
no object lock forbids it.
"""

from __future__ import annotations

import secrets
from typing import Any

from sisa.config import build_config
from sisa.store.artifacts import SisaStore, StorageOptions, open_store
from sisa.store.fencing import holding
from sisa.store.layout import PROCESS_LOCK, SALT_FOLDER
from sisa.store.sealing import check_encryption, open_keys
from storage.keys import key_id


def rekey(
    store: SisaStore | str,
    storage_options: StorageOptions = None,
    *,
    key_store: str,
    key_store_options: dict[str, Any] | None = None,
) -> str:
    """Move the store's salt into ``key_store`` (the KEK from ``SISA_STORAGE__KEK`` or
    ``storage.kek_file``); returns the key's ID. ValueError if the store already keeps its
    salt in a key store, or for a key store that ``train`` would refuse."""
    store = open_store(store, storage_options)
    store.require_trained()
    intent = store.intent()
    assert intent is not None
    if "salt" not in intent:
        keys = store.config().storage.key_store
        raise ValueError(f"{store.url} already keeps its salt in its key store {keys!r}")
    tree = intent["config"] | {
        "storage": intent["config"].get("storage", {})
        | {"key_store": key_store, "key_store_options": key_store_options}
    }
    storage = build_config(tree).storage  # the errors name the field
    check_encryption(store.url, store.storage_options, storage)
    with holding(store, store.lease(PROCESS_LOCK, store.config().deletion.lease_s)):
        scope, part = intent.get("key_scope") or secrets.token_hex(16), secrets.token_hex(16)
        keys = open_keys(store.url, store.storage_options, storage, scope)
        assert keys is not None
        keys.require_owner()
        name = key_id(scope, SALT_FOLDER, part)
        keys.keys.create(name, bytes.fromhex(intent["salt"]))  # first: a crash loses nothing
        record = {k: v for k, v in intent.items() if k != "salt"} | {
            "config": build_config(tree).stored(),
            "key_scope": scope,
            "salt_key": part,
        }
        store.replace_record(record)  # and the old record's versions, salt and all
    return name
