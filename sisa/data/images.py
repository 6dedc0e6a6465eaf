"""Images as a source: a folder in the ``<class>/<file>`` layout, read one file at a time.

A point's ID is its path below the folder without the extension (``cat/0007``), its label
the folder it sits in. The classes are the folder names, sorted: a fixed vocabulary, which
a deletion never changes. Each image is decoded with Pillow, converted to ``mode`` (``RGB``
or ``L``) and, when ``size`` is given, resized to it (bilinear, deterministic); without a
size every image must already have the size of the first. Pixels are stored as uint8
``[C, H, W]``, four times smaller than float32; training scales them to [0, 1] per batch.

The index pass decodes every image once to check it, so a bad file fails before anything
is written; the features pass decodes them again, a chunk at a time. Neither holds the
folder's pixels whole.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import fsspec
import numpy as np

from sisa.data.dataset import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
Mode = Literal["RGB", "L"]


@dataclass(frozen=True)
class ImageFile:
    id: str  # path below the folder, without the extension
    label: str  # the class folder
    path: str  # the file, as fsspec reads it


def scan_folder(root: str) -> tuple[list[ImageFile], list[str]]:
    """The image files of ``root`` sorted by ID, and the sorted class names. Files outside a
    class folder, or nested deeper, are refused: their label would be a guess."""
    fs, base = fsspec.core.url_to_fs(root)
    base = base.rstrip("/")
    if not fs.isdir(base):
        raise DataError(f"no such image folder: {root!r}")
    files, seen = [], set()
    for path in sorted(fs.find(base)):
        rel = path[len(base) + 1 :]
        stem, dot, suffix = rel.rpartition(".")
        if not dot or f".{suffix.lower()}" not in IMAGE_SUFFIXES:
            continue
        parts = stem.split("/")
        if len(parts) != 2:
            raise DataError(
                f"{rel!r} is not in the <class>/<file> layout of an image folder "
                f"(every image sits in the folder of its class)"
            )
        if stem in seen:
            raise DataError(f"two images share the ID {stem!r} (same name, other extension)")
        seen.add(stem)
        files.append(ImageFile(stem, parts[0], path))
    if not files:
        raise DataError(f"no {'/'.join(IMAGE_SUFFIXES)} images in {root!r}")
    return files, sorted({f.label for f in files})


def decode(data: bytes, where: str, mode: Mode, size: tuple[int, int] | None) -> np.ndarray:
    """One image as uint8 ``[C, H, W]``; ``size`` is (height, width). Raises ``DataError``
    naming the file for an unreadable image. Resizing converts the colour mode as well;
    with resizing off (no ``size``) the pixels are stored as they are, so an image of
    another mode is refused, as is one of another size (``PixelReader``)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            found = image.mode
            converted = image.convert(mode)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"cannot read image {where!r}: {exc}") from None
    if size is None and found != mode:
        raise DataError(
            f"image {where!r} has colour mode {found!r}, not data.image_mode {mode!r}; "
            "set data.image_size to convert and resize every image, or convert the files"
        )
    if size is not None and converted.size != (size[1], size[0]):
        converted = converted.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    pixels = np.asarray(converted, dtype=np.uint8)  # [H, W] or [H, W, C]
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))  # [C, H, W]


class PixelReader:
    """Images decoded one at a time into uint8 ``[C, H, W]`` of one shape: ``size`` when
    given, else the first image's (a batch must stack). Shared by image folders and
    manifests (``sisa.data.manifest``), so both decode alike."""

    def __init__(self, mode: Mode = "RGB", size: tuple[int, int] | None = None) -> None:
        self.mode, self.size = mode, size
        self.shape: tuple[int, int, int] | None = None  # [C, H, W], known after one image

    def read(self, data: bytes, where: str) -> np.ndarray:
        pixels = decode(data, where, self.mode, self.size)
        if self.shape is None:
            self.shape = tuple(pixels.shape)  # type: ignore[assignment]
        elif pixels.shape != self.shape:
            raise DataError(
                f"image {where!r} is {pixels.shape[2]}x{pixels.shape[1]}, not "
                f"{self.shape[2]}x{self.shape[1]} like the first; set data.image_size to "
                "resize every image"
            )
        return pixels


class ImageFolder:
    """An image folder read as a source: ``index`` checks every image, ``chunks`` streams
    their pixels in ID order."""

    def __init__(self, root: str, *, mode: Mode = "RGB", size: tuple[int, int] | None = None):
        self.root, self.mode, self.size = root, mode, size
        self.files, self.classes = scan_folder(root)
        self._fs = fsspec.core.url_to_fs(root)[0]
        self._pixels = PixelReader(mode, size)

    @property
    def shape(self) -> tuple[int, int, int] | None:
        """[C, H, W] of every image, known after one was read."""
        return self._pixels.shape

    def read(self, file: ImageFile) -> np.ndarray:
        return self._pixels.read(self._fs.cat_file(file.path), file.path)

    def digest(self) -> tuple[np.ndarray, np.ndarray, str]:
        """IDs [n], labels [n] (class indices) and the sha256 of every decoded pixel, in ID
        order; reads every image once."""
        sha = hashlib.sha256(f"sisa-images:{self.mode}:{self.size}".encode())
        for file in self.files:
            sha.update(file.id.encode() + b"\0" + file.label.encode() + b"\0")
            sha.update(self.read(file).tobytes())
        ids = np.array([f.id for f in self.files])
        labels = np.array([self.classes.index(f.label) for f in self.files], dtype=np.int64)
        return ids, labels, sha.hexdigest()

    def chunks(self, rows: int) -> Iterator[tuple[int, np.ndarray]]:
        """``(start, pixels [m, C, H, W])`` for consecutive runs of ``rows`` images."""
        for start in range(0, len(self.files), rows):
            batch = [self.read(f) for f in self.files[start : start + rows]]
            yield start, np.stack(batch)
