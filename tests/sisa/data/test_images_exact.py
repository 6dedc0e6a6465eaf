"""Exactness over an image folder, with augmentation: after forgetting images (first slice,
last slice, the only image of a class) every shard is bitwise what training from scratch on
the folder without those files gives, and ``verify`` agrees."""

from __future__ import annotations

import numpy as np
import pytest

from sisa.config import ConfigError
from sisa.deletion.accept import forget
from sisa.serving.predictor import Predictor
from sisa.store.artifacts import SisaStore
from sisa.training.train import train
from tests.conftest import tiny_config
from tests.sisa.data.test_images import digits_folder
from tests.sisa.deletion.test_accept import assert_equals_scratch, layout

IMAGES = {
    "data.image_mode": "L",
    "data.image_size": [10, 10],
    "model.name": "cnn",
    "model.hidden": [4],
    "sisa.epochs": 2,
}
AUGMENTED = IMAGES | {"data.augment": ["crop", "flip"], "data.crop_padding": 2}


@pytest.fixture
def folders(tmp_path):
    """A store trained on a digits image folder; ``drop`` leaves images out of its folder."""

    def make(name="store", drop=frozenset(), groups=False, **overrides):
        root = digits_folder(tmp_path / f"{name}-images", n=90)
        for image_id in drop:
            (root / f"{image_id}.png").unlink()
        url = str(tmp_path / name)
        train(tiny_config(**{"data.source": str(root)} | overrides), url)
        return url

    return make


def test_an_image_store_keeps_uint8_pixels_and_scales_them_in_the_model(folders):
    url = folders(**IMAGES)
    store = SisaStore(url)
    arrays = store.read_data(store.shard_head(0).data)
    assert arrays["X"].dtype == np.uint8 and arrays["X"].shape[1:] == (1, 10, 10)
    assert store.intent()["input_shape"] == [1, 10, 10]
    assert store.config().data.input_scale == pytest.approx(1 / 255)
    assert store.classes() == tuple(f"digit{d}" for d in range(10))
    out = Predictor(url).predict(arrays["X"][:4].astype(np.float32), probabilities=True)
    assert out.probabilities.shape == (4, 10) and out.label_names[0].startswith("digit")


@pytest.mark.parametrize("settings", [IMAGES, AUGMENTED], ids=["plain", "augmented"])
def test_forgetting_images_equals_scratch(folders, settings):
    url = folders(**settings)
    ids, shards, slices = layout(url)
    first = str(ids[(shards == 1) & (slices == 0)][0])
    last = str(ids[(shards == 2) & (slices == 2)][0])
    report = forget(url, [first, last])
    assert sorted(r.shard for r in report.shards) == [1, 2]
    assert_equals_scratch(folders, url, [first, last], **settings)


def test_augmentation_changes_the_weights(folders):
    plain = SisaStore(folders("plain", **IMAGES)).shard_head(0).stages[-1].weights_sha256
    moved = SisaStore(folders("moved", **AUGMENTED)).shard_head(0).stages[-1].weights_sha256
    assert plain != moved


def test_forgetting_the_only_image_of_a_class_keeps_the_classes(folders, tmp_path):
    url = folders(**IMAGES)
    ids = layout(url)[0].tolist()
    lonely = next(i for i in ids if i.startswith("digit9/"))
    others = [i for i in ids if i.startswith("digit9/") and i != lonely]
    forget(url, others)  # digit9 now has one training image left
    forget(url, [lonely])
    store = SisaStore(url)
    assert store.classes()[-1] == "digit9" and store.intent()["num_classes"] == 10
    classes = {"data.classes": [f"digit{d}" for d in range(10)]}
    assert_equals_scratch(folders, url, [lonely, *others], **IMAGES | classes)


def test_augmenting_a_table_is_refused_before_anything_is_written(tmp_path):
    url = tmp_path / "s"
    with pytest.raises(ConfigError, match="data.augment"):
        train(tiny_config(**{"data.augment": ["flip"]}), str(url))
    assert not url.exists()


@pytest.mark.parametrize("odd", ["mode", "size"])
def test_an_odd_image_without_resizing_is_refused_with_nothing_written(tmp_path, odd):
    from PIL import Image

    root = digits_folder(tmp_path / "images", n=20)
    Image.new("RGB" if odd == "mode" else "L", (8, 8) if odd == "mode" else (8, 9)).save(
        root / "digit1" / "odd.png"
    )
    url = str(tmp_path / "store")
    config = IMAGES | {"data.source": str(root), "data.image_size": None}
    with pytest.raises(ValueError, match="odd.png"):
        train(tiny_config(**config), url)
    assert not (tmp_path / "store").exists() or SisaStore(url).files() == []
