"""A small model zoo, plus user factories named ``"package.module:factory"``.

Every model maps a batch of features [B, *input_shape] to logits [B, num_classes].
Models avoid layers without deterministic kernels (adaptive pooling, scatter-add), so
``torch.use_deterministic_algorithms(True)`` holds on CPU and CUDA alike.

A factory is code: it is imported only when trusted, by the rule of ``sisa.training.factories``.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence

import torch
from torch import nn

from sisa.config import ModelConfig
from sisa.training.factories import load_factory


class MLP(nn.Module):
    """Flatten, then Linear-ReLU-Dropout per hidden width, then a linear head."""

    def __init__(
        self, input_shape: Sequence[int], num_classes: int, hidden: Sequence[int], dropout: float
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(input_shape)
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(dropout)]
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, *in] -> [B, C]
        return self.net(x)


def image_shape(input_shape: Sequence[int]) -> tuple[int, int, int]:
    """(C, H, W) for a CNN: square flat vectors (digits' 64) become 1 x 8 x 8."""
    shape = tuple(input_shape)
    if len(shape) == 3:
        return shape  # type: ignore[return-value]
    if len(shape) == 2:
        return (1, *shape)
    side = math.isqrt(shape[0]) if len(shape) == 1 else 0
    if len(shape) == 1 and side * side == shape[0]:
        return (1, side, side)
    raise ValueError(
        f"model.name = 'cnn' needs image features (C,H,W), (H,W) or a square vector; "
        f"got feature shape {shape}"
    )


class SmallCNN(nn.Module):
    """Strided 3x3 convolutions (no pooling kernels), global mean, linear head."""

    def __init__(
        self, input_shape: Sequence[int], num_classes: int, channels: Sequence[int], dropout: float
    ) -> None:
        super().__init__()
        self.shape = image_shape(input_shape)
        layers: list[nn.Module] = []
        c_in = self.shape[0]
        for i, c_out in enumerate(channels):
            stride = 1 if i == 0 else 2
            layers += [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1), nn.ReLU()]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, *in] -> [B, C]
        x = x.reshape(x.shape[0], *self.shape)  # [B, C_in, H, W]
        x = self.features(x).mean(dim=(2, 3))  # [B, C_last]
        return self.head(self.dropout(x))


def build_model(
    cfg: ModelConfig,
    input_shape: Sequence[int],
    num_classes: int,
    trusted: Collection[str] = (),
) -> nn.Module:
    """Instantiate the configured model. Call under a seeded RNG: init draws from it."""
    if cfg.name == "mlp":
        return MLP(input_shape, num_classes, cfg.hidden, cfg.dropout)
    if cfg.name == "cnn":
        return SmallCNN(input_shape, num_classes, cfg.hidden, cfg.dropout)
    factory = load_factory(cfg, trusted)  # trusted, or ValueError (sisa.training.factories)
    model = factory(tuple(input_shape), num_classes)
    if not isinstance(model, nn.Module):
        raise ValueError(f"model.name: {cfg.name!r} returned {type(model).__name__}, not a Module")
    return model
