"""Image manifests: a CSV or Parquet table naming each point's image file gives the pixels
an image folder gives, scaled alike; forgetting equals scratch; a manifest that does not fit
(a missing image file, a missing column, a path missing) is refused with nothing written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sisa.config import build_config
from sisa.data.dataset import DataError
from sisa.data.manifest import ImageManifestSource
from sisa.data.sources import ImageFolderSource, open_source
from sisa.deletion.accept import forget
from sisa.store.artifacts import SisaStore
from sisa.training.train import train
from tests.conftest import tiny_config
from tests.sisa.data.test_images import digits_folder
from tests.sisa.data.test_images_exact import IMAGES
from tests.sisa.deletion.test_accept import assert_equals_scratch, layout

MANIFEST = {"data.image_column": "file", "data.id_column": "image_id", "data.label_column": "digit"}


def write_manifest(path: Path, images: Path, drop=frozenset()) -> Path:
    """A manifest of an image folder's files beside it (``<class>/<file>`` paths relative to
    the manifest's folder), in the folder's ID order, with a group per 3 images."""
    files = sorted(p.relative_to(images).as_posix() for p in images.rglob("*.png"))
    rows = [f for f in files if f.removesuffix(".png") not in drop]
    frame = pd.DataFrame(
        {
            "image_id": [f.removesuffix(".png") for f in rows],
            "digit": [f.split("/")[0] for f in rows],
            "group": [f"g{int(f[-8:-4]) // 3}" for f in rows],
            "file": [f"{images.name}/{f}" for f in rows],
            "notes": ["never read"] * len(rows),
        }
    )
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path)
    return path


@pytest.mark.parametrize("ext", ["csv", "parquet"])
def test_a_manifest_gives_what_the_image_folder_gives(tmp_path: Path, ext: str) -> None:
    images = digits_folder(tmp_path / "img", n=30)
    manifest = write_manifest(tmp_path / f"m.{ext}", images)
    settings = {"data.image_mode": "L", "data.image_size": [10, 10]}
    data = build_config({}, MANIFEST | settings | {"data.source": str(manifest)}).data
    source = open_source(data, 0)
    assert isinstance(source, ImageManifestSource)
    folder = ImageFolderSource(data.model_copy(update={"source": str(images)}))
    index, by_folder = source.index(), folder.index()
    assert np.array_equal(index.ids, by_folder.ids) and np.array_equal(index.y, by_folder.y)
    assert index.classes == by_folder.classes and index.feature_shape == (1, 10, 10)
    assert index.groups is not None and index.groups[0] == "g0"
    pixels = np.concatenate([X for _, X in source.chunks(rows=7)])
    assert pixels.dtype == np.uint8
    assert np.array_equal(pixels, np.concatenate([X for _, X in folder.chunks(rows=30)]))


def test_forgetting_from_an_image_manifest_equals_scratch(tmp_path):
    images = digits_folder(tmp_path / "img", n=90)

    def make(name="store", drop=frozenset(), groups=False, **overrides):
        manifest = write_manifest(tmp_path / f"{name}.csv", images, drop=set(drop))
        url = str(tmp_path / name)
        train(tiny_config(**MANIFEST | IMAGES | {"data.source": str(manifest)} | overrides), url)
        return url

    url = make()
    store = SisaStore(url)
    assert store.config().data.input_scale == pytest.approx(1 / 255)  # as for a folder
    assert store.read_data(store.shard_head(0).data)["X"].dtype == np.uint8
    ids, shards, slices = layout(url)
    first = str(ids[(shards == 1) & (slices == 0)][0])
    last = str(ids[(shards == 2) & (slices == 2)][0])
    report = forget(url, [first, last])
    assert sorted(r.shard for r in report.shards) == [1, 2]
    # a class may lose its only image: the scratch store keeps the recorded vocabulary
    classes = {"data.classes": list(store.classes())}
    assert_equals_scratch(make, url, [first, last], **classes)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ("delete image", r"no image file 'img/digit1/0001.png' \(ID 'digit1/0001', column 'file'"),
        ("drop file", r"missing column 'file' \(data\.image_column; the columns are"),
        ("drop digit", r"missing column 'digit' \(data\.label_column"),
        ("blank path", r"missing image paths \(column 'file', data\.image_column\) at IDs"),
        ("not an image", r"cannot read image .*0002\.png"),
    ],
)
def test_a_manifest_that_does_not_fit_is_refused_with_nothing_written(
    tmp_path: Path, change: str, match: str
) -> None:
    images = digits_folder(tmp_path / "img", n=12)
    manifest = write_manifest(tmp_path / "m.csv", images)
    frame = pd.read_csv(manifest, dtype=str)
    if change == "delete image":
        (images / "digit1" / "0001.png").unlink()
    elif change.startswith("drop"):
        frame.drop(columns=[change.split()[1]]).to_csv(manifest, index=False)
    elif change == "blank path":
        frame.assign(file=frame["file"].where(frame.index != 4)).to_csv(manifest, index=False)
    else:
        (images / "digit2" / "0002.png").write_bytes(b"not a png")
    url = str(tmp_path / "store")
    with pytest.raises(DataError, match=match):
        train(tiny_config(**MANIFEST | IMAGES | {"data.source": str(manifest)}), url)
    assert not Path(url).exists() or SisaStore(url).files() == []


def test_a_manifest_source_must_be_a_table(tmp_path: Path) -> None:
    images = digits_folder(tmp_path / "img", n=4)
    with pytest.raises(DataError, match="must be a .csv or .parquet table of image paths"):
        open_source(build_config({}, MANIFEST | {"data.source": str(images)}).data, 0)
