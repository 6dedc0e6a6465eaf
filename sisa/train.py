"""Training a store from scratch: data in, one committed generation per shard out.

Order of writes: ``config.json`` (the intent) first, then the test data and each shard's
data, then the shard jobs (each commits its stages and its head), and ``STORE.json`` last.
A store without ``STORE.json`` is unfinished; calling ``train`` again with the same config
and data resumes it from the last committed stage of every shard.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from sisa.config import Config
from sisa.cost import calibration_totals
from sisa.data import Dataset, load_source, split_train_test
from sisa.ids import id_set_hash, salted_hashes
from sisa.jobs import Executor, ShardJob, ShardResult, run_jobs, run_shard_job
from sisa.partition import place
from sisa.risk import with_risk
from sisa.store import TEST, SisaStore, StoreStateError, gen_dir, shard_prefix
from sisa.trainer import environment_fingerprint
from storage import Lease


@dataclass(frozen=True)
class TrainReport:
    url: str
    shards: list[ShardResult]
    n_train: int
    n_test: int
    seconds: float


def prepare(config: Config) -> tuple[Dataset, Dataset, np.ndarray]:
    """Load, validate and split the data and lay out the shards; writes nothing."""
    dataset = load_source(
        config.data.source, config.data.n, config.sisa.seed, config.data.num_classes
    )
    train_ds, test_ds = split_train_test(dataset, config.sisa.seed, config.data.test_fraction)
    train_ds = with_risk(config.sisa, train_ds)  # stored with the points: placement reads it
    shard_of, _ = place(config.sisa, train_ds.to_arrays())
    return train_ds, test_ds, shard_of


def _check_existing(
    store: SisaStore,
    config: Config,
    train_ds: Dataset,
    test_ds: Dataset,
    data_hash: str,
    overwrite: bool,
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
    if overwrite:
        if store.intent() is None:
            store.delete_store()
            return None
        from sisa.batch import LOCK
        from sisa.journal import Journal

        pending = Journal(store).open_requests()
        if pending:
            raise StoreStateError(
                f"{len(pending)} deletion request(s) on {store.url} are not processed yet; "
                "run 'sisa process' before retraining over this store"
            )
        _refuse_resurrection(store, np.concatenate([train_ds.ids, test_ds.ids]))
        salt = store.salt()
        if store.fs.atomic_create:  # not while a deletion batch runs
            with Lease(store.fs, LOCK, store.config().deletion.lease_s):
                store.delete_training()
        else:
            store.delete_training()
        return salt
    if store.meta() is not None:
        raise StoreStateError(
            f"{store.url} is already trained; pass --overwrite (overwrite=True) to retrain it"
        )
    intent = store.intent()
    if intent is not None and (
        intent["training_hash"] != config.training_hash() or intent["data_hash"] != data_hash
    ):
        raise StoreStateError(
            f"{store.url} holds an unfinished training with another config or data; "
            "pass --overwrite (overwrite=True) to start over"
        )
    return None


def _refuse_resurrection(store: SisaStore, ids: np.ndarray) -> None:
    """Retraining over a store must not bring back points it was asked to forget."""
    from sisa.journal import Journal, deleted_or_requested

    deleted, _ = deleted_or_requested(store)
    deleted |= {e.hash for r in Journal(store).all_requests() for e in r.entries}
    if not deleted:
        return
    back = sum(h in deleted for h in salted_hashes(store.salt(), ids))
    if back:
        raise StoreStateError(
            f"the source data holds {back} point(s) that were forgotten from {store.url}; "
            "remove them from the source before retraining over this store"
        )


def _kind(values: np.ndarray | None) -> str | None:
    if values is None:
        return None
    return "int" if values.dtype.kind in "iu" else "str"


def train(
    config: Config,
    url: str,
    storage_options: dict[str, Any] | None = None,
    *,
    executor: Executor | None = None,
    overwrite: bool = False,
) -> TrainReport:
    """Train every shard slice by slice into the store at ``url``."""
    started = time.perf_counter()
    train_ds, test_ds, shard_of = prepare(config)
    data_hash = id_set_hash(np.concatenate([train_ds.ids, test_ds.ids]))
    store = SisaStore(url, storage_options)
    kept_salt = _check_existing(store, config, train_ds, test_ds, data_hash, overwrite)
    if store.intent() is None:
        store.write_intent(
            config,
            {
                "data_hash": data_hash,
                "input_shape": list(train_ds.feature_shape),
                "num_classes": train_ds.num_classes,
                "x_dtype": str(train_ds.X.dtype),
                "id_kind": _kind(train_ds.ids),
                "group_kind": _kind(train_ds.groups),
            },
            salt=kept_salt,
        )
    if store.latest_head(TEST) is None:
        ref = store.write_data(
            f"{gen_dir(TEST, 0)}/data", test_ds.to_arrays(), id_set_hash(test_ds.ids)
        )
        store.commit_head(TEST, 0, {"data": ref, "n": len(test_ds)})

    jobs = []
    for shard in range(config.sisa.shards):
        if store.latest_head(shard_prefix(shard)) is not None:
            continue  # committed by an earlier, interrupted call
        rows = np.flatnonzero(shard_of == shard)
        arrays = train_ds.take(rows).to_arrays()
        rel = f"{gen_dir(shard_prefix(shard), 0)}/data"
        ref = store.write_data(rel, arrays, id_set_hash(arrays["ids"]))
        trusted = (config.model.name,)  # the caller's own config names it
        jobs.append(ShardJob(url, store.storage_options, shard, 0, 1, ref, [], trusted))
    results = run_jobs(
        executor,
        run_shard_job,
        jobs,
        resources=config.resources,
        units=len(jobs) * config.sisa.slices,
        desc="train",
    )
    fingerprint = (
        results[0].head["stages"][-1]["fingerprint"] if results else environment_fingerprint(config)
    )
    store.write_meta(
        {
            "fingerprint": fingerprint,
            "trained_at": time.time(),
            "n_train": len(train_ds),
            "n_test": len(test_ds),
            "train_samples": sum(r.samples for r in results),  # calibrates the cost model
            "train_seconds": sum(r.seconds for r in results),
            **{f"train_{k}": v for k, v in calibration_totals(results).items()},
        }
    )
    return TrainReport(url, results, len(train_ds), len(test_ds), time.perf_counter() - started)
