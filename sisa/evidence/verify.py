"""The exactness certificate: retrain shards from scratch and compare bitwise.

For each shard, ``verify`` retrains every stage from a fresh initialisation on the shard's
current data (its remaining points) and compares the per-tensor sha256 of every stage's
weights with the committed checkpoints, and the hash of the IDs each checkpoint was
trained on with the current data. Bitwise equality is promised within one environment
fingerprint (torch version, device, dtype, threads); the report carries both fingerprints
so a mismatch across environments is not mistaken for an unlearning failure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sisa.store.artifacts import SisaStore, StorageOptions, open_store
from sisa.training.environment import configure, environment_differences, environment_fingerprint
from sisa.training.jobs import Executor, Progress, load_shard_data, preflight, run_jobs
from storage import state_hash, tensor_hashes


@dataclass(frozen=True, kw_only=True)
class VerifyJob:
    url: str
    storage_options: dict[str, Any]
    shard: int


@dataclass(frozen=True, kw_only=True)
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


@dataclass(frozen=True, kw_only=True)
class ShardVerdict:
    shard: int
    generation: int
    n: int
    stages: list[StageCheck]
    fingerprint: dict[str, Any]  # of the environment that retrained
    # how the environments that trained the stored stages differ from this one (empty:
    # the same); bitwise equality is promised only when empty
    environment_differences: list[str] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return all(s.identical for s in self.stages)


def run_verify_job(job: VerifyJob, progress: Progress) -> ShardVerdict:
    """Retrain one shard from scratch on its current data; compare every stage bitwise."""
    from sisa.training.trainer import checkpoint_payload, fresh_state, state_digest, train_stage

    store = SisaStore(job.url, job.storage_options)
    config, intent = store.config(), store.intent() or {}
    configure(config.resources.threads, config.resources.device)  # before any CUDA work
    fingerprint = environment_fingerprint(config)
    head = store.shard_head(job.shard)
    data = load_shard_data(store, config, job.shard, head.data)
    state = fresh_state(config, job.shard, tuple(intent["input_shape"]), intent["num_classes"])
    checks = []
    for ref in head.stages:
        train_stage(state, data, config, job.shard, ref.stage)
        weights, extra = checkpoint_payload(state)
        retrained = tensor_hashes(weights)
        stored_weights, stored_extra = store.read_stage(ref)  # checksums verified on read
        stored = tensor_hashes(stored_weights)
        names = sorted(set(stored) | set(retrained))
        checks.append(
            StageCheck(
                stage=ref.stage,
                stored_hash=ref.state_hash,
                retrained_hash=state_hash(weights),
                ids_match=ref.ids_hash == data.ids_hash(ref.stage),
                mismatched_tensors=[n for n in names if stored.get(n) != retrained.get(n)],
                state_match=state_digest(stored_extra) == state_digest(extra),
            )
        )
        progress(1)
    differences = sorted(
        {
            d
            for ref in head.stages
            for d in environment_differences(ref.fingerprint or {}, fingerprint)
        }
    )
    return ShardVerdict(
        shard=job.shard,
        generation=head.generation,
        n=len(data),
        stages=checks,
        fingerprint=fingerprint,
        environment_differences=differences,
    )


@dataclass(frozen=True)
class VerifyReport:
    shards: list[ShardVerdict]
    recorded_fingerprint: dict[str, Any]
    fingerprint: dict[str, Any]

    @property
    def same_environment(self) -> bool:
        """Every verified stage was trained where it was retrained (same fingerprint)."""
        return not any(v.environment_differences for v in self.shards)

    @property
    def identical(self) -> bool:
        return all(v.identical for v in self.shards)


def verify(
    store: SisaStore | str,
    shard: int | None = None,
    *,
    storage_options: StorageOptions = None,
    executor: Executor | None = None,
) -> VerifyReport:
    """Check that every (or one) shard equals training from scratch on what it holds."""
    store = open_store(store, storage_options)
    meta = store.require_trained()
    config = store.config()
    if shard is not None and not 0 <= shard < config.sisa.shards:
        raise ValueError(f"shard {shard} does not exist (this store has {config.sisa.shards})")
    preflight(executor, config.resources)  # a GPU store needs a GPU to retrain on
    shards = [shard] if shard is not None else list(range(config.sisa.shards))
    jobs = [
        VerifyJob(url=store.url, storage_options=store.storage_options, shard=k) for k in shards
    ]
    verdicts = run_jobs(
        executor,
        run_verify_job,
        jobs,
        resources=config.resources,
        units=len(jobs) * config.sisa.slices,
        desc="verify",
    )
    return VerifyReport(verdicts, meta["fingerprint"], verdicts[0].fingerprint)
