"""The backbones benchmark's data and models, in plain torch: the keyed public split, the
backbone pretrained on it, and the monolithic full fine-tune that a deletion would retrain.

* ``split_public``: synthetic Purchase generated once; a keyed hash of each ID
  (``PUBLIC_KEY``) puts a fixed share of the points in a public part that is never given
  to SISA and never subject to deletion. The rest, the private part, is written as an
  ``.npz`` with its original IDs: the stores' source.
* ``pretrain``: an MLP (``MLPBackbone`` plus a linear layer to the classes) trained on the
  public part alone; its hidden layers are the backbone, saved as safetensors. No public
  pretrained weights can be downloaded here, so this stands in for them.
* ``fine_tune``: the monolithic full fine-tune, the backbone's pretrained weights and a
  fresh linear head trained end to end on raw private points, with the optimizer, batch
  size and epochs of the heads. A deletion in a full fine-tune retrains this whole model.
* ``backbone_quick`` and ``backbone_full``: the factories the stores name
  (``model.backbone``), called as ``factory(input_shape)``; ``lora_target`` names the
  layer "lora" mode adapts.
* ``vit_b_32px`` and ``random_images``: a ViT-B-sized backbone with random weights and a
  source of random images, for timing serving only (no accuracy is read from them).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

PUBLIC_KEY = b"sisa-benchmark-public-split-v1"  # the keyed split: public or private per ID
WIDTHS: dict[str, tuple[int, ...]] = {"quick": (64, 32), "full": (2048, 1536, 256)}


class MLPBackbone(nn.Sequential):
    """[B, *in] -> [B, widths[-1]]: flatten, then Linear-ReLU per width.

    An ``nn.Sequential``, so that "lora" mode can cache the children before its target (the
    last Linear, ``lora_target``) as a frozen prefix."""

    def __init__(self, input_shape: Sequence[int], widths: Sequence[int]) -> None:
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(input_shape)
        for w in widths:
            layers += [nn.Linear(width, w), nn.ReLU()]
            width = w
        super().__init__(*layers)


def lora_target(widths: Sequence[int]) -> str:
    """The name of ``MLPBackbone``'s last Linear: Flatten is child 0, then Linear-ReLU pairs."""
    return str(2 * len(widths) - 1)


class ViTB32(nn.Module):
    """A ViT-B-sized encoder (``transformers`` ViTConfig defaults: 12 layers of width 768,
    patches of 16) on 32x32 images, with random weights: the [CLS] token's final state,
    [B, 3, 32, 32] -> [B, 768]. It times serving on a backbone whose cost against its heads
    is a real one's; small images keep the forward affordable on a CPU."""

    def __init__(self) -> None:
        super().__init__()
        from transformers import ViTConfig, ViTModel

        self.vit = ViTModel(ViTConfig(image_size=32), add_pooling_layer=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vit(pixel_values=x).last_hidden_state[:, 0]


def vit_b_32px(input_shape: Sequence[int]) -> nn.Module:
    return ViTB32()


def backbone_quick(input_shape: Sequence[int]) -> nn.Module:
    return MLPBackbone(input_shape, WIDTHS["quick"])


def backbone_full(input_shape: Sequence[int]) -> nn.Module:
    return MLPBackbone(input_shape, WIDTHS["full"])


FACTORIES = {"quick": "benchmarks.backbones_model:backbone_quick",
             "full": "benchmarks.backbones_model:backbone_full"}  # fmt: skip
VIT_FACTORY = "benchmarks.backbones_model:vit_b_32px"


def public_mask(ids: np.ndarray, fraction: float) -> np.ndarray:
    """[n] bool: the points whose keyed hash puts them in the public part."""
    threshold = int(fraction * 2**64)
    digest = (
        hashlib.blake2b(int(i).to_bytes(8, "little"), key=PUBLIC_KEY, digest_size=8).digest()
        for i in ids
    )
    return np.fromiter((int.from_bytes(d, "little") < threshold for d in digest), bool, len(ids))


def split_public(n: int, public_fraction: float, seed: int, folder: Path) -> dict[str, Any]:
    """Synthetic Purchase of ``n`` points split by ``public_mask``: the public arrays (for
    pretraining) and the path of the private ``.npz`` (the stores' source)."""
    from sisa.data.loaders import load_source

    ds = load_source("synthetic-purchase", n, seed)
    public = public_mask(ds.ids, public_fraction)
    private = folder / "private.npz"
    np.savez(private, ids=ds.ids[~public], X=ds.X[~public], y=ds.y[~public])
    return {
        "X": ds.X[public],
        "y": ds.y[public],
        "ids": ds.ids[public],
        "private": private,
        "private_ids": ds.ids[~public],
        "num_classes": int(ds.y.max()) + 1,
    }


def _train(
    model: nn.Module,
    X: np.ndarray,
    y: np.ndarray,
    *,
    epochs: float,
    batch_size: int,
    lr: float,
    seed: int,
) -> float:
    """Adam on shuffled batches of (X, y) for ``epochs`` (whole epochs); the seconds taken."""
    started = time.perf_counter()
    x_all = torch.from_numpy(np.asarray(X, dtype=np.float32))
    y_all = torch.from_numpy(np.asarray(y, dtype=np.int64))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(max(1, round(epochs))):
        order = torch.randperm(len(y_all), generator=gen)
        for lo in range(0, len(order), batch_size):
            rows = order[lo : lo + batch_size]
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x_all[rows]), y_all[rows]).backward()
            optimizer.step()
    model.eval()
    return time.perf_counter() - started


def accuracy(model: nn.Module, X: np.ndarray, y: np.ndarray) -> float:
    with torch.inference_mode():
        logits = model(torch.from_numpy(np.asarray(X, dtype=np.float32)))
    return float((logits.argmax(dim=1).numpy() == y).mean())


def pretrain(
    public: dict[str, Any], widths: Sequence[int], path: Path, **train: Any
) -> dict[str, Any]:
    """The backbone: ``MLPBackbone`` with a linear layer to the classes trained on the public
    part alone (``_train``'s settings), its hidden layers saved as safetensors at ``path``."""
    from safetensors.torch import save_file

    torch.manual_seed(train["seed"])
    backbone = MLPBackbone(public["X"].shape[1:], widths)
    model = nn.Sequential(backbone, nn.Linear(widths[-1], public["num_classes"]))
    seconds = _train(model, public["X"], public["y"], **train)
    save_file(backbone.state_dict(), str(path))
    params = sum(p.numel() for p in backbone.parameters())
    return {
        "path": str(path),
        "points": len(public["y"]),
        "params": params,
        "bytes": path.stat().st_size,
        "tensor_bytes": sum(t.numel() * t.element_size() for t in backbone.state_dict().values()),
        "train_s": seconds,
        "features": widths[-1],
        "public_train_accuracy": accuracy(model, public["X"], public["y"]),
    }


def fine_tune(
    weights: str,
    widths: Sequence[int],
    num_classes: int,
    X: np.ndarray,
    y: np.ndarray,
    **train: Any,
) -> tuple[nn.Module, float]:
    """The monolithic full fine-tune: the pretrained backbone and a fresh linear head trained
    end to end on (X, y); the model and the seconds training took (its retrain)."""
    from safetensors.torch import load_file

    torch.manual_seed(train["seed"])
    backbone = MLPBackbone(X.shape[1:], widths)
    backbone.load_state_dict(load_file(weights))
    model = nn.Sequential(backbone, nn.Linear(widths[-1], num_classes))
    return model, _train(model, X, y, **train)


def random_images(folder: Path, n: int, num_classes: int, seed: int) -> Path:
    """An ``.npz`` source of ``n`` uniform random 3x32x32 images with random labels: what
    ``vit_b_32px`` takes, for timing only."""
    rng = np.random.default_rng(seed)
    path = folder / "images.npz"
    X = rng.random((n, 3, 32, 32), dtype=np.float32)  # [n, 3, 32, 32]
    np.savez(path, ids=np.arange(n), X=X, y=rng.integers(0, num_classes, n))
    return path
