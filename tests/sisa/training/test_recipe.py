"""The training recipe stays exact: every option (AdamW, warmup with cosine or step decay,
clipping, label smoothing, the ResNet, per-stage metrics) trains a store that, after
deleting a point of the first slice and one of the last, equals a store trained from
scratch without them, bit for bit; and the metrics never move the weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from orchestrator.cli.printers import print_status
from sisa.config import ModelConfig
from sisa.deletion.accept import forget
from sisa.evidence.status import status
from sisa.store.artifacts import SisaStore
from sisa.store.records import StageRef
from sisa.training.models import ResNet, build_model
from sisa.training.train import train
from tests.conftest import tiny_config, write_digits_npz
from tests.sisa.deletion.test_accept import assert_equals_scratch, layout, weights_by_shard

RECIPES = {
    "adamw": {"optim.name": "adamw", "optim.lr": 0.01, "optim.weight_decay": 0.05},
    "cosine-warmup": {
        "optim.schedule": "cosine",
        "optim.warmup_stages": 0.5,
        "optim.min_lr_ratio": 0.1,
    },
    "step": {"optim.schedule": "step", "optim.step_gamma": 0.5, "optim.step_stages": 1},
    "clip": {"optim.clip_norm": 0.5},
    "label-smoothing": {"optim.label_smoothing": 0.1},
    "resnet": {"model.name": "resnet", "model.hidden": [4, 8]},
    "metrics": {"optim.stage_accuracy": "train"},
}


@pytest.fixture(scope="module")
def default_weights(tmp_path_factory):
    """Weight hashes per shard of the same tiny store without any recipe option."""
    folder = tmp_path_factory.mktemp("default")
    source = write_digits_npz(folder / "digits.npz")
    url = str(folder / "store")
    train(tiny_config(**{"data.source": str(source)}), url)
    return weights_by_shard(url)


def stage_steps(url: str, shard: int) -> list[int]:
    """Optimizer steps of each stage of a shard's head."""
    steps = [ref.step for ref in SisaStore(url).shard_head(shard).stages]
    return [b - a for a, b in zip([0, *steps], steps, strict=False)]


def forget_first_and_last_slice(url: str) -> list[int]:
    """Forget a point of shard 0's first slice (it retrains from stage 1) and enough of
    shard 1's last slice that its last stage takes fewer steps (it retrains stage 3 only,
    so a rate defined on a total step count would break its kept stages); return them."""
    ids, shards, slices = layout(url)
    victims = [int(ids[(shards == 0) & (slices == 0)][0])]
    victims += [int(i) for i in ids[(shards == 1) & (slices == 2)][:30]]
    before = stage_steps(url, 1)
    report = forget(url, victims)
    assert {r.shard: r.start_stage for r in report.shards} == {0: 1, 1: 3}
    after = stage_steps(url, 1)
    assert after[:2] == before[:2] and after[2] < before[2]
    return victims


@pytest.mark.parametrize("recipe", RECIPES)
def test_each_recipe_option_stays_exact(trained, default_weights, recipe):
    overrides = RECIPES[recipe]
    url = trained(**overrides)
    if recipe == "metrics":  # measured, never trained on: the weights of metrics off
        assert weights_by_shard(url) == default_weights
    else:  # the option is in effect
        assert not set(weights_by_shard(url)) & set(default_weights)
    victims = forget_first_and_last_slice(url)
    assert_equals_scratch(trained, url, victims, **overrides)


def test_the_whole_recipe_at_once_stays_exact(trained):
    overrides = {
        **RECIPES["adamw"],
        **RECIPES["cosine-warmup"],
        **RECIPES["clip"],
        **RECIPES["label-smoothing"],
        **RECIPES["resnet"],
        **RECIPES["metrics"],
        "model.dropout": 0.2,
    }
    url = trained(**overrides)
    victims = forget_first_and_last_slice(url)
    assert_equals_scratch(trained, url, victims, **overrides)
    scratch = status(str(Path(url).parent / "scratch"))["shards"]
    assert [(s["loss"], s["accuracy"]) for s in status(url)["shards"]] == [
        (s["loss"], s["accuracy"]) for s in scratch
    ]  # the metrics are as exact as the weights


def test_metrics_leave_batchnorm_statistics_and_weights_alone(trained):
    """Accuracy runs the model in eval mode: BatchNorm's running statistics (buffers, in
    the checkpoint) and the weights are those of training with metrics off."""
    resnet = RECIPES["resnet"]
    off = trained("off", **resnet)
    on = trained("on", **resnet, **RECIPES["metrics"])
    assert weights_by_shard(on) == weights_by_shard(off)
    store = SisaStore(on)
    weights, _ = store.read_stage(store.shard_head(0).stages[-1], state=False)
    assert any(k.endswith("running_mean") for k in weights)
    for a, b in zip(status(on)["shards"], status(off)["shards"], strict=True):
        assert a["loss"] == b["loss"]  # the loss is recorded either way
        assert 0 < a["accuracy"] <= 1 and b["accuracy"] is None


def test_stage_metrics_are_recorded_in_checkpoints_heads_and_status(trained, capsys):
    url = trained(**RECIPES["metrics"])
    store = SisaStore(url)
    head = store.shard_head(0)
    for ref in head.stages:
        meta = store.stage_meta(ref.dir)
        assert isinstance(meta["loss"], float) and meta["loss"] == ref.loss > 0
        assert isinstance(meta["accuracy"], float) and meta["accuracy"] == ref.accuracy
        assert list(ref.to_body())[-2:] == ["loss", "accuracy"]
    assert head.stages[-1].loss < head.stages[0].loss  # it learns
    info = status(url)
    final = head.stages[-1]
    assert (info["shards"][0]["loss"], info["shards"][0]["accuracy"]) == (
        final.loss,
        final.accuracy,
    )
    print_status(info, checked=False)
    line = capsys.readouterr().out.splitlines()[1]
    assert f"loss {final.loss:.4f}  accuracy {final.accuracy:.4f}" in line


def test_without_stage_accuracy_only_the_loss_is_recorded(trained, capsys):
    url = trained()
    ref = SisaStore(url).shard_head(0).stages[-1]
    assert "accuracy" not in ref.to_body() and ref.loss is not None
    info = status(url)
    assert info["shards"][0]["accuracy"] is None
    print_status(info, checked=False)
    line = capsys.readouterr().out.splitlines()[1]
    assert "loss" in line and "accuracy" not in line


def test_a_head_written_before_the_metrics_reads_and_writes_back_unchanged(capsys):
    old = {
        "dir": "shards/0/gen-0/stage-1",
        "manifest": "m",
        "weights_sha256": "w",
        "stage": 1,
        "ids_hash": "i",
        "parent": None,
        "state_hash": "s",
        "n": 10,
        "samples": 12,
        "step": 1,
        "fingerprint": {},
    }
    ref = StageRef.from_body(old)
    assert ref.to_body() == old and list(ref.to_body()) == list(old)
    assert ref.loss is None and ref.accuracy is None
    with pytest.raises(ValueError, match="loss must be float"):
        StageRef.from_body(old | {"loss": "low"})
    assert StageRef.from_body(old | {"loss": 2}).loss == 2  # JSON may drop a float's ".0"
    print_status(  # a store trained before: its shards print as before
        {
            "store": "s",
            "shards": [
                {
                    "shard": 0,
                    "points": 10,
                    "generation": 0,
                    "served_stage": 1,
                    "weights_sha256": "0" * 64,
                    "loss": None,
                    "accuracy": None,
                }
            ],
            "slices": 1,
            "points": 10,
            "test_points": 0,
            "deleted": 0,
            "pending_requests": [],
            "damaged_journal_entries": [],
        },
        checked=False,
    )
    assert "loss" not in capsys.readouterr().out


@pytest.mark.parametrize("shape", [(64,), (8, 8), (1, 8, 8), (3, 32, 32)])
def test_resnet_takes_what_the_cnn_takes(shape):
    model = build_model(ModelConfig(name="resnet", hidden=(4, 8, 8)), shape, 10)
    assert model(torch.zeros(2, *shape)).shape == (2, 10)  # [B, *in] -> [B, C]
    model.train()
    assert model(torch.zeros(1, *shape)).shape == (1, 10)  # a last batch of one trains


def test_resnet_refuses_a_map_that_batchnorm_cannot_train_on():
    with pytest.raises(ValueError, match="model.hidden"):
        ResNet((64,), 10, (4, 8, 8, 8), 0.0)  # 8x8 halved three times: 1x1


def test_resnet_on_32x32_images_stays_exact(tmp_path):
    """The ResNet on [3, 32, 32] images (digits scaled up): deletion equals scratch."""

    def images(name="store", drop=frozenset(), groups=False, **overrides):
        path = write_digits_npz(tmp_path / f"{name}.npz", drop=set(drop))
        with np.load(path) as f:
            arrays = dict(f)
        keep = arrays["ids"] < 1300  # [n] a few hundred points keep this fast
        small = arrays["X"][keep].reshape(-1, 1, 8, 8)  # [n, 1, 8, 8]
        big = np.repeat(np.repeat(small, 4, axis=2), 4, axis=3)  # [n, 1, 32, 32]
        arrays["X"] = np.repeat(big, 3, axis=1)  # [n, 3, 32, 32]
        arrays["y"], arrays["ids"] = arrays["y"][keep], arrays["ids"][keep]
        np.savez(path, **arrays)
        cfg = tiny_config(**{"data.source": str(path), "sisa.epochs": 2} | overrides)
        url = str(tmp_path / name)
        train(cfg, url)
        return url

    overrides = {"model.name": "resnet", "model.hidden": [4, 8]}
    url = images(**overrides)
    assert SisaStore(url).intent()["input_shape"] == [3, 32, 32]
    victims = forget_first_and_last_slice(url)
    assert_equals_scratch(images, url, victims, **overrides)
