"""The training environment: the switches that make it deterministic, and its fingerprint.

The contract. A shard's weights are bitwise reproducible only when, in the process that
trains them:

* ``torch.use_deterministic_algorithms(True)`` is on, cuDNN benchmarking is off (it picks
  among algorithms by timing, so two runs may pick differently) and TF32 is off (the
  fingerprint promises float32 arithmetic);
* on CUDA, ``CUBLAS_WORKSPACE_CONFIG`` is ``:4096:8`` or ``:16:8`` **before cuBLAS first
  runs in the process**: PyTorch reads it once, when it sizes its cuBLAS workspace, so a
  value set later has no effect while torch's own check would pass. ``configure`` sets
  it when absent and CUDA is still uninitialised, and refuses otherwise: a value that is
  not deterministic, or none at all after CUDA started. Processes that train call
  ``configure`` before anything touches CUDA (shard jobs do it first thing). A value a
  user sets in ``os.environ`` after their own CUDA work cannot be detected; set it in the
  environment that starts the process instead;
* the intra-op thread count is fixed (``resources.threads``).

How the first switch is thrown. In torch 2.13.0 ``torch.use_deterministic_algorithms``
does two things: it sets the flag eager kernels read (``_C._set_deterministic_algorithms``,
which ``torch.are_deterministic_algorithms_enabled`` reports), and it assigns
``torch._inductor.config.deterministic``, which only code compiled with ``torch.compile``
reads (it turns off Inductor's autotuning by timing). Importing that config imports
``torch._inductor`` and ``torch._dynamo``: 0.9 to 1.6 s on 2 cores, more than a small
retrain. Nothing here compiles, so ``configure`` sets the eager flag directly, with
``warn_only`` off (a warn-only flag would let a non-deterministic kernel run), and keeps
the compiler's switch equal without importing it: the config already imported is set,
and otherwise ``TORCHINDUCTOR_DETERMINISTIC=1``, from which Inductor's config takes its
default when first imported, is put in the environment. The invariant, for whoever
changes this: after ``configure``, eager kernels run deterministically (or raise), and a
``torch.compile`` in this process would see ``deterministic = True``, exactly as after
``torch.use_deterministic_algorithms(True)``. The other switch tied to this flag,
``torch.utils.deterministic.fill_uninitialized_memory`` (uninitialised tensors filled with
NaN), is a separate C flag that defaults to on and that neither call changes.
Optimizers would import the compiler anyway, at their first step; ``configure`` also
defers that (``defer_dynamo``), so a process that trains never imports it.
``tests/test_startup.py`` checks all of it in fresh processes.

Bitwise equality is then promised between runs with the same fingerprint on
``ENVIRONMENT_KEYS``: torch version, device, dtype, threads, CPU architecture, and on
CUDA the GPU model, its compute capability, the CUDA runtime and cuDNN. The driver and
numpy are recorded for the reader, not compared: kernels come with torch's CUDA runtime,
and numpy only orders integers here.
"""

from __future__ import annotations

import functools
import os
import platform
import re
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from sisa.config import Config

CUBLAS_ENV = "CUBLAS_WORKSPACE_CONFIG"
INDUCTOR_ENV = "TORCHINDUCTOR_DETERMINISTIC"  # torch._inductor.config.deterministic's default
DETERMINISTIC_CUBLAS = (":4096:8", ":16:8")  # what CUDA documents as deterministic
# the methods of torch.optim.Optimizer that torch 2.13.0 wraps in torch._disable_dynamo
DYNAMO_DISABLED = ("add_param_group", "zero_grad", "state_dict", "load_state_dict")
ENVIRONMENT_KEYS = (
    "torch", "device", "dtype", "threads", "machine", "gpu", "capability", "cuda", "cudnn",
)  # fmt: skip


class DeterminismError(RuntimeError):
    """This process cannot train deterministically as configured; the message says why."""


def require_device(device: str) -> None:
    """Raise a clear error when ``device`` is not usable in this process."""
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        why = (
            f"torch {torch.__version__} is built without CUDA"
            if torch.version.cuda is None
            else "this process sees no CUDA device (none installed, or CUDA_VISIBLE_DEVICES "
            "hides them)"
        )
        raise RuntimeError(
            f"resources.device = 'cuda' but {why}; use resources.device = 'cpu', or run "
            "where a GPU is (on Ray: resources.num_gpus > 0)"
        )


def _check_cublas() -> None:
    import torch

    value = os.environ.get(CUBLAS_ENV)
    if value is None:
        if torch.cuda.is_initialized():
            raise DeterminismError(
                f"CUDA was initialised in this process before {CUBLAS_ENV} was set, so "
                "cuBLAS may already run non-deterministically; set "
                f"{CUBLAS_ENV}=:4096:8 in the environment that starts the process"
            )
        os.environ[CUBLAS_ENV] = DETERMINISTIC_CUBLAS[0]
    elif value not in DETERMINISTIC_CUBLAS:
        raise DeterminismError(
            f"{CUBLAS_ENV}={value!r} makes cuBLAS non-deterministic; training on cuda "
            f"needs {' or '.join(DETERMINISTIC_CUBLAS)} (or leave it unset)"
        )


def configure(threads: int, device: str = "cpu") -> None:
    """Pin the determinism switches of this process; call before any CUDA work.

    Raises ``DeterminismError`` when cuBLAS cannot be deterministic here, and
    ``RuntimeError`` when ``device`` is ``cuda`` and no GPU is visible.
    """
    if device == "cuda":
        _check_cublas()
        require_device(device)
    else:
        os.environ.setdefault(CUBLAS_ENV, DETERMINISTIC_CUBLAS[0])  # for CUDA used later
    import torch

    deterministic_algorithms()
    defer_dynamo()
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def deterministic_algorithms() -> None:
    """``torch.use_deterministic_algorithms(True)`` without importing the compiler stack
    (``torch._inductor``, ``torch._dynamo``); see the module's docstring."""
    import torch

    torch._C._set_deterministic_algorithms(True, warn_only=False)
    inductor = sys.modules.get("torch._inductor.config")
    if inductor is not None:
        inductor.deterministic = True  # type: ignore[attr-defined]
    else:
        os.environ[INDUCTOR_ENV] = "1"


def defer_dynamo() -> None:
    """Let optimizers run without importing ``torch._dynamo`` until something else does.

    In torch 2.13.0 an optimizer imports ``torch._dynamo`` (and with it
    ``torch._inductor``: 0.8 s and more on 2 cores) the first time it is built or stepped,
    only to keep a compiled caller from tracing into it: ``add_param_group`` (called by
    the constructor), ``zero_grad``, ``state_dict`` and ``load_state_dict`` are wrapped in
    ``torch._disable_dynamo``, and every ``step`` in ``_use_grad_for_differentiable``, which
    sets grad mode to ``defaults["differentiable"]`` around the step and calls
    ``torch._dynamo.graph_break()``, an empty function outside compilation. No frame can be
    compiled before ``torch._dynamo`` is imported, so until then both wrappers do nothing
    but that grad mode; the versions installed here do just that, and once
    ``torch._dynamo`` is imported they call torch's own wrappers. Numerics are untouched.

    Only wrappers that are torch's (the same code objects) with the body read here are
    replaced; anything else is left as it is, and then imports the compiler as before
    (``tests/test_startup.py`` says so). Idempotent; applies to every optimizer class
    defined when it runs.
    """
    import torch
    from torch._compile import _disable_dynamo
    from torch.optim.optimizer import Optimizer, _use_grad_for_differentiable

    disable_code = _disable_dynamo(_noop).__code__
    for name in DYNAMO_DISABLED:
        wrapper = Optimizer.__dict__.get(name)
        fn = getattr(wrapper, "__wrapped__", None)
        if getattr(wrapper, "__code__", None) is not disable_code or fn is None:
            continue
        if getattr(fn, "__dynamo_disable", None) is None:  # torch's wrapper caches it there
            cells = dict(zip(disable_code.co_freevars, wrapper.__closure__ or (), strict=True))
            setattr(fn, "__dynamo_disable", _until_dynamo(fn, cells["recursive"].cell_contents))

    use_grad_code = _use_grad_for_differentiable(_noop).__code__
    if set(use_grad_code.co_names) != _USE_GRAD_NAMES:
        return  # torch changed what the step's wrapper does: leave it alone
    hook_code = Optimizer.profile_hook_step(_noop).__code__
    todo, seen = [Optimizer], set()
    while todo:
        cls = todo.pop()
        if cls in seen:
            continue
        seen.add(cls)
        todo.extend(cls.__subclasses__())
        step = cls.__dict__.get("step")
        hooked = getattr(step, "__code__", None) is hook_code  # wrapped by a first __init__
        use_grad = getattr(step, "__wrapped__", None) if hooked else step
        if getattr(use_grad, "__code__", None) is not use_grad_code:
            continue
        deferred = _step_until_dynamo(torch, use_grad)
        if hooked:
            deferred = Optimizer.profile_hook_step(deferred)
            deferred.hooked = True  # type: ignore[attr-defined]
        cls.step = deferred  # type: ignore[method-assign]


# what torch 2.13.0's _use_grad_for_differentiable wrapper refers to; its body is
# mirrored by _step_until_dynamo
_USE_GRAD_NAMES = {
    "torch._dynamo", "cast", "Optimizer", "is_grad_enabled", "set_grad_enabled", "defaults",
    "_dynamo", "graph_break",
}  # fmt: skip


def _noop(*args: Any, **kwargs: Any) -> None:
    return None


def _until_dynamo(fn: Callable[..., Any], recursive: bool) -> Callable[..., Any]:
    """What ``torch._disable_dynamo`` calls for ``fn``: ``fn`` itself while nothing can be
    compiled, ``torch._dynamo.disable(fn)`` (cached, as torch does) from then on."""

    def call(*args: Any, **kwargs: Any) -> Any:
        if "torch._dynamo" not in sys.modules:
            return fn(*args, **kwargs)
        import torch._dynamo

        disabled = torch._dynamo.disable(fn, recursive, wrapping=False)
        setattr(fn, "__dynamo_disable", disabled)
        return disabled(*args, **kwargs)

    return call


def _step_until_dynamo(torch: Any, use_grad: Callable[..., Any]) -> Callable[..., Any]:
    """An optimizer's ``step`` that does what torch's ``_use_grad`` wrapper does while
    ``torch._dynamo`` is not imported (the graph breaks are no-ops then), and calls that
    wrapper from then on."""
    raw = use_grad.__wrapped__  # type: ignore[attr-defined]

    def step(*args: Any, **kwargs: Any) -> Any:
        if "torch._dynamo" in sys.modules:
            return use_grad(*args, **kwargs)
        prev = torch.is_grad_enabled()
        try:
            torch.set_grad_enabled(args[0].defaults["differentiable"])
            return raw(*args, **kwargs)
        finally:
            torch.set_grad_enabled(prev)

    functools.update_wrapper(step, raw)
    step.__wrapped__ = use_grad  # type: ignore[attr-defined]
    return step


def nvidia_driver() -> str | None:
    """The NVIDIA kernel driver's version where Linux says it cheaply; else None."""
    try:
        with open("/proc/driver/nvidia/version") as f:
            found = re.search(r"Kernel Module\s+(\S+)", f.read())
    except OSError:
        return None
    return found.group(1) if found else None


def environment_fingerprint(config: Config) -> dict[str, Any]:
    """What bitwise equality depends on beyond the config (see ``ENVIRONMENT_KEYS``).

    On CUDA it describes the device this process trains on: inside a Ray task, the GPU
    Ray assigned (``CUDA_VISIBLE_DEVICES`` makes it device 0).
    """
    import torch

    device = config.resources.device
    on_gpu = device == "cuda" and torch.cuda.is_available()
    gpu = capability = cuda = cudnn = driver = None
    if on_gpu:
        index = torch.cuda.current_device()
        gpu = torch.cuda.get_device_name(index)
        capability = "{}.{}".format(*torch.cuda.get_device_capability(index))
        cuda = torch.version.cuda
        cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        driver = nvidia_driver()
    return {
        "torch": torch.__version__,
        "numpy": np.__version__,
        "device": device,
        "device_name": gpu or platform.processor() or platform.machine(),
        "machine": platform.machine(),
        "dtype": "float32",
        "threads": config.resources.threads,
        "deterministic": True,
        "gpu": gpu,
        "capability": capability,
        "cuda": cuda,
        "cudnn": cudnn,
        "driver": driver,
    }


def environment_differences(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The ``ENVIRONMENT_KEYS`` on which two fingerprints differ, as ``key: a -> b``.

    A key a fingerprint lacks (written before it was recorded) reads as None, which is
    what a CPU fingerprint holds for the GPU keys.
    """
    return [
        f"{k}: {recorded.get(k)} -> {current.get(k)}"
        for k in ENVIRONMENT_KEYS
        if recorded.get(k) != current.get(k)
    ]
