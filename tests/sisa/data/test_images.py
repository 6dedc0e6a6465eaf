"""Image folders: IDs from paths, labels from class folders, uint8 pixels, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sisa.data.dataset import DataError
from sisa.data.images import ImageFolder, decode, scan_folder


def digits_folder(root: Path, n: int = 30, size: int = 8) -> Path:
    """sklearn's digits written as PNG files in the <class>/<file> layout."""
    from sklearn.datasets import load_digits

    d = load_digits()
    for i in range(n):
        folder = root / f"digit{d.target[i]}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = (d.images[i] * 16).clip(0, 255).astype(np.uint8)  # [8, 8]
        Image.fromarray(pixels, mode="L").resize((size, size)).save(folder / f"{i:04d}.png")
    return root


def test_ids_are_paths_and_labels_are_class_folders(tmp_path):
    files, classes = scan_folder(str(digits_folder(tmp_path / "img")))
    assert classes == sorted({f.label for f in files}) and classes[0] == "digit0"
    assert [f.id for f in files] == sorted(f.id for f in files)
    assert files[0].id == f"{files[0].label}/{Path(files[0].path).stem}"


def test_pixels_are_uint8_channels_first_and_resized(tmp_path):
    folder = ImageFolder(str(digits_folder(tmp_path / "img")), mode="L", size=(16, 12))
    ids, labels, digest = folder.digest()
    (start, pixels), *_ = folder.chunks(rows=7)
    assert start == 0 and pixels.shape == (7, 1, 16, 12) and pixels.dtype == np.uint8
    assert len(ids) == len(labels) == 30 and labels.max() < len(folder.classes)
    rgb = ImageFolder(str(tmp_path / "img"), mode="RGB", size=(8, 8))
    assert next(rgb.chunks(rows=2))[1].shape == (2, 3, 8, 8)
    assert rgb.digest()[2] != digest  # the mode and size are part of what is hashed


def test_chunks_stream_every_image_once_in_id_order(tmp_path):
    folder = ImageFolder(str(digits_folder(tmp_path / "img")), mode="L")
    parts = list(folder.chunks(rows=8))
    assert [s for s, _ in parts] == [0, 8, 16, 24]
    whole = np.concatenate([p for _, p in parts])
    first = np.asarray(Image.open(folder.files[0].path))
    assert whole.shape[0] == 30 and np.array_equal(whole[0, 0], first)


def test_an_unreadable_image_is_named(tmp_path):
    root = digits_folder(tmp_path / "img", n=5)
    (root / "digit0" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"cannot read image .*broken\.png"):
        ImageFolder(str(root), mode="L").digest()


def test_an_image_of_another_size_is_refused_when_not_resizing(tmp_path):
    root = digits_folder(tmp_path / "img", n=5)
    Image.new("L", (9, 8)).save(root / "digit0" / "wide.png")
    with pytest.raises(DataError, match="is 9x8, not 8x8 like the first; set data.image_size"):
        ImageFolder(str(root), mode="L").digest()
    assert len(ImageFolder(str(root), mode="L", size=(8, 8)).digest()[0]) == 6


def test_the_layout_is_checked(tmp_path):
    with pytest.raises(DataError, match="no such image folder"):
        scan_folder(str(tmp_path / "missing"))
    (tmp_path / "flat").mkdir()
    Image.new("L", (4, 4)).save(tmp_path / "flat" / "a.png")
    with pytest.raises(DataError, match="not in the <class>/<file> layout"):
        scan_folder(str(tmp_path / "flat"))
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(DataError, match="no .png/.jpg/.jpeg images"):
        scan_folder(str(tmp_path / "empty"))


def test_decode_converts_modes(tmp_path):
    path = tmp_path / "c.png"
    Image.new("RGB", (3, 2), (10, 20, 30)).save(path)
    rgb = decode(path.read_bytes(), str(path), "RGB", None)
    assert rgb.shape == (3, 2, 3) and rgb[:, 0, 0].tolist() == [10, 20, 30]
    assert decode(path.read_bytes(), str(path), "L", (2, 3)).shape == (1, 2, 3)


def test_an_image_of_another_mode_is_refused_when_not_resizing(tmp_path):
    path = tmp_path / "c.png"
    Image.new("RGB", (3, 2)).save(path)
    with pytest.raises(DataError, match=r"c\.png' has colour mode 'RGB', not data.image_mode 'L'"):
        decode(path.read_bytes(), str(path), "L", None)
    root = digits_folder(tmp_path / "img", n=5)  # grey digits, one colour image among them
    Image.new("RGB", (8, 8)).save(root / "digit0" / "colour.png")
    with pytest.raises(DataError, match="colour.png' has colour mode 'RGB'.*set data.image_size"):
        ImageFolder(str(root), mode="L").digest()
    assert len(ImageFolder(str(root), mode="L", size=(8, 8)).digest()[0]) == 6
