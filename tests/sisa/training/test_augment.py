"""Augmentation draws per point: a point is augmented the same way whatever shares its batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sisa.ids import fingerprints
from sisa.training.augment import augment, draws

IDS = np.arange(40, dtype=np.int64)
CONTEXT = {"seed": 3, "shard": 1, "stage": 2, "epoch": 0}


def images(n: int = 40) -> torch.Tensor:
    return torch.arange(n * 2 * 6 * 6, dtype=torch.float32).reshape(n, 2, 6, 6)


def test_a_point_is_augmented_alike_in_any_batch():
    x, fps = images(), fingerprints(IDS)
    whole = augment(x, fps, ops=("crop", "flip"), padding=2, **CONTEXT)
    order = np.random.default_rng(0).permutation(40)[:17]  # another batch, another order
    part = augment(x[order], fps[order], ops=("crop", "flip"), padding=2, **CONTEXT)
    assert torch.equal(part, whole[order])


def test_draws_change_with_every_part_of_the_context():
    fps = fingerprints(IDS)
    base = np.stack(draws(fps, 3, 1, 2, 0, 2))
    for change in ({"seed": 4}, {"shard": 2}, {"stage": 3}, {"epoch": 1}):
        args = CONTEXT | change
        other = np.stack(draws(fps, args["seed"], args["shard"], args["stage"], args["epoch"], 2))
        assert not np.array_equal(base, other), change


def test_offsets_stay_in_the_padding_and_about_half_flip():
    dy, dx, flip = draws(fingerprints(np.arange(4000)), 0, 0, 1, 0, 4)
    assert dy.min() == dx.min() == 0 and dy.max() == dx.max() == 8
    assert 0.45 < flip.mean() < 0.55


def test_crop_keeps_the_shape_and_moves_pixels_by_the_drawn_offset():
    x, fps = images(), fingerprints(IDS)
    out = augment(x, fps, ops=("crop",), padding=2, **CONTEXT)
    assert out.shape == x.shape
    dy, dx, _ = draws(fps, 3, 1, 2, 0, 2)
    i = int(np.flatnonzero((dy == 2) & (dx == 2))[0])  # the centred window is the image
    assert torch.equal(out[i], x[i])
    j = int(np.flatnonzero((dy == 0) & (dx == 0))[0])  # shifted down-right by two: zeros
    assert torch.equal(out[j, :, 2:, 2:], x[j, :, :4, :4]) and out[j, :, :2].abs().sum() == 0


def test_flip_mirrors_only_the_drawn_points_and_nothing_by_default():
    x, fps = images(), fingerprints(IDS)
    _, _, flip = draws(fps, 3, 1, 2, 0, 0)
    out = augment(x, fps, ops=("flip",), **CONTEXT)
    assert torch.equal(out[flip], torch.flip(x[flip], dims=(-1,)))
    assert torch.equal(out[~flip], x[~flip])
    assert augment(x, fps, ops=(), **CONTEXT) is x
    assert torch.equal(x, images())  # the input is never modified


def test_bad_requests_are_refused():
    x, fps = images(), fingerprints(IDS)
    with pytest.raises(ValueError, match="unknown augmentation"):
        augment(x, fps, ops=("rotate",), **CONTEXT)
    with pytest.raises(ValueError, match=r"needs images \[B, C, H, W\]"):
        augment(x.reshape(40, -1), fps, ops=("flip",), **CONTEXT)
