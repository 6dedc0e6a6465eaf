"""Standard scaling that keeps exactness: statistics per shard, from the slices a stage saw.

``data.scale = "standard"`` puts a ``Standardized`` layer in front of the model: it
subtracts a mean and divides by a scale, feature by feature. Where those come from
(``data.scale_from``) is the statistics rule of docs/design.md:

- ``stage`` (the default): at the start of stage k the layer is fitted on the shard's
  slices 1..k, the points stage k trains on. The statistics are buffers of the model, so
  they are stored with the stage's checkpoint, purged with it, and served with it (a
  rolled-back shard predicts with the statistics of the stage it rolled back to). A
  deletion in slice j rolls back to stage j-1, whose statistics never saw the point;
  stage j refits on what remains, as a training from scratch would.
- ``constants``: ``data.scale_mean`` and ``data.scale_std`` are given in the config and
  never fitted.

Statistics over the whole training set are refused by the config: they would carry every
point into every shard.

The fit is a float64 sum over the rows in their stored order, which a training from
scratch on the remaining points reproduces, then one cast to float32.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

MIN_STD = 1e-12  # a constant feature keeps scale 1 rather than dividing by zero


class Standardized(nn.Module):
    """``model((x - mean) / std)``, with ``mean`` and ``std`` buffers [*input_shape]."""

    def __init__(self, model: nn.Module, input_shape: Sequence[int], per_stage: bool) -> None:
        super().__init__()
        self.model, self.per_stage = model, per_stage
        self.register_buffer("mean", torch.zeros(tuple(input_shape)))
        self.register_buffer("std", torch.ones(tuple(input_shape)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, *in] -> [B, C]
        return self.model((x - self.mean) / self.std)

    def set(self, mean: np.ndarray, std: np.ndarray) -> None:
        """Load statistics [*input_shape] (float64 from ``fit``, or constants)."""
        std = np.where(std < MIN_STD, 1.0, std)
        self.mean.copy_(torch.from_numpy(np.asarray(mean, np.float64)).to(self.mean))
        self.std.copy_(torch.from_numpy(np.asarray(std, np.float64)).to(self.std))


def fit(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (population) standard deviation per feature of ``X`` [m, *f], in float64.
    No rows (a stage of an empty shard): mean 0, scale 1."""
    if len(X) == 0:
        return np.zeros(X.shape[1:]), np.ones(X.shape[1:])
    rows = X.astype(np.float64)  # [m, *f]
    mean = rows.sum(axis=0) / len(rows)
    var = ((rows - mean) ** 2).sum(axis=0) / len(rows)
    return mean, np.sqrt(var)


def standardizer(model: nn.Module) -> Standardized | None:
    """The ``Standardized`` layer of a model, wherever other wrappers put it."""
    return next((m for m in model.modules() if isinstance(m, Standardized)), None)


def constants(values: Sequence[float], input_shape: Sequence[int]) -> np.ndarray:
    """``data.scale_mean`` / ``scale_std`` as an array [*input_shape]: one value for every
    feature, or one per feature."""
    arr = np.asarray(values, dtype=np.float64)
    size = int(np.prod(input_shape))
    if arr.size == 1:
        return np.full(tuple(input_shape), float(arr[0]))
    if arr.size != size:
        raise ValueError(f"{arr.size} scaling constants for {size} features (data.scale_mean)")
    return arr.reshape(tuple(input_shape))
