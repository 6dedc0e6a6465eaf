"""The served ensemble: every shard's final model, aggregated.

A shard with no points (all forgotten, or empty by chance) is left out of the aggregate:
an untrained model would only add noise. While deletion requests are open, shards they
touch are served from an earlier checkpoint, or left out (``sisa.deletion.compliance``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from sisa.config import Config
from sisa.deletion import compliance
from sisa.deletion.compliance import ServedShard, ServingState
from sisa.serving.aggregate import aggregate, decide
from sisa.serving.inference import EnsembleForward, build_forward, model_device
from sisa.store.artifacts import SisaStore, StorageOptions, open_store
from sisa.training.backbone import Backbone, load_backbone
from sisa.training.lora import load_trained, shared_base
from sisa.training.trainer import configure, fresh_state


class InputError(ValueError):
    """Rows the models cannot take; the message says what to fix.

    ``rows`` names the offending rows (0-based) when the fault is in some rows only, so
    a caller (the HTTP API) can point at each of them."""

    def __init__(self, message: str, rows: Sequence[int] = ()) -> None:
        super().__init__(message)
        self.rows = [int(r) for r in rows]

    def __reduce__(self) -> tuple[Any, ...]:  # keep ``rows`` across pickling (Ray)
        return (type(self), (str(self), self.rows))


FLOAT32_MAX = float(np.finfo(np.float32).max)
SHOWN_ROWS = 10  # rows an InputError's message names; ``rows`` holds them all


def _name_rows(rows: Sequence[int]) -> str:
    shown = ", ".join(str(r) for r in rows[:SHOWN_ROWS])
    more = f" and {len(rows) - SHOWN_ROWS} more" if len(rows) > SHOWN_ROWS else ""
    return f"row {shown}" if len(rows) == 1 else f"rows {shown}{more}"


class NoModelError(RuntimeError):
    """No shard can predict: every one is empty, or rolled back past its first slice
    until a retrain commits. Predicting anyway would use deleted points."""


def check_features(X: object, input_shape: Sequence[int]) -> np.ndarray:
    """Validate a batch of rows. [n, *f] or [n, prod(f)] -> [n, *f] float32.

    Rejects, each with its own message: an empty batch, rows of unequal length, values
    that are not real numbers (text, booleans, complex, null), the wrong feature count,
    and NaN, infinity or values beyond float32's range.
    """
    shape = tuple(input_shape)
    width = int(np.prod(shape))
    try:
        arr = np.asarray(X)
    except (ValueError, TypeError):
        raise InputError("rows must all have the same number of features") from None
    if arr.ndim >= 1 and len(arr) == 0:
        raise InputError("empty batch: send at least one row")
    if arr.dtype.kind not in "iuf":
        kind = "text" if arr.dtype.kind in "US" else str(arr.dtype)
        raise InputError(f"features must be real numbers, got {kind}")
    if arr.ndim < 2:
        raise InputError(
            f"a batch must be 2-D [rows, {width} features], got shape {arr.shape}; "
            "wrap a single row in a list"
        )
    if arr.shape[1:] != shape:
        if arr.ndim != 2 or arr.shape[1] != width:
            got = arr.shape[1] if arr.ndim == 2 else arr.shape[1:]
            raise InputError(f"each row must have {width} features, got {got}")
        arr = arr.reshape(len(arr), *shape)
    with np.errstate(over="ignore", invalid="ignore"):
        x = np.ascontiguousarray(arr, dtype=np.float32)
        # a float64 just past float32's largest value rounds to it: refuse it all the same
        wide = arr.dtype.kind == "f" and arr.dtype.itemsize > 4
        over = np.abs(arr) > FLOAT32_MAX if wide else None
    if not x.flags.writeable:  # e.g. deserialised by Ray; torch wants memory it may own
        x = x.copy()
    bad = ~np.isfinite(x) if over is None else ~np.isfinite(x) | over
    if bad.any():  # one pass; find the rows only when something is wrong
        rows = np.flatnonzero(bad.reshape(len(x), -1).any(axis=1)).tolist()
        verb = "holds" if len(rows) == 1 else "hold"
        raise InputError(
            f"{_name_rows(rows)} {verb} NaN, infinity or a value beyond float32's range", rows
        )
    return x


def check_scores(probs: np.ndarray) -> np.ndarray:
    """Refuse rows whose scores are not finite. [S, n, C] -> the same array.

    Features finite in float32 can still overflow inside a model (a row of 3e38 makes
    inf - inf = NaN in the first layer); such a row has no prediction, and returning
    NaN (JSON null) or an argmax over NaN would be a silent wrong answer."""
    finite = np.isfinite(probs).all(axis=(0, 2))  # [n]
    if not finite.all():
        rows = np.flatnonzero(~finite).tolist()
        verb = "gives" if len(rows) == 1 else "give"
        raise InputError(
            f"{_name_rows(rows)} {verb} non-finite scores: the features are finite but too "
            "large for the models (they overflow); scale them as in training",
            rows,
        )
    return probs


def state_version(state: ServingState) -> str:
    """Names the ensemble a serving state describes: the checkpoints of its live shards.

    Two states with the same version predict the same, whatever their documents say."""
    live = sorted((s.shard, s.ref.weights_sha256) for s in state.shards.values() if s.ref)
    return hashlib.sha256(json.dumps(live).encode()).hexdigest()[:16]


def served_input_shape(intent: dict[str, Any]) -> tuple[int, ...]:
    """What a prediction takes, by a store's training record: the raw input in "head" mode
    (the backbone's, ``raw_shape``), else the stored features' shape."""
    return tuple(intent.get("raw_shape") or intent["input_shape"])


def _served_backbone(
    config: Config, intent: dict[str, Any], previous: Ensemble | None
) -> Backbone | None:
    """What maps a raw row to what the shard models take, by the store's record: in "head"
    mode the backbone (the previous snapshot's while it is that one: same hash and group
    size, else loaded again); in "lora" mode the frozen prefix of the process's one shared
    base, or None; None in "full" mode."""
    if config.model.finetune == "lora":
        return shared_base(config).prefix
    if config.model.finetune != "head":
        return None
    kept = previous.backbone if previous is not None else None
    if (
        kept is not None
        and kept.sha256 == config.model.backbone_sha256
        and kept.rows == config.model.feature_batch
    ):
        return kept
    return load_backbone(
        config.model,
        intent["raw_shape"],
        input_scale=config.data.input_scale,
        device=config.resources.device,
    )


@dataclass(kw_only=True)
class Ensemble:
    config: Config
    num_classes: int
    input_shape: tuple[int, ...]
    models: dict[int, nn.Module]  # shard -> model in eval mode

    served: dict[int, ServedShard] = field(default_factory=dict)  # shard -> checkpoint used
    # the label vocabulary recorded at training (class i is classes[i]); None: class i is i
    classes: tuple[str | int, ...] | None = None
    inference: str = "auto"  # serving.inference: how the models are evaluated together
    forward: EnsembleForward | None = None  # over ``models`` in shard order; None: no model
    # model.finetune = "head": the frozen backbone every row passes once, before all heads
    # ("lora": the backbone's frozen prefix); ``input_shape`` is then what it takes, and the
    # shard models take its output
    backbone: Backbone | None = None

    def __post_init__(self) -> None:
        if self.forward is None and self.models:
            models = list(self.models.values())
            heads_take = self.input_shape if self.backbone is None else self.feature_shape
            self.forward = build_forward(models, self.inference, input_shape=heads_take)

    @property
    def feature_shape(self) -> tuple[int, ...]:
        """What the shard models take: the input, or the backbone's features."""
        return self.input_shape if self.backbone is None else self.backbone.output_shape

    @classmethod
    def load(
        cls,
        store: SisaStore | str,
        previous: Ensemble | None = None,
        state: ServingState | None = None,
        inference: str = "auto",
        *,
        storage_options: StorageOptions = None,
        stored: bool = False,
    ) -> Ensemble:
        """Load the checkpoint the serving state names for each shard, verifying checksums.

        Open deletion requests roll their shards back (``sisa.deletion.compliance``), so the
        ensemble never depends on a point whose deletion was accepted. Models whose checkpoint
        did not change are taken from ``previous`` instead of being read again. ``state``
        defaults to ``compliance.current(store)``. ``stored``: the ensemble takes rows as
        the store keeps them (features in "head" mode, the prefix's outputs in "lora"
        mode), so nothing maps raw rows: "head" mode then never loads its backbone.
        """
        store = open_store(store, storage_options)
        store.require_trained()
        config, intent = store.config(), store.intent() or {}
        shape, classes = tuple(intent["input_shape"]), int(intent["num_classes"])
        configure(config.resources.threads, config.resources.device)  # before any CUDA work
        backbone = None if stored else _served_backbone(config, intent, previous)
        state = compliance.current(store) if state is None else state
        models = {}
        for shard, served in state.shards.items():
            if served.ref is None:
                continue  # rolled back past its first slice, or empty
            old = previous.served.get(shard) if previous is not None else None
            if old is not None and old.ref == served.ref and shard in previous.models:
                models[shard] = previous.models[shard]
                continue
            weights, _ = store.read_stage(served.ref, state=False)
            model = fresh_state(config, shard, shape, classes).model  # "lora": shared base
            load_trained(model, weights)
            models[shard] = model.eval()
        return cls(
            config=config,
            num_classes=classes,
            input_shape=shape if stored else served_input_shape(intent),
            models=models,
            served=state.shards,
            inference=inference,
            classes=store.classes_of(intent),
            backbone=backbone,
        )

    def check_features(self, X: object) -> np.ndarray:
        """Validate (and un-flatten) input features. [n, *f] or [n, prod(f)] -> [n, *f]."""
        return check_features(X, self.input_shape)

    def shard_proba(self, X: object, *, stored: bool = False) -> np.ndarray:
        """Per-shard probabilities. [n, *f] -> [S_live, n, C]. ``stored``: ``X`` are
        features as a store keeps them (after the backbone, in "head" mode)."""
        if stored or self.backbone is None:
            x = check_features(X, self.feature_shape)  # [n, *f] float32
        else:  # one backbone forward per row, shared by every head
            x = self.backbone.features(self.check_features(X))  # [n, F]
        if self.forward is None:
            raise NoModelError(
                "no shard model can predict now: every shard is empty or waits for a "
                "retrain that removes deleted points"
            )
        device = model_device(next(iter(self.models.values())))
        probs = self.forward(torch.from_numpy(x).to(device))  # [S_live, n, C]
        return check_scores(probs.cpu().numpy())

    def predict_proba(self, X: object, *, stored: bool = False) -> np.ndarray:
        """Aggregated scores. [n, *f] -> [n, C]."""
        return aggregate(self.shard_proba(X, stored=stored), self.config.sisa.aggregation)

    def predict(self, X: object) -> np.ndarray:
        """Predicted class per row. [n, *f] -> [n]."""
        return decide(self.predict_proba(X))

    @property
    def class_names(self) -> list[str | int]:
        """The name of each class, in class order: the recorded vocabulary, else 0..C-1."""
        return list(self.classes) if self.classes is not None else list(range(self.num_classes))

    def label_names(self, labels: np.ndarray) -> list[str | int]:
        """The original label value of each predicted class. [n] -> n values."""
        names = self.class_names
        return [names[int(i)] for i in labels]
