"""Shard jobs: the isolated units of work that executors run, one per shard.

A job carries only plain data (store URL, shard, generation, refs), so any executor can
ship it to another process. Jobs are idempotent and resumable: a job that died after
committing some stages finds them on retry (same generation folder, same IDs, same parent
checkpoint) and continues from the last one, and a job whose head is already committed
returns it. The result is the same whichever executor runs it.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np

from sisa.config import Config, ResourcesConfig
from sisa.data.partition import place
from sisa.faults import crash_point
from sisa.ids import id_set_hash
from sisa.store.artifacts import Head, SisaStore
from sisa.store.fencing import FencedError
from sisa.store.layout import TEST_PREFIX, data_dir, shard_prefix, stage_dir
from sisa.store.records import DataRef, StageRef
from sisa.training.environment import (
    configure,
    environment_differences,
    environment_fingerprint,
    require_device,
)

if TYPE_CHECKING:  # the trainer (torch) is imported by the jobs that train, when they run
    from sisa.training.trainer import ShardData, TrainState

J = TypeVar("J")
R = TypeVar("R")


class Progress(Protocol):
    def __call__(self, units: int) -> None: ...


class Executor(Protocol):
    """Runs ``fn(job, progress)`` for every job; returns results in job order.

    An executor may also have ``check(resources)``, which raises when it cannot run a
    task asking for ``resources`` (a GPU nowhere to be found); ``preflight`` calls it;
    and ``remote = False`` when its jobs run in the caller's process, so that they die
    with it (a successor that finds the caller dead then need not fence: ``storage.Lease``).
    """

    def map(
        self,
        fn: Callable[[J, Progress], R],
        jobs: Sequence[J],
        *,
        resources: ResourcesConfig,
        units: int,
        desc: str,
    ) -> list[R]: ...


class EnvironmentMismatchError(RuntimeError):
    """Continuing a checkpoint here would mix two training environments in one shard."""


def preflight(executor: Executor | None, resources: ResourcesConfig) -> None:
    """Raise now, before anything is written, if ``executor`` cannot run shard tasks with
    ``resources``: no executor (this process) needs the device here."""
    check = getattr(executor, "check", None)
    if check is not None:
        check(resources)
    elif executor is None:
        require_device(resources.device)


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
    preflight(executor, resources)
    if executor is None:
        return [fn(job, lambda _units: None) for job in jobs]
    return executor.map(fn, jobs, resources=resources, units=units, desc=desc)


@dataclass(frozen=True, kw_only=True)
class ShardJob:
    """Train ``shard`` into ``generation`` from ``start_stage`` (1-based) on ``data``.

    With ``drop_rows``, ``data`` is the previous generation's and the job first derives
    its own from it (``derive_data``): the rows a deletion keeps never pass through the
    process that plans the deletion.
    """

    url: str
    storage_options: dict[str, Any]
    shard: int
    generation: int
    start_stage: int
    data: DataRef  # the committed data artifact (see drop_rows)
    base: list[StageRef] = field(default_factory=list)  # the stages < start_stage
    trusted: tuple[
        str, ...
    ] = ()  # model factories the caller vouches for (see sisa.training.models)
    head_extra: dict[str, Any] = field(default_factory=dict)  # more fields for the head
    drop_rows: tuple[int, ...] = ()  # rows of ``data`` this generation no longer holds
    fence: int | None = None  # the lease token it commits under (``sisa.store.fencing``)


@dataclass(frozen=True, kw_only=True)
class TestDataJob:
    """Commit generation ``generation`` of the held-out data: ``data`` less ``drop_rows``."""

    url: str
    storage_options: dict[str, Any]
    generation: int
    data: DataRef  # the previous generation's data
    drop_rows: tuple[int, ...]
    head_extra: dict[str, Any] = field(default_factory=dict)
    fence: int | None = None  # the lease token it commits under (``sisa.store.fencing``)


def derive_data(
    store: SisaStore, prefix: str, generation: int, parent: DataRef, drop_rows: Sequence[int]
) -> DataRef:
    """Commit a generation's data: its parent's rows less ``drop_rows``, in order.

    Idempotent: a retry finds the identical committed artifact and returns its ref.
    """
    arrays = store.read_data(parent)  # verified against the parent's manifest: rows line up
    keep = np.ones(len(arrays["ids"]), dtype=bool)  # [n]
    keep[list(drop_rows)] = False
    kept = {k: v[keep] for k, v in arrays.items()}
    rel = data_dir(prefix, generation)
    ref = store.write_data(rel, kept, id_set_hash(kept["ids"], store.id_hash_key()))
    crash_point("after-data-commit")
    return ref


def run_test_data_job(job: TestDataJob, progress: Progress) -> dict[str, Any]:
    """Derive and commit the held-out data's next generation; return its head body."""
    store = SisaStore(job.url, job.storage_options)
    store.fence = job.fence
    with _discarded_if_fenced(store, TEST_PREFIX, job.generation):
        return _run_test_data_job(store, job)


def _run_test_data_job(store: SisaStore, job: TestDataJob) -> dict[str, Any]:
    head = store.latest_head(TEST_PREFIX)
    if head is not None and head.generation >= job.generation:
        return head.body  # committed by an earlier try
    ref = derive_data(store, TEST_PREFIX, job.generation, job.data, job.drop_rows)
    body = {"data": ref.to_body(), "n": ref.n} | job.head_extra | {"committed_at": time.time()}
    return store.commit_head(TEST_PREFIX, job.generation, body).body


@dataclass(frozen=True, kw_only=True)
class ShardResult:
    shard: int
    generation: int
    start_stage: int
    trained: list[int]
    resumed: list[int]
    samples: int  # samples trained on by this job
    seconds: float
    purged: list[str]
    head: Head  # the committed head
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


def calibration_totals(results: Sequence[ShardResult]) -> dict[str, Any]:
    """What a run records for ``calibration`` beyond samples and seconds: its phases summed
    over jobs, the stages it wrote, and its jobs."""
    phases = {p: sum(r.phases.get(p, 0.0) for r in results) for p in PHASES}
    return {"phases": phases, "stages": sum(len(r.trained) for r in results), "jobs": len(results)}


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


def load_shard_data(store: SisaStore, config: Config, shard: int, ref: DataRef) -> ShardData:
    """A shard's committed data with each point's slice, checked against the layout."""
    from sisa.training.trainer import ShardData

    arrays = store.read_data(ref)
    shard_of, slice_of = place(config.sisa, arrays, store.placement_key())
    if len(shard_of) and not np.all(shard_of == shard):
        raise RuntimeError(f"data of shard {shard} holds points of other shards; refusing")
    return ShardData(
        ids=arrays["ids"],
        X=arrays["X"],
        y=arrays["y"],
        slice=slice_of,
        hash_key=store.id_hash_key(),
    )


def _restore(store: SisaStore, config: Config, job: ShardJob, ref: StageRef) -> TrainState:
    from sisa.training.trainer import restore_state

    intent = store.intent() or {}
    weights, extra = store.read_stage(ref)
    shape, classes = tuple(intent["input_shape"]), intent["num_classes"]
    return restore_state(config, job.shard, shape, classes, weights, extra, job.trusted)


def _require_same_environment(job: ShardJob, fingerprint: dict[str, Any]) -> None:
    """Refuse to continue stages trained in another environment (another GPU model, torch,
    CUDA...): the shard would then equal no training from scratch in either."""
    for ref in job.base:
        differences = environment_differences(ref.fingerprint or {}, fingerprint)
        if differences:
            raise EnvironmentMismatchError(
                f"shard {job.shard} stage {ref.stage} was trained in another environment "
                f"({'; '.join(differences)}); retraining from it here would mix the two and "
                "break bitwise equality with training from scratch. Run this where the store "
                "was trained (on Ray: pin the GPU type, RayExecutor(task_options="
                "{'accelerator_type': ...})), or retrain the store in this environment"
            )


def run_shard_job(job: ShardJob, progress: Progress) -> ShardResult:
    """Train stages ``start_stage..R`` of one shard, commit its head, purge the stale."""
    store = SisaStore(job.url, job.storage_options)
    store.fence = job.fence
    with _discarded_if_fenced(store, shard_prefix(job.shard), job.generation):
        return _run_shard_job(store, job, progress)


@contextlib.contextmanager
def _discarded_if_fenced(store: SisaStore, prefix: str, generation: int) -> Iterator[None]:
    """A job whose lease was taken over stops, and deletes the files it wrote: they lie
    in a generation the new holder fenced, and no head will reference them."""
    try:
        yield
    except FencedError:
        store.discard(prefix, generation)
        raise


def _run_shard_job(store: SisaStore, job: ShardJob, progress: Progress) -> ShardResult:
    from sisa.training.trainer import checkpoint_payload, fresh_state, train_stage

    started = time.perf_counter()
    phases = Phases()
    config, intent = store.config(), store.intent() or {}
    prefix, slices = shard_prefix(job.shard), config.sisa.slices
    head = store.latest_head(prefix)
    if head is not None and head.generation >= job.generation:
        if head.generation > job.generation:
            raise RuntimeError(f"shard {job.shard} is already at generation {head.generation}")
        progress(slices - job.start_stage + 1)
        return ShardResult(
            shard=job.shard,
            generation=job.generation,
            start_stage=job.start_stage,
            trained=[],
            resumed=[],
            samples=0,
            seconds=time.perf_counter() - started,
            purged=store.sweep(prefix),
            head=head,
            peak_rss_bytes=peak_rss_bytes(),
        )

    data_ref = job.data
    if job.drop_rows:
        data_ref = derive_data(store, prefix, job.generation, job.data, job.drop_rows)
    data = load_shard_data(store, config, job.shard, data_ref)
    phases.lap("load")
    for ref in job.base:  # stages kept from the old generation must not have seen a change
        if ref.ids_hash != data.ids_hash(ref.stage):
            raise RuntimeError(f"shard {job.shard} stage {ref.stage} would be reused stale")
    configure(config.resources.threads, config.resources.device)  # before any CUDA work
    training_hash, fingerprint = config.training_hash(), environment_fingerprint(config)
    _require_same_environment(job, fingerprint)
    parent = job.base[-1].state_hash if job.base else None
    refs: list[StageRef] = []
    resumed: list[int] = []
    for stage in range(job.start_stage, slices + 1):  # resume what an earlier try committed
        meta = store.stage_meta(stage_dir(prefix, job.generation, stage))
        if (
            not meta
            or (meta["ids_hash"], meta["parent"], meta["training_hash"])
            != (data.ids_hash(stage), parent, training_hash)
            or environment_differences(meta.get("fingerprint", {}), fingerprint)
        ):
            break  # train again from here: a stage is continued only in its own environment
        rel = stage_dir(prefix, job.generation, stage)
        refs.append(StageRef.from_body(meta | {"dir": rel}))
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
            stats = train_stage(state, data, config, job.shard, stage)
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
                "loss": stats.loss,  # mean over the stage's steps
            }
            if stats.accuracy is not None:  # optim.stage_accuracy = "train"
                meta["accuracy"] = stats.accuracy
            rel = stage_dir(prefix, job.generation, stage)
            ref = store.write_stage(rel, weights, extra, meta)
            phases.lap("checkpoint")
            refs.append(ref)
            parent = ref.state_hash
            trained.append(stage)
            progress(1)
            crash_point("after-stage-commit")

    body = {
        "shard": job.shard,
        "n": len(data),
        "training_hash": training_hash,
        "data": data_ref.to_body(),
        "stages": [ref.to_body() for ref in job.base + refs],
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
        shard=job.shard,
        generation=job.generation,
        start_stage=job.start_stage,
        trained=trained,
        resumed=resumed,
        samples=samples,
        seconds=time.perf_counter() - started,
        purged=purged,
        head=head,
        phases=phases.seconds,
        peak_rss_bytes=peak_rss_bytes(),
    )
