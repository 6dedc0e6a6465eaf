"""Data augmentation drawn per point, so that a retrain reproduces it bitwise.

A point's draw (its crop offset, whether it is flipped) is a keyed hash of ``(seed, shard,
stage, epoch)`` and the point's own ID fingerprint. It depends on no other point, on no
batch and on no step count, so a retrain reproduces it bitwise, as a training from scratch
without the deleted points does. It is also stable: deleting one point changes no other
point's augmentation, where draws from a generator seeded per step would move with each
point's position in its batch.

The operations are chosen by ``data.augment``; none is applied unless chosen:

- ``crop``: pad by ``padding`` pixels of zeros on every side, then cut a window of the
  original size at an offset drawn in ``[0, 2·padding]`` on each axis;
- ``flip``: mirror left to right, for half of the points.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from sisa.ids import keyed

AUGMENTS = ("crop", "flip")


def draws(
    fps: np.ndarray, seed: int, shard: int, stage: int, epoch: int, padding: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each point's (row offset, column offset, flip) for one epoch of one stage.

    ``fps`` [B] uint64 ID fingerprints -> three [B] arrays: offsets in ``[0, 2·padding]``
    and a bool flip. Bits of one keyed hash per point: 21 for each offset, one for flip.
    """
    h = keyed(fps, seed, "augment", shard, stage, epoch)  # [B] uint64
    span = np.uint64(2 * padding + 1)
    dy = ((h & np.uint64((1 << 21) - 1)) % span).astype(np.int64)
    dx = (((h >> np.uint64(21)) & np.uint64((1 << 21) - 1)) % span).astype(np.int64)
    flip = ((h >> np.uint64(63)) & np.uint64(1)).astype(bool)
    return dy, dx, flip


def augment(
    x: torch.Tensor,
    fps: np.ndarray,
    *,
    ops: Sequence[str],
    seed: int,
    shard: int,
    stage: int,
    epoch: int,
    padding: int = 4,
) -> torch.Tensor:
    """The batch ``x`` [B, C, H, W] augmented per point; ``fps`` [B] are the points' ID
    fingerprints. Returns a new tensor; ``x`` is not modified."""
    unknown = sorted(set(ops) - set(AUGMENTS))
    if unknown:
        raise ValueError(f"unknown augmentation {unknown}; choose from {list(AUGMENTS)}")
    if x.dim() != 4:
        raise ValueError(f"augmentation needs images [B, C, H, W], got shape {tuple(x.shape)}")
    if not ops:
        return x
    dy, dx, flip = draws(fps, seed, shard, stage, epoch, padding)
    out = x
    if "crop" in ops and padding > 0:
        height, width = x.shape[-2:]
        padded = F.pad(x, (padding, padding, padding, padding))  # [B, C, H+2p, W+2p]
        out = torch.stack(
            [padded[i, :, dy[i] : dy[i] + height, dx[i] : dx[i] + width] for i in range(x.shape[0])]
        )  # [B, C, H, W]
    if "flip" in ops and flip.any():
        out = out.clone() if out is x else out
        rows = torch.from_numpy(np.flatnonzero(flip)).to(out.device)
        out[rows] = torch.flip(out[rows], dims=(-1,))
    return out
