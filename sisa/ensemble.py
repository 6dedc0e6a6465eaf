"""The served ensemble: every shard's final model, aggregated.

A shard with no points (all forgotten, or empty by chance) is left out of the aggregate:
an untrained model would only add noise. While deletion requests are open, shards they
touch are served from an earlier checkpoint, or left out (``sisa.serving``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from torch import nn

from sisa import serving
from sisa.aggregate import aggregate, decide
from sisa.config import Config
from sisa.serving import ServedShard
from sisa.store import SisaStore
from sisa.trainer import configure, fresh_state, predict_proba


@dataclass
class Ensemble:
    config: Config
    num_classes: int
    input_shape: tuple[int, ...]
    models: dict[int, nn.Module]  # shard -> model in eval mode

    served: dict[int, ServedShard] = field(default_factory=dict)  # shard -> checkpoint used

    @classmethod
    def load(cls, store: SisaStore, previous: Ensemble | None = None) -> Ensemble:
        """Load the checkpoint the serving state names for each shard, verifying checksums.

        Open deletion requests roll their shards back (``sisa.serving``), so the ensemble
        never depends on a point whose deletion was accepted. Models whose checkpoint did
        not change are taken from ``previous`` instead of being read again.
        """
        store.require_trained()
        config, intent = store.config(), store.intent() or {}
        shape, classes = tuple(intent["input_shape"]), int(intent["num_classes"])
        configure(config.resources.threads)
        state = serving.current(store)
        models = {}
        for shard, served in state.shards.items():
            if served.ref is None:
                continue  # rolled back past its first slice, or empty
            old = previous.served.get(shard) if previous is not None else None
            if old is not None and old.ref == served.ref and shard in previous.models:
                models[shard] = previous.models[shard]
                continue
            weights, _ = store.read_stage(served.ref, state=False)
            model = fresh_state(config, shard, shape, classes).model
            model.load_state_dict(weights)
            models[shard] = model.eval()
        return cls(config, classes, shape, models, state.shards)

    def check_features(self, X: np.ndarray) -> np.ndarray:
        """Validate (and un-flatten) input features. [n, *f] or [n, prod(f)] -> [n, *f]."""
        X = np.asarray(X)
        if X.ndim < 2:
            raise ValueError(f"input must be [n, features], got shape {X.shape}")
        if X.shape[1:] != self.input_shape:
            if X.ndim != 2 or X.shape[1] != int(np.prod(self.input_shape)):
                raise ValueError(
                    f"input has feature shape {X.shape[1:]}, the models expect {self.input_shape}"
                )
            X = X.reshape(len(X), *self.input_shape)
        if not np.issubdtype(X.dtype, np.number) or not np.isfinite(X).all():
            raise ValueError("input features must be finite numbers")
        return X

    def shard_proba(self, X: np.ndarray) -> np.ndarray:
        """Per-shard probabilities. [n, *f] -> [S_live, n, C]."""
        X = self.check_features(X)
        if not self.models:
            raise RuntimeError("no shard has any training points left; nothing can predict")
        return np.stack([predict_proba(m, X) for m in self.models.values()])

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Aggregated scores. [n, *f] -> [n, C]."""
        return aggregate(self.shard_proba(X), self.config.sisa.aggregation)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predicted class per row. [n, *f] -> [n]."""
        return decide(self.predict_proba(X))
