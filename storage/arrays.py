"""Bytes for named numpy arrays (data shards, ID lists), in the standard ``.npz`` layout.

Object arrays are refused on both ends: they can only be stored by pickling, and unpickling
bytes from a store would let whoever can write the store run code in every reader.

Encoding is deterministic (sorted members, fixed timestamps, no compression), so equal arrays
give equal bytes and therefore equal sha256 in a manifest.
"""

from __future__ import annotations

import io
import zipfile

import numpy as np

# zip needs a timestamp; a constant keeps the bytes a pure function of the arrays.
_EPOCH = (1980, 1, 1, 0, 0, 0)


def encode_arrays(arrays: dict[str, np.ndarray]) -> bytes:
    """Write arrays as an uncompressed ``.npz`` readable by ``np.load``.

    Raises ValueError naming the array if any has an object dtype (or object fields).
    """
    prepared: dict[str, np.ndarray] = {}
    for name, value in arrays.items():
        if not isinstance(name, str) or not name or name.startswith("/"):
            raise ValueError(f"array name {name!r} must be a non-empty relative string")
        arr = np.asarray(value)
        if arr.dtype.hasobject:
            raise ValueError(
                f"array {name!r} has object dtype {arr.dtype}; object arrays would need pickle "
                "(convert IDs to a fixed-width str dtype, e.g. np.array(ids, dtype=str))"
            )
        prepared[name] = arr
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name in sorted(prepared):
            info = zipfile.ZipInfo(name + ".npy", date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_STORED
            info.external_attr = 0o644 << 16
            with zf.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, prepared[name], allow_pickle=False)
    return buf.getvalue()


def decode_arrays(data: bytes) -> dict[str, np.ndarray]:
    """Read ``.npz`` bytes into a plain dict of fully loaded arrays; never unpickles."""
    try:
        loaded = np.load(io.BytesIO(bytes(data)), allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ValueError(f"not a readable .npz payload: {exc}") from exc
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise ValueError("payload is a single .npy array, not an .npz archive of named arrays")
    with loaded as npz:
        try:
            return {name: npz[name] for name in npz.files}
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise ValueError(f"not a readable .npz payload: {exc}") from exc
