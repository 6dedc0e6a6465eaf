"""Low-rank adapters on a frozen backbone (``model.finetune = "lora"``), through ``peft``.

Each shard's model is the backbone with adapters on ``model.lora_targets`` and a head (the
MLP of ``model.hidden``) on its features [B, F]. Only the adapters and the head learn:

- The backbone's own tensors are loaded once per process (``shared_base``) and every
  shard model holds *the same* tensors, never a copy: memory is the base plus S adapters.
  They are frozen (no gradients) and stay in eval mode while the adapters train
  (``Adapted.train``), so no dropout of the backbone draws and no BatchNorm statistic moves.
- Checkpoints hold the adapters, the head and their optimizer state only
  (``trained_state``); the backbone never enters the store.
- Adapter init and adapter dropout draw from the generators the trainer seeds by (seed,
  shard) and by the step's position: the determinism contract of ``sisa.training.trainer``.

The frozen prefix. Where the backbone is an ``nn.Sequential`` whose leading children hold
no target, those children never change: their outputs are computed once per point at
ingest, in fixed groups under the rules of ``sisa.training.backbone`` (a point's outputs
never depend on its neighbours), and stored as the shard's training data, like the
features of "head" mode. The shards then train the rest, and serving runs the prefix once
per row for all S shards.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Collection
from dataclasses import dataclass

import torch
from torch import nn

from sisa.config import Config, ModelConfig
from sisa.training.backbone import Backbone, checked, load_frozen

ADAPTABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Embedding, nn.MultiheadAttention)


def _matches(name: str, target: str) -> bool:
    """peft's rule for a list of targets: the module's full name, or its last parts."""
    return name == target or name.endswith(f".{target}")


def _adaptable(module: nn.Module) -> bool:
    # transformers' GPT-2 style Conv1D is a linear layer too, and peft adapts it
    return isinstance(module, ADAPTABLE) or type(module).__name__ == "Conv1D"


def check_targets(module: nn.Module, targets: Collection[str]) -> None:
    """ValueError naming ``model.lora_targets`` and listing the candidates when a target
    matches no module, or only modules peft cannot adapt."""
    named = dict(module.named_modules())
    candidates = sorted({n.rsplit(".", 1)[-1] for n, m in named.items() if n and _adaptable(m)})
    shown = ", ".join(repr(c) for c in candidates[:40]) or "none"
    for target in targets:
        hits = [n for n in named if n and _matches(n, target)]
        if not hits:
            raise ValueError(
                f"model.lora_targets: {target!r} matches no module of the backbone; "
                f"layers that can take adapters: {shown}"
            )
        if not any(_adaptable(named[n]) for n in hits):
            kinds = ", ".join(sorted({type(named[n]).__name__ for n in hits}))
            raise ValueError(
                f"model.lora_targets: {target!r} names {kinds}, which takes no adapter; "
                f"layers that can: {shown}"
            )


def prefix_length(module: nn.Module, targets: Collection[str]) -> int:
    """Leading children of an ``nn.Sequential`` that hold no target: the frozen prefix."""
    if not isinstance(module, nn.Sequential):
        return 0
    for i, (key, child) in enumerate(module.named_children()):
        names = [key] + [f"{key}.{n}" for n, _ in child.named_modules() if n]
        if any(_matches(n, t) for n in names for t in targets):
            return i
    return len(module)


class Adapted(nn.Module):
    """A shard model in "lora" mode: the frozen body with its adapters, then the head."""

    def __init__(self, body: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.body, self.head = body, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, *in] -> [B, C]
        return self.head(self.body(x))  # body: [B, *in] -> [B, F]

    def train(self, mode: bool = True) -> Adapted:
        """Only the adapters' dropout and the head follow ``mode``; the frozen backbone stays
        in eval mode (its dropout off, its BatchNorm statistics fixed)."""
        super().train(mode)
        self.body.eval()
        from peft.tuners.lora import LoraLayer

        for layer in self.body.modules():
            if isinstance(layer, LoraLayer):
                layer.lora_dropout.train(mode)
        return self

    def frozen_keys(self) -> set[str]:
        """State-dict keys of the backbone's own tensors: shared, never checkpointed."""
        learned = {n for n, p in self.body.named_parameters() if p.requires_grad}
        return {f"body.{k}" for k in self.body.state_dict() if k not in learned}


@dataclass(kw_only=True)
class LoraBase:
    """The backbone, loaded once: its frozen prefix (or None) and the rest, which every
    shard model shares and decorates with adapters of its own."""

    prefix: Backbone | None  # the stored data's source; None: the shards take raw rows
    body: nn.Module  # frozen: [B, *in] -> [B, F] (in: the prefix's output, or the raw row)
    num_features: int  # F
    sha256: str  # of the whole backbone

    def adapted(self, cfg: ModelConfig, num_classes: int) -> Adapted:
        """A shard model; call under the seeded RNG of its (seed, shard): the adapters' and
        the head's init draw from it."""
        from peft import LoraConfig, inject_adapter_in_model

        from sisa.training.models import MLP

        shared = {id(t): t for t in (*self.body.parameters(), *self.body.buffers())}
        body = copy.deepcopy(self.body, memo=shared)  # new modules, the same tensors
        adapters = LoraConfig(
            r=cfg.lora_rank,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=list(cfg.lora_targets),
        )
        body = inject_adapter_in_model(adapters, body)
        head = MLP((self.num_features,), num_classes, cfg.hidden, cfg.dropout)
        return Adapted(body, head.to(next(iter(shared.values())).device))


def load_lora_base(
    config: Config,
    input_shape: tuple[int, ...],
    trusted: Collection[str] = (),
) -> LoraBase:
    """Load, check and split the backbone of a "lora" config. ValueError naming the field
    for ``lora_targets`` that match nothing, and for options that do not go with a prefix
    whose outputs are stored (per-epoch augmentation)."""
    cfg, device = config.model, config.resources.device
    module, sha = load_frozen(cfg, input_shape, trusted, device=device)
    check_targets(module, cfg.lora_targets)
    # the whole backbone: its output must be features, deterministic, frozen
    whole = checked(
        module, cfg, input_shape, sha, input_scale=config.data.input_scale, device=device
    )
    k = prefix_length(module, cfg.lora_targets)
    if k == 0:
        return LoraBase(prefix=None, body=module, num_features=whole.num_features, sha256=sha)
    if config.data.augment:
        raise ValueError(
            f"data.augment: model.lora_targets leave the backbone's first {k} children "
            "without adapters, so their outputs are computed once per point and stored; no "
            "per-epoch draw can reach them (adapt the first child, or drop augment)"
        )
    assert isinstance(module, nn.Sequential)
    prefix = checked(
        _children(module, 0, k),
        cfg,
        input_shape,
        sha,
        input_scale=config.data.input_scale,
        device=device,
        flat=False,
    )
    rest = _children(module, k, len(module))
    return LoraBase(prefix=prefix, body=rest, num_features=whole.num_features, sha256=sha)


def _children(module: nn.Sequential, lo: int, hi: int) -> nn.Sequential:
    """Children ``lo:hi`` under their own names, as a plain ``nn.Sequential``: slicing
    (``module[lo:hi]``) calls the class's own constructor, which a subclass may not take."""
    return nn.Sequential(OrderedDict(list(module.named_children())[lo:hi]))


_loaded: dict[tuple[object, ...], LoraBase] = {}  # the last base this process loaded


def shared_base(config: Config, trusted: Collection[str] = ()) -> LoraBase:
    """The backbone of a "lora" config that training recorded (``backbone_input``,
    ``backbone_sha256``), loaded once per process: every shard model, in training and in
    serving, holds the same frozen tensors."""
    cfg = config.model
    if cfg.backbone_input is None:
        raise ValueError("model.backbone_input is recorded by training; train the store first")
    key = (
        cfg.backbone,
        cfg.backbone_weights,
        cfg.backbone_sha256,
        cfg.backbone_input,
        cfg.lora_targets,
        cfg.feature_batch,
        config.data.input_scale,
        config.resources.device,
    )
    if key not in _loaded:
        base = load_lora_base(config, cfg.backbone_input, trusted)
        _loaded.clear()  # one base at a time: a process serves one store
        _loaded[key] = base
    return _loaded[key]


def frozen_keys(model: nn.Module) -> set[str]:
    """State-dict keys of a model's shared backbone tensors (none outside "lora" mode)."""
    out: set[str] = set()
    for name, module in model.named_modules():
        if isinstance(module, Adapted):
            out |= {f"{name}.{k}" if name else k for k in module.frozen_keys()}
    return out


def trained_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """What a checkpoint holds: every tensor of the state but the frozen backbone's."""
    frozen = frozen_keys(model)
    return {k: v.detach().cpu() for k, v in model.state_dict().items() if k not in frozen}


def load_trained(model: nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Load a checkpoint's tensors; the frozen backbone's are the only ones it may lack."""
    frozen = frozen_keys(model)
    result = model.load_state_dict(weights, strict=not frozen)
    missing = set(result.missing_keys) - frozen
    if missing or result.unexpected_keys:
        raise RuntimeError(
            f"checkpoint does not fit the model: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(result.unexpected_keys)[:5]}"
        )
