"""Deterministic staged training of one shard.

The determinism contract. A shard's weights after stage r are a function of
(config, shard index, the IDs/features/labels of its slices 1..r) alone:

* Initialisation draws from a generator seeded by (seed, shard) only.
* Stage r trains on slices 1..r, starting from the state after stage r-1.
* Each pass orders the stage's points by a keyed hash of (seed, shard, stage, epoch, ID);
  a point's place relative to another never depends on a third, so removing a point
  leaves the order of the rest intact.
* Every draw inside a step (dropout) comes from an RNG seeded by the step's position
  (seed, shard, stage, epoch, step) under ``fork_rng``; global RNG state is never read.
* The learning rate of a step is a function of (stage, fraction of the stage done)
  (``sisa.training.lr_schedule``), never of a total step count, which deletions change.
* Per-stage metrics (mean loss, accuracy) only read the model: no RNG draw, no change of
  the trajectory; the accuracy runs under ``no_grad`` in eval mode, then restores the mode.
* The optimizer state (momentum, Adam moments, step counts) and the counters travel with
  every checkpoint, so resuming from a checkpoint equals never having stopped.
* The process is configured by ``sisa.training.environment.configure`` before anything touches
  CUDA (deterministic algorithms, no cuDNN benchmarking or TF32, a deterministic cuBLAS
  workspace, a fixed thread count); every checkpoint records the environment's
  fingerprint, and bitwise equality is promised only within one fingerprint.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sisa.config import Config
from sisa.faults import crash_point
from sisa.ids import fingerprints, hash_order, id_set_hash, seed_from
from sisa.training.augment import augment
from sisa.training.environment import configure
from sisa.training.lora import load_trained, shared_base, trained_state
from sisa.training.lr_schedule import learning_rate
from sisa.training.models import Rescaled, build_model
from sisa.training.schedule import batch_bounds, epoch_lengths, stage_epochs, stage_samples
from sisa.training.standardize import Standardized, constants, fit, standardizer


@dataclass(frozen=True, kw_only=True)
class ShardData:
    """One shard's retained points, with each point's slice (0-based)."""

    ids: np.ndarray  # [n] int64 or str
    X: np.ndarray  # [n, *feature_shape] float32 or uint8
    y: np.ndarray  # [n] int64
    slice: np.ndarray  # [n] int64 in [0, R)
    hash_key: bytes | None = field(default=None, repr=False)  # the store's ID-hash key
    fps: np.ndarray = field(init=False)  # [n] uint64 ID fingerprints

    def __post_init__(self) -> None:
        object.__setattr__(self, "fps", fingerprints(self.ids))

    def __len__(self) -> int:
        return len(self.ids)

    def stage_rows(self, stage: int) -> np.ndarray:
        """Rows trained on in (1-based) stage ``stage``: slices 1..stage. -> [m] int64."""
        return np.flatnonzero(self.slice < stage)

    def ids_hash(self, stage: int) -> str:
        """Hash of the set of IDs that stage ``stage`` trains on."""
        return id_set_hash(self.ids[self.stage_rows(stage)], self.hash_key)


@dataclass(kw_only=True)
class TrainState:
    """A shard model in training, with everything needed to resume it exactly."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    stage: int = 0  # last completed stage
    step: int = 0  # optimizer steps taken in total
    samples: int = 0  # samples trained on in total


@dataclass(frozen=True, kw_only=True)
class StageStats:
    """What one stage's training measured; recorded with its checkpoint."""

    loss: float | None  # mean training loss over the stage's steps; None if not finite
    accuracy: float | None = None  # on slices 1..stage after the stage (optim.stage_accuracy)
    steps: int = 0  # optimizer steps of the stage


def _optimizer(config: Config, model: nn.Module) -> torch.optim.Optimizer:
    o = config.optim
    learned = [p for p in model.parameters() if p.requires_grad]  # not a frozen backbone's
    if o.name == "sgd":
        return torch.optim.SGD(learned, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    if o.name == "adamw":
        return torch.optim.AdamW(learned, lr=o.lr, weight_decay=o.weight_decay)
    return torch.optim.Adam(learned, lr=o.lr, weight_decay=o.weight_decay)


def fresh_state(
    config: Config,
    shard: int,
    input_shape: tuple[int, ...],
    num_classes: int,
    trusted: Collection[str] = (),
) -> TrainState:
    """A newly initialised model, seeded by (seed, shard) alone."""
    configure(config.resources.threads, config.resources.device)  # before any CUDA work
    mode = config.model.finetune
    base = shared_base(config, trusted) if mode == "lora" else None  # loaded once, shared
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed_from(config.sisa.seed, "init", shard))
        if base is not None:  # the adapters and the head; the backbone's tensors shared
            model = base.adapted(config.model, num_classes)
        else:
            model = build_model(config.model, input_shape, num_classes, trusted)
    data = config.data
    # "head", or "lora" with a stored prefix: the input was scaled before the backbone
    scaled = mode == "head" or (base is not None and base.prefix is not None)
    if data.input_scale not in (None, 1.0) and not scaled:  # in the model: predictions too
        model = Rescaled(model, data.input_scale)
    if data.scale == "standard":  # outermost: its statistics are of the stored features
        model = Standardized(model, input_shape, per_stage=data.scale_from == "stage")
        if data.scale_from in ("constants", "reference"):  # reference: recorded by train
            if data.scale_mean is None or data.scale_std is None:
                raise ValueError("data.scale_from = 'reference' is recorded by train(), not here")
            model.set(
                constants(data.scale_mean or (), input_shape),
                constants(data.scale_std or (), input_shape),
            )
    # "cuda" is the current device: inside a Ray task, the GPU Ray assigned to it
    model = model.to(torch.device(config.resources.device))
    return TrainState(model=model, optimizer=_optimizer(config, model))


def restore_state(
    config: Config,
    shard: int,
    input_shape: tuple[int, ...],
    num_classes: int,
    weights: dict[str, torch.Tensor],
    extra: dict[str, Any],
    trusted: Collection[str] = (),
) -> TrainState:
    """Rebuild the state saved by ``checkpoint_payload``."""
    state = fresh_state(config, shard, input_shape, num_classes, trusted)
    load_trained(state.model, weights)
    state.optimizer.load_state_dict(extra["optimizer"])
    state.stage, state.step, state.samples = extra["stage"], extra["step"], extra["samples"]
    return state


def checkpoint_payload(state: TrainState) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(weights, optimizer state and counters) to store after a stage."""
    weights = trained_state(state.model)  # "lora": the adapters and head, not the backbone
    extra = {
        "optimizer": state.optimizer.state_dict(),
        "stage": state.stage,
        "step": state.step,
        "samples": state.samples,
    }
    return weights, extra


def state_digest(obj: Any) -> str:
    """sha256 over a nested optimizer state / counters structure, tensors bit for bit."""
    digest = hashlib.sha256()

    def feed(value: Any) -> None:
        if isinstance(value, torch.Tensor):
            t = value.detach().cpu().contiguous()
            digest.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(value, dict):
            digest.update(b"{")
            for key in sorted(value, key=repr):
                feed(key)
                feed(value[key])
            digest.update(b"}")
        elif isinstance(value, list | tuple):
            digest.update(b"[")
            for item in value:
                feed(item)
            digest.update(b"]")
        else:
            digest.update(repr(value).encode())

    feed(obj)
    return digest.hexdigest()


def _cuda_devices(device: torch.device) -> list[int]:
    return [device.index or 0] if device.type == "cuda" else []


def _seed_step(device: torch.device, seed: int) -> None:
    """Seed the generators a step may draw from (``torch.manual_seed`` minus its overhead)."""
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.default_generators[device.index or 0].manual_seed(seed)


def train_stage(
    state: TrainState,
    data: ShardData,
    config: Config,
    shard: int,
    stage: int,
    on_step: Callable[[], None] | None = None,
) -> StageStats:
    """Train ``state`` through (1-based) ``stage`` on slices 1..stage, in place; return
    the stage's metrics."""
    if stage != state.stage + 1:
        raise ValueError(f"stage {stage} must follow the state's stage {state.stage}")
    seed, o = config.sisa.seed, config.optim
    device = next(state.model.parameters()).device
    rows = data.stage_rows(stage)  # [m]
    scaler = standardizer(state.model)
    if scaler is not None and scaler.per_stage:  # fitted on slices 1..stage (standardize.py)
        scaler.set(*fit(data.X[rows]))
    samples = stage_samples(stage_epochs(config.sisa), len(rows))
    passes = epoch_lengths(samples, len(rows))
    steps = sum(len(batch_bounds(length, o.batch_size)) for length in passes)
    done = 0  # steps of this stage taken so far: the stage's fraction done is done / steps
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    state.model.train()
    for epoch, length in enumerate(passes):
        order = rows[hash_order(data.fps[rows], seed, "order", shard, stage, epoch)][:length]
        for step, (lo, hi) in enumerate(batch_bounds(length, o.batch_size)):
            idx = order[lo:hi]  # [B]
            xb = torch.from_numpy(data.X[idx]).to(device=device, dtype=torch.float32)
            if config.data.augment:  # each point's own draw (sisa.training.augment)
                xb = augment(
                    xb,
                    data.fps[idx],
                    ops=config.data.augment,
                    seed=seed,
                    shard=shard,
                    stage=stage,
                    epoch=epoch,
                    padding=config.data.crop_padding,
                )
            yb = torch.from_numpy(data.y[idx]).to(device)  # [B]
            lr = learning_rate(o, config.sisa.slices, stage, done, steps)
            for group in state.optimizer.param_groups:
                group["lr"] = lr
            with torch.random.fork_rng(devices=_cuda_devices(device)):
                _seed_step(device, seed_from(seed, "step", shard, stage, epoch, step))
                state.optimizer.zero_grad(set_to_none=True)
                loss = F.cross_entropy(state.model(xb), yb, label_smoothing=o.label_smoothing)
                loss.backward()
                if o.clip_norm is not None:
                    nn.utils.clip_grad_norm_(state.model.parameters(), o.clip_norm)
                state.optimizer.step()
            loss_sum += loss.detach().to(torch.float64)
            done += 1
            state.step += 1
            state.samples += len(idx)
            if on_step is not None:
                on_step()
            if epoch == step == 0:  # the stage has moved the model; its checkpoint is not out
                crash_point("mid-stage")
    state.stage = stage
    mean = float(loss_sum) / done if done else None  # one device sync per stage
    measured = o.stage_accuracy == "train"
    return StageStats(
        loss=mean if mean is not None and math.isfinite(mean) else None,
        accuracy=seen_accuracy(state.model, data, config, shard, stage) if measured else None,
        steps=done,
    )


@torch.no_grad()
def seen_accuracy(
    model: nn.Module, data: ShardData, config: Config, shard: int, stage: int
) -> float | None:
    """Accuracy on slices 1..stage, the points the shard has seen; None without points.

    It only reads the model: no gradients, no RNG draw, eval mode (BatchNorm statistics
    stay put) and the mode restored after. Points go in the stage's first-pass hash order
    with fixed batches, so the number depends on the stage's IDs alone, like the weights.
    """
    rows = data.stage_rows(stage)  # [m]
    if len(rows) == 0:
        return None
    order = rows[hash_order(data.fps[rows], config.sisa.seed, "order", shard, stage, 0)]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=device)
    try:
        for lo, hi in batch_bounds(len(order), 1024):
            idx = order[lo:hi]  # [B]
            xb = torch.from_numpy(data.X[idx]).to(device=device, dtype=torch.float32)
            yb = torch.from_numpy(data.y[idx]).to(device)  # [B]
            correct += (model(xb).argmax(dim=1) == yb).sum()
    finally:
        model.train(was_training)
    return int(correct) / len(rows)


@torch.no_grad()
def predict_proba(model: nn.Module, X: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """Class probabilities of one model. [n, *f] -> [n, C] float32."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    for lo in range(0, len(X), batch_size):
        xb = torch.from_numpy(np.ascontiguousarray(X[lo : lo + batch_size])).to(
            device=device, dtype=torch.float32
        )
        out.append(torch.softmax(model(xb), dim=1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)
