"""Ingest: the training source streamed into a store, one data artifact per part.

An ingest is a job like a shard's, so an executor can run it away from the driver (on Ray,
a task): the driver never holds the dataset, and every shard task reads its own part back
from the store. Its order of writes is training's: ``config.json`` (the intent) first, then
the test data and each shard's data. Features pass through once, chunk by chunk: each
chunk's rows are routed to the part (test or shard) their ID places them in, in source
order, so a part's rows are the same as if the whole dataset had been split in memory.

Rerun on an unfinished store with the same config and data, it reuses every committed
part and writes only the missing ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from sisa.config import Config, build_config, resolve_source
from sisa.data.dataset import Dataset, split_mask, split_rule
from sisa.data.partition import place
from sisa.data.risk import with_risk
from sisa.data.sources import InMemorySource, SourceIndex, open_source
from sisa.ids import id_set_hash, salted_hashes
from sisa.store.artifacts import SisaStore, StoreStateError
from sisa.store.fencing import holding
from sisa.store.layout import PROCESS_LOCK, TEST_PART, TEST_PREFIX, data_dir, part_prefix
from sisa.training.backbone import Backbone, load_backbone
from sisa.training.jobs import Progress, ShardJob
from sisa.training.lora import load_lora_base
from sisa.training.standardize import check_statistics
from sisa.training.trainer import configure


@dataclass(frozen=True, kw_only=True)
class IngestJob:
    """Stream ``config``'s source into the store at ``url`` (plain data, shippable)."""

    url: str
    storage_options: dict[str, Any]
    config: dict[str, Any]  # Config.stored()
    overwrite: bool = False
    chunk_rows: int | None = None  # rows per chunk; None: sisa.data.streaming.CHUNK_BYTES worth
    source: str | None = None  # where to read ``data.source`` from, if not as written there
    # data passed to ``train`` in memory (``sisa.data.memory``), read instead of data.source
    dataset: Dataset | None = None
    trusted: tuple[str, ...] = ()  # factories the caller's own config names (the backbone)
    placement_key: bytes | None = None  # place points as the store it came from does


@dataclass(frozen=True, kw_only=True)
class Ingested:
    jobs: list[ShardJob]  # one per shard that has no committed head yet
    n_train: int
    n_test: int
    empty_classes: list[int] = field(default_factory=list)  # classes no point carries


def run_ingest_job(job: IngestJob, progress: Progress) -> Ingested:
    """Index the source, check the store, write the intent, then stream the parts."""
    config = build_config(job.config)
    data = (
        config.data if job.source is None else config.data.model_copy(update={"source": job.source})
    )
    if job.dataset is not None:
        source = InMemorySource(job.dataset)
    else:
        source = open_source(data, config.sisa.seed)
    index = source.index()
    backbone, raw = None, index
    if config.model.finetune in ("head", "lora"):
        # the determinism contract, as every shard job, verify and serving set it: features
        # never depend on what else this process ran
        configure(config.resources.threads, config.resources.device)
        backbone, sha = _extractor(config, index.feature_shape, job.trusted)
        recorded = {"backbone_sha256": sha, "backbone_input": tuple(index.feature_shape)}
        model = config.model.model_copy(update=recorded)
        config = config.model_copy(update={"model": model})  # recorded: the training hash
    if backbone is not None:  # features (or a frozen prefix's outputs) are the training data
        index = replace(index, feature_shape=backbone.output_shape, x_dtype=np.dtype(np.float32))
    check_statistics(config.data, index.feature_shape)  # given or recorded: before writes
    # the risk placement reads, stored with the training points (as ``prepare`` does)
    risked = with_risk(config.sisa, index)
    store = SisaStore(job.url, job.storage_options)
    intent = None if job.overwrite else store.intent()
    # resuming keeps the recorded rule (a record without one is from before groups split)
    rule = (
        intent.get("split", "id")
        if intent is not None
        else split_rule(config.data.split, index.groups is not None)
    )
    data_hash = index.content_hash  # every stored column, not only the IDs
    kept_salt = check_existing(store, config, index, data_hash, job.overwrite)
    if store.intent() is None:
        info = _intent_info(index, data_hash, rule)
        if backbone is not None:  # what serving feeds the backbone
            info |= {"raw_shape": list(raw.feature_shape), "raw_dtype": str(raw.x_dtype)}
        store.write_intent(config, info, salt=kept_salt, placement_key=job.placement_key)
    # placed once the record is written: it holds what keys the placement
    part_of = _parts(config, risked, rule, store.placement_key())  # [n] TEST_PART or shard

    writers, refs = {}, {}
    for part in [TEST_PART, *range(config.sisa.shards)]:
        prefix = part_prefix(part)
        if store.latest_head(prefix) is not None:
            continue  # committed by an earlier, interrupted call
        rel = data_dir(prefix, 0)
        ids_hash = id_set_hash(index.ids[part_of == part], store.id_hash_key())
        ref = store.committed_data(rel, ids_hash)
        if ref is not None:
            refs[part] = ref
        else:
            rows = index if part == TEST_PART else risked
            empty = _arrays(rows, np.zeros(0, np.int64), np.zeros((0, *index.feature_shape)))
            writers[part] = (store.data_writer(rel, empty), ids_hash, rows)
    if writers:
        for start, X in source.chunks(job.chunk_rows):
            if backbone is not None:
                X = backbone.features(X)  # [m, F]: each row alone (sisa.training.backbone)
            parts = part_of[start : start + len(X)]  # [m]
            order = np.argsort(parts, kind="stable")  # [m] rows grouped by part, in order
            bounds = np.searchsorted(parts[order], list(writers), side="left")
            ends = np.searchsorted(parts[order], list(writers), side="right")
            for (writer, _, rows), lo, hi in zip(writers.values(), bounds, ends, strict=True):
                mine = order[lo:hi]  # [k] this part's rows of the chunk, ascending
                writer.append(_arrays(rows, start + mine, X[mine]))
        refs |= {part: writer.commit(ids_hash) for part, (writer, ids_hash, _) in writers.items()}

    n_test = int(np.sum(part_of == TEST_PART))
    if TEST_PART in refs:
        store.commit_head(TEST_PREFIX, 0, {"data": refs.pop(TEST_PART).to_body(), "n": n_test})
        store.sweep(TEST_PREFIX)  # what an interrupted attempt left, and its data keys
    trusted = (config.model.name, *job.trusted)  # the caller's own config names them
    jobs = [
        ShardJob(
            url=job.url,
            storage_options=store.storage_options,
            shard=shard,
            generation=0,
            start_stage=1,
            data=refs[shard],
            trusted=trusted,
        )
        for shard in sorted(refs)
    ]
    counts = np.bincount(index.y, minlength=index.num_classes)  # [C]
    # inferred as the largest label + 1, a gap is likely a mistake; declared, it is meant
    # with a vocabulary every class is a label of the data, or declared on purpose
    declared = config.data.num_classes or index.classes is not None
    empty = [] if declared else np.flatnonzero(counts == 0).tolist()
    return Ingested(jobs=jobs, n_train=len(index) - n_test, n_test=n_test, empty_classes=empty)


def _extractor(
    config: Config, input_shape: tuple[int, ...], trusted: tuple[str, ...]
) -> tuple[Backbone | None, str]:
    """What maps a raw point to its stored training data, and the backbone's hash: the whole
    backbone in "head" mode; in "lora" mode its frozen prefix, or None (raw points)."""
    if config.model.finetune == "head":
        backbone = load_backbone(
            config.model,
            input_shape,
            trusted,
            input_scale=config.data.input_scale,
            device=config.resources.device,
        )
        return backbone, backbone.sha256
    base = load_lora_base(config, input_shape, trusted)
    return base.prefix, base.sha256


def source_location(source: str) -> str:
    """``data.source`` as a job elsewhere must read it: a relative local path made absolute
    here, since a worker's working directory is not the caller's."""
    return resolve_source(source)


def _parts(
    config: Config, index: SourceIndex, rule: str = "id", secret: bytes | None = None
) -> np.ndarray:
    """Each point's part: the test side by a keyed hash of its ID (or of its group, under
    the ``group`` rule), else its shard; ``secret`` is the store's placement key."""
    keys = index.groups if rule == "group" else index.ids
    is_test = split_mask(keys, config.sisa.seed, config.data.test_fraction, rule, secret)  # [n]
    train = np.flatnonzero(~is_test)  # [t]
    shard_of, _ = place(config.sisa, _arrays(index, train), secret)
    part_of = np.full(len(index), TEST_PART, dtype=np.int64)  # [n]
    part_of[train] = shard_of
    return part_of


def _arrays(
    index: SourceIndex, rows: np.ndarray, X: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """The stored arrays of some source rows (with their features ``X``, if given)."""
    arrays = {"ids": index.ids[rows], "y": index.y[rows]}
    for name, values in (("groups", index.groups), ("risk", index.risk)):
        if values is not None:
            arrays[name] = values[rows]
    if X is not None:
        arrays["X"] = X.astype(index.x_dtype, copy=False)
    return arrays


def _kind(values: np.ndarray | None) -> str | None:
    if values is None:
        return None
    return "int" if values.dtype.kind in "iu" else "str"


def _intent_info(index: SourceIndex, data_hash: str, rule: str = "id") -> dict[str, Any]:
    """What the training record keeps of the source: shapes, kinds, the split rule and,
    for labels that are not plain integers, the vocabulary (a whole-set statistic that
    only fixes the output size and names; a deletion never changes it)."""
    info: dict[str, Any] = {
        "data_hash": data_hash,
        "input_shape": list(index.feature_shape),
        "num_classes": index.num_classes,
        "x_dtype": str(index.x_dtype),
        "id_kind": _kind(index.ids),
        "group_kind": _kind(index.groups),
        "split": rule,
    }
    if index.classes is not None:
        info["classes"] = list(index.classes)
    return info


def check_existing(
    store: SisaStore, config: Config, index: SourceIndex, data_hash: str, overwrite: bool
) -> bytes | None:
    """Refuse anything that would lose data or undo a deletion; then clear if asked.

    Returns the salt to keep when an overwrite clears a store with a deletion history.
    """
    foreign = store.foreign_files()
    if foreign:
        raise StoreStateError(
            f"{store.url} holds files that are not part of a store ({foreign[0]}, ...); "
            "choose an empty location"
        )
    if store.intent() is None and store.has_history():
        # The salt that ties the history to IDs went with the training record; training
        # afresh would pair the history with a new salt, and an overwrite would erase it.
        raise StoreStateError(
            f"{store.url} holds a deletion history (journal, receipts, tombstones) but no "
            "training record: clearing it for an overwrite was interrupted. Move the history "
            "(journal/, batches/, receipts/, tombstones/) elsewhere to keep it as a record, "
            "then train again"
        )
    if overwrite:
        if store.intent() is None:
            store.delete_store()
            return None
        from sisa.store.journal import Journal

        pending = Journal(store).open_requests()
        if pending:
            raise StoreStateError(
                f"{len(pending)} deletion request(s) on {store.url} are not processed yet; "
                "run 'sisa process' before retraining over this store"
            )
        _refuse_resurrection(store, index)
        _refuse_weaker_storage(store, config)
        salt = store.salt()
        if store.atomic_create:  # not while a deletion batch runs
            with holding(store, store.lease(PROCESS_LOCK, store.config().deletion.lease_s)):
                store.delete_training()
        else:
            store.delete_training()
        return salt
    if store.meta() is not None:
        raise StoreStateError(
            f"{store.url} is already trained; pass --overwrite (overwrite=True) to retrain it"
        )
    intent = store.intent()
    if intent is not None and intent["training_hash"] != config.training_hash():
        other = "another config"
        recorded = store.config().model.backbone_sha256
        if recorded is not None and recorded != config.model.backbone_sha256:
            other = (
                f"another backbone (it expects {recorded[:16]}, this one is "
                f"{(config.model.backbone_sha256 or 'none')[:16]})"
            )
        raise StoreStateError(
            f"{store.url} holds an unfinished training with {other}; "
            "pass --overwrite (overwrite=True) to start over"
        )
    if intent is not None and intent["data_hash"] != store.record_hash(data_hash):
        raise StoreStateError(
            f"{store.url} holds an unfinished training over other data (IDs, labels, groups, "
            "risk or features differ); resuming would mix the two: pass --overwrite "
            "(overwrite=True) to start over"
        )
    return None


def _refuse_weaker_storage(store: SisaStore, config: Config) -> None:
    """An overwrite keeps the deletion history and its salt. A store whose salt lies in a
    key store (or whose artifacts are sealed) must keep that key store and its encryption:
    without them the overwrite would write the salt into the record, or the data unsealed,
    and the history would become testable against guessed IDs."""
    old, new = store.config().storage, config.storage
    if old.key_store is not None and new.key_store is None:
        raise ValueError(
            f"storage.key_store: {store.url} keeps its salt in {old.key_store!r}; retraining "
            "over it without a key store would write that salt into its record. Name the "
            "same key store"
        )
    if old.encryption != "none" and new.encryption == "none":
        raise ValueError(
            f"storage.encryption: {store.url} is encrypted ({old.encryption}); retraining "
            "over it would store the data unsealed. Keep storage.encryption, or train a "
            "new store"
        )


def _refuse_resurrection(store: SisaStore, index: SourceIndex) -> None:
    """Retraining over a store must not bring back points it was asked to forget, nor a
    group it deleted (``sisa.store.tombstones``). The rest of a partly deleted group is welcome:
    deleting some of a group's points never deleted the group."""
    from sisa.store.journal import Journal, deleted_or_requested
    from sisa.store.tombstones import deleted_groups

    deleted, _ = deleted_or_requested(store)
    deleted |= {e.hash for r in Journal(store).all_requests() for e in r.entries}
    if deleted:
        back = sum(h in deleted for h in salted_hashes(store.salt(), index.ids))
        if back:
            raise StoreStateError(
                f"the source data holds {back} point(s) that were forgotten from {store.url}; "
                "remove them from the source before retraining over this store"
            )
    if index.groups is None:
        return
    gone = deleted_groups(store)
    if gone:
        hashes = salted_hashes(store.salt(), np.unique(index.groups))
        if back := sum(h in gone for h in hashes):
            raise StoreStateError(
                f"the source data holds {back} group(s) that were forgotten from {store.url} "
                "(every point of them was deleted); remove their points from the source "
                "before retraining over this store"
            )
