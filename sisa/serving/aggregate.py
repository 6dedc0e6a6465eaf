"""Aggregating shard predictions: probability averaging or majority vote.

Both are deterministic: ``argmax`` returns the lowest class among ties, so a tied vote
always goes to the smallest class index, whatever order the shards arrive in.
"""

from __future__ import annotations

import numpy as np

METHODS = ("average", "vote")


def aggregate(probs: np.ndarray, method: str) -> np.ndarray:
    """Combine per-shard probabilities. [S, n, C] -> [n, C] (vote: share of votes)."""
    if probs.ndim != 3 or probs.shape[0] == 0:
        raise ValueError(f"expected [shards, n, classes] with a shard or more, got {probs.shape}")
    if method == "average":
        return probs.mean(axis=0, dtype=np.float64).astype(np.float32)
    if method == "vote":
        shards, n, classes = probs.shape
        labels = probs.argmax(axis=2)  # [S, n]
        votes = np.zeros((n, classes), dtype=np.float32)
        np.add.at(votes, (np.broadcast_to(np.arange(n), (shards, n)), labels), 1.0)
        return votes / shards
    raise ValueError(f"sisa.aggregation: unknown method {method!r}; use one of {METHODS}")


def decide(scores: np.ndarray) -> np.ndarray:
    """Predicted class per row, ties to the lowest class. [n, C] -> [n] int64."""
    return scores.argmax(axis=1).astype(np.int64)


def accuracy(pred: np.ndarray, y: np.ndarray) -> float:
    return float((pred == y).mean()) if len(y) else float("nan")
