"""The backbones benchmark's measurements, each on stores trained in this process.

* ``accuracy_grid``: one store per (seed, S, variant) at R = 1, scored on its held-out
  points (``evaluate``); ``summarise`` pairs every store with the monolithic store
  (S = R = 1) of its variant and seed, so the loss in points has a standard error over
  seeds that the shared split does not inflate.
* ``deletion_times``: K single-point ``forget`` calls (accept, retrain, purge) on a "head"
  store, on a "lora" store and on the monolithic head store (S = R = 1); then the
  monolithic full fine-tune (``benchmarks.backbones_model.fine_tune``) retrained once on
  the monolithic store's training points without the first point forgotten, and scored
  on its held-out points.
* ``inference``: ``Ensemble.predict_proba`` over N raw rows (the backbone once per row,
  in groups of ``model.feature_batch``, then every head) against one forward of one full
  model (the same backbone module and one of the heads), alternating, medians; and its
  parts: the backbone in its groups, the heads and the aggregation on stored features,
  and the backbone's one forward over all rows.
* ``vit_inference``: ``inference`` again on a ViT-B-sized backbone with random weights,
  where the heads cost what they cost beside a real backbone.
* ``checkpoint_bytes``: the stage files of the "head" and "lora" stores against the
  backbone's bytes, and against a full fine-tune store of the same architecture (MLP hidden = the
  backbone's widths) trained for a few steps on a few points: its files have the sizes of
  any full fine-tune's, whatever the data.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from benchmarks.backbones_model import accuracy, fine_tune
from benchmarks.common import environ
from benchmarks.report import median
from benchmarks.stores import QUIET, train_store, training_layout
from sisa.deletion.accept import forget
from sisa.evidence.status import evaluate
from sisa.store.artifacts import SisaStore
from sisa.store.layout import STATE, TEST_PREFIX, WEIGHTS
from sisa.training.factories import TRUST_ENV


def trusted(factory: str) -> contextlib.AbstractContextManager[None]:
    """``factory`` trusted (``SISA_TRUSTED_FACTORIES``) for the block: serving and
    evaluation import a store's backbone only when trusted; ``train`` trusts its own."""
    before = os.environ.get(TRUST_ENV)
    return environ(TRUST_ENV, ",".join(v for v in (before, factory) if v))


# -- accuracy -----------------------------------------------------------------------------


def accuracy_grid(
    root: Path,
    common: dict[str, Any],
    variants: dict[str, dict[str, Any]],
    shards: Sequence[int],
    seeds: Sequence[int],
) -> list[dict[str, Any]]:
    """Test accuracy of one store per (seed, S, variant), R = 1; each store is deleted
    after scoring (the seed draws the held-out split and the shards)."""
    runs = []
    for seed in seeds:
        for s in shards:
            for variant, overrides in variants.items():
                cell = common | overrides | {"sisa.shards": s, "sisa.slices": 1, "sisa.seed": seed}
                slug = "".join(c if c.isalnum() else "-" for c in variant)
                url, seconds = train_store(root, f"acc-{slug}-{s}-{seed}", cell)
                acc = evaluate(url)
                runs.append(
                    {"variant": variant, "shards": s, "seed": seed, "train_s": seconds}
                    | {k: acc[k] for k in ("average", "vote", "mean_shard", "test_points")}
                )
                shutil.rmtree(url)
    return runs


def mean_se(values: Sequence[float]) -> dict[str, float]:
    """Mean, sample standard deviation and standard error of the mean (0 for one value)."""
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.mean(values), "std": std, "se": std / len(values) ** 0.5}


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (variant, S): the aggregate's accuracy over seeds, and the loss in points against
    the monolithic store (S = 1) of the same variant and seed, with its standard error."""
    mono = {(r["variant"], r["seed"]): r["average"] for r in runs if r["shards"] == 1}
    out = []
    for variant, s in dict.fromkeys((r["variant"], r["shards"]) for r in runs):
        mine = [r for r in runs if (r["variant"], r["shards"]) == (variant, s)]
        acc = mean_se([r["average"] for r in mine])
        loss = mean_se([(mono[(variant, r["seed"])] - r["average"]) * 100 for r in mine])
        out.append(
            {"variant": variant, "shards": s, "seeds": len(mine)}
            | acc
            | {
                "loss_points": loss["mean"],
                "loss_se": loss["se"],
                "mean_shard": statistics.mean(r["mean_shard"] for r in mine),
                "vote": statistics.mean(r["vote"] for r in mine),
                "train_s": median(r["train_s"] for r in mine),
            }
        )
    return out


# -- deletion -----------------------------------------------------------------------------


def _forgets(url: str, victims: Sequence[Any]) -> list[dict[str, Any]]:
    rows = []
    for victim in victims:
        started = time.perf_counter()
        report = forget(url, [victim], executor=QUIET)
        seconds = time.perf_counter() - started
        assert report.removed == [victim], report
        rows.append(
            {
                "id": victim,
                "wall_s": seconds,
                "samples": sum(r.samples for r in report.shards),
                "shards": [r.shard for r in report.shards],
                "start_stage": [r.start_stage for r in report.shards],
            }
        )
    return rows


def _raw(source: str, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The raw points (features as the source holds them, labels) of ``ids``, in order."""
    with np.load(source) as f:
        where = {int(i): k for k, i in enumerate(f["ids"])}
        rows = np.array([where[int(i)] for i in ids])
        return f["X"][rows], f["y"][rows]


def held_out_ids(url: str) -> np.ndarray:
    store = SisaStore(url)
    test = store.latest_head(TEST_PREFIX)
    assert test is not None
    return store.read_data(test.data, features=False)["ids"]


def _store_deletions(
    url: str, rng: np.random.Generator, k: int, sisa: dict[str, int]
) -> dict[str, Any]:
    """K random training points of ``url`` forgotten one by one, and the store's accuracy."""
    rows = _forgets(url, rng.choice(training_layout(url).ids, k, replace=False).tolist())
    return {
        "median_s": median(r["wall_s"] for r in rows),
        "median_samples": median(r["samples"] for r in rows),
        "deletions": rows,
    } | sisa


def deletion_times(
    root: Path,
    modes: dict[str, dict[str, Any]],
    sisa: dict[str, int],
    k: int,
    mono_k: int,
    fine: dict[str, Any],
) -> dict[str, Any]:
    """Seconds per single-point deletion of each store of ``modes`` ("head" first, then
    "lora": their overrides) at ``sisa`` (S, R), of the monolithic head, and of the
    monolithic full fine-tune's retrain (``fine``: ``fine_tune``'s arguments)."""
    head = modes["head"]
    rng = np.random.default_rng(0)
    urls, train_s, out = {}, {}, {}
    for mode, overrides in modes.items():
        urls[mode], train_s[mode] = train_store(root, f"delete-{mode}", overrides | sisa)
        out[mode] = _store_deletions(urls[mode], rng, k, sisa)
    mono = {"sisa.shards": 1, "sisa.slices": 1}
    mono_url, train_s["mono_head"] = train_store(root, "delete-mono", head | mono)
    train_ids = training_layout(mono_url).ids
    mono_victims = rng.choice(train_ids, mono_k, replace=False).tolist()
    mono_rows = _forgets(mono_url, mono_victims)
    # the full fine-tune's retrain without the first point the monolithic head forgot
    source = head["data.source"]
    X, y = _raw(source, train_ids[train_ids != mono_victims[0]])
    model, fine_s = fine_tune(fine["weights"], fine["widths"], fine["num_classes"], X, y,
                              **fine["train"])  # fmt: skip
    X_test, y_test = _raw(source, held_out_ids(mono_url))
    with trusted(head["model.backbone"]):
        for mode, url in urls.items():
            out[mode]["accuracy"] = evaluate(url)["average"]
        mono_acc = evaluate(mono_url)["average"]
    mono_s = median(r["wall_s"] for r in mono_rows)
    return out | {
        "urls": urls,  # for the inference and bytes measurements; not in the results
        "train_s": train_s,
        "mono_head": {
            "points": len(train_ids),
            "median_s": mono_s,
            "median_samples": median(r["samples"] for r in mono_rows),
            "deletions": mono_rows,
            "accuracy": mono_acc,
        },
        "full_fine_tune": {
            "retrain_s": fine_s,
            "points": len(y),
            "samples": len(y) * max(1, round(fine["train"]["epochs"])),
            "accuracy": accuracy(model, X_test, y_test),
            "test_points": len(y_test),
        },
        "full_over": {mode: fine_s / out[mode]["median_s"] for mode in modes},
        "mono_head_over": {mode: mono_s / out[mode]["median_s"] for mode in modes},
        "full_over_mono_head": fine_s / mono_s,
    }


# -- inference ----------------------------------------------------------------------------


def inference(url: str, source: str, sizes: Sequence[int], repeats: int) -> dict[str, Any]:
    """The ensemble's ``predict_proba`` over N raw rows against one full model's forward
    (the ensemble's backbone module, then one of its heads) over the same rows."""
    from sisa.serving.ensemble import Ensemble

    with trusted(SisaStore(url).config().model.backbone or ""):
        ensemble = Ensemble.load(url)
    assert ensemble.backbone is not None
    one = nn.Sequential(ensemble.backbone.module, next(iter(ensemble.models.values()))).eval()
    with np.load(source) as f:
        pool = f["X"][: max(sizes)].astype(np.float32)
    rows = []
    for n in sizes:
        X = pool[:n]
        parts = _timed_parts(ensemble, one, X)
        seconds: dict[str, list[float]] = {key: [] for key in parts}
        for _ in range(repeats):  # alternating, so all see the same machine
            for key, fn in parts.items():
                started = time.perf_counter()
                fn()
                seconds[key].append(time.perf_counter() - started)
        row = {"n": n} | {key: median(values) for key, values in seconds.items()}
        rows.append(row | {"ratio": row["ensemble_s"] / row["one_model_s"]})
    return {
        "shards": len(ensemble.models),
        "feature_batch": ensemble.backbone.rows,
        "strategy": ensemble.forward.strategy if ensemble.forward else None,
        "repeats": repeats,
        "rows": rows,
    }


def _timed_parts(ensemble: Any, one: nn.Module, X: np.ndarray) -> dict[str, Callable[[], Any]]:
    """What ``inference`` times for one N: the ensemble end to end, one full model, and
    where the ensemble's time goes (the backbone in its fixed groups, then the heads)."""
    x, features = torch.from_numpy(X), ensemble.backbone.features(X)  # [n, *in], [n, F]

    def forward(module: nn.Module, softmax: bool) -> Callable[[], Any]:
        def call() -> Any:
            with torch.inference_mode():
                out = module(x)
                return torch.softmax(out, dim=-1) if softmax else out

        return call

    return {
        "ensemble_s": lambda: ensemble.predict_proba(X),
        "one_model_s": forward(one, softmax=True),
        "backbone_groups_s": lambda: ensemble.backbone.features(X),
        "heads_s": lambda: ensemble.predict_proba(features, stored=True),
        "one_backbone_s": forward(ensemble.backbone.module, softmax=False),
    }


# -- checkpoint bytes ---------------------------------------------------------------------


def stage_bytes(url: str, shard: int = 0) -> dict[str, Any]:
    """Bytes of each stage checkpoint of one shard: the weights file and the optimizer
    state file (the counters travel in it too)."""
    store = SisaStore(url)
    stages = [
        {
            "weights": (Path(url) / ref.dir / WEIGHTS).stat().st_size,
            "state": (Path(url) / ref.dir / STATE).stat().st_size,
        }
        for ref in store.shard_head(shard).stages
    ]
    weights = [s["weights"] for s in stages]
    both = [s["weights"] + s["state"] for s in stages]
    return {
        "stages": len(stages),
        "weights_per_stage": int(median(weights)),  # all stages alike: the same tensors
        "with_state_per_stage": int(median(both)),
        "shard_total": sum(both),
        "per_stage": stages,
    }


def checkpoint_bytes(
    urls: dict[str, str], root: Path, full: dict[str, Any], backbone_bytes: int
) -> dict[str, Any]:
    """Per-stage and per-shard bytes of the "head" and "lora" stores' checkpoints (``urls``)
    against the backbone's bytes and against a full fine-tune store (``full``: its
    overrides, same R)."""
    full_url, _ = train_store(root, "bytes-full", full)
    whole = stage_bytes(full_url)
    shutil.rmtree(full_url)
    out: dict[str, Any] = {"backbone_bytes": backbone_bytes, "full_fine_tune": whole}
    for mode, url in urls.items():
        mine = stage_bytes(url)
        out[mode] = mine | {
            "weights_of_backbone": mine["weights_per_stage"] / backbone_bytes,
            "with_state_of_backbone": mine["with_state_per_stage"] / backbone_bytes,
            "shard_total_of_full": mine["shard_total"] / whole["shard_total"],
        }
    return out


def vit_inference(
    root: Path, store: dict[str, Any], sizes: Sequence[int], repeats: int
) -> dict[str, Any]:
    """``inference`` on a "head" store over the ViT-B-sized backbone (random weights) and
    random images (``store``: its overrides; its source is ``random_images``'s)."""
    url, seconds = train_store(root, "serve-vit", store)
    served = inference(url, store["data.source"], sizes, repeats)
    shutil.rmtree(url)
    return served | {"train_s": seconds}
