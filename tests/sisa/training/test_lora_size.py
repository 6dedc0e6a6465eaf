"""Checkpoints stay small: a stage of LoRA rank 8 on ``q_proj``/``v_proj`` of a ViT-B-sized
backbone with AdamW, as the store writes it, against the backbone's own bytes."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sisa.training.lora import shared_base
from sisa.training.trainer import checkpoint_payload, fresh_state
from storage.checkpoint import encode_state, encode_weights
from tests.conftest import tiny_config

IMAGE = (3, 224, 224)


def test_a_lora_stage_is_under_1_percent_of_the_backbone_and_3_with_its_optimizer(
    monkeypatch,
):
    monkeypatch.setenv("SISA_TRUSTED_FACTORIES", "tests.sisa.backbones:*")
    config = tiny_config(
        **{
            "model.finetune": "lora",
            "model.backbone": "tests.sisa.backbones:vit_base",
            "model.backbone_input": list(IMAGE),
            "model.lora_targets": ["q_proj", "v_proj"],
            "model.lora_rank": 8,
            "model.hidden": [],
            "model.feature_batch": 1,
            "optim.name": "adamw",
            "optim.lr": 1e-3,
        }
    )
    state = fresh_state(config, 0, IMAGE, 10)
    x = torch.randn(2, *IMAGE, generator=torch.Generator().manual_seed(0))  # [2, 3, 224, 224]
    loss = F.cross_entropy(state.model.train()(x), torch.tensor([1, 7]))
    loss.backward()
    state.optimizer.step()  # AdamW's moments now exist for every tensor that learns
    weights, extra = checkpoint_payload(state)
    base = shared_base(config).body  # the backbone as loaded, without adapters
    base_bytes = sum(t.numel() * t.element_size() for t in base.state_dict().values())
    weights_bytes = len(encode_weights(weights))
    state_bytes = len(encode_state(extra))
    assert base_bytes > 300e6  # ViT-B: about 86 M float32 parameters
    print(f"\nweights {weights_bytes} B, state {state_bytes} B, backbone {base_bytes} B")
    total = weights_bytes + state_bytes
    print(f"weights {weights_bytes / base_bytes:.2%}, with state {total / base_bytes:.2%}")
    assert weights_bytes <= 0.01 * base_bytes
    assert weights_bytes + state_bytes <= 0.03 * base_bytes
