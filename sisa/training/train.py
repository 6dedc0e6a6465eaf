"""Training a store from scratch: data in, one committed generation per shard out.

Order of writes: ``config.json`` (the intent) first, then the test data and each shard's
data (the ingest job, ``sisa.training.ingest``), then the shard jobs (each commits its stages and
its head), and ``STORE.json`` last. The data reach the shard jobs through the store; on an
executor that runs jobs elsewhere (Ray), this process never holds the dataset.
A store without ``STORE.json`` is unfinished; calling ``train`` again with the same config
and data resumes it from the last committed stage of every shard.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from sisa.config import BUILTIN_SOURCES, IN_MEMORY, TEXT_MODELS, Config, ConfigError
from sisa.data.categories import read_reference
from sisa.data.dataset import DataError, Dataset, first_values, split_rule, split_train_test
from sisa.data.loaders import load_source
from sisa.data.memory import as_dataset
from sisa.data.partition import place
from sisa.data.risk import with_risk
from sisa.data.sources import is_image_folder
from sisa.data.text import load_tokenizer
from sisa.store.artifacts import SisaStore, StorageOptions, open_store
from sisa.store.sealing import check_encryption
from sisa.training.factories import check_factory
from sisa.training.ingest import IngestJob, run_ingest_job, source_location
from sisa.training.jobs import (
    Executor,
    ShardResult,
    calibration_totals,
    preflight,
    run_jobs,
    run_shard_job,
)
from sisa.training.standardize import reference_statistics


@dataclass(frozen=True, kw_only=True)
class TrainReport:
    url: str
    shards: list[ShardResult]  # the shards this call trained (all but the resumed_shards)
    n_train: int
    n_test: int
    seconds: float
    # a rerun after an interruption: shards committed by an earlier call, not trained again
    resumed_shards: list[int] = field(default_factory=list)
    empty_classes: list[int] = field(default_factory=list)  # labels no point carries

    @property
    def resumed(self) -> bool:
        """This call finished a training that an earlier, interrupted call started."""
        return bool(self.resumed_shards) or any(r.resumed for r in self.shards)


def prepare(config: Config, data: object = None) -> tuple[Dataset, Dataset, np.ndarray]:
    """Load, validate and split the data (``config``'s source, or ``data`` in memory) and
    lay out the shards, in memory; writes nothing. ``train`` streams the same split and
    layout into a store without a key store instead (one with a key store places by a
    secret of its own: ``SisaStore.placement_key``)."""
    if data is not None:
        dataset = as_dataset(data, config.data)
    else:
        dataset = load_source(
            config.data.source,
            config.data.n,
            config.sisa.seed,
            config.data.num_classes,
            data=config.data,
        )
    rule = split_rule(config.data.split, dataset.groups is not None)
    train_ds, test_ds = split_train_test(dataset, config.sisa.seed, config.data.test_fraction, rule)
    train_ds = with_risk(config.sisa, train_ds)  # stored with the points: placement reads it
    shard_of, _ = place(config.sisa, train_ds.to_arrays())
    return train_ds, test_ds, shard_of


def empty_classes_warning(empty: list[int]) -> str:
    """Labels with gaps (say 0 and 5) make a model with outputs no point ever trains."""
    return (
        f"classes {first_values(empty)} have no point in the data; the model still has an output "
        "for each (up to the largest label), which no point trains: relabel the data to "
        "0..C-1 without gaps, or set data.num_classes if the classes are meant to exist"
    )


def with_tokenizer(config: Config) -> Config:
    """The config with its tokenizer recorded: the file's sha256 (a later read of the source
    refuses another file) and, for a text model, the vocabulary size and padding ID."""
    data, model = config.data, config.model
    if model.name in TEXT_MODELS and data.text_column is None:
        raise ConfigError(f"model.name: {model.name!r} reads texts: set data.text_column")
    if data.text_column is None:
        return config
    if data.tokenizer is None:
        raise ConfigError("data.tokenizer: data.text_column needs a tokenizers JSON file")
    path = source_location(data.tokenizer)
    tok = load_tokenizer(path, data.tokenizer_sha256)
    data = data.model_copy(update={"tokenizer": path, "tokenizer_sha256": tok.sha256})
    if model.name in TEXT_MODELS:
        if model.vocab_size is not None and model.vocab_size < tok.vocab_size:
            raise ConfigError(
                f"model.vocab_size: {model.vocab_size} is below the tokenizer's "
                f"{tok.vocab_size} token IDs"
            )
        pad = tok.pad_id if model.pad_id is None else model.pad_id
        vocab = model.vocab_size or tok.vocab_size
        model = model.model_copy(update={"vocab_size": vocab, "pad_id": pad})
    return config.model_copy(update={"data": data, "model": model})


def with_categories(config: Config, in_memory: bool = False) -> Config:
    """The config with its category reference recorded: the file's sha256, so that a later
    read of the source (a retrain, ``verify``, ``sisa predict``) refuses another file. The
    reference is read here, before anything is written: a column it lacks writes nothing."""
    data = config.data
    if not data.categorical_columns:
        return config
    source = data.source
    if not in_memory and (source in BUILTIN_SOURCES or source.lower().endswith(".npz")):
        raise ConfigError(
            "data.categorical_columns: categories are read from tables (CSV, Parquet, a "
            f"DataFrame); {source!r} holds features as numbers already"
        )
    if data.category_reference is not None:
        path = source_location(data.category_reference)
        rest = [c for c in data.categorical_columns if c not in (data.categories or {})]
        ref = read_reference(path, rest, data.category_reference_sha256)
        update = {"category_reference": path, "category_reference_sha256": ref.sha256}
        data = data.model_copy(update=update)
    return config.model_copy(update={"data": data})


def with_scale_reference(config: Config) -> Config:
    """The config with the statistics of ``data.scale_reference`` recorded as its scaling
    constants, beside the file's sha256 (``sisa.training.standardize``). Read here, before
    anything is written; a retrain or ``verify`` uses the recorded values."""
    data = config.data
    if data.scale != "standard" or data.scale_from != "reference" or data.scale_reference is None:
        return config
    path = source_location(data.scale_reference)
    stats = reference_statistics(path, data)
    update = {
        "scale_reference": path,
        "scale_reference_sha256": stats.sha256,
        "scale_mean": stats.mean,
        "scale_std": stats.std,
    }
    return config.model_copy(update={"data": data.model_copy(update=update)})


def train(
    config: Config,
    store: SisaStore | str,
    storage_options: StorageOptions = None,
    *,
    executor: Executor | None = None,
    overwrite: bool = False,
    data: object = None,
    ids: Sequence[object] | None = None,
    placement_like: SisaStore | None = None,
) -> TrainReport:
    """Train every shard slice by slice into ``store`` (a ``SisaStore`` or a URL).

    ``data`` replaces ``data.source`` with points held in memory: a ``sisa.Dataset``, a
    dict of arrays (``ids``, ``X``, ``y``, optional ``groups``, ``risk``), a pandas
    DataFrame (read by the column mapping), or a map-style torch dataset with ``ids``
    (one per index; the order never matters, points are keyed by ID). They are streamed
    into the store like a file, and the store records ``data.source = "in-memory"``.

    ``placement_like`` places the points as that store does: a from-scratch reference of
    a store whose placement is keyed by its key store (``SisaStore.placement_key``). The
    key is then kept in this store's record, so make it a private, temporary one.
    """
    started = time.perf_counter()
    preflight(executor, config.resources)  # no GPU where one is asked: before any write
    check_factory(
        config.model, trusted=(config.model.name, config.model.backbone or "")
    )  # importable: before any write
    if ids is not None and data is None:
        raise DataError("ids= goes with data=: a map-style dataset and one ID per index")
    config = with_categories(config, data is not None)  # before the data are encoded
    config = with_scale_reference(config)  # by the same mapping; before any write
    if config.model.backbone_weights is not None:  # read by the ingest job, anywhere
        weights = source_location(config.model.backbone_weights)
        model = config.model.model_copy(update={"backbone_weights": weights})
        config = config.model_copy(update={"model": model})
    in_memory = None if data is None else as_dataset(data, config.data, ids)  # before writes
    store = open_store(store, storage_options)
    check_encryption(store.url, store.storage_options, config.storage)  # before any write
    # what the store keeps is the source resolved here: later commands, run from any
    # folder or node, read the same file
    config = with_tokenizer(config)  # before any write: a bad tokenizer file writes nothing
    source = IN_MEMORY if in_memory is not None else source_location(config.data.source)
    resolved: dict[str, object] = {"source": source}
    # pixels: an image folder, or a manifest naming image files (the same decoding)
    manifest = in_memory is None and config.data.image_column is not None
    images = manifest or is_image_folder(source)
    if config.data.augment and not images:  # before anything is written
        raise ConfigError(
            "data.augment: augmentations apply to an image folder or manifest source only"
        )
    if config.data.input_scale is None and images:
        resolved["input_scale"] = 1 / 255  # uint8 pixels to [0, 1], a given constant
    config = config.model_copy(update={"data": config.data.model_copy(update=resolved)})
    ingest = IngestJob(
        url=store.url,
        storage_options=store.storage_options,
        config=config.stored(),
        overwrite=overwrite,
        dataset=in_memory,
        trusted=tuple(n for n in (config.model.backbone,) if n is not None),  # the caller's
        placement_key=None if placement_like is None else placement_like.placement_key(),
    )
    (ingested,) = run_jobs(
        executor,
        run_ingest_job,
        [ingest],
        # head and lora modes: the ingest runs the backbone, on the shards' device
        resources=config.resources
        if config.model.finetune != "full"
        else config.resources.for_data(),
        units=0,
        desc="ingest",
    )
    jobs = ingested.jobs
    if ingested.empty_classes:
        warnings.warn(empty_classes_warning(ingested.empty_classes), stacklevel=2)
    results = run_jobs(
        executor,
        run_shard_job,
        jobs,
        resources=config.resources,
        units=len(jobs) * config.sisa.slices,
        desc="train",
    )
    # where the shards trained (the workers, not necessarily this process); every shard
    # records its own in each stage
    head = results[0].head if results else store.shard_head(0)  # all committed earlier
    fingerprint = head.stages[-1].fingerprint
    store.write_meta(
        {
            "fingerprint": fingerprint,
            "trained_at": time.time(),
            "n_train": ingested.n_train,
            "n_test": ingested.n_test,
            "train_samples": sum(r.samples for r in results),  # calibrates the cost model
            "train_seconds": sum(r.seconds for r in results),
            **{f"train_{k}": v for k, v in calibration_totals(results).items()},
        }
    )
    committed = sorted(set(range(config.sisa.shards)) - {j.shard for j in jobs})
    return TrainReport(
        url=store.url,
        shards=results,
        n_train=ingested.n_train,
        n_test=ingested.n_test,
        seconds=time.perf_counter() - started,
        resumed_shards=committed,
        empty_classes=ingested.empty_classes,
    )
