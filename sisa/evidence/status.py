"""What a store holds, and how well its ensemble does on the held-out data."""

from __future__ import annotations

from typing import Any

import numpy as np

from sisa.deletion import compliance
from sisa.serving.aggregate import accuracy, aggregate, decide
from sisa.store.artifacts import SisaStore, StorageOptions, open_store
from sisa.store.journal import Journal
from sisa.store.layout import TEST_PREFIX, WEIGHTS, request_path


def status(
    store: SisaStore | str, storage_options: StorageOptions = None, *, check: bool = False
) -> dict[str, Any]:
    """Per shard: points, generation, the URL and sha256 of its final weights, and the
    final stage's mean training loss and accuracy on its points (None where not recorded:
    accuracy unless ``optim.stage_accuracy`` asked, both in heads written before them).

    The hashes are those the heads recorded when the files were written. With ``check``,
    every file that a head references is read and hashed, and ``check`` lists the files
    whose bytes no longer match (``ok`` is false then).
    """
    store = open_store(store, storage_options)
    meta = store.require_trained()
    config = store.config()
    served = compliance.current(store)
    shards = []
    for shard in range(config.sisa.shards):
        head = store.shard_head(shard)
        final = head.stages[-1]
        shards.append(
            {
                "shard": shard,
                "points": head.body["n"],
                "generation": head.generation,
                "served_stage": served.shards[shard].stage,  # < slices while rolled back
                "weights_url": store.url_of(f"{final.dir}/{WEIGHTS}"),
                "weights_sha256": final.weights_sha256,  # of the stored (maybe sealed) file
                "state_hash": final.state_hash,  # of the weights and state themselves
                "loss": final.loss,
                "accuracy": final.accuracy,
            }
        )
    test = store.latest_head(TEST_PREFIX)
    return {
        "store": store.url,
        "shards": shards,
        "slices": config.sisa.slices,
        "points": sum(s["points"] for s in shards),
        "test_points": test.body["n"] if test else 0,
        # the label vocabulary recorded at training (None: integer labels)
        "classes": None if (names := store.classes()) is None else list(names),
        "deleted": len(store.tombstones().body["entries"]),
        "pending_requests": [r.seq for r in Journal(store).open_requests()],
        # requests whose journal entry cannot be read: never processed until resubmitted
        "damaged_journal_entries": [request_path(seq) for seq in Journal(store).damaged()],
        "config": config.stored(),
        "fingerprint": meta["fingerprint"],
        "hashes": "recorded",  # as written; ``check`` reads the bytes
    } | ({"check": check_files(store)} if check else {})


def check_files(store: SisaStore) -> dict[str, Any]:
    """Every artifact the heads reference, read against its manifest."""
    heads = [store.shard_head(k) for k in range(store.config().sisa.shards)]
    if (test := store.latest_head(TEST_PREFIX)) is not None:
        heads.append(test)
    refs = {ref.dir: ref for head in heads for ref in (head.data, *head.stages)}
    problems = [p for ref in refs.values() for p in store.check_artifact(ref)]
    return {"ok": not problems, "artifacts": len(refs), "problems": problems}


def evaluate(store: SisaStore | str, storage_options: StorageOptions = None) -> dict[str, Any]:
    """Accuracy of each shard model and of the aggregate on the store's test data."""
    from sisa.serving.ensemble import Ensemble  # torch: only what runs the models imports it

    store = open_store(store, storage_options)
    ensemble = Ensemble.load(store, stored=True)  # "head": no backbone, test rows are features
    test = store.latest_head(TEST_PREFIX)
    if test is None or test.body["n"] == 0:
        raise ValueError("this store has no test data (data.test_fraction = 0)")
    arrays = store.read_data(test.data)
    probs = ensemble.shard_proba(arrays["X"], stored=True)  # [S_live, n, C]
    y = arrays["y"]
    per_shard = {
        shard: accuracy(decide(p), y) for shard, p in zip(ensemble.models, probs, strict=True)
    }
    return {
        "per_shard": per_shard,
        "average": accuracy(decide(aggregate(probs, "average")), y),
        "vote": accuracy(decide(aggregate(probs, "vote")), y),
        "aggregate": accuracy(decide(aggregate(probs, ensemble.config.sisa.aggregation)), y),
        "test_points": int(len(y)),
        "mean_shard": float(np.mean(list(per_shard.values()))),
    }
