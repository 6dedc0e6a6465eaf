"""The training recipe's worth on images, image ingest, and per-stage feature scaling.

1. Recipe: sklearn's digits written as an image folder (8x8 grey PNGs, upscaled to 16x16
   by ``data.image_size``), a small ResNet, S in {5, 20} with R = 4 against the
   monolithic model (S = R = 1). Recipes (``benchmarks.recipe_images.RECIPES``): ``off``
   (SGD with the default momentum, constant rate, no augmentation), ``optim`` (AdamW,
   cosine schedule with warmup, label smoothing), and that with ``crop`` or with
   ``crop`` and ``flip`` augmentation. Reported: the aggregate's test accuracy (mean ±
   std over seeds) and the loss at the largest S against the monolithic model of the same
   recipe, against a goal of ``GOAL_LOSS_POINTS`` (the accuracy benchmark's) and beside
   what the tabular digits lose there today (``docs/benchmarks/accuracy.json``). Where
   torch sees a GPU these stores train on it (``resources.device = "cuda"``).
2. Ingest: a folder of a few thousand PNGs (digits, each written three times, upscaled to
   32x32) into the store, in process: the ingest job's own wall time (``StageTimer``),
   images per second, and bytes per image stored (uint8) against the same pixels from a
   float32 ``.npz``.
3. Scaling (``benchmarks.recipe_scaling``): what per-stage statistics cost in deletions
   (synthetic Purchase, S = 20, R = 10), and their accuracy against whole-set statistics
   (forbidden in ``sisa/``, computed here only) on digits with random per-feature factors.

Timings come from one process on a shared machine: the reported figures are ratios
within the run and counts (samples, bytes); accuracies do not depend on timing.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import ROOT, load_average
from benchmarks.datasets import DataCache
from benchmarks.deletion import PURCHASE  # the deletion benchmark's batched store
from benchmarks.recipe_images import RECIPES, digits_folder, ingest, recipe_overrides, score
from benchmarks.recipe_report import markdown, summarise
from benchmarks.recipe_scaling import deletion_cost, scaling_accuracy
from benchmarks.report import Report
from sisa.training.trainer import configure

GOAL_LOSS_POINTS = 1.5  # as benchmarks.accuracy: the aggregate at the largest S may lose this
PAPER_LOSS_POINTS = 2.0  # Bourtoule et al.: under 2 points at S = 20 on simple tasks
GRIDS: dict[str, dict[str, Any]] = {
    "quick": {
        "images": {
            "limit": 300,
            "size": 8,
            "model": {"model.name": "cnn", "model.hidden": [4]},
            "epochs": 2.0,
            "batch_size": 32,
            "configs": [[1, 1], [4, 2]],
            "seeds": [0],
        },
        "ingest": {"size": 16, "copies": 1, "repeats": 1, "shards": 2},
        "cost": {
            "data": {"data.source": "digits", "sisa.shards": 4, "sisa.slices": 2, "sisa.epochs": 2},
            "k": 2,
        },  # fmt: skip
        "scaling": {"configs": [[1, 1], [4, 2]], "seeds": [0], "epochs": 2.0},
    },
    "full": {
        "images": {
            "limit": None,
            "size": 16,
            "model": {"model.name": "resnet", "model.hidden": [8, 16]},
            "epochs": 40.0,
            "batch_size": 16,
            "configs": [[1, 1], [5, 4], [20, 4]],
            "seeds": [0, 1],
        },
        "ingest": {"size": 32, "copies": 3, "repeats": 3, "shards": 5},
        "cost": {"data": PURCHASE, "k": 20},
        "scaling": {"configs": [[1, 1], [5, 4], [20, 4]], "seeds": [0, 1, 2], "epochs": 20.0},
    },
}


def tabular_reference(shards: int) -> dict[str, Any] | None:
    """What the tabular digits lose at ``shards`` today (uniform sharding, averaging, R = 1):
    the committed accuracy benchmark's figure, if there is one."""
    path = ROOT / "docs" / "benchmarks" / "accuracy.json"
    if not path.exists():
        return None
    result = json.loads(path.read_text())
    for s in result["figures"]["summary"]:
        if (s["dataset"], s["shards"], s["sharding"], s["aggregation"]) == (
            "digits", shards, "uniform", "average"
        ):  # fmt: skip
            return {"loss_points": s["loss_points"], "source": "accuracy.json", "slices": 1}
    return None


def recipe_grid(grid: dict[str, Any], root: Path, device: str) -> list[dict[str, Any]]:
    """One store per (seed, S, R, recipe) on the digits image folder; its accuracies."""
    folder, _ = digits_folder(root / "digits-folder", limit=grid["limit"])
    common = grid["model"] | {
        "data.image_size": [grid["size"], grid["size"]],
        "sisa.epochs": grid["epochs"],
        "optim.batch_size": grid["batch_size"],
        "resources.device": device,
    }
    rows = []
    for seed in grid["seeds"]:
        for shards, slices in grid["configs"]:
            for recipe in RECIPES:
                overrides = common | recipe_overrides(recipe, shards, slices)
                acc = score(folder, overrides | {"sisa.seed": seed})
                rows.append(
                    {"recipe": recipe, "shards": shards, "slices": slices, "seed": seed} | acc
                )
    return rows


def run(suite: str) -> Report:
    grid = GRIDS[suite]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    configure(1, device)
    before = load_average()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        runs = recipe_grid(grid["images"], root, device)
        ingested = ingest(root / "ingest", **grid["ingest"])
        data = DataCache(root).overrides(grid["cost"]["data"])
        (root / "cost").mkdir()
        cost = deletion_cost(root / "cost", data, grid["cost"]["k"], seed=0)
    scaling = scaling_accuracy(
        [tuple(c) for c in grid["scaling"]["configs"]],
        grid["scaling"]["seeds"],
        grid["scaling"]["epochs"],
    )
    top = max(s for s, _ in grid["images"]["configs"])
    figures = {
        "goal_loss_points": GOAL_LOSS_POINTS,
        "goal_shards": top,
        "paper_loss_points": PAPER_LOSS_POINTS,
        "tabular_reference": tabular_reference(top),
        "image_setup": {  # what the headline names
            "size": grid["images"]["size"],
            "model": grid["images"]["model"]["model.name"],
            "hidden": grid["images"]["model"]["model.hidden"],
            "epochs": grid["images"]["epochs"],
            "device": device,
        },
        "recipes": summarise(runs),
        "recipe_runs": runs,
        "ingest": ingested,
        "scaling_cost": cost,
        "scaling_accuracy": scaling,
        "load_average": {"before": before, "after": load_average()},
    }
    config = grid | {"device": device, "recipes": RECIPES}
    return Report(figures, markdown(figures, config), config)
