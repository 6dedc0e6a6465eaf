"""Backbone factories for the tests (``model.backbone = "tests.sisa.backbones:..."``): tiny
models with random weights, real ones from ``transformers`` and the zoo, and bad ones that
the checks of ``sisa.training.backbone`` must refuse."""

from __future__ import annotations

import math

import torch
from torch import nn

from sisa.training.models import ResNet


class Tiny(nn.Module):
    """[B, *in] -> [B, 16]: flatten, linear, tanh."""

    def __init__(self, input_shape) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), 16), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def tiny(input_shape):
    return Tiny(input_shape)


SELF_LOADED = 11  # the seed of the weights ``self_loading`` builds itself


def self_loading(input_shape):
    """A factory that loads its own weights (here: a fixed seed), as hub loaders do."""
    gen = torch.Generator().manual_seed(SELF_LOADED)
    model = Tiny(input_shape)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return model


class ViTFeatures(nn.Module):
    """A ``transformers`` ViT on digits as 1x8x8 images: the [CLS] token's final state."""

    def __init__(self) -> None:
        super().__init__()
        from transformers import ViTConfig, ViTModel

        config = ViTConfig(
            image_size=8,
            patch_size=4,
            num_channels=1,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
        )
        self.vit = ViTModel(config, add_pooling_layer=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, 64] -> [B, 16]
        images = x.reshape(x.shape[0], 1, 8, 8)
        return self.vit(pixel_values=images).last_hidden_state[:, 0]


def vit(input_shape):
    return ViTFeatures()


class TextEncoder(nn.Module):
    """A tiny BERT-style encoder over token IDs: the masked mean of its final states."""

    def __init__(self, vocab_size: int = 64) -> None:
        super().__init__()
        from transformers import BertConfig, BertModel

        config = BertConfig(
            vocab_size=vocab_size,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=32,
        )
        self.bert = BertModel(config, add_pooling_layer=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, L] token IDs as floats
        ids = x.round().long().clamp(0, self.bert.config.vocab_size - 1)
        mask = (ids != 0).long()
        states = self.bert(input_ids=ids, attention_mask=mask).last_hidden_state  # [B, L, H]
        weights = mask.unsqueeze(-1).float()
        return (states * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def text_encoder(input_shape):
    return TextEncoder()


class ResNetFeatures(nn.Module):
    """The zoo's ResNet without its head: the mean of the last feature map."""

    def __init__(self, input_shape) -> None:
        super().__init__()
        self.net = ResNet(input_shape, 2, (8, 16), 0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], *self.net.shape)
        return self.net.blocks(self.net.stem(x)).mean(dim=(2, 3))  # [B, 16]


def resnet(input_shape):
    return ResNetFeatures(input_shape)


class Stack(nn.Sequential):
    """An ``nn.Sequential`` subclass with a constructor of its own (which slicing it could
    not call), [B, *in] -> [B, 16]: adapters on ``block`` leave ``flatten``, ``embed`` and
    ``act`` a frozen prefix, whose outputs the store keeps."""

    def __init__(self, input_shape) -> None:
        from collections import OrderedDict

        super().__init__(
            OrderedDict(
                flatten=nn.Flatten(),
                embed=nn.Linear(math.prod(input_shape), 16),
                act=nn.Tanh(),
                block=nn.Linear(16, 16),
                out=nn.Tanh(),
            )
        )


def stack(input_shape):
    return Stack(input_shape)


class DropoutBackbone(Tiny):
    """A backbone with a dropout layer of its own and BatchNorm: frozen, neither may act."""

    def __init__(self, input_shape) -> None:
        super().__init__(input_shape)
        self.norm = nn.BatchNorm1d(16)
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        return self.drop(self.norm(super().forward(x)))


def dropout_backbone(input_shape):
    return DropoutBackbone(input_shape)


# -- backbones the checks refuse --------------------------------------------------------


class Maps(Tiny):
    def forward(self, x):  # [B, 4, 4]: not a feature vector
        return super().forward(x).reshape(-1, 4, 4)


class Noisy(Tiny):
    def forward(self, x):
        return super().forward(x) + torch.rand(x.shape[0], 16) * 1e-3


class Mixing(Tiny):
    def forward(self, x):  # centres each batch: a row's features depend on the others
        out = super().forward(x)
        return out - out.mean(dim=0, keepdim=True)


class Counting(Tiny):
    def __init__(self, input_shape) -> None:
        super().__init__(input_shape)
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, x):  # changes its own state: not frozen
        self.calls += 1
        return super().forward(x)


def maps(input_shape):
    return Maps(input_shape)


def noisy(input_shape):
    return Noisy(input_shape)


def mixing(input_shape):
    return Mixing(input_shape)


def counting(input_shape):
    return Counting(input_shape)


def not_a_module(input_shape):
    return "nope"


def raising(input_shape):
    raise RuntimeError("no weights for this size")


def wrong_width(input_shape):
    return nn.Linear(3, 4)  # takes 3 features, not the 64 it is given


class Normalised(Tiny):
    """Subtracts a constant held in a buffer that ``state_dict`` leaves out."""

    def __init__(self, input_shape, offset: float = 0.0) -> None:
        super().__init__(input_shape)
        self.register_buffer("offset", torch.full((), offset), persistent=False)

    def forward(self, x):
        return super().forward(x - self.offset)


def normalised(input_shape):
    return Normalised(input_shape)


SEEN: list[bool] = []  # torch's deterministic flag, as each forward of ``watching`` saw it


class Watching(Tiny):
    def forward(self, x):
        SEEN.append(torch.are_deterministic_algorithms_enabled())
        return super().forward(x)


def watching(input_shape):
    return Watching(input_shape)


class ViTBase(nn.Module):
    """A ViT-B/16 (``transformers`` ViTConfig defaults: 12 layers of width 768 on 224x224
    images) with random weights: the [CLS] token's final state, [B, 3, 224, 224] -> [B, 768]."""

    def __init__(self) -> None:
        super().__init__()
        from transformers import ViTConfig, ViTModel

        self.vit = ViTModel(ViTConfig(), add_pooling_layer=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vit(pixel_values=x).last_hidden_state[:, 0]


def vit_base(input_shape):
    return ViTBase()
