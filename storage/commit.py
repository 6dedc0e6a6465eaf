"""The commit protocol: how an artifact becomes durable, and how readers decide to trust it.

An artifact is a directory of payload files plus ``MANIFEST.json``.

Writing (:func:`write_artifact`):

1. Every payload file's sha256 and size are computed and the manifest body is built (so a bad
   ``meta`` fails before anything touches the store).
2. Payload files are written, each atomically (see :mod:`storage.fs`).
3. ``MANIFEST.json`` is written last, with create-if-absent semantics. Its existence *is* the
   commit: before it appears the directory is uncommitted garbage for a sweep to remove; after,
   it is immutable. An artifact that already has a manifest is never written to again.

Reading: only committed manifests are trusted, and every file read is checked against the
manifest's size and sha256 before its bytes are handed out. Any mismatch raises
:class:`CorruptArtifactError` naming the file; the bytes are never returned.

Sealing (``Store.sealing``, see :mod:`storage.keys`): each payload is encrypted under a
data key of the artifact's own (:mod:`storage.crypto`), bound to its folder and name. The
manifest stays plaintext; it names the key (``sealed``), and its sha256 and size are of
the stored, sealed bytes. A reader opens a sealed file only after those checks, and the
cipher's tag checks the plaintext. A store that seals refuses an unsealed artifact.

The manifest and small documents (:func:`write_doc`, e.g. head pointers) are self-verifying JSON:
``{"body": ..., "sha256": sha256(canonical_json(body))}``. The body hash of a manifest is the
artifact's identity.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from storage.crypto import ALGORITHM, SealError, seal, unseal
from storage.errors import StorageError
from storage.fs import Store

MANIFEST = "MANIFEST.json"
_MANIFEST_VERSION = 1
_SEALED_VERSION = 2  # a manifest that names its artifact's data key
_HEX64 = re.compile(r"[0-9a-f]{64}")
# Payload names are single components; a leading "." is reserved for temp files.
_FILE_NAME = re.compile(r"[A-Za-z0-9_%-][A-Za-z0-9._%-]{0,199}")


class DocumentExistsError(StorageError, FileExistsError):
    """A write-once document is already there: another writer committed first."""


class CorruptArtifactError(StorageError):
    """Stored bytes disagree with their manifest, or a manifest/document is unreadable."""


class UncommittedArtifactError(StorageError):
    """The directory has no manifest: a write never finished, so nothing in it is trusted."""


class UnknownFileError(StorageError, KeyError):
    """The requested file is not listed in the artifact's manifest."""

    __str__ = Exception.__str__  # KeyError would quote the message


@dataclass(frozen=True)
class FileEntry:
    """What a committed manifest promises about one payload file."""

    sha256: str
    size: int


@dataclass(frozen=True)
class Manifest:
    """A committed artifact's file list and caller metadata; ``sha256`` is its identity."""

    files: dict[str, FileEntry]
    meta: dict
    sha256: str
    key: str | None = None  # the data key's part (``storage.keys``) when sealed


def sha256_hex(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def canonical_json(obj: Any) -> bytes:
    """One byte representation per JSON value, so hashes of JSON are reproducible."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def write_artifact(
    store: Store, rel_dir: str, files: dict[str, bytes], meta: dict | None = None
) -> Manifest:
    """Commit ``files`` under ``rel_dir``: payloads first, manifest last, never in place.

    Raises StorageError if ``rel_dir`` is already committed (or gets committed concurrently).
    A leftover uncommitted attempt in ``rel_dir`` is simply replaced file by file.
    """
    meta_json = _meta_json(meta)  # a bad meta fails before anything touches the store
    for name in files:
        _check_file_name(name)
    writer = ArtifactWriter(store, rel_dir)
    for name, data in files.items():
        writer.add(name, data)
    return writer.commit(meta_json)


class ArtifactWriter:
    """Writes one artifact a payload file at a time, for artifacts too large to hold at once.

    The commit protocol is ``write_artifact``'s: each payload is written atomically and its
    sha256 and size recorded; ``commit`` writes the manifest last, and until then the
    directory is uncommitted garbage that no reader trusts. A leftover uncommitted attempt
    is replaced file by file; a file it had and this one does not stays out of the manifest.
    """

    def __init__(self, store: Store, rel_dir: str) -> None:
        store.path(rel_dir)  # validate before doing any work
        self.store, self.rel_dir = store, rel_dir
        self.entries: dict[str, FileEntry] = {}
        self._key: tuple[str, bytes] | None = None  # (part, data key) once sealing starts
        self._manifest_rel = _join(rel_dir, MANIFEST)
        self._refuse_committed()

    def _refuse_committed(self) -> None:
        if self.store.exists(self._manifest_rel):
            raise StorageError(
                f"artifact at {self.store.url_of(self.rel_dir)} is already committed; "
                "committed artifacts are never overwritten"
            )

    def add(self, name: str, data: bytes) -> FileEntry:
        """Write one payload file (atomically) and remember its checksum for the manifest."""
        _check_file_name(name)
        if name in self.entries:
            raise ValueError(f"{name!r} was already written to this artifact")
        data = bytes(data)
        if self.store.sealing is not None:
            data = seal(self._data_key()[1], data, _where(self.rel_dir, name))
        entry = FileEntry(sha256=sha256_hex(data), size=len(data))
        self.store.write_bytes(_join(self.rel_dir, name), data)
        self.entries[name] = entry
        return entry

    def _data_key(self) -> tuple[str, bytes]:
        if self._key is None:
            assert self.store.sealing is not None
            self._key = self.store.sealing.new_key(self.rel_dir)
        return self._key

    def commit(self, meta: dict | None = None) -> Manifest:
        """Write the manifest: from here on the artifact exists and never changes."""
        meta_json = _meta_json(meta)
        body: dict[str, Any] = {
            "version": _MANIFEST_VERSION,
            "files": {
                n: {"sha256": e.sha256, "size": e.size} for n, e in sorted(self.entries.items())
            },
            "meta": meta_json,
        }
        key = None
        if self.store.sealing is not None:
            key = self._data_key()[0]
            body |= {"version": _SEALED_VERSION, "sealed": {"algorithm": ALGORITHM, "key": key}}
        self._refuse_committed()
        try:
            digest = _write_signed(self.store, self._manifest_rel, body)
        except FileExistsError:
            raise StorageError(
                f"artifact at {self.store.url_of(self.rel_dir)} was committed by another writer"
            ) from None
        return Manifest(files=dict(self.entries), meta=meta_json, sha256=digest, key=key)


def _meta_json(meta: dict | None) -> dict:
    """Meta round-tripped through JSON, so the Manifest returned equals what readers see."""
    meta_json = json.loads(canonical_json({} if meta is None else meta))
    if not isinstance(meta_json, dict):
        raise TypeError("meta must be a dict")
    return meta_json


def read_manifest(store: Store, rel_dir: str) -> Manifest:
    """Load and verify the manifest that makes ``rel_dir`` a committed artifact."""
    manifest_rel = _join(rel_dir, MANIFEST)
    try:
        raw = store.read_bytes(manifest_rel)
    except FileNotFoundError:
        raise UncommittedArtifactError(
            f"the artifact at {store.url_of(rel_dir)} is not committed (no {MANIFEST})"
        ) from None
    where = store.url_of(manifest_rel)
    body, digest = _parse_signed(raw, where)
    if body.get("version") not in (_MANIFEST_VERSION, _SEALED_VERSION):
        raise CorruptArtifactError(f"{where}: unsupported manifest version {body.get('version')!r}")
    key = _sealed_key(body, where)
    files_obj, meta = body.get("files"), body.get("meta")
    if not isinstance(files_obj, dict) or not isinstance(meta, dict):
        raise CorruptArtifactError(f"{where}: manifest lacks a 'files' or 'meta' object")
    files: dict[str, FileEntry] = {}
    for name, entry in files_obj.items():
        ok = (
            isinstance(name, str)
            and _FILE_NAME.fullmatch(name) is not None
            and name != MANIFEST
            and isinstance(entry, dict)
            and isinstance(entry.get("sha256"), str)
            and _HEX64.fullmatch(entry["sha256"]) is not None
            and type(entry.get("size")) is int
            and entry["size"] >= 0
        )
        if not ok:
            raise CorruptArtifactError(f"{where}: malformed entry for file {name!r}")
        files[name] = FileEntry(sha256=entry["sha256"], size=entry["size"])
    return Manifest(files=files, meta=meta, sha256=digest, key=key)


def _sealed_key(body: dict, where: str) -> str | None:
    """The data key part a sealed manifest names (None for a plaintext one)."""
    sealed = body.get("sealed")
    if body["version"] == _MANIFEST_VERSION:
        if sealed is not None:
            raise CorruptArtifactError(f"{where}: a version 1 manifest cannot be sealed")
        return None
    ok = (
        isinstance(sealed, dict)
        and set(sealed) == {"algorithm", "key"}
        and sealed["algorithm"] == ALGORITHM
        and isinstance(sealed["key"], str)
        and re.fullmatch(r"[0-9a-f]{32}", sealed["key"]) is not None
    )
    if not ok:
        raise CorruptArtifactError(f"{where}: malformed 'sealed' entry")
    return sealed["key"]


def read_file(store: Store, rel_dir: str, name: str, manifest: Manifest | None = None) -> bytes:
    """Return the bytes of one committed file, only after checking size and sha256."""
    if manifest is None:
        manifest = read_manifest(store, rel_dir)
    entry = manifest.files.get(name)
    if entry is None:
        raise UnknownFileError(
            f"{name!r} is not part of the artifact at {store.url_of(rel_dir)}; "
            f"it has {sorted(manifest.files)}"
        )
    rel = _join(rel_dir, name)
    try:
        data = store.read_bytes(rel)
    except FileNotFoundError:
        raise CorruptArtifactError(
            f"{store.url_of(rel)} is listed in the committed manifest but missing"
        ) from None
    actual = sha256_hex(data)
    if len(data) != entry.size or actual != entry.sha256:
        raise CorruptArtifactError(
            f"{store.url_of(rel)} does not match its manifest: expected size {entry.size} "
            f"sha256 {entry.sha256}, found size {len(data)} sha256 {actual}"
        )
    return _opened(store, rel_dir, name, manifest, data)


def _opened(store: Store, rel_dir: str, name: str, manifest: Manifest, data: bytes) -> bytes:
    """The plaintext of a verified file: ``data`` itself, or opened with its data key."""
    url = store.url_of(_join(rel_dir, name))
    if manifest.key is None:
        if store.sealing is not None:
            raise CorruptArtifactError(
                f"{url} is not sealed, but this store seals every artifact ({ALGORITHM})"
            )
        return data
    if store.sealing is None:
        raise StorageError(
            f"{url} is sealed ({ALGORITHM}); open its store with the key store and the "
            "key-encryption key (storage.key_store, SISA_STORAGE__KEK or storage.kek_file)"
        )
    key = store.sealing.key(rel_dir, manifest.key)
    try:
        return unseal(key, data, _where(rel_dir, name), url)
    except SealError as exc:
        raise CorruptArtifactError(str(exc)) from None


def read_artifact(store: Store, rel_dir: str) -> tuple[Manifest, dict[str, bytes]]:
    """Return the manifest and every file of a committed artifact, all verified."""
    manifest = read_manifest(store, rel_dir)
    files = {name: read_file(store, rel_dir, name, manifest) for name in sorted(manifest.files)}
    return manifest, files


def is_committed(store: Store, rel_dir: str) -> bool:
    """Whether ``rel_dir`` has a manifest (its contents are verified only when read)."""
    return store.exists(_join(rel_dir, MANIFEST))


def write_doc(store: Store, rel: str, body: dict) -> str:
    """Write a small self-verifying JSON document once; returns the body's sha256.

    Documents are write-once like artifacts: an existing one raises StorageError.
    """
    if not isinstance(body, dict):
        raise TypeError("document body must be a dict")
    try:
        return _write_signed(store, rel, body)
    except FileExistsError:
        raise DocumentExistsError(
            f"document at {store.url_of(rel)} already exists; documents are never overwritten"
        ) from None


def replace_doc(store: Store, rel: str, body: dict) -> str:
    """Replace a self-verifying document in one atomic write; returns the body's sha256.

    Documents are write-once; this is for the one rewrite that a store's training record
    allows (moving its salt out, ``sisa.store.rekey``), under the store's lease."""
    if not isinstance(body, dict):
        raise TypeError("document body must be a dict")
    digest = sha256_hex(canonical_json(body))
    store.write_bytes(rel, canonical_json({"body": body, "sha256": digest}) + b"\n")
    return digest


def read_doc(store: Store, rel: str) -> dict:
    """Return a document's body after checking its embedded sha256.

    FileNotFoundError if absent; CorruptArtifactError if malformed or tampered with.
    """
    body, _ = _parse_signed(store.read_bytes(rel), store.url_of(rel))
    return body


def _write_signed(store: Store, rel: str, body: dict) -> str:
    """Write ``{"body", "sha256"}`` with create-if-absent; FileExistsError if present."""
    digest = sha256_hex(canonical_json(body))
    store.write_bytes(rel, canonical_json({"body": body, "sha256": digest}) + b"\n", exclusive=True)
    return digest


def _parse_signed(raw: bytes, where: str) -> tuple[dict, str]:
    """Parse a signed document strictly and check its body against the embedded hash."""
    try:
        doc = json.loads(
            raw.decode("utf-8"),
            object_pairs_hook=_no_duplicate_keys,
            parse_constant=_reject_constant,
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise CorruptArtifactError(f"{where} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or set(doc) != {"body", "sha256"}:
        raise CorruptArtifactError(f"{where} is not a signed document (want body and sha256)")
    body, expected = doc["body"], doc["sha256"]
    if not isinstance(body, dict) or not isinstance(expected, str):
        raise CorruptArtifactError(f"{where} has a malformed body or sha256")
    actual = sha256_hex(canonical_json(body))
    if actual != expected:
        raise CorruptArtifactError(
            f"{where} was modified after it was written: expected sha256 {expected}, "
            f"body hashes to {actual}"
        )
    return body, actual


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict:
    """JSON object hook: duplicate keys would let two readers see different values."""
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _reject_constant(name: str) -> None:
    """NaN/Infinity are not JSON and canonical_json refuses to write them."""
    raise ValueError(f"non-standard JSON constant {name}")


def _check_file_name(name: str) -> None:
    """Payload names are one plain component, and cannot shadow the manifest or temp files."""
    if not isinstance(name, str) or not _FILE_NAME.fullmatch(name):
        raise ValueError(
            f"artifact file name {name!r} must be one component of [A-Za-z0-9._%-] "
            "not starting with '.'"
        )
    if name == MANIFEST:
        raise ValueError(f"{MANIFEST} is reserved for the commit record")


def _join(rel_dir: str, name: str) -> str:
    return f"{rel_dir}/{name}" if rel_dir else name


def _where(rel_dir: str, name: str) -> bytes:
    """What a sealed file is bound to: its place in the store."""
    return f"sisa-artifact-v1|{_join(rel_dir, name)}".encode()
