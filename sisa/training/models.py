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

from sisa.config import TEXT_MODELS, ModelConfig
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
        f"model.name = 'cnn' or 'resnet' needs image features (C,H,W), (H,W) or a square vector; "
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


class ResidualBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus a shortcut (1x1 conv-BN when the shape changes), ReLU.

    BatchNorm's running statistics are buffers: ``state_dict`` checkpoints them with the
    weights, and they update only in train mode, so evaluation never moves them.
    """

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, c_in, H, W] -> [B, c_out, H', W']
        return torch.relu(self.body(x) + self.shortcut(x))


class ResNet(nn.Module):
    """A small ResNet for images ([C,32,32], digits' 8x8): a 3x3 stem, one residual block per
    width (each after the first halves the map), a mean over the final map, a linear head.

    The final mean is a plain reduction over a map whose size is fixed by the input shape,
    not adaptive pooling, whose CUDA backward has no deterministic kernel.
    """

    def __init__(
        self, input_shape: Sequence[int], num_classes: int, channels: Sequence[int], dropout: float
    ) -> None:
        super().__init__()
        self.shape = image_shape(input_shape)
        c, h, w = self.shape
        for _ in channels[1:]:
            h, w = (h + 1) // 2, (w + 1) // 2  # a stride-2 3x3 conv with padding 1
        if h * w < 2:
            # BatchNorm in training needs more than one value per channel: a 1x1 map with
            # a last batch of one point would fail mid-training
            raise ValueError(
                f"model.hidden: {len(channels)} widths halve a {self.shape[1]}x{self.shape[2]} "
                f"image {len(channels) - 1} times, to {h}x{w}; use fewer widths"
            )
        self.stem = nn.Sequential(
            nn.Conv2d(c, channels[0], 3, padding=1, bias=False),
            nn.BatchNorm2d(channels[0]),
            nn.ReLU(),
        )
        blocks, c_in = [], channels[0]
        for i, c_out in enumerate(channels):
            blocks.append(ResidualBlock(c_in, c_out, stride=1 if i == 0 else 2))
            c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, *in] -> [B, C]
        x = x.reshape(x.shape[0], *self.shape)  # [B, C_in, H, W]
        x = self.blocks(self.stem(x)).mean(dim=(2, 3))  # [B, C_last]
        return self.head(self.dropout(x))


class Rescaled(nn.Module):
    """A model whose input is multiplied by a given constant first (``data.input_scale``:
    an image folder's uint8 pixels to [0, 1]). Inside the model, training and every way of
    predicting scale alike."""

    def __init__(self, model: nn.Module, scale: float) -> None:
        super().__init__()
        self.model, self.scale = model, float(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, *in] -> [B, C]
        return self.model(x * self.scale)


def text_model(cfg: ModelConfig, input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """``textbag`` or ``transformer`` over [max_length] token IDs; the vocabulary size and
    padding ID are recorded in the config by training (``sisa.training.train``)."""
    from sisa.training.text_models import TextBag, TextEncoder

    if cfg.vocab_size is None or cfg.pad_id is None or len(input_shape) != 1:
        raise ValueError(
            f"model.name: {cfg.name!r} needs token IDs (data.text_column) and the tokenizer's "
            "vocab_size and pad_id, which training records"
        )
    if cfg.name == "textbag":
        return TextBag(cfg.vocab_size, num_classes, dim=cfg.hidden[0], pad_id=cfg.pad_id)
    if len(set(cfg.hidden)) != 1:
        raise ValueError("model.hidden: a transformer's layers share one width, e.g. [64, 64]")
    return TextEncoder(
        cfg.vocab_size,
        input_shape[0],
        num_classes,
        dim=cfg.hidden[0],
        heads=cfg.heads,
        layers=len(cfg.hidden),
        dropout=cfg.dropout,
        pad_id=cfg.pad_id,
    )


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
    if cfg.name == "resnet":
        return ResNet(input_shape, num_classes, cfg.hidden, cfg.dropout)
    if cfg.name in TEXT_MODELS:
        return text_model(cfg, input_shape, num_classes)
    factory = load_factory(cfg, trusted)  # trusted, or ValueError (sisa.training.factories)
    model = factory(tuple(input_shape), num_classes)
    if not isinstance(model, nn.Module):
        raise ValueError(f"model.name: {cfg.name!r} returned {type(model).__name__}, not a Module")
    return model
