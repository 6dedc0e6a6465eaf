"""What a head document records, as typed records: its data artifact and its stage checkpoints.

A head body stays a JSON object on disk, written exactly as before; these records are how
code reads and writes its parts. ``from_body`` reads one, checking the types of what it
reads (a ``ValueError`` names the field), and ``to_body`` writes it back key for key: a
field that the body did not hold stays absent, one that was ``null`` stays ``null``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sisa.store.layout import DEFAULT_X_FILES


@dataclass(frozen=True, kw_only=True)
class DataRef:
    """A committed data artifact: one part's IDs, labels, groups and features."""

    dir: str  # the artifact's folder
    manifest: str  # sha256 of its manifest, which holds every file's sha256
    n: int  # rows
    x_files: tuple[str, ...] = DEFAULT_X_FILES  # feature files, in row order

    def to_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"dir": self.dir, "manifest": self.manifest, "n": self.n}
        if self.x_files != DEFAULT_X_FILES:
            body["x_files"] = list(self.x_files)
        return body

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> DataRef:
        x_files = body.get("x_files", list(DEFAULT_X_FILES))
        if not (isinstance(x_files, list) and x_files and all(_is(str, f) for f in x_files)):
            raise ValueError(f"data record: x_files must be a list of names, not {x_files!r}")
        return cls(
            dir=_field(body, "dir", str),
            manifest=_field(body, "manifest", str),
            n=_field(body, "n", int),
            x_files=tuple(x_files),
        )


# the stage metadata a head copies into each stage's record, in the order it writes them;
# later keys go at the end (older heads lack them and are written back without them)
_STAGE_META = (
    "stage",
    "ids_hash",
    "parent",
    "state_hash",
    "n",
    "samples",
    "step",
    "fingerprint",
    "loss",
    "accuracy",
)


@dataclass(frozen=True, kw_only=True)
class StageRef:
    """A committed stage checkpoint: the model after ``stage`` slices of one shard."""

    dir: str  # the artifact's folder
    manifest: str  # sha256 of its manifest
    weights_sha256: str  # of weights.safetensors
    stage: int  # slices seen, 1..R
    ids_hash: str | None = None  # of the IDs of slices 1..stage, in training order
    parent: str | None = None  # state_hash of the stage it continued; None for stage 1
    state_hash: str | None = None  # of weights and optimizer state together
    n: int | None = None  # points in slices 1..stage
    samples: int | None = None  # samples trained on since stage 0
    step: int | None = None  # optimizer steps since stage 0
    fingerprint: dict[str, Any] | None = None  # the environment that trained it
    loss: float | None = None  # mean training loss of the stage (None: not finite)
    accuracy: float | None = None  # on slices 1..stage, when optim.stage_accuracy asked
    # the optional fields the body held (``None`` in one it held means ``null``); a record
    # built in code holds them all
    present: frozenset[str] = field(default=frozenset(_STAGE_META), repr=False)

    def to_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "dir": self.dir,
            "manifest": self.manifest,
            "weights_sha256": self.weights_sha256,
        }
        for key in _STAGE_META:
            value = getattr(self, key)
            if key in self.present or value is not None:  # set since (dataclasses.replace)
                body[key] = value
        return body

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> StageRef:
        """Also builds one from a stage's own metadata (which holds more than a head keeps)."""
        present = frozenset(k for k in _STAGE_META if k in body)
        for key, kind in _STAGE_TYPES.items():
            if key in present and body[key] is not None and not _is(kind, body[key]):
                raise ValueError(f"stage record: {key} must be {kind.__name__}, not {body[key]!r}")
        return cls(
            dir=_field(body, "dir", str),
            manifest=_field(body, "manifest", str),
            weights_sha256=_field(body, "weights_sha256", str),
            present=present,
            **{k: body[k] for k in present},
        )


_STAGE_TYPES = {
    "stage": int,
    "ids_hash": str,
    "parent": str,
    "state_hash": str,
    "n": int,
    "samples": int,
    "step": int,
    "fingerprint": dict,
    "loss": float,
    "accuracy": float,
}


def _is(kind: type, value: Any) -> bool:
    if isinstance(value, bool):
        return kind is bool
    if kind is float:  # JSON may write a whole float as an integer
        return isinstance(value, int | float)
    return isinstance(value, kind)


def _field(body: dict[str, Any], key: str, kind: type) -> Any:
    """``body[key]``, which must be of type ``kind`` (a missing key is a ``KeyError``)."""
    value = body[key]
    if not _is(kind, value):
        raise ValueError(f"head record: {key} must be {kind.__name__}, not {value!r}")
    return value
