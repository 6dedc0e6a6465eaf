"""A SISA store: typed reads and writes of its documents, heads, data and checkpoints.

The paths are those of ``sisa.store.layout``; the records a head holds are those of
``sisa.store.records``. Every write follows the storage commit protocol, and callers
reach the bytes only through this class.

A head document names every artifact its generation uses; a stage that a retrain did not
touch is referenced from an older generation's folder. The head with the highest
generation is the shard's state, and writing it is the commit of a retrain. Everything
under a shard's prefix that its head does not reference is garbage: checkpoints and data
of older generations (which may hold deleted points) and uncommitted leftovers. ``sweep``
deletes it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from sisa.config import Config, build_config
from sisa.faults import crash_point
from sisa.store import fencing
from sisa.store.data_writer import DataWriter, data_ref
from sisa.store.layout import (
    BATCHES,
    CONFIG_DOC,
    HEAD_NAME,
    IDS_FILE,
    JOURNAL,
    OWN_PATHS,
    RECEIPTS,
    SALT_FOLDER,
    SERVING,
    SHARDS,
    STAGE_FILES,
    STATE,
    STORE_DOC,
    TEST_PREFIX,
    TOMBSTONES,
    WEIGHTS,
    gen_dir,
    head_path,
    shard_prefix,
)
from sisa.store.records import DataRef, StageRef
from sisa.store.sealing import open_keys
from storage import (
    MANIFEST,
    DocumentExistsError,
    Lease,
    Manifest,
    StorageError,
    Store,
    decode_arrays,
    decode_state,
    decode_weights,
    encode_state,
    encode_weights,
    is_committed,
    read_doc,
    read_file,
    read_manifest,
    replace_doc,
    state_hash,
    tensor_hashes,
    write_artifact,
    write_doc,
)
from storage.keys import Sealing, key_id

if TYPE_CHECKING:  # weights are tensors; reading the store's documents needs no torch
    import torch

StorageOptions = dict[str, Any] | None  # fsspec options for a URL (credentials, endpoint...)


class StoreStateError(RuntimeError):
    """The store is not in a state that allows the operation (untrained, already trained)."""


@dataclass(frozen=True)
class Head:
    """A committed head document: of a shard, the test data, the tombstones or the
    serving state. ``body`` is the document as written; ``data`` and ``stages`` read a
    shard's or the test data's records from it."""

    generation: int
    body: dict[str, Any]

    @property
    def stages(self) -> list[StageRef]:
        return [StageRef.from_body(ref) for ref in self.body.get("stages", [])]

    @property
    def data(self) -> DataRef:
        return DataRef.from_body(self.body["data"])


def _keyed(key: bytes, digest: str) -> str:
    return hmac.new(key, digest.encode(), hashlib.sha256).hexdigest()


def open_store(
    store: SisaStore | str | os.PathLike, storage_options: StorageOptions = None
) -> SisaStore:
    """The API's one convention: every public entry point takes the store as a ``SisaStore``
    or as a URL (or local path) plus its storage options."""
    if isinstance(store, SisaStore):
        if storage_options:
            raise ValueError(
                "storage_options go with a URL; a SisaStore was given, which carries its own"
            )
        return store
    if isinstance(store, str | os.PathLike):
        return SisaStore(os.fspath(store), storage_options)
    raise TypeError(f"store must be a SisaStore or a URL, not {type(store).__name__}")


class SisaStore:
    """Typed access to one store; all writes follow the commit protocol."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        self.url = url
        self.storage_options = dict(storage_options or {})
        self.fs = Store(url, self.storage_options)
        self._sealing_read = False  # whether ``fs.sealing`` follows the record yet
        self._keys: Sealing | None = None  # the key store, once the record is read
        self._keeps_versions: bool | None = None  # the bucket's versioning, read once
        self._hash_key: tuple[bytes | None] | None = None  # ``id_hash_key``, read once
        self._placement: tuple[bytes | None] | None = None  # ``placement_key``, read once
        # the lease token of the writer using this store (``sisa.store.fencing``): heads
        # are committed under it, and a head under a newer one stops this writer
        self.fence: int | None = None

    def _artifacts(self) -> Store:
        """``fs``, sealing and opening artifacts as the store's record says
        (``storage.encryption``; ``sisa.store.sealing``). Read once, when an artifact is
        first touched: a store that has no record yet writes none."""
        if not self._sealing_read:
            intent = self._doc(CONFIG_DOC)
            if intent is None:
                return self.fs
            storage = build_config(intent["config"]).storage
            scope = intent.get("key_scope")
            self._keys = open_keys(self.url, self.storage_options, storage, scope)
            self.fs.sealing = self._keys if storage.encryption != "none" else None
            self._sealing_read = True
        return self.fs

    def keys(self) -> Sealing | None:
        """The store's key store, under its scope (None without one)."""
        self._artifacts()
        return self._keys

    def sealing(self) -> Sealing | None:
        """What seals the store's artifacts: its keys, when it is encrypted; else None."""
        return self._artifacts().sealing

    def _shred(
        self,
        prefix: str,
        keep: dict[str, str | None] | None = None,
        only: Callable[[str], bool] | None = None,
    ) -> None:
        """Destroy the data keys of the artifacts under ``prefix`` but ``keep`` (before
        their bytes go, so a crash between leaves bytes that nothing opens); ``only``
        limits it to the artifact folders it accepts."""
        sealing = self.sealing()
        if sealing is not None:
            sealing.shred(prefix, keep, only)

    # -- store-level documents -------------------------------------------------------

    def meta(self) -> dict[str, Any] | None:
        """The trained marker, or None while the store is untrained."""
        return self._doc(STORE_DOC)

    def require_trained(self) -> dict[str, Any]:
        meta = self.meta()
        if meta is None:
            raise StoreStateError(f"{self.url} is not a trained store (run 'sisa train' first)")
        return meta

    def intent(self) -> dict[str, Any] | None:
        """The training record, with the shapes models are built from checked."""
        intent = self._doc(CONFIG_DOC)
        if intent is not None:
            shape, classes = intent.get("input_shape"), intent.get("num_classes")
            if not (
                isinstance(shape, list)
                and 0 < len(shape) <= 4
                and all(type(d) is int and 0 < d <= 1 << 24 for d in shape)
                and type(classes) is int
                and 2 <= classes <= 1 << 20
            ):
                raise StorageError(f"{self.fs.url_of(CONFIG_DOC)}: malformed training record")
        return intent

    def classes(self) -> tuple[str | int, ...] | None:
        """The label vocabulary recorded at training (class i is named ``classes[i]``), or
        None for a store of integer labels (class i is ``i``). A deletion never changes it."""
        return self.classes_of(self.intent())

    def classes_of(self, intent: dict[str, Any] | None) -> tuple[str | int, ...] | None:
        """``classes`` of a training record already read, checked."""
        names = None if intent is None else intent.get("classes")
        if names is None:
            return None
        if not (
            isinstance(names, list)
            and len(names) == intent["num_classes"]
            and all(type(v) in (str, int) for v in names)
            and len(set(names)) == len(names)
        ):
            raise StorageError(f"{self.fs.url_of(CONFIG_DOC)}: malformed class names")
        return tuple(names)

    def split_rule(self) -> str:
        """How the held-out side was chosen: by ``id`` or by ``group``. A store trained
        before the rule was recorded split by ID."""
        intent = self.intent() or {}
        return "group" if intent.get("split") == "group" else "id"

    def config(self) -> Config:
        intent = self.intent()
        if intent is None:
            raise StoreStateError(f"{self.url} holds no training config")
        return build_config(intent["config"])

    def write_intent(
        self,
        config: Config,
        info: dict[str, Any],
        salt: bytes | None = None,
        placement_key: bytes | None = None,
    ) -> None:
        """Write the training record; ``salt`` carries an overwritten store's salt over,
        so its tombstones and receipts keep meaning the same IDs. ``placement_key`` makes
        a store place its points as another store does (a from-scratch reference of a
        store with a key store; kept in the record, so only for a private, temporary one)."""
        body = {"config": config.stored(), "training_hash": config.training_hash()}
        if placement_key is not None:
            body["placement_key"] = placement_key.hex()
        if config.storage.key_store is None:
            body["salt"] = salt.hex() if salt is not None else secrets.token_hex(16)
        else:  # the salt is a secret of the key store: the store holds only its name, and
            # every hash of IDs is keyed by it (``id_hash_key``)
            scope, part = secrets.token_hex(16), secrets.token_hex(16)
            keys = open_keys(self.url, self.storage_options, config.storage, scope)
            assert keys is not None
            keys.require_owner()  # the scope is this store's, for good
            salt = keys.keys.create(key_id(scope, SALT_FOLDER, part), salt)
            body |= {"key_scope": scope, "salt_key": part, "keyed_hashes": True}
            if placement_key is None:  # and so is placement (``placement_key``)
                body["keyed_placement"] = True
            if "data_hash" in info:  # keyed: the store alone cannot confirm a guessed source
                info = info | {"data_hash": _keyed(salt, info["data_hash"])}
        write_doc(self.fs, CONFIG_DOC, body | info)
        self._sealing_read, self._hash_key, self._placement = False, None, None

    def write_meta(self, body: dict[str, Any]) -> None:
        write_doc(self.fs, STORE_DOC, body)

    def id_hash_key(self) -> bytes | None:
        """The key of the store's ID-set hashes (``sisa.ids.id_set_hash``) and of its
        record's ``data_hash``: the salt, for a store created with a key store; None for
        the others, whose set hashes stay plain sha256 (``rekey`` keeps them so)."""
        if self._hash_key is None:
            intent = self.intent()
            if intent is None:
                return None
            self._hash_key = (self.salt() if intent.get("keyed_hashes") else None,)
        return self._hash_key[0]

    def placement_key(self) -> bytes | None:
        """The secret that keys where points go (shard, slice, held out or not): for a store
        created with a key store, derived from its salt, so that the seed in the record
        alone does not tell where an ID would be (``sisa.data.partition.assign``); None
        for the others, and for stores that key their hashes but were placed before."""
        if self._placement is None:
            intent = self.intent()
            key = None
            if intent is not None and "placement_key" in intent:
                key = bytes.fromhex(intent["placement_key"])
            elif intent is not None and intent.get("keyed_placement"):
                key = hmac.new(self.salt(), b"sisa-placement-v1", hashlib.sha256).digest()
            self._placement = (key,)
        return self._placement[0]

    def record_hash(self, digest: str) -> str:
        """``digest`` as the record keeps it: keyed by ``id_hash_key`` where there is one."""
        key = self.id_hash_key()
        return digest if key is None else _keyed(key, digest)

    def salt(self) -> bytes:
        """The key of the store's ID hashes (journal, tombstones, receipts): in the store's
        record, or for an encrypted store in its key store, which the record names."""
        intent = self.intent()
        if intent is None:
            raise StoreStateError(f"{self.url} holds no training config")
        if "salt" in intent:
            return bytes.fromhex(intent["salt"])
        keys = self.keys()
        assert keys is not None, "a record without a salt names its key store"
        return keys.keys.get(key_id(keys.scope, SALT_FOLDER, intent["salt_key"]))

    def _doc(self, rel: str) -> dict[str, Any] | None:
        try:
            return read_doc(self.fs, rel)
        except FileNotFoundError:
            return None

    # -- write-once documents (journal, plans, receipts) and leases --------------------

    def read_doc(self, rel: str) -> dict[str, Any]:
        """A document, verified against its self-hash (``FileNotFoundError`` if absent)."""
        return read_doc(self.fs, rel)

    def write_doc(self, rel: str, body: dict[str, Any]) -> None:
        """Create a document once (``DocumentExistsError`` if another writer was first)."""
        write_doc(self.fs, rel, body)

    def exists(self, rel: str) -> bool:
        return self.fs.exists(rel)

    def names(self, folder: str) -> list[str]:
        """The names directly in ``folder`` (none when it does not exist)."""
        return self.fs.listdir(folder)

    def files(self, prefix: str = "") -> list[str]:
        """Every file under ``prefix``, as paths relative to the store."""
        return self.fs.walk(prefix)

    def read_bytes(self, rel: str) -> bytes:
        return self.fs.read_bytes(rel)

    def delete(self, rel: str) -> None:
        self.fs.delete(rel)

    def url_of(self, rel: str) -> str:
        return self.fs.url_of(rel)

    def versions(self, folder: str) -> dict[str, str]:
        """A stamp of each file in ``folder`` that changes when the file is rewritten."""
        return self.fs.versions(folder)

    @property
    def atomic_create(self) -> bool:
        """Whether this backend creates a document only if absent, atomically."""
        return self.fs.atomic_create

    def require_atomic_create(self, what: str) -> None:
        self.fs.require_atomic_create(what)

    def lease(self, rel: str, seconds: float, *, remote: bool = False) -> Lease:
        """The lease in folder ``rel``, held for ``seconds`` at a time once acquired
        (``remote``: by a holder whose jobs run in other processes)."""
        return Lease(self.fs, rel, seconds, remote=remote)

    def manifest(self, rel_dir: str) -> Manifest:
        """The manifest of the artifact at ``rel_dir``, as written (not checked against a head)."""
        return read_manifest(self.fs, rel_dir)

    def read_file(self, rel_dir: str, name: str, manifest: Manifest) -> bytes:
        """One file of an artifact, verified against ``manifest`` (and opened, if sealed)."""
        return read_file(self._artifacts(), rel_dir, name, manifest)

    # -- heads ------------------------------------------------------------------------

    def latest_head(self, prefix: str) -> Head | None:
        """The committed head with the highest generation under ``prefix``."""
        gens = [int(m.group(1)) for n in self.fs.listdir(prefix) if (m := HEAD_NAME.match(n))]
        if not gens:
            return None
        generation = max(gens)
        head = Head(generation, read_doc(self.fs, head_path(prefix, generation)))
        fencing.check(self, prefix, head)
        return head

    def shard_head(self, shard: int) -> Head:
        head = self.latest_head(shard_prefix(shard))
        if head is None:
            raise StoreStateError(f"shard {shard} of {self.url} has no committed generation")
        return head

    def commit_head(self, prefix: str, generation: int, body: dict[str, Any]) -> Head:
        """Write the head document: the commit point of a generation.

        A fenced writer's commit is a compare-and-swap (``sisa.store.fencing``): the newest
        head must be the one before ``generation``, and written under no newer token."""
        body = {k: v for k, v in body.items() if k not in ("generation", fencing.FENCE)}
        body["generation"] = generation
        fenced = self.fence is not None and fencing.fenced(prefix)
        if fenced:
            latest = self.latest_head(prefix)  # FencedError if a newer holder wrote it
            expected = 0 if latest is None else latest.generation + 1
            if generation != expected:
                raise DocumentExistsError(
                    f"{self.fs.url_of(prefix)} is at generation "
                    f"{'none' if latest is None else latest.generation}; generation "
                    f"{generation} was planned from another head"
                )
            body[fencing.FENCE] = self.fence
        try:
            write_doc(self.fs, head_path(prefix, generation), body)
        except DocumentExistsError:
            if fenced:  # lost the create to a newer holder's fence: say so
                self.latest_head(prefix)
            raise
        return Head(generation, body)

    def commit_next(self, prefix: str, body: dict[str, Any], keep: int | None = None) -> Head:
        """Commit ``body`` as the generation after the newest (0 for the first); with
        ``keep``, delete all but the newest ``keep`` head documents afterwards."""
        latest = self.latest_head(prefix)
        head = self.commit_head(prefix, 0 if latest is None else latest.generation + 1, body)
        if keep is not None:
            self.prune_heads(prefix, head.generation - keep + 1)
        return head

    def sweep(self, prefix: str) -> list[str]:
        """Delete everything under ``prefix`` that its latest head does not reference.

        Returns the URLs of deleted files. Safe to repeat: after a crash mid-sweep the
        next sweep finishes the job. Fenced by generation (``sisa.store.fencing``): head
        documents from the head read on, and files of generations more than one past it,
        may be a newer writer's, and stay.
        """
        head = self.latest_head(prefix)
        keep, live = self._referenced(prefix, head)

        def ours(rel: str) -> bool:  # whether this sweep may delete ``rel`` at all
            place = fencing.generation_of(prefix, rel)
            if head is None or place is None:
                return True
            generation, is_head = place
            # a newer holder fenced this chain at one past the head read, at the earliest,
            # and writes its files only after that: one past it is a failed attempt's
            return generation < head.generation if is_head else generation <= head.generation + 1

        # the keys first: then no copy of what goes opens again
        self._shred(prefix, live, only=lambda folder: ours(f"{folder}/"))
        # only the files a committed artifact consists of stay
        return self._delete(prefix, [r for r in self.fs.walk(prefix) if r not in keep and ours(r)])

    def _delete(self, prefix: str, rels: list[str]) -> list[str]:
        """Delete ``rels`` under ``prefix``, and what a bucket that keeps versions kept of
        them (sealed: their keys are gone already); returns their URLs."""
        deleted = []
        versions = self.keeps_versions()
        for rel in rels:
            self.fs.delete(rel)
            if versions:
                self.fs.delete_versions(rel)
            deleted.append(self.fs.url_of(rel))
            crash_point("mid-sweep")
        if deleted:
            self.fs.prune_empty_dirs(prefix)
        return deleted

    def _referenced(self, prefix: str, head: Head | None) -> tuple[set[str], dict[str, str | None]]:
        """The files ``head`` consists of and references, and its artifact folders with
        their data keys' parts."""
        if head is None:
            return set(), {}
        keep = {head_path(prefix, head.generation)}
        keep.update(f"{head.data.dir}/{name}" for name in (MANIFEST, IDS_FILE, *head.data.x_files))
        keep.update(f"{s.dir}/{name}" for s in head.stages for name in STAGE_FILES)
        live = {d: self._key_part(d) for d in (head.data.dir, *(s.dir for s in head.stages))}
        return keep, live

    def discard(self, prefix: str, generation: int) -> list[str]:
        """Delete what a fenced-off writer left in the folder of ``generation``: every file
        there that the newest head does not reference (``sisa.store.fencing``). Its
        generation was fenced by a newer holder, who writes no files of its own there."""
        fence, self.fence = self.fence, None  # the newest head, whoever wrote it
        try:
            keep, live = self._referenced(prefix, self.latest_head(prefix))
        finally:
            self.fence = fence
        folder = gen_dir(prefix, generation)
        self._shred(folder, live)
        return self._delete(prefix, [rel for rel in self.fs.walk(folder) if rel not in keep])

    def replace_record(self, body: dict[str, Any]) -> None:
        """Rewrite the training record in one atomic write (``sisa.store.rekey`` only),
        and in a bucket that keeps versions delete the old record's versions."""
        replace_doc(self.fs, CONFIG_DOC, body)
        if self.keeps_versions():
            self.fs.delete_versions(CONFIG_DOC, noncurrent=True)
        self._sealing_read, self._hash_key, self._placement = False, None, None

    def noncurrent_versions(self, prefix: str = "") -> list[tuple[str, str]]:
        """(path, version ID) of every version the bucket kept below ``prefix``."""
        return self.fs.noncurrent_versions(prefix)

    def keeps_versions(self) -> bool:
        """Whether the store's bucket keeps deleted objects (versioning or object lock)."""
        if self._keeps_versions is None:
            kept = self.fs.retention()
            self._keeps_versions = kept is not None and (
                kept["versioning"] is not None or kept["object_lock"]
            )
        return self._keeps_versions

    def _key_part(self, rel_dir: str) -> str | None:
        """The data key part a live artifact's manifest names; None when it cannot be read
        now (a shred then keeps every key of that folder)."""
        try:
            return read_manifest(self.fs, rel_dir).key
        except (StorageError, FileNotFoundError):
            return None

    def shard_prefixes(self) -> list[str]:
        """The prefix of every shard the store holds."""
        return [f"{SHARDS}/{name}" for name in self.fs.listdir(SHARDS) if name.isdigit()]

    def sweep_all(self) -> list[str]:
        """Sweep every shard and the test data: finishes a purge a crash interrupted."""
        prefixes = [*self.shard_prefixes(), TEST_PREFIX]
        return [url for prefix in prefixes for url in self.sweep(prefix)]

    def foreign_files(self) -> list[str]:
        """Files at this location that a store does not write (a store never deletes them)."""
        return [rel for rel in self.fs.walk("") if rel.split("/")[0] not in OWN_PATHS]

    def delete_store(self) -> None:
        """Delete what a store wrote here, and nothing else (its keys first)."""
        keys = self.keys()
        if keys is not None:
            keys.shred("")
        for rel in OWN_PATHS:
            self.fs.delete_tree(rel)
        self._sealing_read = False

    def delete_training(self) -> None:
        """Delete the trained models and data, keeping the deletion history (journal,
        plans, receipts, tombstones) that proves what was forgotten.

        The training record goes last: it holds the salt that ties that history to IDs,
        so an interrupted delete leaves it for the next attempt to carry over.
        """
        self._shred(SHARDS)
        self._shred(TEST_PREFIX)
        keys = self.keys()
        for rel in (STORE_DOC, SHARDS, TEST_PREFIX, SERVING, CONFIG_DOC):
            self.fs.delete_tree(rel)
        if keys is not None:  # the record is gone: its salt goes too (the caller kept it)
            keys.shred(SALT_FOLDER)
        self._sealing_read, self._hash_key, self._placement = False, None, None

    def has_history(self) -> bool:
        """Whether any deletion request was ever recorded here."""
        return any(self.fs.walk(rel) for rel in (JOURNAL, TOMBSTONES, RECEIPTS, BATCHES))

    # -- data artifacts ---------------------------------------------------------------

    def write_data(self, rel_dir: str, arrays: dict[str, np.ndarray], ids_hash: str) -> DataRef:
        """Commit a part's data (or reuse an identical committed one); return its ref."""
        ref = self.committed_data(rel_dir, ids_hash)
        if ref is not None:
            return ref
        writer = self.data_writer(rel_dir, {k: v[:0] for k, v in arrays.items()}, single=True)
        writer.append(arrays)
        return writer.commit(ids_hash)

    def data_writer(
        self, rel_dir: str, empty: dict[str, np.ndarray], *, single: bool = False
    ) -> DataWriter:
        """A writer of the data artifact at ``rel_dir`` (``empty``: its arrays, no rows)."""
        return DataWriter(self._artifacts(), rel_dir, empty, single=single)

    def committed_data(self, rel_dir: str, ids_hash: str) -> DataRef | None:
        """The ref of committed data at ``rel_dir`` holding exactly ``ids_hash``'s IDs; any
        other artifact there is an unreferenced leftover of an abandoned attempt, removed."""
        if not is_committed(self.fs, rel_dir):
            return None
        manifest = read_manifest(self.fs, rel_dir)
        if manifest.meta.get("ids_hash") == ids_hash:
            return data_ref(rel_dir, manifest)
        self._shred(rel_dir)
        self.fs.delete_tree(rel_dir)
        return None

    def read_data(self, ref: DataRef, features: bool = True) -> dict[str, np.ndarray]:
        """Verified arrays of a data artifact (``ids``, ``y``, maybe ``groups`` and ``X``)."""
        manifest = self._manifest(ref)
        fs = self._artifacts()
        arrays = decode_arrays(read_file(fs, ref.dir, IDS_FILE, manifest))
        if features:
            parts = [
                decode_arrays(read_file(fs, ref.dir, name, manifest))["X"] for name in ref.x_files
            ]
            arrays["X"] = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return arrays

    # -- stage checkpoints ------------------------------------------------------------

    def write_stage(
        self,
        rel_dir: str,
        weights: dict[str, torch.Tensor],
        extra: dict[str, Any],
        meta: dict[str, Any],
    ) -> StageRef:
        """Commit one stage checkpoint; return its record for the head."""
        if is_committed(self.fs, rel_dir):
            self._shred(rel_dir)
            self.fs.delete_tree(rel_dir)  # unreferenced leftover that did not match
        files = {WEIGHTS: encode_weights(weights), STATE: encode_state(extra)}
        meta = meta | {"state_hash": state_hash(weights), "tensors": tensor_hashes(weights)}
        manifest = write_artifact(self._artifacts(), rel_dir, files, meta)
        weights_sha = manifest.files[WEIGHTS].sha256
        return StageRef.from_body(
            meta | {"dir": rel_dir, "manifest": manifest.sha256, "weights_sha256": weights_sha}
        )

    def stage_meta(self, rel_dir: str) -> dict[str, Any] | None:
        """Meta of a committed stage artifact, or None when absent/uncommitted."""
        if not is_committed(self.fs, rel_dir):
            return None
        try:
            manifest = read_manifest(self.fs, rel_dir)
        except StorageError:
            return None
        return manifest.meta | {
            "manifest": manifest.sha256,
            "weights_sha256": manifest.files[WEIGHTS].sha256,
        }

    def read_stage(
        self, ref: StageRef, state: bool = True
    ) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
        """Verified weights (and optimizer state with counters) of a stage checkpoint."""
        manifest = self._manifest(ref)
        fs = self._artifacts()
        weights = decode_weights(read_file(fs, ref.dir, WEIGHTS, manifest))
        extra = decode_state(read_file(fs, ref.dir, STATE, manifest)) if state else None
        return weights, extra  # type: ignore[return-value]

    def check_artifact(self, ref: DataRef | StageRef) -> list[str]:
        """Read every file of a referenced artifact against its manifest: the problems
        (the file's URL and why), or none. The hashes a head records are what was written;
        this is what the bytes are now."""
        try:
            manifest = self._manifest(ref)
        except StorageError as err:
            return [str(err)]
        problems = []
        for name in manifest.files:
            try:
                read_file(self._artifacts(), ref.dir, name, manifest)
            except StorageError as err:
                problems.append(str(err))
        return problems

    def _manifest(self, ref: DataRef | StageRef) -> Manifest:
        manifest = read_manifest(self.fs, ref.dir)
        if manifest.sha256 != ref.manifest:
            raise StorageError(
                f"{self.fs.url_of(ref.dir)}: manifest {manifest.sha256[:12]} is not the one "
                f"its head references ({ref.manifest[:12]}); refusing to load it"
            )
        return manifest

    # -- tombstones -------------------------------------------------------------------

    def tombstones(self) -> Head:
        head = self.latest_head(TOMBSTONES)
        return head or Head(-1, {"entries": [], "groups": []})

    def prune_heads(self, prefix: str, below: int) -> None:
        """Delete the head documents under ``prefix`` of generations below ``below``."""
        for name in self.fs.listdir(prefix):
            if (m := HEAD_NAME.match(name)) and int(m.group(1)) < below:
                self.fs.delete(f"{prefix}/{name}")
