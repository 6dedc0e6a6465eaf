"""The exactness certificate: retrain shards from scratch and compare bitwise.

For each shard, ``verify`` retrains every stage from a fresh initialisation on the shard's
current data (its remaining points) and compares the per-tensor sha256 of every stage's
weights with the committed checkpoints, and the hash of the IDs each checkpoint was
trained on with the current data. Bitwise equality is promised within one environment
fingerprint (torch version, device, dtype, threads); the report carries both fingerprints
so a mismatch across environments is not mistaken for an unlearning failure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sisa.store.artifacts import SisaStore, StorageOptions, open_store
from sisa.training.jobs import (
    Executor,
    ShardVerdict,
    VerifyJob,
    preflight,
    run_jobs,
    run_verify_job,
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
