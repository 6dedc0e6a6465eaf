"""Exactness over an image folder, with augmentation: after forgetting images (first slice,
last slice, the only image of a class) every shard is bitwise what training from scratch on
the folder without those files gives, and ``verify`` agrees."""

from __future__ import annotations

import numpy as np
import pytest

from sisa.config import ConfigError
from sisa.deletion.accept import forget
from sisa.evidence.status import status
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


def jpeg_folder(root, n: int = 90):
    """The digits folder with every image as JPEG: ``.jpg`` for even file numbers, ``.jpeg``
    for odd ones (IDs stay ``digit3/0007``)."""
    from PIL import Image

    digits_folder(root, n=n)
    for png in sorted(root.rglob("*.png")):
        ext = ".jpg" if int(png.stem) % 2 == 0 else ".jpeg"
        Image.open(png).save(png.with_suffix(ext), quality=90)
        png.unlink()
    return root


def test_a_jpeg_folder_trains_and_forgetting_equals_scratch(tmp_path):
    def make(name="store", drop=frozenset(), groups=False, **overrides):
        root = jpeg_folder(tmp_path / f"{name}-images")
        for image_id in drop:
            (file,) = root.glob(f"{image_id}.jp*g")
            file.unlink()
        url = str(tmp_path / name)
        train(tiny_config(**{"data.source": str(root)} | overrides), url)
        return url

    url = make(**IMAGES)
    store = SisaStore(url)
    arrays = store.read_data(store.shard_head(0).data)
    assert arrays["X"].dtype == np.uint8 and arrays["X"].shape[1:] == (1, 10, 10)
    ids, shards, slices = layout(url)
    number = np.array([int(i[-4:]) for i in ids])  # [n] even: .jpg, odd: .jpeg
    info = status(url)
    assert info["points"] + info["test_points"] == 90  # every .jpg and .jpeg file was read
    assert set(number % 2) == {0, 1}
    first = str(ids[(shards == 1) & (slices == 0) & (number % 2 == 0)][0])  # a .jpg
    last = str(ids[(shards == 2) & (slices == 2) & (number % 2 == 1)][0])  # a .jpeg
    report = forget(url, [first, last])
    assert sorted(r.shard for r in report.shards) == [1, 2]
    assert_equals_scratch(make, url, [first, last], **IMAGES)


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


@pytest.mark.parametrize("name", ["broken.png", "broken.jpg"])
def test_an_unreadable_image_in_a_folder_is_refused_by_name_with_nothing_written(tmp_path, name):
    from sisa.data.dataset import DataError

    root = digits_folder(tmp_path / "images", n=20)
    (root / "digit3" / name).write_bytes(b"\xff\xd8 not an image")
    url = str(tmp_path / "store")
    with pytest.raises(DataError, match=rf"cannot read image .*digit3/{name}"):
        train(tiny_config(**{"data.source": str(root)} | IMAGES), url)
    assert not (tmp_path / "store").exists() or SisaStore(url).files() == []
