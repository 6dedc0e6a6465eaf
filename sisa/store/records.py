"""What a head document records, as typed records: its data artifact and its stage checkpoints.

A head body stays a JSON object on disk, written exactly as before; these records are how
code reads and writes its parts. ``to_body`` gives the JSON form, ``from_body`` reads it
back (including heads written by earlier versions, which may lack the optional fields).
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
        return cls(
            dir=str(body["dir"]),
            manifest=str(body["manifest"]),
            n=int(body["n"]),
            x_files=tuple(body.get("x_files", DEFAULT_X_FILES)),
        )


# the stage metadata a head copies into each stage's record, in the order it writes them
_STAGE_META = ("stage", "ids_hash", "parent", "state_hash", "n", "samples", "step", "fingerprint")


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
    present: frozenset[str] = field(default=frozenset(_STAGE_META), compare=False, repr=False)

    def to_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "dir": self.dir,
            "manifest": self.manifest,
            "weights_sha256": self.weights_sha256,
        }
        for key in _STAGE_META:
            if key in self.present:
                body[key] = getattr(self, key)
        return body

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> StageRef:
        """Also builds one from a stage's own metadata (which holds more than a head keeps)."""
        present = frozenset(k for k in _STAGE_META if k in body)
        return cls(
            dir=str(body["dir"]),
            manifest=str(body["manifest"]),
            weights_sha256=str(body["weights_sha256"]),
            present=present,
            **{k: body[k] for k in present},
        )
