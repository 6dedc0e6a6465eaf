"""Real backbones through the real loading code: a ``transformers`` ViT, a tiny BERT-style
text encoder and the zoo's ResNet, built with random weights, saved as safetensors and
loaded back by ``model.backbone_weights``; a ViT's heads forget exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from sisa.deletion.accept import forget
from sisa.training.backbone import load_backbone, state_sha256
from sisa.training.train import train
from tests.conftest import tiny_config, write_digits_npz
from tests.sisa import backbones
from tests.sisa.deletion.test_accept import assert_equals_scratch, layout

TRUST = "tests.sisa.backbones:*"
MODELS = {  # factory -> (input shape, a batch of inputs, features per row)
    "vit": ((64,), lambda rng: rng.random((5, 64)), 16),
    "text_encoder": ((12,), lambda rng: rng.integers(0, 64, (5, 12)), 16),
    "resnet": ((1, 8, 8), lambda rng: rng.random((5, 1, 8, 8)), 16),
}


def saved(tmp_path, factory: str, shape) -> tuple[str, str]:
    torch.manual_seed(3)
    module = getattr(backbones, factory)(shape).eval()
    path = tmp_path / f"{factory}.safetensors"
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(path))
    return str(path), state_sha256(module)


@pytest.mark.parametrize("factory", sorted(MODELS))
def test_a_real_backbone_loads_from_safetensors_and_gives_features(tmp_path, factory):
    shape, batch, width = MODELS[factory]
    path, expected = saved(tmp_path, factory, shape)
    settings = {
        "model.finetune": "head",
        "model.backbone": f"tests.sisa.backbones:{factory}",
        "model.backbone_weights": path,
        "model.hidden": [],
        "model.feature_batch": 4,
    }
    bb = load_backbone(tiny_config(**settings).model, shape, [TRUST])  # the probe checks pass
    assert bb.sha256 == expected and bb.num_features == width
    X = batch(np.random.default_rng(0)).astype(np.float32)
    features = bb.features(X)
    assert features.shape == (5, width) and np.isfinite(features).all()
    one_by_one = np.concatenate([bb.features(X[i : i + 1]) for i in range(5)])
    assert np.array_equal(features, one_by_one)


def test_forgetting_with_heads_on_a_vit_equals_scratch(tmp_path):
    path, _ = saved(tmp_path, "vit", (64,))
    settings = {
        "model.finetune": "head",
        "model.backbone": "tests.sisa.backbones:vit",
        "model.backbone_weights": path,
        "model.hidden": [8],
    }

    def make(name="store", drop=frozenset(), groups=False, **overrides):
        source = write_digits_npz(tmp_path / f"{name}.npz", drop=set(drop), groups=groups)
        url = str(tmp_path / name)
        train(tiny_config(**{"data.source": str(source)} | settings | overrides), url)
        return url

    url = make()
    ids, shards, slices = layout(url)
    gone = [int(ids[(shards == 1) & (slices == 0)][0]), int(ids[(shards == 0) & (slices == 2)][0])]
    forget(url, gone)
    assert_equals_scratch(make, url, gone)
