"""The layout of a SISA store on top of the storage commit protocol.

```
config.json                    training intent: config + training hash (written first)
STORE.json                     the trained marker: fingerprint, shapes, salt (written last)
shards/00003/g000002.json      head of shard 3, generation 2: its data and stage checkpoints
shards/00003/g000002/data/     artifact: ids.npz (ids, labels, groups), X.npz (features)
                               or, as ingested in chunks, X-00000.npz, X-00001.npz, ...
shards/00003/g000002/stage-004/ artifact: weights.safetensors, state.pt
test/g000001.json              head of the held-out test data; test/g000001/data/
tombstones/g000005.json        salted hashes of every deleted ID and group
journal/r000000007.json        deletion request 7: salted hashes, shard and slice of each
batches/b000000007.json        the plan of the batch that processes requests up to 7
serving/g000012.json           the checkpoint each shard serves (rolled back while pending)
receipts/r000000007.json       receipt of request 7, chained to receipt 6 by hash
locks/process.json             lease of the one process that retrains
```

A head document names every artifact its generation uses; a stage that a retrain did not
touch is referenced from an older generation's folder. The head with the highest
generation is the shard's state, and writing it is the commit of a retrain. Everything
under a shard's prefix that its head does not reference is garbage: checkpoints and data
of older generations (which may hold deleted points) and uncommitted leftovers. ``sweep``
deletes it.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from sisa.config import Config, build_config
from sisa.faults import crash_point
from storage import (
    MANIFEST,
    ArtifactWriter,
    Manifest,
    StorageError,
    Store,
    decode_arrays,
    decode_state,
    decode_weights,
    encode_arrays,
    encode_state,
    encode_weights,
    is_committed,
    read_doc,
    read_file,
    read_manifest,
    state_hash,
    tensor_hashes,
    write_artifact,
    write_doc,
)

if TYPE_CHECKING:  # weights are tensors; reading the store's documents needs no torch
    import torch

STORE_DOC = "STORE.json"
CONFIG_DOC = "config.json"
TEST = "test"
TOMBSTONES = "tombstones"
SHARDS = "shards"
JOURNAL = "journal"  # deletion requests, one write-once document each
BATCHES = "batches"  # the plan of each batch of requests, written before it runs
SERVING = "serving"  # which checkpoint of each shard predictions use
RECEIPTS = "receipts"  # one per processed request, chained by hash
LOCKS = "locks"
PROCESS_LOCK = f"{LOCKS}/process.json"  # the lease of the one process that retrains
# tombstones written under the rule that a group is deleted only once emptied carry it
GROUP_RULE = "group_rule"
OWN_PATHS = (
    CONFIG_DOC,
    STORE_DOC,
    SHARDS,
    TEST,
    TOMBSTONES,
    JOURNAL,
    BATCHES,
    SERVING,
    RECEIPTS,
    LOCKS,
)  # all a store ever writes; fmt: skip
WEIGHTS, STATE = "weights.safetensors", "state.pt"
STAGE_FILES = (MANIFEST, WEIGHTS, STATE)
_HEAD = re.compile(r"^g([0-9]{6,})\.json\Z")


class StoreStateError(RuntimeError):
    """The store is not in a state that allows the operation (untrained, already trained)."""


def shard_prefix(shard: int) -> str:
    return f"{SHARDS}/{shard:05d}"


def gen_dir(prefix: str, generation: int) -> str:
    return f"{prefix}/g{generation:06d}"


@dataclass(frozen=True)
class Head:
    """A committed head document of a shard or of the test data."""

    generation: int
    body: dict[str, Any]

    @property
    def stages(self) -> list[dict[str, Any]]:
        return self.body.get("stages", [])

    @property
    def data(self) -> dict[str, Any]:
        return self.body["data"]


class SisaStore:
    """Typed access to one store; all writes follow the commit protocol."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        self.url = url
        self.storage_options = dict(storage_options or {})
        self.fs = Store(url, self.storage_options)

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

    def config(self) -> Config:
        intent = self.intent()
        if intent is None:
            raise StoreStateError(f"{self.url} holds no training config")
        return build_config(intent["config"])

    def write_intent(self, config: Config, info: dict[str, Any], salt: bytes | None = None) -> None:
        """Write the training record; ``salt`` carries an overwritten store's salt over,
        so its tombstones and receipts keep meaning the same IDs."""
        body = {"config": config.stored(), "training_hash": config.training_hash()}
        salt_hex = salt.hex() if salt is not None else secrets.token_hex(16)
        write_doc(self.fs, CONFIG_DOC, body | info | {"salt": salt_hex})

    def write_meta(self, body: dict[str, Any]) -> None:
        write_doc(self.fs, STORE_DOC, body)

    def salt(self) -> bytes:
        intent = self.intent()
        if intent is None:
            raise StoreStateError(f"{self.url} holds no training config")
        return bytes.fromhex(intent["salt"])

    def _doc(self, rel: str) -> dict[str, Any] | None:
        try:
            return read_doc(self.fs, rel)
        except FileNotFoundError:
            return None

    # -- heads ------------------------------------------------------------------------

    def latest_head(self, prefix: str) -> Head | None:
        """The committed head with the highest generation under ``prefix``."""
        gens = [int(m.group(1)) for n in self.fs.listdir(prefix) if (m := _HEAD.match(n))]
        if not gens:
            return None
        generation = max(gens)
        return Head(generation, read_doc(self.fs, f"{gen_dir(prefix, generation)}.json"))

    def shard_head(self, shard: int) -> Head:
        head = self.latest_head(shard_prefix(shard))
        if head is None:
            raise StoreStateError(f"shard {shard} of {self.url} has no committed generation")
        return head

    def commit_head(self, prefix: str, generation: int, body: dict[str, Any]) -> Head:
        """Write the head document: the commit point of a generation."""
        body = {k: v for k, v in body.items() if k != "generation"} | {"generation": generation}
        write_doc(self.fs, f"{gen_dir(prefix, generation)}.json", body)
        return Head(generation, body)

    def sweep(self, prefix: str) -> list[str]:
        """Delete everything under ``prefix`` that its latest head does not reference.

        Returns the URLs of deleted files. Safe to repeat: after a crash mid-sweep the
        next sweep finishes the job.
        """
        head = self.latest_head(prefix)
        keep: set[str] = set()
        if head is not None:
            keep.add(f"{gen_dir(prefix, head.generation)}.json")
            data_files = (MANIFEST, "ids.npz", *x_files(head.data))
            keep.update(f"{head.data['dir']}/{name}" for name in data_files)
            keep.update(f"{s['dir']}/{name}" for s in head.stages for name in STAGE_FILES)
        deleted = []
        for rel in self.fs.walk(prefix):
            if rel in keep:  # only the files a committed artifact consists of
                continue
            self.fs.delete(rel)
            deleted.append(self.fs.url_of(rel))
            crash_point("mid-sweep")
        if deleted:
            self.fs.prune_empty_dirs(prefix)
        return deleted

    def sweep_all(self) -> list[str]:
        """Sweep every shard and the test data: finishes a purge a crash interrupted."""
        prefixes = [f"{SHARDS}/{name}" for name in self.fs.listdir(SHARDS)] + [TEST]
        return [url for prefix in prefixes for url in self.sweep(prefix)]

    def foreign_files(self) -> list[str]:
        """Files at this location that a store does not write (a store never deletes them)."""
        return [rel for rel in self.fs.walk("") if rel.split("/")[0] not in OWN_PATHS]

    def delete_store(self) -> None:
        """Delete what a store wrote here, and nothing else."""
        for rel in OWN_PATHS:
            self.fs.delete_tree(rel)

    def delete_training(self) -> None:
        """Delete the trained models and data, keeping the deletion history (journal,
        plans, receipts, tombstones) that proves what was forgotten.

        The training record goes last: it holds the salt that ties that history to IDs,
        so an interrupted delete leaves it for the next attempt to carry over.
        """
        for rel in (STORE_DOC, SHARDS, TEST, SERVING, CONFIG_DOC):
            self.fs.delete_tree(rel)

    def has_history(self) -> bool:
        """Whether any deletion request was ever recorded here."""
        return any(self.fs.walk(rel) for rel in (JOURNAL, TOMBSTONES, RECEIPTS, BATCHES))

    # -- data artifacts ---------------------------------------------------------------

    def write_data(self, rel_dir: str, arrays: dict[str, np.ndarray], ids_hash: str) -> dict:
        """Commit a part's data (or reuse an identical committed one); return its ref."""
        ref = self.committed_data(rel_dir, ids_hash)
        if ref is not None:
            return ref
        writer = DataWriter(self, rel_dir, {k: v[:0] for k, v in arrays.items()}, single=True)
        writer.append(arrays)
        return writer.commit(ids_hash)

    def committed_data(self, rel_dir: str, ids_hash: str) -> dict | None:
        """The ref of committed data at ``rel_dir`` holding exactly ``ids_hash``'s IDs; any
        other artifact there is an unreferenced leftover of an abandoned attempt, removed."""
        if not is_committed(self.fs, rel_dir):
            return None
        manifest = read_manifest(self.fs, rel_dir)
        if manifest.meta.get("ids_hash") == ids_hash:
            return data_ref(rel_dir, manifest)
        self.fs.delete_tree(rel_dir)
        return None

    def read_data(self, ref: dict[str, Any], features: bool = True) -> dict[str, np.ndarray]:
        """Verified arrays of a data artifact (``ids``, ``y``, maybe ``groups`` and ``X``)."""
        manifest = self._manifest(ref)
        arrays = decode_arrays(read_file(self.fs, ref["dir"], "ids.npz", manifest))
        if features:
            parts = [
                decode_arrays(read_file(self.fs, ref["dir"], name, manifest))["X"]
                for name in x_files(ref)
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
    ) -> dict[str, Any]:
        """Commit one stage checkpoint; return its ref for the head."""
        if is_committed(self.fs, rel_dir):
            self.fs.delete_tree(rel_dir)  # unreferenced leftover that did not match
        files = {WEIGHTS: encode_weights(weights), STATE: encode_state(extra)}
        meta = meta | {"state_hash": state_hash(weights), "tensors": tensor_hashes(weights)}
        manifest = write_artifact(self.fs, rel_dir, files, meta)
        return stage_ref(rel_dir, manifest.sha256, manifest.files[WEIGHTS].sha256, meta)

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
        self, ref: dict[str, Any], state: bool = True
    ) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
        """Verified weights (and optimizer state with counters) of a stage checkpoint."""
        manifest = self._manifest(ref)
        weights = decode_weights(read_file(self.fs, ref["dir"], WEIGHTS, manifest))
        extra = decode_state(read_file(self.fs, ref["dir"], STATE, manifest)) if state else None
        return weights, extra  # type: ignore[return-value]

    def check_artifact(self, ref: dict[str, Any]) -> list[str]:
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
                read_file(self.fs, ref["dir"], name, manifest)
            except StorageError as err:
                problems.append(str(err))
        return problems

    def _manifest(self, ref: dict[str, Any]) -> Manifest:
        manifest = read_manifest(self.fs, ref["dir"])
        if manifest.sha256 != ref["manifest"]:
            raise StorageError(
                f"{self.fs.url_of(ref['dir'])}: manifest {manifest.sha256[:12]} is not the one "
                f"its head references ({ref['manifest'][:12]}); refusing to load it"
            )
        return manifest

    # -- tombstones -------------------------------------------------------------------

    def tombstones(self) -> Head:
        head = self.latest_head(TOMBSTONES)
        return head or Head(-1, {"entries": [], "groups": []})

    def add_tombstones(self, entries: list[dict[str, Any]], groups: list[str]) -> Head:
        """Record deleted IDs (salted hashes with their part) once their batch is purged."""
        current = self.tombstones()
        body = current.body | {
            "entries": current.body["entries"] + entries,
            "groups": sorted(set(current.body["groups"]) | set(groups)),
        }
        if GROUP_RULE not in current.body:  # see sisa.store.tombstones: what came before the rule
            body |= {GROUP_RULE: "emptied", "legacy_groups": sorted(current.body["groups"])}
        return self._commit_tombstones(current, body)

    def drop_tombstoned_groups(self, groups: set[str], record: dict[str, Any]) -> Head:
        """Remove group hashes from the tombstones (``sisa.store.tombstones.repair_tombstones``);
        ``record`` says when and how many, and is kept in the tombstones for good."""
        current = self.tombstones()
        body = current.body | {
            "groups": sorted(set(current.body["groups"]) - groups),
            "legacy_groups": sorted(set(current.body.get("legacy_groups", [])) - groups),
            GROUP_RULE: "emptied",
            "repairs": [*current.body.get("repairs", []), record],
        }
        return self._commit_tombstones(current, body)

    def _commit_tombstones(self, current: Head, body: dict[str, Any]) -> Head:
        head = self.commit_head(TOMBSTONES, current.generation + 1, body)
        for old in self.fs.listdir(TOMBSTONES):
            if _HEAD.match(old) and old != f"g{head.generation:06d}.json":
                self.fs.delete(f"{TOMBSTONES}/{old}")
        return head


def stage_ref(rel_dir: str, manifest: str, weights_sha: str, meta: dict[str, Any]) -> dict:
    """What a head records about one stage checkpoint."""
    keys = ("stage", "ids_hash", "parent", "state_hash", "n", "samples", "step", "fingerprint")
    return {"dir": rel_dir, "manifest": manifest, "weights_sha256": weights_sha} | {
        k: meta[k] for k in keys if k in meta
    }


def x_files(ref: dict[str, Any]) -> list[str]:
    """The feature files of a data artifact, in row order."""
    return list(ref.get("x_files", ["X.npz"]))


def data_ref(rel_dir: str, manifest: Manifest) -> dict[str, Any]:
    """What a head records of a committed data artifact."""
    ref = {"dir": rel_dir, "manifest": manifest.sha256, "n": manifest.meta["n"]}
    names = manifest.meta.get("x_files", ["X.npz"])
    return ref if names == ["X.npz"] else ref | {"x_files": names}


class DataWriter:
    """One part's data, written as it streams in: each appended chunk's features become
    a file ``X-00000.npz``, ``X-00001.npz``...; IDs, labels and groups (a few bytes per
    point) are kept and written with the manifest by ``commit``. Readers concatenate the
    feature files in order, so the rows are those of one ``write_data`` of the same arrays.
    """

    def __init__(
        self,
        store: SisaStore,
        rel_dir: str,
        empty: dict[str, np.ndarray],
        *,
        single: bool = False,
    ) -> None:
        self.rel_dir = rel_dir
        self._writer = ArtifactWriter(store.fs, rel_dir)
        self._small: dict[str, list[np.ndarray]] = {k: [v] for k, v in empty.items() if k != "X"}
        self._empty_x = empty["X"]  # [0, *feature_shape]
        self._single = single  # one append, named X.npz as write_data always did
        self._names: list[str] = []

    def append(self, arrays: dict[str, np.ndarray]) -> None:
        """Add rows (``ids``, ``y``, ``X``, maybe ``groups``); an empty chunk adds nothing."""
        if set(arrays) != set(self._small) | {"X"}:
            raise ValueError(f"expected arrays {sorted(self._small) + ['X']}, got {sorted(arrays)}")
        if self._single and self._names:
            raise ValueError("a single-file data writer takes one append")
        if len(arrays["ids"]) == 0 and not self._single:
            return
        name = "X.npz" if self._single else f"X-{len(self._names):05d}.npz"
        self._writer.add(name, encode_arrays({"X": arrays["X"]}))
        self._names.append(name)
        for key, chunks in self._small.items():
            chunks.append(arrays[key])

    def commit(self, ids_hash: str) -> dict[str, Any]:
        """Write the IDs and the manifest (the commit); return the data's ref."""
        if not self._names:
            self._append_empty()
        small = {k: np.concatenate(v) for k, v in self._small.items()}
        self._writer.add("ids.npz", encode_arrays(small))
        meta: dict[str, Any] = {"ids_hash": ids_hash, "n": int(len(small["ids"]))}
        if self._names != ["X.npz"]:
            meta["x_files"] = self._names
        return data_ref(self.rel_dir, self._writer.commit(meta))

    def _append_empty(self) -> None:
        name = "X.npz" if self._single else "X-00000.npz"
        self._writer.add(name, encode_arrays({"X": self._empty_x}))
        self._names.append(name)
