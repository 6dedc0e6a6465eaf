"""Pretrained backbones, ``model.finetune = "head"`` and ``"lora"``: accuracy, deletion
time, aggregated inference and checkpoint bytes against from-scratch SISA and monolithic
models.

No public pretrained weights can be downloaded here, so the backbone is pretrained on a
**disjoint public part of the data**: synthetic Purchase is generated once, a keyed hash
of each ID (``benchmarks.backbones_model.PUBLIC_KEY``) puts a fixed share of the points in
a public part, and an MLP trained on that part alone in plain torch gives its hidden
layers as the backbone (safetensors). The public part never enters a store and is never
subject to deletion; the private rest, an ``.npz`` with its original IDs, is the stores'
source. "lora" puts adapters on the backbone's last Linear (``lora_target``); the layers
before it are its frozen prefix, cached per point at ingest.

1. Accuracy (``benchmarks.backbones_measure.accuracy_grid``): at each S of the grid and
   seed, R = 1, one store per variant: ``full`` (from-scratch SISA, an MLP on the raw
   points), ``head`` (a linear head per shard on the frozen backbone's features) and
   ``lora`` (rank-8 adapters on the last Linear, and a linear head), each against its own
   monolithic store (S = R = 1) of the same seed. The seed draws the held-out split and
   the shards; the loss in points is paired per seed, and reported with its standard
   error over seeds. Goals (issue 19): "head" and "lora" lose at most
   ``GOALS["loss_points"]`` at S = 20 and S = 100.
2. Deletion time, in process: single-point ``forget`` calls (accept, retrain, purge) on a
   "head" store, a "lora" store and the monolithic head store, against one retrain of the
   monolithic full fine-tune (backbone and head trained end to end from the raw points, in
   plain torch, with the heads' optimizer, batch size and epochs). Goal: "head" at least
   ``GOALS["speedup"]`` times faster than the full fine-tune.
3. Aggregated inference of the "head" store (and of the "lora" store):
   ``Ensemble.predict_proba`` over N raw rows against one forward of one full model (the
   backbone, or the prefix, and one shard model). Goal: at most ``GOALS["inference"]``
   times at the largest N. The same on a ViT-B-sized backbone with random weights on
   random 32x32 images (``vit_b_32px``), timing only: there the heads cost what they cost
   beside a real backbone, while the pretrained MLP is small enough that S heads are a
   tenth of its multiply-adds.
4. Bytes per stage checkpoint of the "head" and "lora" stores against the backbone's bytes
   (goals: weights ``GOALS["weights"]``, weights and optimizer state
   ``GOALS["with_state"]``), and a shard's R stages against those of a full fine-tune
   store of the same architecture.

Timings come from one process on a shared machine (1 torch thread): the reported figures
are ratios within the run, and counts (bytes, points); accuracies do not depend on timing.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.backbones_measure import (
    accuracy_grid,
    checkpoint_bytes,
    deletion_times,
    inference,
    summarise,
    trusted,
    vit_inference,
)
from benchmarks.backbones_model import (
    FACTORIES,
    VIT_FACTORY,
    WIDTHS,
    lora_target,
    pretrain,
    random_images,
    split_public,
)
from benchmarks.backbones_report import markdown, verdicts
from benchmarks.common import load_average
from benchmarks.report import Report
from sisa.training.trainer import configure

GOALS: dict[str, Any] = {
    "loss_points": {"20": 0.5, "100": 1.5},  # S -> points "head" may lose to its S = 1
    "speedup": 100.0,  # "head" deletion vs retraining the monolithic full fine-tune
    "inference": 1.2,  # ensemble at S = 20 / one full model's forward
    "weights": 0.01,  # a stage's weights file / the backbone's bytes
    "with_state": 0.03,  # weights and optimizer state / the backbone's bytes
}
ADAM = {"optim.name": "adam", "optim.batch_size": 64}
GRIDS: dict[str, dict[str, Any]] = {
    "quick": {
        "data": {"n": 3_000, "public_fraction": 0.5, "seed": 0},
        "pretrain": {"epochs": 10, "batch_size": 128, "lr": 1e-3, "seed": 0},
        "epochs": 2.0,
        "feature_batch": 32,
        "variants": {
            "full": {"model.hidden": [32], "optim.lr": 1e-3},
            "head": {"optim.lr": 1e-2},
            "lora": {"model.finetune": "lora", "optim.lr": 1e-3},
        },
        "shards": [1, 4],
        "seeds": [0, 1],
        "deletion": {"sisa": {"sisa.shards": 4, "sisa.slices": 2}, "k": 2, "mono_k": 1},
        "fine_tune_lr": 1e-3,
        "inference": {"sizes": [1, 64], "repeats": 2},
        "vit": {"points": 40, "shards": 4, "feature_batch": 8, "sizes": [1, 16], "repeats": 1},
    },
    "full": {
        "data": {"n": 40_000, "public_fraction": 0.5, "seed": 0},
        "pretrain": {"epochs": 2, "batch_size": 128, "lr": 1e-3, "seed": 0},
        "epochs": 16.0,  # the full fine-tune's retrain then takes over 2 minutes here
        "feature_batch": 256,
        "variants": {
            "full": {"model.hidden": [128], "optim.lr": 1e-3},
            "head": {"optim.lr": 1e-2},
            "head, lr 0.001": {"optim.lr": 1e-3},  # the full variant's rate, for comparison
            "lora": {"model.finetune": "lora", "optim.lr": 1e-3},
        },
        "shards": [1, 5, 20, 50, 100],
        "seeds": [0, 1, 2],
        "deletion": {"sisa": {"sisa.shards": 20, "sisa.slices": 10}, "k": 5, "mono_k": 3},
        "fine_tune_lr": 1e-3,
        "inference": {"sizes": [1, 256, 4096], "repeats": 7},
        "vit": {
            "points": 400,
            "shards": 20,
            "feature_batch": 64,
            "sizes": [1, 1024],
            "repeats": 3,
        },  # fmt: skip
    },
}
LORA = {"model.lora_rank": 8, "model.lora_alpha": 16}  # the config's defaults, said here


def _on_backbone(variant: dict[str, Any]) -> bool:
    return "model.hidden" not in variant  # "full" variants name their own MLP


def _head_mode(weights: str | None, factory: str, feature_batch: int) -> dict[str, Any]:
    return {
        "model.finetune": "head",
        "model.backbone": factory,
        "model.backbone_weights": weights,
        "model.hidden": [],  # one linear layer per shard
        "model.feature_batch": feature_batch,
    }


def _variant(overrides: dict[str, Any], head_mode: dict[str, Any], target: str) -> dict[str, Any]:
    """A variant's overrides over "head" mode (or none for a "full" one); "lora" adapts
    ``target``."""
    if not _on_backbone(overrides):
        return overrides
    lora = (
        {"model.lora_targets": [target]} | LORA if overrides.get("model.finetune") == "lora" else {}
    )
    return head_mode | lora | overrides


def run(suite: str) -> Report:
    grid = GRIDS[suite]
    configure(1, "cpu")
    before = load_average()
    widths, factory = WIDTHS[suite], FACTORIES[suite]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        public = split_public(**grid["data"], folder=root)
        backbone = pretrain(public, widths, root / "backbone.safetensors", **grid["pretrain"])
        source = str(public["private"])
        common = ADAM | {
            "data.source": source,
            "data.num_classes": public["num_classes"],
            "sisa.epochs": grid["epochs"],
        }
        head_mode = _head_mode(backbone["path"], factory, grid["feature_batch"])
        target = lora_target(widths)
        variants = {
            name: _variant(overrides, head_mode, target)
            for name, overrides in grid["variants"].items()
        }
        # evaluate, and forget in "lora" mode, import the backbone only when it is trusted
        with trusted(factory):  # (train trusts its own)
            runs = accuracy_grid(root, common, variants, grid["shards"], grid["seeds"])
        modes = {mode: common | variants[mode] for mode in ("head", "lora")}
        fine = {
            "weights": backbone["path"],
            "widths": widths,
            "num_classes": public["num_classes"],
            "train": {"epochs": grid["epochs"], "batch_size": ADAM["optim.batch_size"],
                      "lr": grid["fine_tune_lr"], "seed": 0},
        }  # fmt: skip
        d = grid["deletion"]
        with trusted(factory):
            deletion = deletion_times(root, modes, d["sisa"], d["k"], d["mono_k"], fine)
        urls = deletion.pop("urls")
        served = {mode: inference(url, source, **grid["inference"]) for mode, url in urls.items()}
        v = grid["vit"]
        images = random_images(root, v["points"], public["num_classes"], seed=0)
        vit_store = (
            ADAM
            | _head_mode(None, VIT_FACTORY, v["feature_batch"])
            | {
                "data.source": str(images),
                "data.num_classes": public["num_classes"],
                "sisa.shards": v["shards"],
                "sisa.slices": 1,
                "sisa.epochs": 1.0,
            }
        )
        served["vit"] = vit_inference(root, vit_store, v["sizes"], v["repeats"])
        few = root / "few.npz"  # a full fine-tune's files have the same sizes on any data
        with np.load(source) as f:
            np.savez(few, ids=f["ids"][:200], X=f["X"][:200], y=f["y"][:200])
        full_store = ADAM | {
            "data.source": str(few),
            "data.num_classes": public["num_classes"],
            "model.hidden": list(widths),  # the backbone's layers, then a linear layer
            "sisa.shards": 1,
            "sisa.slices": d["sisa"]["sisa.slices"],
            "sisa.epochs": 1.0,
        }
        sizes = checkpoint_bytes(urls, root, full_store, backbone["tensor_bytes"])
    backbone.pop("path")
    figures = {
        "goals": GOALS,
        "setup": {
            "n": grid["data"]["n"],
            "public_fraction": grid["data"]["public_fraction"],
            "public_points": len(public["y"]),
            "private_points": len(public["private_ids"]),
            "disjoint": not set(public["ids"].tolist()) & set(public["private_ids"].tolist()),
            "widths": list(widths),
            "num_classes": public["num_classes"],
            "backbone": backbone,
            "epochs": grid["epochs"],
            "feature_batch": grid["feature_batch"],
            "lora": LORA | {"model.lora_targets": [target]},
        },
        "accuracy": summarise(runs),
        "accuracy_runs": runs,
        "deletion": deletion,
        "inference": served,
        "bytes": sizes,
        "load_average": {"before": before, "after": load_average()},
    }
    figures["verdicts"] = verdicts(figures)
    return Report(figures, markdown(figures, grid), grid | {"widths": list(widths)})
