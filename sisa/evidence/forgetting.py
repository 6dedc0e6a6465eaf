"""Evidence of forgetting for a store: membership inference and Tug-of-War figures of its
ensemble against a from-scratch reference, for an auditor to read beside the bitwise
certificate of ``verify``.

The store no longer holds the forgotten points (that is what it promises), so their
features come from the data source, by default the one the store was trained from. The
reference is a new store trained from scratch, in a temporary folder, on exactly what the
store holds now (its remaining training points and its test points) with its config: the
model exact unlearning must equal. For SISA it does, bitwise (``identical``), so its
accuracy gaps are 0, ToW and ToW-MIA are 1, and each MIA scores what the reference scores.
Training the reference costs one full training, as ``verify`` does.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sisa.config import build_config
from sisa.data.dataset import DataError, Dataset, split_train_test
from sisa.data.sources import read_whole
from sisa.evidence.evaluation import Outputs, evidence
from sisa.evidence.status import status
from sisa.ids import as_id_array
from sisa.serving.ensemble import Ensemble
from sisa.store.artifacts import SisaStore, StorageOptions, open_store
from sisa.store.layout import TEST_PREFIX
from sisa.training.jobs import Executor


class EvidenceError(ValueError):
    """The forgotten IDs cannot be evaluated (unknown, or still in the store)."""


def _current(store: SisaStore) -> dict[str, np.ndarray]:
    """The store's remaining training points, over every shard."""
    parts = [store.read_data(store.shard_head(k).data) for k in range(store.config().sisa.shards)]
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def _source_dataset(store: SisaStore, source: str) -> Dataset:
    """``source`` read with the store's mapping; its labels are mapped through the store's
    recorded vocabulary, which a deletion never changes."""
    config = store.config()
    rules = config.data
    if (classes := store.classes()) is not None:
        rules = rules.model_copy(update={"classes": classes})
    try:
        return read_whole(rules.model_copy(update={"source": source}), config.sisa.seed)
    except DataError as err:
        raise EvidenceError(f"the source {source!r}: {err}") from None


def _raw_rows(store: SisaStore, source: str, ids: np.ndarray) -> np.ndarray:
    """The raw rows of ``ids`` from ``source``, in that order. [n] -> [n, *raw]."""
    dataset = _source_dataset(store, source)
    where = {key: i for i, key in enumerate(dataset.ids.tolist())}
    missing = [i for i in ids.tolist() if i not in where]
    if missing:
        raise EvidenceError(f"{len(missing)} stored ID(s) are not in {source}: {missing[:5]}")
    return dataset.X[[where[i] for i in ids.tolist()]]


def _forgotten_rows(
    store: SisaStore, source: str, ids: Sequence[object], remaining: np.ndarray
) -> tuple[dict[str, np.ndarray], int]:
    """The forgotten training points' arrays from ``source``, and how many forgotten IDs
    were held-out test points (never trained on, so nothing to measure). The source is
    read with the store's mapping and split by the store's recorded rule."""
    config = store.config()
    dataset = _source_dataset(store, source)
    train, test = split_train_test(
        dataset,
        config.sisa.seed,
        config.data.test_fraction,
        store.split_rule(),
        store.placement_key(),
    )
    wanted = np.unique(as_id_array(list(ids)))  # no cast to the data's width: no truncation
    if (wanted.dtype.kind == "U") != (train.ids.dtype.kind == "U"):
        raise EvidenceError(f"the IDs named are not of the kind {source}'s IDs are")
    held_out = np.isin(wanted, test.ids)
    unknown = wanted[~held_out & ~np.isin(wanted, train.ids)]
    if len(unknown):
        raise EvidenceError(
            f"{len(unknown)} ID(s) are not points of {source}: {', '.join(map(str, unknown[:5]))}"
        )
    wanted = wanted[~held_out]
    if not len(wanted):
        raise EvidenceError("every ID named is a held-out test point; none was trained on")
    kept = wanted[np.isin(wanted, remaining)]
    if len(kept):
        raise EvidenceError(
            f"{len(kept)} ID(s) are still in the store, so there is nothing to evaluate yet: "
            f"{', '.join(map(str, kept[:5]))}; forget them first"
        )
    rows = np.isin(train.ids, wanted)
    return {"ids": train.ids[rows], "X": train.X[rows], "y": train.y[rows]}, int(held_out.sum())


def _reference(store: SisaStore, folder: Path, executor: Executor | None, source: str) -> str:
    """Train the from-scratch reference store on what ``store`` holds now."""
    from sisa.training.train import train

    config = store.config()
    current, test = _current(store), store.read_data(store.latest_head(TEST_PREFIX).data)
    data = {k: np.concatenate([current[k], test[k]]) for k in current if k in test}
    if config.model.finetune == "lora" and "raw_shape" in (store.intent() or {}):
        # the store holds the outputs of the backbone's frozen prefix; the reference runs
        # the whole backbone, so it trains on the same points' raw rows from the source
        data["X"] = _raw_rows(store, source, data["ids"])
    path = folder / "remaining.npz"
    np.savez(path, **data)
    classes = int(store.intent()["num_classes"])  # a class forgotten whole stays an output
    # the file holds class indices, and the split the store recorded is kept
    fixed = {"classes": None, "split": store.split_rule(), "fill_missing": None}
    tree = config.stored() | {
        "data": config.data.model_dump() | {"source": str(path), "num_classes": classes} | fixed,
    }
    if config.model.finetune == "head":  # the file holds features: heads train on them as
        # they are (no backbone, no input scaling), as the store's heads did
        tree["data"]["input_scale"] = None
        tree["model"] = tree["model"] | {
            "finetune": "full",
            "backbone": None,
            "backbone_weights": None,
            "backbone_sha256": None,
            "backbone_input": None,
        }
    # a temporary store beside the plaintext file it trains on, deleted with the folder:
    # not sealed, so it leaves no keys behind in the store's key store
    tree["storage"] = {}
    url = str(folder / "reference")
    train(build_config(tree), url, executor=executor, placement_like=store)
    return url


def forgetting_evidence(
    store: SisaStore | str,
    forgotten: Sequence[object],
    *,
    source: str | None = None,
    storage_options: StorageOptions = None,
    executor: Executor | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """MIA and ToW figures of ``store`` for the ``forgotten`` IDs, against a reference
    trained from scratch on the store's current data."""
    if not forgotten:
        raise EvidenceError("name at least one forgotten ID")
    store = open_store(store, storage_options)
    store.require_trained()
    config = store.config()
    test_head = store.latest_head(TEST_PREFIX)
    if test_head is None or test_head.body["n"] == 0:
        raise EvidenceError("this store has no test data (data.test_fraction = 0)")
    current = _current(store)
    lost, held_out = _forgotten_rows(store, source or config.data.source, forgotten, current["ids"])
    test = store.read_data(test_head.data)
    features = {"forget": lost["X"], "retain": current["X"], "test": test["X"]}
    labels = {"forget": lost["y"], "retain": current["y"], "test": test["y"]}
    mine = Ensemble.load(store)
    with tempfile.TemporaryDirectory(prefix="sisa-reference-") as tmp:
        ref_url = _reference(store, Path(tmp), executor, source or config.data.source)
        theirs = Ensemble.load(SisaStore(ref_url))
        # of the weights themselves: a sealed file's bytes differ from any other's
        identical = [s["state_hash"] or s["weights_sha256"] for s in status(store)["shards"]] == [
            s["state_hash"] or s["weights_sha256"] for s in status(ref_url)["shards"]
        ]

        if mine.backbone is not None:  # the forgotten rows come from the source: as stored
            features["forget"] = mine.backbone.features(mine.check_features(features["forget"]))

        def outputs(ensemble: Ensemble) -> Outputs:
            scores = {k: ensemble.predict_proba(v, stored=True) for k, v in features.items()}
            return Outputs(scores, labels)

        figures = evidence(
            outputs(mine),
            outputs(theirs),
            seed=seed,
        )
    return {
        "forgotten": len(lost["ids"]),
        "held_out": held_out,  # forgotten IDs that were test points: never trained on
        "retain": len(current["ids"]),
        "test": len(test["ids"]),
        "identical": identical,
        "figures": figures,
    }
