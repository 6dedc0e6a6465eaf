"""Shard jobs: the isolated units of work that executors run, one per shard.

A job carries only plain data (store URL, shard, generation, refs), so any executor can
ship it to another process. Jobs are idempotent and resumable: a job that died after
committing some stages finds them on retry (same generation folder, same IDs, same parent
checkpoint) and continues from the last one, and a job whose head is already committed
returns it. The result is the same whichever executor runs it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import numpy as np

from sisa.config import Config, ResourcesConfig
from sisa.faults import crash_point
from sisa.partition import place
from sisa.store import SisaStore, gen_dir, shard_prefix, stage_ref
from sisa.trainer import (
    ShardData,
    TrainState,
    checkpoint_payload,
    environment_fingerprint,
    fresh_state,
    restore_state,
    state_digest,
    train_stage,
)
from storage import state_hash, tensor_hashes

J = TypeVar("J")
R = TypeVar("R")


class Progress(Protocol):
    def __call__(self, units: int) -> None: ...


class Executor(Protocol):
    """Runs ``fn(job, progress)`` for every job; returns results in job order."""

    def map(
        self,
        fn: Callable[[J, Progress], R],
        jobs: Sequence[J],
        *,
        resources: ResourcesConfig,
        units: int,
        desc: str,
    ) -> list[R]: ...


def run_jobs(
    executor: Executor | None,
    fn: Callable[[J, Progress], R],
    jobs: Sequence[J],
    *,
    resources: ResourcesConfig,
    units: int,
    desc: str,
) -> list[R]:
    """Run jobs on ``executor``, or one after another in this process when None."""
    if not jobs:
        return []
    if executor is None:
        return [fn(job, lambda _units: None) for job in jobs]
    return executor.map(fn, jobs, resources=resources, units=units, desc=desc)


@dataclass(frozen=True)
class ShardJob:
    """Train ``shard`` into ``generation`` from ``start_stage`` (1-based) on ``data``."""

    url: str
    storage_options: dict[str, Any]
    shard: int
    generation: int
    start_stage: int
    data: dict[str, Any]  # ref of the committed data artifact of this generation
    base: list[dict[str, Any]] = field(default_factory=list)  # refs of stages < start_stage
    trusted: tuple[str, ...] = ()  # model factories the caller vouches for (see sisa.models)
    head_extra: dict[str, Any] = field(default_factory=dict)  # more fields for the head


@dataclass(frozen=True)
class ShardResult:
    shard: int
    generation: int
    start_stage: int
    trained: list[int]
    resumed: list[int]
    samples: int  # samples trained on by this job
    seconds: float
    purged: list[str]
    head: dict[str, Any]
    phases: dict[str, float] = field(default_factory=dict)  # seconds per PHASES entry
    # Peak resident memory of the process that ran the job, up to the job's end: what a
    # task needs reserved. A reused worker (Ray) carries the peaks of its earlier jobs,
    # and an in-process executor the caller's own, so it is an upper bound for this job.
    # 0 where the platform cannot tell.
    peak_rss_bytes: int = 0


def peak_rss_bytes() -> int:
    """This process's peak resident memory so far, in bytes; 0 where unknown.

    Linux: ``VmHWM``, the high-water mark of this process image. Not ``ru_maxrss``, which
    a process inherits across exec from whoever spawned it (a big driver's children would
    all report its peak). Elsewhere ``ru_maxrss`` (bytes on macOS).
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # "VmHWM:  123 kB"
    except OSError:
        pass
    try:
        import resource
    except ImportError:  # Windows
        return 0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


PHASES = ("load", "train", "checkpoint", "purge")  # where a shard job's time goes


class Phases:
    """Accumulates a job's seconds per phase: reading data and checkpoints (load), the
    optimizer steps (train), writing stages and the head (checkpoint), and the sweep."""

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(PHASES, 0.0)
        self.mark = time.perf_counter()

    def lap(self, phase: str) -> None:
        """Charge the time since the last lap to ``phase``."""
        now = time.perf_counter()
        self.seconds[phase] += now - self.mark
        self.mark = now


def load_shard_data(store: SisaStore, config: Config, shard: int, ref: dict) -> ShardData:
    """A shard's committed data with each point's slice, checked against the layout."""
    arrays = store.read_data(ref)
    shard_of, slice_of = place(config.sisa, arrays)
    if len(shard_of) and not np.all(shard_of == shard):
        raise RuntimeError(f"data of shard {shard} holds points of other shards; refusing")
    return ShardData(arrays["ids"], arrays["X"], arrays["y"], slice_of)


def _restore(store: SisaStore, config: Config, job: ShardJob, ref: dict) -> TrainState:
    intent = store.intent() or {}
    weights, extra = store.read_stage(ref)
    shape, classes = tuple(intent["input_shape"]), intent["num_classes"]
    return restore_state(config, job.shard, shape, classes, weights, extra, job.trusted)


def run_shard_job(job: ShardJob, progress: Progress) -> ShardResult:
    """Train stages ``start_stage..R`` of one shard, commit its head, purge the stale."""
    started = time.perf_counter()
    phases = Phases()
    store = SisaStore(job.url, job.storage_options)
    config, intent = store.config(), store.intent() or {}
    prefix, slices = shard_prefix(job.shard), config.sisa.slices
    head = store.latest_head(prefix)
    if head is not None and head.generation >= job.generation:
        if head.generation > job.generation:
            raise RuntimeError(f"shard {job.shard} is already at generation {head.generation}")
        progress(slices - job.start_stage + 1)
        return ShardResult(
            job.shard,
            job.generation,
            job.start_stage,
            [],
            [],
            0,
            time.perf_counter() - started,
            store.sweep(prefix),
            head.body,
            peak_rss_bytes=peak_rss_bytes(),
        )

    data = load_shard_data(store, config, job.shard, job.data)
    phases.lap("load")
    for ref in job.base:  # stages kept from the old generation must not have seen a change
        if ref["ids_hash"] != data.ids_hash(ref["stage"]):
            raise RuntimeError(f"shard {job.shard} stage {ref['stage']} would be reused stale")
    training_hash, fingerprint = config.training_hash(), environment_fingerprint(config)
    parent = job.base[-1]["state_hash"] if job.base else None
    refs: list[dict[str, Any]] = []
    resumed: list[int] = []
    for stage in range(job.start_stage, slices + 1):  # resume what an earlier try committed
        meta = store.stage_meta(f"{gen_dir(prefix, job.generation)}/stage-{stage:03d}")
        if not meta or (meta["ids_hash"], meta["parent"], meta["training_hash"]) != (
            data.ids_hash(stage),
            parent,
            training_hash,
        ):
            break
        rel = f"{gen_dir(prefix, job.generation)}/stage-{stage:03d}"
        refs.append(stage_ref(rel, meta["manifest"], meta["weights_sha256"], meta))
        parent = meta["state_hash"]
        resumed.append(stage)
        progress(1)

    first = job.start_stage + len(resumed)
    trained: list[int] = []
    samples = 0
    if first <= slices:
        previous = (job.base + refs)[-1] if first > 1 else None
        state = (
            _restore(store, config, job, previous)
            if previous is not None
            else fresh_state(
                config, job.shard, tuple(intent["input_shape"]), intent["num_classes"], job.trusted
            )
        )
        phases.lap("load")
        for stage in range(first, slices + 1):
            before = state.samples
            train_stage(state, data, config, job.shard, stage)
            samples += state.samples - before
            phases.lap("train")
            weights, extra = checkpoint_payload(state)
            meta = {
                "stage": stage,
                "ids_hash": data.ids_hash(stage),
                "parent": parent,
                "training_hash": training_hash,
                "n": int(len(data.stage_rows(stage))),
                "samples": state.samples,
                "step": state.step,
                "fingerprint": fingerprint,
            }
            rel = f"{gen_dir(prefix, job.generation)}/stage-{stage:03d}"
            ref = store.write_stage(rel, weights, extra, meta)
            phases.lap("checkpoint")
            refs.append(ref)
            parent = ref["state_hash"]
            trained.append(stage)
            progress(1)
            crash_point("after-stage-commit")

    body = {
        "shard": job.shard,
        "n": len(data),
        "training_hash": training_hash,
        "data": job.data,
        "stages": job.base + refs,
    } | job.head_extra
    body["committed_at"] = time.time()
    crash_point("before-head-commit")
    phases.lap("load")  # since the last lap: resume checks that read stage metadata
    head = store.commit_head(prefix, job.generation, body)
    phases.lap("checkpoint")
    crash_point("after-head-commit")
    purged = store.sweep(prefix)
    phases.lap("purge")
    return ShardResult(
        job.shard,
        job.generation,
        job.start_stage,
        trained,
        resumed,
        samples,
        time.perf_counter() - started,
        purged,
        head.body,
        phases.seconds,
        peak_rss_bytes(),
    )


@dataclass(frozen=True)
class VerifyJob:
    url: str
    storage_options: dict[str, Any]
    shard: int


@dataclass(frozen=True)
class StageCheck:
    stage: int
    stored_hash: str  # state hash of the committed checkpoint
    retrained_hash: str  # state hash of the from-scratch retrain
    ids_match: bool  # the checkpoint was trained on exactly the shard's current IDs
    mismatched_tensors: list[str]
    state_match: bool  # optimizer state and counters, which later retrains resume from

    @property
    def identical(self) -> bool:
        return self.ids_match and self.state_match and not self.mismatched_tensors


@dataclass(frozen=True)
class ShardVerdict:
    shard: int
    generation: int
    n: int
    stages: list[StageCheck]
    fingerprint: dict[str, Any]  # of the environment that retrained

    @property
    def identical(self) -> bool:
        return all(s.identical for s in self.stages)


def run_verify_job(job: VerifyJob, progress: Progress) -> ShardVerdict:
    """Retrain one shard from scratch on its current data; compare every stage bitwise."""
    store = SisaStore(job.url, job.storage_options)
    config, intent = store.config(), store.intent() or {}
    head = store.shard_head(job.shard)
    data = load_shard_data(store, config, job.shard, head.data)
    state = fresh_state(config, job.shard, tuple(intent["input_shape"]), intent["num_classes"])
    checks = []
    for ref in head.stages:
        train_stage(state, data, config, job.shard, ref["stage"])
        weights, extra = checkpoint_payload(state)
        retrained = tensor_hashes(weights)
        stored_weights, stored_extra = store.read_stage(ref)  # checksums verified on read
        stored = tensor_hashes(stored_weights)
        names = sorted(set(stored) | set(retrained))
        checks.append(
            StageCheck(
                stage=ref["stage"],
                stored_hash=ref["state_hash"],
                retrained_hash=state_hash(weights),
                ids_match=ref["ids_hash"] == data.ids_hash(ref["stage"]),
                mismatched_tensors=[n for n in names if stored.get(n) != retrained.get(n)],
                state_match=state_digest(stored_extra) == state_digest(extra),
            )
        )
        progress(1)
    return ShardVerdict(
        job.shard, head.generation, len(data), checks, environment_fingerprint(config)
    )
