"""Two small text classifiers over token IDs (``sisa.data.text``): an embedding bag and a
transformer encoder. Both leave the padding out and run deterministic kernels only.

Batches reach a model as float32, as every feature does (``sisa.training.trainer``); token
IDs are integers below 2^24, which float32 holds exactly, so ``x.long()`` gives them back.
"""

from __future__ import annotations

import torch
from torch import nn


def _tokens(x: torch.Tensor, vocab_size: int) -> torch.Tensor:
    tokens = x.long()  # [B, L]
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= vocab_size):
        raise ValueError(f"token IDs must lie in [0, {vocab_size}): is this the right tokenizer?")
    return tokens


class TextBag(nn.Module):
    """The mean embedding of a text's tokens, then a linear layer. [B, L] -> [B, C]."""

    def __init__(self, vocab_size: int, num_classes: int, dim: int = 64, pad_id: int = 0):
        super().__init__()
        self.vocab_size, self.pad_id = vocab_size, pad_id
        self.embed = nn.Embedding(vocab_size, dim)
        self.out = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = _tokens(x, self.vocab_size)  # [B, L]
        keep = (tokens != self.pad_id).unsqueeze(-1).to(torch.float32)  # [B, L, 1]
        summed = (self.embed(tokens) * keep).sum(dim=1)  # [B, D]
        return self.out(summed / keep.sum(dim=1).clamp(min=1.0))  # [B, C]


class TextEncoder(nn.Module):
    """A small transformer encoder: token and learned position embeddings, ``layers``
    encoder layers, the mean of the non-padding positions, a linear layer. [B, L] -> [B, C]."""

    def __init__(
        self,
        vocab_size: int,
        max_length: int,
        num_classes: int,
        dim: int = 64,
        heads: int = 4,
        layers: int = 2,
        dropout: float = 0.0,
        pad_id: int = 0,
    ):
        super().__init__()
        if dim % heads:
            raise ValueError(f"the width {dim} must be a multiple of the {heads} heads")
        self.vocab_size, self.pad_id = vocab_size, pad_id
        self.embed = nn.Embedding(vocab_size, dim)
        self.position = nn.Parameter(torch.zeros(max_length, dim))
        layer = nn.TransformerEncoderLayer(
            dim, heads, dim_feedforward=2 * dim, dropout=dropout, batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.out = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = _tokens(x, self.vocab_size)  # [B, L]
        pad = tokens == self.pad_id  # [B, L] True where padding
        pad[:, 0] = False  # an empty text still attends to one position
        h = self.encoder(self.embed(tokens) + self.position, src_key_padding_mask=pad)
        keep = (~pad).unsqueeze(-1).to(h.dtype)  # [B, L, 1]
        return self.out((h * keep).sum(dim=1) / keep.sum(dim=1))  # [B, C]
