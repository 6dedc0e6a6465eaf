"""A part's data artifact, written as it streams in, and the record a head keeps of it."""

from __future__ import annotations

from typing import Any

import numpy as np

from sisa.store.layout import DEFAULT_X_FILES, IDS_FILE, x_file
from sisa.store.records import DataRef
from storage import ArtifactWriter, Manifest, Store, encode_arrays


def data_ref(rel_dir: str, manifest: Manifest) -> DataRef:
    """What a head records of a committed data artifact."""
    names = manifest.meta.get("x_files", list(DEFAULT_X_FILES))
    return DataRef(
        dir=rel_dir, manifest=manifest.sha256, n=manifest.meta["n"], x_files=tuple(names)
    )


class DataWriter:
    """One part's data, written as it streams in: each appended chunk's features become
    a file ``X-00000.npz``, ``X-00001.npz``...; IDs, labels and groups (a few bytes per
    point) are kept and written with the manifest by ``commit``. Readers concatenate the
    feature files in order, so the rows are those of one ``write_data`` of the same arrays.
    """

    def __init__(
        self,
        fs: Store,
        rel_dir: str,
        empty: dict[str, np.ndarray],
        *,
        single: bool = False,
    ) -> None:
        self.rel_dir = rel_dir
        self._writer = ArtifactWriter(fs, rel_dir)
        self._small: dict[str, list[np.ndarray]] = {k: [v] for k, v in empty.items() if k != "X"}
        self._empty_x = empty["X"]  # [0, *feature_shape]
        self._single = single  # one append, named X.npz as write_data always did
        self._names: list[str] = []

    def append(self, arrays: dict[str, np.ndarray]) -> None:
        """Add rows (``ids``, ``y``, ``X``, maybe ``groups``); an empty chunk adds nothing."""
        if set(arrays) != set(self._small) | {"X"}:
            raise ValueError(f"expected arrays {sorted(self._small) + ['X']}, got {sorted(arrays)}")
        if self._single and self._names:
            raise ValueError("a single-file data writer takes one append")
        if len(arrays["ids"]) == 0 and not self._single:
            return
        name = DEFAULT_X_FILES[0] if self._single else x_file(len(self._names))
        self._writer.add(name, encode_arrays({"X": arrays["X"]}))
        self._names.append(name)
        for key, chunks in self._small.items():
            chunks.append(arrays[key])

    def commit(self, ids_hash: str) -> DataRef:
        """Write the IDs and the manifest (the commit); return the data's ref."""
        if not self._names:
            self._append_empty()
        small = {k: np.concatenate(v) for k, v in self._small.items()}
        self._writer.add(IDS_FILE, encode_arrays(small))
        meta: dict[str, Any] = {"ids_hash": ids_hash, "n": int(len(small["ids"]))}
        if tuple(self._names) != DEFAULT_X_FILES:
            meta["x_files"] = self._names
        return data_ref(self.rel_dir, self._writer.commit(meta))

    def _append_empty(self) -> None:
        name = DEFAULT_X_FILES[0] if self._single else x_file(0)
        self._writer.add(name, encode_arrays({"X": self._empty_x}))
        self._names.append(name)
