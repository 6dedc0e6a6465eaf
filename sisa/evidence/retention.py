"""What may outlive a purge: data keys left in the key store, and object versions that a
bucket kept (``audit`` reports both).

Crypto-shredding holds only if the key of every purged artifact is gone. So the audit
lists the store's keys: each must open a live artifact, the one its committed manifest
names. Any other key (of a purged generation, or of an attempt that never committed) is a
violation, because a copy of its artifact would still open. A live artifact without its
key is a violation too: nothing can read it. In a bucket with versioning, each
noncurrent version of an artifact file is reported. If its key is destroyed, it is a
warning: the bytes are sealed for good. Otherwise it is a violation: the bytes of a
purged artifact remain readable.
"""

from __future__ import annotations

from sisa.store.artifacts import Head, SisaStore
from sisa.store.layout import SHARDS, TEST_PREFIX  # the salt's key lies apart from both
from storage import StorageError
from storage.keys import split_key_id

Flag = tuple[str, str, str, str]  # kind, store-relative path, detail, severity


def retention_findings(
    store: SisaStore, heads: dict[str, Head | None], unfinished: bool = False
) -> list[Flag]:
    """Findings about keys and kept versions, given each part's latest head. ``unfinished``:
    a batch was interrupted, so keys of what it left are expected until it resumes."""
    live: dict[str, str | None] = {}  # artifact folder -> its manifest's key part
    for head in heads.values():
        if head is None:
            continue
        for ref in (head.data, *head.stages):
            try:
                live[ref.dir] = store.manifest(ref.dir).key
            except (StorageError, FileNotFoundError):
                live[ref.dir] = None  # the audit reports the manifest itself
    flags = _keys(store, live, unfinished)
    return flags + _versions(store, live)


def _key_folders(store: SisaStore) -> dict[str, set[str]] | None:
    """Artifact folder -> the key parts the key store holds for it; None unencrypted."""
    sealing = store.sealing()
    if sealing is None:
        return None
    held: dict[str, set[str]] = {}
    for prefix in (SHARDS, TEST_PREFIX):
        for key in sealing.keys.key_ids(f"{sealing.scope}/{prefix}"):
            _, folder, part = split_key_id(key)
            held.setdefault(folder, set()).add(part)
    return held


def _keys(store: SisaStore, live: dict[str, str | None], unfinished: bool) -> list[Flag]:
    held = _key_folders(store)
    if held is None:
        return []
    flags: list[Flag] = []
    for folder, parts in sorted(held.items()):
        extra = parts - {live.get(folder)}
        if extra:
            flags.append(
                (
                    "undestroyed data key",
                    folder,
                    f"{len(extra)} data key(s) of a purged or abandoned artifact are still "
                    "in the key store: a copy of it would open ('sisa process' sweeps them)"
                    + ("; left by the unfinished batch until it resumes" if unfinished else ""),
                    "warning" if unfinished else "violation",
                )
            )
    for folder, part in sorted(live.items()):
        if part is not None and part not in held.get(folder, set()):
            detail = "its data key is gone from the key store: it can never be read"
            flags.append(("destroyed key of a live artifact", folder, detail, "violation"))
    return flags


def _versions(store: SisaStore, live: dict[str, str | None]) -> list[Flag]:
    if not store.keeps_versions():
        return []
    held = _key_folders(store)
    flags: list[Flag] = []
    by_file: dict[str, int] = {}
    for rel, _ in store.noncurrent_versions(""):
        if rel.split("/")[0] in (SHARDS, TEST_PREFIX) and not rel.endswith(".json"):
            by_file[rel] = by_file.get(rel, 0) + 1
    for rel, count in sorted(by_file.items()):
        folder = rel.rsplit("/", 1)[0]
        if held is not None and not held.get(folder) and folder not in live:
            detail = (
                f"{count} noncurrent version(s) kept by the bucket, sealed under a destroyed key"
            )
            flags.append(("noncurrent version", rel, detail, "warning"))
        else:
            detail = f"{count} noncurrent version(s) kept by the bucket can still be read " + (
                "(their key is live)" if held is not None else "(the store is not encrypted)"
            )
            flags.append(("readable noncurrent version", rel, detail, "violation"))
    return flags
