"""A frozen backbone from the user, and the features it gives each point.

``model.backbone = "package.module:factory"`` is called as ``factory(input_shape)`` and
returns a ``torch.nn.Module`` mapping [B, *input_shape] to features [B, F]. Its weights
come from ``model.backbone_weights`` (safetensors, or a state dict read with
``weights_only=True``), or the factory loads its own. Either way the loaded state is hashed
canonically (``state_sha256``): every tensor's name, dtype, shape and bytes. The hash is
recorded in the store's config (``model.backbone_sha256``), so it enters the training hash,
and any other backbone is refused with the one expected named.

The determinism contract of features (``model.finetune = "head"``): a point's features are
a function of the point alone. A from-scratch retrain on the remaining points batches them
with other neighbours and in other numbers, so

- every forward has exactly ``model.feature_batch`` rows: the last group is padded with
  zeros, because on some kernels a row's bits change with the batch size;
- no kernel may mix rows: ``load_backbone`` checks it on a probe batch, as it checks that
  two forwards give the same bits and that a forward leaves the state as it was (frozen).

The backbone never lives in the store: it is public and shared; the store holds the
features, which are derived from the points and purged with them like raw data.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from sisa.config import ModelConfig
from sisa.training.factories import load_named

PROBE_ROWS = 4  # rows of the probe batch the checks run on


def state_sha256(module: nn.Module) -> str:
    """Canonical hash of a module's state: names in sorted order, dtypes, shapes, bytes.
    Buffers a ``state_dict`` leaves out (``persistent=False``, such as a preprocessing
    mean) change the features too, so they are hashed as well."""
    sha = hashlib.sha256(b"sisa-backbone-v1")
    state = dict(module.state_dict())
    state |= {f"buffer:{n}": b for n, b in module.named_buffers() if n not in state}
    for name, tensor in sorted(state.items()):
        t = tensor.detach().to("cpu").contiguous()
        sha.update(f"|{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        sha.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return sha.hexdigest()


def read_weights(url: str) -> dict[str, torch.Tensor]:
    """A state dict from a safetensors file, or a ``torch.save`` file read with
    ``weights_only=True``: never an unpickling of arbitrary objects."""
    import fsspec

    try:
        with fsspec.open(url, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise ValueError(f"model.backbone_weights: no such file: {url!r}") from None
    except OSError as exc:  # a folder, no permission, a driver's own failure
        raise ValueError(f"model.backbone_weights: cannot read {url!r}: {exc}") from None
    try:
        if url.lower().endswith(".safetensors"):
            from safetensors.torch import load

            return load(raw)
        state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as exc:  # safetensors and torch raise their own kinds
        raise ValueError(f"model.backbone_weights: cannot read {url!r}: {exc}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"model.backbone_weights: {url!r} is not a state dict of tensors")
    return state


@dataclass(kw_only=True)
class Backbone:
    """A loaded, frozen backbone: what it takes, what it gives, and its hash."""

    module: nn.Module  # in eval mode, no gradients
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]  # (F,) of a whole backbone; any shape of a frozen prefix
    sha256: str  # of the whole backbone this module is (or is the prefix of)
    rows: int  # model.feature_batch: rows of every forward
    input_scale: float | None = None  # data.input_scale, applied before the backbone

    device: str = "cpu"
    flat: bool = True  # its output must be features [B, F] (a whole backbone)

    @property
    def num_features(self) -> int:
        """Values per row of the output: F."""
        return int(np.prod(self.output_shape))

    def features(self, X: np.ndarray) -> np.ndarray:
        """Output of each row, in groups of exactly ``rows``. [m, *in] -> [m, *out] float32."""
        groups = [self._group(X[lo : lo + self.rows]) for lo in range(0, len(X), self.rows)]
        if not groups:
            return np.zeros((0, *self.output_shape), dtype=np.float32)
        return np.concatenate(groups)

    def _group(self, X: np.ndarray) -> np.ndarray:  # [k <= rows, *in] -> [k, F]
        batch = torch.zeros((self.rows, *self.input_shape), dtype=torch.float32)
        x = torch.from_numpy(np.array(X, dtype=np.float32))  # a copy; uint8 pixels too
        if self.input_scale not in (None, 1.0):
            x = x * self.input_scale  # the same constant the model would apply
        batch[: len(X)] = x
        with torch.no_grad():
            feats = self.module(batch.to(self.device))
        return _as_features(feats, self.rows, self.flat)[: len(X)].to("cpu").numpy()


def _as_features(out: object, rows: int, flat: bool = True) -> torch.Tensor:
    if not isinstance(out, torch.Tensor):
        raise ValueError(
            f"model.backbone returned {type(out).__name__}, not a tensor of features [B, F]: "
            "return the pooled features from the factory's module"
        )
    if (out.ndim != 2 if flat else out.ndim < 2) or out.shape[0] != rows:
        raise ValueError(
            f"model.backbone must give features [B, F] = [{rows}, F]; it gave shape "
            f"{list(out.shape)}: flatten or pool them in the factory's module"
        )
    if not torch.isfinite(out).all():
        raise ValueError("model.backbone gave features that are not finite (NaN or inf)")
    return out.float()


def load_backbone(
    cfg: ModelConfig,
    input_shape: Sequence[int],
    trusted: Collection[str] = (),
    *,
    input_scale: float | None = None,
    device: str = "cpu",
) -> Backbone:
    """Build, load, freeze and check the configured backbone. Raises ValueError naming the
    setting for an untrusted factory, unreadable weights, an output that is not [B, F], a
    backbone that changes on a forward or mixes rows, or one whose hash differs from the
    recorded ``model.backbone_sha256``."""
    module, sha = load_frozen(cfg, input_shape, trusted, device=device)
    return checked(module, cfg, input_shape, sha, input_scale=input_scale, device=device)


def checked(
    module: nn.Module,
    cfg: ModelConfig,
    input_shape: Sequence[int],
    sha: str,
    *,
    input_scale: float | None = None,
    device: str = "cpu",
    flat: bool = True,
) -> Backbone:
    """A frozen module as a ``Backbone``, once the probe checks of the determinism contract
    pass; ``flat``: its output must be features [B, F]."""
    backbone = Backbone(
        module=module,
        input_shape=tuple(int(d) for d in input_shape),
        output_shape=(),
        sha256=sha,
        rows=cfg.feature_batch,
        input_scale=input_scale,
        device=device,
        flat=flat,
    )
    backbone.output_shape = _probe(backbone)
    return backbone


def load_frozen(
    cfg: ModelConfig, input_shape: Sequence[int], trusted: Collection[str] = (), *, device: str
) -> tuple[nn.Module, str]:
    """The configured backbone built, loaded, frozen (eval mode, no gradients) and hashed;
    ValueError naming the setting for an untrusted factory, unreadable weights or another
    hash than the recorded ``model.backbone_sha256``."""
    factory = load_named(cfg.backbone or "", "model.backbone", trusted)
    shape = tuple(int(d) for d in input_shape)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # a factory's own random init: the same on every load
        try:
            module = factory(shape)
        except Exception as exc:  # the user's code: say where it failed, keep the cause
            raise ValueError(
                f"model.backbone: {cfg.backbone!r} raised {type(exc).__name__} when called "
                f"with input_shape {shape}: {exc}"
            ) from exc
    if not isinstance(module, nn.Module):
        raise ValueError(
            f"model.backbone: {cfg.backbone!r} returned {type(module).__name__}, not a Module"
        )
    if cfg.backbone_weights is not None:
        state = read_weights(cfg.backbone_weights)
        try:
            module.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            first = str(exc).splitlines()[0]
            raise ValueError(
                f"model.backbone_weights: {cfg.backbone_weights!r} does not fit "
                f"{cfg.backbone!r}: {first}"
            ) from None
    module = module.to(torch.device(device)).eval().requires_grad_(False)
    sha = state_sha256(module)
    if cfg.backbone_sha256 is not None and sha != cfg.backbone_sha256:
        raise ValueError(
            f"model.backbone: the backbone loaded ({sha[:16]}) is not the one this store was "
            f"trained on ({cfg.backbone_sha256[:16]}, {cfg.backbone!r} with weights "
            f"{cfg.backbone_weights or 'loaded by the factory'}); restore those weights"
        )
    return module, sha


def _probe(backbone: Backbone) -> tuple[int, ...]:
    """Run the checks of the determinism contract on a probe batch; return the output shape
    of one row."""
    gen = torch.Generator().manual_seed(1234)
    probe = torch.rand((PROBE_ROWS, *backbone.input_shape), generator=gen).numpy()  # [P, *in]
    before = state_sha256(backbone.module)  # a prefix's own state, not the whole's hash
    try:
        once = backbone.features(probe)  # checks the output is [B, F]
    except ValueError:
        raise
    except Exception as exc:  # the module's own forward failed: most often the input shape
        raise ValueError(
            f"model.backbone: its forward failed on a probe batch of shape "
            f"{[backbone.rows, *backbone.input_shape]}: {type(exc).__name__}: {exc}"
        ) from exc
    twice = backbone.features(probe)
    if state_sha256(backbone.module) != before:
        raise ValueError(
            "model.backbone changed its own state on a forward (BatchNorm statistics or "
            "another buffer): it must be frozen"
        )
    if not np.array_equal(once, twice):
        raise ValueError(
            "model.backbone is not deterministic: two forwards of a probe batch differ"
        )
    # each row with other neighbours: a kernel that mixes rows would change its bits
    alone = np.concatenate([backbone.features(probe[i : i + 1]) for i in range(PROBE_ROWS)])
    if not np.array_equal(once, alone):
        raise ValueError(
            "model.backbone mixes the rows of a batch (a row's features depend on the other "
            "rows): it cannot give each point features of its own"
        )
    return tuple(int(d) for d in once.shape[1:])
