"""Point IDs and the keyed hashes that place, order and split points.

Everything in SISA is keyed by a point's ID, never by its row position. A point's shard,
slice, train/test side and its place in every epoch's order are functions of a keyed hash
of its own ID, so removing one point never moves another.

Two hash families live here:

* ``fingerprints`` + ``keyed``: fast, vectorised 64-bit hashes for layout and ordering.
  An ID is reduced once to a 64-bit fingerprint of its canonical bytes; each use then
  mixes the fingerprint with a context key (seed, shard, stage, epoch...) by splitmix64.
* ``salted_hash``: a keyed BLAKE2b digest for records that outlive the data (tombstones,
  receipts). It is one-way without the salt.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence

import numpy as np

ID = int | str

_INT_TAG = np.uint64(0x9E3779B97F4A7C15)


def canonical_id(value: object) -> ID:
    """Return ``value`` as a plain ``int`` or ``str`` ID, or raise ``TypeError``.

    numpy integers become ``int``; bools, floats and everything else are rejected, since a
    float ID such as ``1.0`` would silently collide with ``1``.
    """
    if isinstance(value, bool | np.bool_):
        raise TypeError(f"ID {value!r} is a bool; IDs are ints or strings")
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, str | np.str_):
        return str(value)
    raise TypeError(f"ID {value!r} has type {type(value).__name__}; IDs are ints or strings")


def as_id_array(values: Iterable[object] | np.ndarray) -> np.ndarray:
    """Return IDs as a 1-D numpy array: ``int64`` for integer IDs, unicode for strings.

    Mixed int/str collections are rejected: ``1`` and ``"1"`` would be easy to confuse.
    """
    arr = np.asarray(values if isinstance(values, np.ndarray) else list(values))
    if arr.ndim != 1:
        raise ValueError(f"IDs must be one-dimensional, got shape {arr.shape}")
    if arr.size == 0 or arr.dtype.kind in "iu":
        return arr.astype(np.int64)
    if arr.dtype.kind == "U":
        return arr
    if arr.dtype.kind == "O":
        kinds = {type(canonical_id(v)) for v in arr}
        if len(kinds) > 1:
            raise TypeError("IDs mix integers and strings; use one type for all IDs")
        return arr.astype(np.int64) if kinds == {int} else arr.astype(str)
    raise TypeError(f"IDs have dtype {arr.dtype}; IDs are integers or strings")


def id_bytes(value: ID) -> bytes:
    """Canonical bytes of one ID: type-tagged so that ``7`` and ``"7"`` differ."""
    value = canonical_id(value)
    if isinstance(value, int):
        return b"i" + str(value).encode()
    return b"s" + value.encode("utf-8")


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on a uint64 array (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def fingerprints(ids: np.ndarray) -> np.ndarray:
    """Return a uint64 fingerprint per ID. [n] -> [n].

    Integer IDs are mixed in one vectorised pass; string IDs take one BLAKE2b each.
    """
    ids = as_id_array(ids)
    if ids.dtype.kind in "iu":
        return _splitmix64(ids.astype(np.int64).view(np.uint64) ^ _INT_TAG)
    out = np.empty(ids.shape[0], dtype=np.uint64)
    for i, value in enumerate(ids.tolist()):
        digest = hashlib.blake2b(b"s" + value.encode("utf-8"), digest_size=8).digest()
        out[i] = int.from_bytes(digest, "little")
    return out


def context_key(*parts: object) -> np.uint64:
    """A 64-bit key for a context such as ``(seed, "order", shard, stage, epoch)``."""
    text = "\x1f".join(repr(p) for p in parts).encode()
    return np.uint64(int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little"))


def keyed(fps: np.ndarray, *context: object, secret: bytes | None = None) -> np.ndarray:
    """Keyed 64-bit hash of each fingerprint under ``context``. [n] uint64 -> [n] uint64.

    With a ``secret`` it is a pseudorandom function of the fingerprint (keyed BLAKE2b, one
    call per point): whoever lacks the secret cannot compute it, even knowing the seed and
    the context. That is how a store keyed by a secret outside it places its points.
    """
    if secret is None:
        return _splitmix64(_splitmix64(fps ^ context_key(*context)))
    tag = "\x1f".join(repr(p) for p in context).encode()
    raw = np.ascontiguousarray(fps, dtype="<u8").tobytes()  # 8 bytes per fingerprint
    out = np.empty(len(fps), dtype=np.uint64)
    for i in range(len(fps)):
        digest = hashlib.blake2b(raw[8 * i : 8 * i + 8] + tag, key=secret, digest_size=8)
        out[i] = int.from_bytes(digest.digest(), "little")
    return out


def bucket(
    fps: np.ndarray, buckets: int, *context: object, secret: bytes | None = None
) -> np.ndarray:
    """Assign each fingerprint to one of ``buckets`` buckets under ``context``. -> [n] int64."""
    return (keyed(fps, *context, secret=secret) % np.uint64(buckets)).astype(np.int64)


def unit_interval(fps: np.ndarray, *context: object, secret: bytes | None = None) -> np.ndarray:
    """Map each fingerprint to a float in [0, 1) under ``context``. -> [n] float64."""
    values = keyed(fps, *context, secret=secret) >> np.uint64(11)
    return values.astype(np.float64) / float(1 << 53)


def hash_order(fps: np.ndarray, *context: object) -> np.ndarray:
    """The order of points under ``context``: indices sorted by keyed hash, ties by fingerprint.

    The relative order of any two points depends on those two points alone, so removing a
    point never changes the order of the others (unlike ``randperm(n)``).
    """
    return np.lexsort((fps, keyed(fps, *context)))


def salted_hash(salt: bytes, value: ID) -> str:
    """Hex BLAKE2b-128 of an ID keyed by ``salt``: a record of a point that does not hold it."""
    return hashlib.blake2b(id_bytes(value), key=salt, digest_size=16).hexdigest()


def salted_hashes(salt: bytes, values: Sequence[ID] | np.ndarray) -> list[str]:
    """``salted_hash`` for many IDs."""
    return [salted_hash(salt, v) for v in as_id_array(values).tolist()]


def seed_from(*parts: object) -> int:
    """A 63-bit seed for ``torch.manual_seed`` derived from a position such as
    ``(seed, "step", shard, stage, epoch, step)``."""
    return int(context_key(*parts)) & ((1 << 63) - 1)


def id_set_hash(ids: np.ndarray, key: bytes | None = None) -> str:
    """Hash of a set of IDs, independent of their order: what a checkpoint trained on.
    sha256, or keyed BLAKE2b under ``key`` (an encrypted store's ID-hash key, kept outside
    the store, so that the store alone cannot confirm a guessed set)."""
    return fingerprint_set_hash(fingerprints(ids), key)


def fingerprint_set_hash(fps: np.ndarray, key: bytes | None = None) -> str:
    """``id_set_hash`` of the IDs whose fingerprints are ``fps``."""
    data = np.sort(fps).tobytes()
    if key is None:
        return hashlib.sha256(data).hexdigest()
    return hashlib.blake2b(data, key=key, digest_size=32).hexdigest()


_WORD = re.compile(r"[^\s()\[\]{}<>\"',;|]+")
_NUMBER = re.compile(r"(?<![0-9])-?[0-9]+(?![0-9])")


def id_candidates(text: str) -> list[ID]:
    """Every substring of free text that could be an ID: words between spaces, brackets,
    quotes and separators (with trailing ``.:!?`` stripped), their alphanumeric runs, and
    every integer. Used to keep IDs out of text a store keeps (reasons) and to find them."""
    words = set(_WORD.findall(text))
    words |= {piece for w in words for piece in re.split(r"[:/=#&+]", w)}
    words |= {w.rstrip(".:!?") for w in words}
    words |= {run for w in words for run in re.findall(r"[^\W_]+", w)}
    numbers = {int(n) for n in _NUMBER.findall(text) if -(2**63) <= int(n) < 2**63}
    return [w for w in words if w] + sorted(numbers)


_INT_TEXT = re.compile(r"-?[0-9]+")  # ASCII digits only: "２０" is not 20


def typed_ids(values: Iterable[object], id_kind: str, what: str = "ID") -> list[ID]:
    """IDs as typed by a user (text, or JSON numbers) as the store's ID type.

    Integer stores take 64-bit integers, or text that spells one; text stores take text
    (a number becomes its decimal text). Booleans, empty text and NUL are refused."""
    out: list[ID] = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ValueError(f"malformed {what} {value!r}: must be an integer or text")
        if value == "" or (isinstance(value, str) and "\x00" in value):
            raise ValueError(f"malformed {what} {value!r}")
        if id_kind != "int":
            out.append(str(value))
            continue
        if isinstance(value, str) and not _INT_TEXT.fullmatch(value):
            raise ValueError(
                f"{what} {value!r} is not a 64-bit integer; this store's {what}s are integers"
            )
        number = int(value)
        if not -(2**63) <= number < 2**63:
            raise ValueError(f"{what} {value!r} is not a 64-bit integer")
        out.append(number)
    return out
