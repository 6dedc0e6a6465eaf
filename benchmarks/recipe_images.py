"""The recipe benchmark's image measurements: digits as an image folder, the aggregate's
accuracy with the training recipe off and on, and ingest throughput and storage.

* ``digits_folder`` writes sklearn's digits as 8x8 grey PNGs in the ``<class>/<file>``
  layout; ``data.image_size`` upscales them (bilinear) when the store ingests them.
* ``score`` trains one store (in process) and evaluates its aggregate on the held-out
  images; the recipes are config overrides (``RECIPES``).
* ``ingest`` times the ingest job alone: ``train`` runs its jobs through ``StageTimer``,
  an in-process executor that clocks each ``run_jobs`` call by its name (``ingest``,
  ``train``), so the figure is the job that streams the source into the store, not the
  config checks before it nor the (one-sample) training after it. The same pixels are
  then written as a float32 ``.npz`` and ingested the same way, and the two stores'
  feature files on disk are compared.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.report import median
from orchestrator.executors import InProcessExecutor
from sisa.config import build_config
from sisa.evidence.status import evaluate
from sisa.store.artifacts import SisaStore
from sisa.store.layout import TEST_PREFIX
from sisa.training.train import train

IMAGE = {"data.image_mode": "L"}  # one grey channel; data.image_size per measurement
# Plain: the config's default optimizer (SGD, momentum 0.9, constant rate), no augmentation.
OFF: dict[str, Any] = {"optim.name": "sgd", "optim.lr": 0.05, "optim.schedule": "constant"}
OPTIM: dict[str, Any] = {
    "optim.name": "adamw",
    "optim.lr": 0.01,
    "optim.weight_decay": 0.01,
    "optim.schedule": "cosine",
    "optim.label_smoothing": 0.1,
}
WARMUP_SHARE = 0.05  # of the stages: optim.warmup_stages = 0.05 R (stages count warmup)
CROP_PADDING = 2  # pixels at 16x16, one of the original 8x8 image
RECIPES: dict[str, dict[str, Any]] = {
    "off": OFF,
    "optim": OPTIM,  # the optimizer half of the recipe alone: which half does what
    "crop": OPTIM | {"data.augment": ["crop"], "data.crop_padding": CROP_PADDING},
    "crop+flip": OPTIM | {"data.augment": ["crop", "flip"], "data.crop_padding": CROP_PADDING},
}


def digits_folder(root: Path, limit: int | None = None, copies: int = 1) -> tuple[Path, int]:
    """sklearn's digits as 8x8 grey PNGs under ``root/digit<k>/``; ``copies`` > 1 writes
    each image again under another name (more images for the ingest). Returns the folder
    and the number of images written."""
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    n = len(d.target) if limit is None else min(limit, len(d.target))
    for i in range(n):
        folder = root / f"digit{d.target[i]}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = (d.images[i] * 16).clip(0, 255).astype(np.uint8)  # [8, 8], 0..16 -> 0..255
        image = Image.fromarray(pixels, mode="L")
        for c in range(copies):
            image.save(folder / f"c{c}-{i:04d}.png")
    return root, n * copies


class StageTimer(InProcessExecutor):
    """Jobs in this process, without progress bars; ``seconds[desc]`` is the wall time of
    each ``run_jobs`` call of that name (``ingest``, ``train``), summed."""

    def __init__(self) -> None:
        super().__init__(progress=False)
        self.seconds: dict[str, float] = {}

    def map(self, fn: Callable[..., Any], jobs: Sequence[Any], **kwargs: Any) -> list[Any]:
        started = time.perf_counter()
        out = super().map(fn, jobs, **kwargs)
        desc = kwargs["desc"]
        self.seconds[desc] = self.seconds.get(desc, 0.0) + time.perf_counter() - started
        return out


def score(source: Path, overrides: dict[str, Any]) -> dict[str, float]:
    """Train a store on the image folder with ``overrides`` and evaluate it: the aggregate
    by averaging and by voting, the mean shard, and the seconds training took."""
    with tempfile.TemporaryDirectory() as tmp:
        url = str(Path(tmp) / "store")
        started = time.perf_counter()
        train(build_config({}, IMAGE | {"data.source": str(source)} | overrides), url)
        seconds = time.perf_counter() - started
        acc = evaluate(url)
    return {k: acc[k] for k in ("average", "vote", "mean_shard")} | {"train_s": seconds}


def recipe_overrides(recipe: str, shards: int, slices: int) -> dict[str, Any]:
    """The overrides of one (recipe, S, R) cell; warmup is a share of the stages."""
    out = RECIPES[recipe] | {"sisa.shards": shards, "sisa.slices": slices}
    if out["optim.schedule"] != "constant":
        out["optim.warmup_stages"] = WARMUP_SHARE * slices
    return out


# -- ingest -------------------------------------------------------------------------------

MINIMAL_TRAINING = {  # what follows the ingest costs next to nothing: it is not measured
    "model.name": "mlp",
    "model.hidden": [4],
    "sisa.slices": 1,
    "sisa.epochs": 0.001,
}


def feature_bytes(url: str) -> dict[str, int]:
    """Bytes on disk of the store's data: the feature files (``X-*.npz``) and all files
    of its data artifacts (IDs and labels too)."""
    files = list(Path(url).glob("**/data/*"))
    return {
        "features": sum(f.stat().st_size for f in files if f.name.startswith("X-")),
        "data": sum(f.stat().st_size for f in files),
    }


def read_back(url: str) -> dict[str, np.ndarray]:
    """Every point the store holds (shards, then the held-out part): IDs, labels, pixels."""
    store = SisaStore(url)
    refs = [store.shard_head(k).data for k in range(store.config().sisa.shards)]
    test = store.latest_head(TEST_PREFIX)
    parts = [store.read_data(ref) for ref in [*refs, *([test.data] if test else [])]]
    return {k: np.concatenate([p[k] for p in parts]) for k in ("ids", "y", "X")}


def ingest_once(source: str, overrides: dict[str, Any], url: str) -> dict[str, Any]:
    """One training of a store from ``source`` with a negligible training; the ingest job's
    wall time, the whole call's, and the store's bytes."""
    timer = StageTimer()
    config = build_config({}, MINIMAL_TRAINING | {"data.source": source} | overrides)
    started = time.perf_counter()
    report = train(config, url, executor=timer, overwrite=True)
    total = time.perf_counter() - started
    n = report.n_train + report.n_test
    return {
        "images": n,
        "ingest_s": timer.seconds["ingest"],
        "train_call_s": total,
        "training_s": timer.seconds.get("train", 0.0),
    } | feature_bytes(url)


def ingest_source(source: str, overrides: dict[str, Any], root: Path, repeats: int) -> dict:
    """``repeats`` ingests of one source into fresh stores under ``root``: the median
    ingest time, images per second and the bytes the first store holds."""
    runs = [ingest_once(source, overrides, str(root / f"store-{i}")) for i in range(repeats)]
    first, seconds = runs[0], median(r["ingest_s"] for r in runs)
    return {
        "images": first["images"],
        "ingest_s": seconds,
        "images_per_s": first["images"] / seconds,
        "train_call_s": median(r["train_call_s"] for r in runs),
        "features_bytes": first["features"],
        "data_bytes": first["data"],
        "features_bytes_per_image": first["features"] / first["images"],
        "data_bytes_per_image": first["data"] / first["images"],
        "runs": runs,
    }


def ingest(root: Path, size: int, copies: int, repeats: int, shards: int) -> dict[str, Any]:
    """Images per second into the store and bytes per image: an image folder of digits
    upscaled to ``size`` x ``size`` against the same pixels as a float32 ``.npz``."""
    folder, written = digits_folder(root / "ingest-folder", copies=copies)
    image = IMAGE | {"data.image_size": [size, size], "sisa.shards": shards}
    png = ingest_source(str(folder), image, root / "png", repeats)
    arrays = read_back(str(root / "png" / "store-0"))  # the pixels that store holds
    path = root / "ingest-float32.npz"
    np.savez(path, ids=arrays["ids"], y=arrays["y"], X=arrays["X"].astype(np.float32))
    npz = ingest_source(str(path), {"sisa.shards": shards}, root / "npz", repeats)
    assert png["images"] == npz["images"] == written
    return {
        "size": [size, size],
        "written": written,
        "sources": {"image folder (PNG)": png, "npz (float32)": npz},
        "pixel_bytes": {"uint8": size * size, "float32": 4 * size * size},  # from the shape
        "stored_ratio": npz["features_bytes"] / png["features_bytes"],
        "speed_ratio": png["images_per_s"] / npz["images_per_s"],
    }
