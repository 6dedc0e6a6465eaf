"""Bytes for model weights and training state, plus the hashes that prove bitwise identity.

Weights use safetensors (no code execution on load). Optimizer state and counters need nested
containers, so they use torch's format but are only ever loaded with ``weights_only=True``:
tensors, primitives and containers come back, arbitrary pickled objects are refused.

Exact unlearning is checked by comparing :func:`tensor_hashes` of a retrained model with those
of a model trained from scratch, so the hash covers dtype, shape and every raw byte (the bit
patterns of -0.0 and NaN payloads included).
"""

from __future__ import annotations

import hashlib
import io
import pickle
from typing import TYPE_CHECKING

from storage.commit import canonical_json

if TYPE_CHECKING:  # imported where tensors are handled: reading documents needs no torch
    import torch


def encode_weights(state: dict[str, torch.Tensor]) -> bytes:
    """Serialize a flat name->tensor mapping with safetensors.

    Tensors are copied to contiguous CPU memory first, which also unties shared storage
    (tied embeddings) that safetensors would otherwise refuse.
    """
    import safetensors.torch

    tensors = {name: _dense_cpu(name, t, copy=True) for name, t in state.items()}
    return safetensors.torch.save(tensors)


def decode_weights(data: bytes) -> dict[str, torch.Tensor]:
    """Load tensors written by :func:`encode_weights`."""
    import safetensors.torch

    try:
        return dict(safetensors.torch.load(bytes(data)))
    except Exception as exc:  # safetensors raises its own error types for malformed input
        raise ValueError(f"not a valid safetensors payload: {exc}") from exc


def encode_state(obj: object) -> bytes:
    """Serialize optimizer state and counters (dicts, lists, numbers, tensors) with torch."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def decode_state(data: bytes) -> object:
    """Load :func:`encode_state` bytes without ever unpickling arbitrary objects."""
    import torch

    try:
        return torch.load(io.BytesIO(bytes(data)), weights_only=True, map_location="cpu")
    except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
        raise ValueError(f"refusing to load training state: {exc}") from exc


def tensor_hashes(state: dict[str, torch.Tensor]) -> dict[str, str]:
    """Per-tensor sha256 over dtype, shape and raw bytes; equal hashes mean bitwise equality."""
    return {name: _tensor_hash(name, t) for name, t in sorted(state.items())}


def state_hash(state: dict[str, torch.Tensor]) -> str:
    """One sha256 over the name-sorted per-tensor hashes (names included, so order is fixed)."""
    return hashlib.sha256(canonical_json(tensor_hashes(state))).hexdigest()


def _dense_cpu(name: str, tensor: torch.Tensor, copy: bool) -> torch.Tensor:
    """A dense, contiguous CPU tensor; with ``copy`` it also owns its storage."""
    import torch

    if not isinstance(name, str):
        raise TypeError(f"tensor names must be str, got {name!r}")
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name!r} is a {type(tensor).__name__}, not a tensor")
    if tensor.layout != torch.strided:
        raise ValueError(f"{name!r} has layout {tensor.layout}; only dense tensors are stored")
    t = tensor.detach().resolve_conj().resolve_neg().to("cpu")
    return t.clone(memory_format=torch.contiguous_format) if copy else t.contiguous()


def _tensor_hash(name: str, tensor: torch.Tensor) -> str:
    import torch

    t = _dense_cpu(name, tensor, copy=False)
    header = canonical_json({"dtype": str(t.dtype), "shape": list(t.shape)})
    h = hashlib.sha256(header + b"\n")
    # Reinterpret as bytes without conversion; reshape(-1) makes 0-dim tensors viewable.
    raw = t.reshape(-1).view(torch.uint8).numpy()
    h.update(memoryview(raw))
    return h.hexdigest()
