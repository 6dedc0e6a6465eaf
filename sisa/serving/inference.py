"""Evaluating the S shard models of a served ensemble in one call.

Every shard model comes from the same factory (same architecture, different weights), so
the ensemble can run as S separate forwards (``loop``) or as one batched forward over
parameters stacked along a new shard axis (``fused``: ``torch.func.stack_module_state``,
``functional_call`` and ``vmap``). Either way the result is the per-shard class
probabilities [S, n, C], on the models' device.

Fused needs a model that ``vmap`` can batch over its weights: control flow on its own
activations (``h = self.lin(x); if h.sum() > 0:``) cannot be, nor a plain tensor attribute
that should have been a buffer (every shard would use the first model's). So
``build_forward`` checks the fused forward on a probe batch against the loop and falls
back to the loop, with the reason in ``fallback_reason``, rather than failing to serve.

The ``auto`` rule, fixed (never timed at load, so the same config always runs the same
code): the loop on CPU; fused on CUDA when S >= 2. On CPU (docs/benchmarks/inference.md,
one thread, loop time / fused time, > 1: fused faster) fused wins for small batches with
many shards and loses on large batches, and ``build_forward`` cannot know the batch size:

    ====================  =======  ========  ===========
    model, S              n = 1    n = 64    n = 1,024
    ====================  =======  ========  ===========
    digits MLP, 5         0.69     0.74      0.71
    digits MLP, 50        3.39     1.59      0.81
    purchase MLP, 50      1.86     1.17      0.89
    digits CNN, 20        2.78     1.22      0.30
    digits CNN, 50        5.04     1.22      0.25
    ====================  =======  ========  ===========

The loop's worst end-to-end time is 1.71 x S forwards of one model (memory-bound one-row
forwards of 50 different purchase MLPs); fused's is 3.9 x (CNN, n = 1,024: vmap makes
convolutions over stacked weights wide or grouped ones, with the bias added apart over a
strided layout, all slow on CPU). So ``auto`` keeps the loop on
CPU; a service that only answers small requests with S >= 20 should set ``fused``. On
CUDA every one of the S forwards is a chain of small kernel launches, which fused issues
once; that side is not measured on a CPU-only machine, and the benchmark measures it
where a GPU is present.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Sequence
from typing import Protocol

import torch
from torch import nn

STRATEGIES = ("auto", "loop", "fused")
Tensors = dict[str, torch.Tensor]
PROBE_ROWS = 3  # rows of the probe batch that checks a fused forward against the loop
PROBE_ATOL, PROBE_RTOL = 1e-5, 1e-4  # batched kernels may sum in another order


class EnsembleForward(Protocol):
    """Per-shard class probabilities. x [n, *f] float32 -> [S, n, C] float32 (softmax)."""

    strategy: str  # "loop" or "fused": what actually runs
    fallback_reason: str | None  # why "fused" was asked for but "loop" runs; else None

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...


class LoopForward:
    """One forward per model: the reference, and the fallback for any model.

    Each model's logits go straight into one preallocated [S, n, C] buffer, and one softmax
    runs over it (row by row, so bitwise what per-model softmaxes stacked would give).
    Keeping S outputs alive until a ``torch.stack`` instead interleaves them with the
    freed activations on the heap, and in some shapes glibc then returns and re-faults
    pages on every call: digits MLP, S=20, n=1,024 took 14.1 ms stacked against 10.6 ms
    here (9.3 ms for 20 forwards of one model); at n=1 both are within 4 %.
    """

    strategy = "loop"

    def __init__(self, models: Sequence[nn.Module], fallback_reason: str | None = None) -> None:
        self.models = list(models)
        self.fallback_reason = fallback_reason

    def __call__(self, x: torch.Tensor) -> torch.Tensor:  # [n, *f] -> [S, n, C]
        with torch.inference_mode():
            first = self.models[0](x)  # [n, C]
            logits = first.new_empty((len(self.models), *first.shape))  # [S, n, C]
            rows = logits.unbind(0)  # S views [n, C]
            rows[0].copy_(first)
            for row, model in zip(rows[1:], self.models[1:], strict=True):
                row.copy_(model(x))
            return torch.softmax(logits, dim=-1)


class FusedForward:
    """All models as one ``vmap``-ed forward over stacked weights (x shared by all).

    The weights are stacked copies, detached; the models given are left untouched. A
    meta-device copy of the first model supplies the architecture to ``functional_call``,
    which swaps the weights into that module for the duration of a call; so each thread
    gets a copy of its own, and concurrent predictions never see each other's weights.
    """

    strategy = "fused"
    fallback_reason: str | None = None

    def __init__(self, models: Sequence[nn.Module]) -> None:
        if len(models) < 2:
            raise ValueError("a fused forward needs two models or more")
        with torch.no_grad():
            params, buffers = torch.func.stack_module_state(list(models))
        self.params = {k: v.detach() for k, v in params.items()}  # each [S, *p]
        self.buffers = {k: v.detach() for k, v in buffers.items()}  # each [S, *b]
        self.template = copy.deepcopy(models[0]).to("meta")
        self.local = threading.local()

    def _base(self) -> nn.Module:
        base = getattr(self.local, "base", None)
        if base is None:
            base = self.local.base = copy.deepcopy(self.template)
        return base

    def __call__(self, x: torch.Tensor) -> torch.Tensor:  # [n, *f] -> [S, n, C]
        base = self._base()

        def one(params: Tensors, buffers: Tensors, x: torch.Tensor) -> torch.Tensor:
            return torch.func.functional_call(base, (params, buffers), (x,))  # [n, C]

        with torch.inference_mode():
            logits = torch.vmap(one, in_dims=(0, 0, None))(self.params, self.buffers, x)
            return torch.softmax(logits, dim=-1)  # [S, n, C]


def model_device(model: nn.Module) -> torch.device:
    tensor = next(model.parameters(), None)
    tensor = tensor if tensor is not None else next(model.buffers(), None)
    return tensor.device if tensor is not None else torch.device("cpu")


FUSE_MIN_SHARDS, FUSE_MAX_ROWS = 20, 64  # on CPU, fused pays only for many models, few rows


def auto_strategy(shards: int, device: torch.device) -> str:
    """What ``auto`` runs: fused on CUDA; on CPU, fused for batches of at most
    ``FUSE_MAX_ROWS`` rows when there are ``FUSE_MIN_SHARDS`` models or more, and the loop
    otherwise (see the module docstring)."""
    if shards > 1 and device.type == "cuda":
        return "fused"
    return "by-batch" if shards >= FUSE_MIN_SHARDS else "loop"


class ByBatchForward:
    """Fused for small batches, the loop for large ones: the CPU side of ``auto``.

    The choice depends on the batch's row count only, so a given batch always runs the
    same code."""

    strategy = "by-batch"

    def __init__(self, fused: EnsembleForward, loop: LoopForward) -> None:
        self.fused, self.loop = fused, loop
        self.fallback_reason = fused.fallback_reason

    def __call__(self, x: torch.Tensor) -> torch.Tensor:  # [n, *f] -> [S, n, C]
        return (self.fused if len(x) <= FUSE_MAX_ROWS else self.loop)(x)


def build_forward(
    models: Sequence[nn.Module],
    strategy: str = "auto",
    *,
    input_shape: tuple[int, ...] | None = None,
) -> EnsembleForward:
    """The ensemble's forward: fused where asked (or where ``auto`` says it pays), if safe.

    ``input_shape`` (the feature shape f of one row) shapes the probe batch that checks a
    fused forward against the loop; ``fused`` and ``auto`` need it. A fused forward that
    fails or disagrees on the probe is replaced by the loop, with ``fallback_reason`` set.
    """
    if strategy not in STRATEGIES:
        raise ValueError(
            f"serving.inference: unknown strategy {strategy!r}; use one of {STRATEGIES}"
        )
    if not models:
        raise ValueError("serving.inference: no models to run")
    if strategy == "loop":
        return LoopForward(models)
    if input_shape is None:
        raise ValueError(f"serving.inference = {strategy!r} needs the models' input_shape")
    device = model_device(models[0])
    chosen = auto_strategy(len(models), device) if strategy == "auto" else strategy
    if chosen == "loop":
        return LoopForward(models)
    if len(models) == 1:
        return LoopForward(models, "one model: nothing to fuse")
    if _share_tensors(models[0], models[1]):
        return LoopForward(models, "the models share a frozen backbone: stacking copies it")
    fused = _checked_fused(models, input_shape, device)
    if chosen == "by-batch" and fused.strategy == "fused":
        return ByBatchForward(fused, LoopForward(models))
    return fused


def _share_tensors(a: nn.Module, b: nn.Module) -> bool:
    """Whether two models hold the same tensor (a frozen backbone shared by "lora" shards)."""
    held = {t.data_ptr() for t in (*a.parameters(), *a.buffers()) if t.numel()}
    return any(t.data_ptr() in held for t in (*b.parameters(), *b.buffers()) if t.numel())


def _checked_fused(
    models: Sequence[nn.Module], input_shape: tuple[int, ...], device: torch.device
) -> EnsembleForward:
    """The fused forward if it reproduces the loop on a probe batch; else the loop, and why."""
    loop = LoopForward(models)
    seeded = torch.Generator().manual_seed(0)  # the global RNG is left alone
    probe = torch.randn(PROBE_ROWS, *input_shape, generator=seeded).to(device)  # [p, *f]
    try:
        want = loop(probe)  # [S, p, C]
    except Exception as err:  # e.g. a model that takes indices, not random features
        return LoopForward(models, f"cannot probe the models: {type(err).__name__}: {err}")
    try:
        fused = FusedForward(models)
        got = fused(probe)  # [S, p, C]
    except Exception as err:  # vmap cannot batch it (data-dependent control flow, ...)
        return LoopForward(models, f"fused forward failed: {type(err).__name__}: {err}")
    if got.shape != want.shape or got.dtype != want.dtype:
        return LoopForward(models, f"fused output {_describe(got)} != loop {_describe(want)}")
    if not torch.allclose(got, want, atol=PROBE_ATOL, rtol=PROBE_RTOL):
        diff = (got - want).abs().max().item()
        return LoopForward(models, f"fused output differs from the loop by up to {diff:.3g}")
    return fused


def _describe(t: torch.Tensor) -> str:
    return f"{tuple(t.shape)} {t.dtype}"
