"""The other sections: ``[sisa]`` (sharding and slicing), ``[model]``, ``[optim]``,
``[resources]``, ``[deletion]`` and ``[serving]``."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import (
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from sisa.config.base import BUILTIN_MODELS, _field_error, _Section


class SisaConfig(_Section):
    shards: int = Field(5, ge=1, le=100_000)
    """S: number of isolated shard models."""
    slices: int = Field(4, ge=1, le=10_000)
    """R: number of slices per shard; a checkpoint is kept after each stage."""
    epochs: float = Field(20.0, gt=0)
    """e: epochs of a monolithic model; stages share them by ``epoch_schedule``."""
    epoch_schedule: Literal["equal-cost", "per-stage"] = "equal-cost"
    """``equal-cost``: every stage trains 2e/(R+1) epochs (fractional epochs are exact), so
    staged training costs what monolithic training does. ``per-stage``: e epochs per stage."""
    seed: int = Field(0, ge=0, lt=2**63)
    """Root of every random draw; a shard's draws depend on (seed, shard) only."""
    sharding: Literal["uniform", "stratified", "group"] = "uniform"
    """How a point's shard is derived from its ID (and its label or group)."""
    deletion_risk: str | None = None
    """Each point's probability of being deleted, for deletion-aware placement (see
    docs/sharding.md): ``"column"`` reads the data's ``risk`` column (npz array) in
    [0, 1]; ``"package.module:function"`` is called once at training as
    ``fn(ids, labels, groups)`` and must return [n] values in [0, 1]. Either way the
    values are stored with the points, so later retrains place them the same way.
    Unset: no risk tiers."""
    risk_threshold: float = Field(0.5, gt=0, le=1)
    """Points with risk at or above this are risky: they get shards of their own and
    the last slices there, so deleting them retrains few points."""
    risky_shard_fraction: float = Field(0.05, gt=0, lt=1)
    """Share of the shards reserved for risky points: round(fraction x S), at least one
    and, with S >= 2, at most S - 1; the other points share the remaining shards."""
    risky_slice_fraction: float = Field(0.5, gt=0, le=1)
    """Share of the last slices of the risky shards that risky points fill (at least
    one slice). Smaller: cheaper deletions, but those shards train fewer epochs."""
    aggregation: Literal["average", "vote"] = "average"
    """Average probabilities, or majority vote of labels (ties go to the lowest class)."""

    @field_validator("deletion_risk")
    @classmethod
    def _risk_source(cls, value: str | None) -> str | None:
        if value is None or value == "column":
            return value
        module, sep, attr = value.partition(":")
        if not (sep and module and attr) or ":" in attr:
            raise ValueError("must be 'column' or 'package.module:function'")
        return value


class ModelConfig(_Section):
    name: str = "mlp"
    """``mlp``, ``cnn``, ``resnet`` (residual blocks with BatchNorm, for images such as
    [C,32,32]), ``textbag`` (mean token embedding) or ``transformer`` (a small encoder) for
    token IDs (``data.text_column``), or ``"package.module:factory"``, called as
    ``factory(input_shape, num_classes)`` and returning a ``torch.nn.Module``."""
    hidden: tuple[int, ...] = (128,)
    """Hidden layer widths of the MLP (channels of the CNN's conv layers; of the ResNet's
    residual blocks, one block per width, each after the first halving the map)."""
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    """Dropout probability; its masks are drawn per step from the step's position."""
    heads: int = Field(4, ge=1, le=64)
    """Attention heads of the ``transformer`` (its width ``hidden[0]`` must divide by it;
    one encoder layer per entry of ``hidden``, all of that width)."""
    vocab_size: int | None = Field(None, ge=2)
    """Token IDs a text model embeds; recorded by training from the tokenizer."""
    pad_id: int | None = Field(None, ge=0)
    """The padding token's ID, which text models leave out; recorded from the tokenizer."""
    finetune: Literal["full", "head", "lora"] = "full"
    """``full``: the model trains whole on the stored features. ``head``: a frozen
    ``backbone`` maps each point once, at ingest, to a feature vector stored as its shard's
    training data, and each shard trains only a head (``name = "mlp"``: linear with
    ``hidden = []``, else an MLP) on those features; a deletion retrains heads only.
    ``lora``: each shard trains low-rank adapters (peft) on the backbone's
    ``lora_targets``, and a head on its features; the backbone stays frozen and shared. An
    ``nn.Sequential`` backbone's leading children that hold no target are its frozen
    prefix: their outputs are computed once per point at ingest and stored, as in
    ``head``."""
    backbone: str | None = None
    """``"package.module:factory"``, called as ``factory(input_shape)``, returning a
    ``torch.nn.Module`` that maps [B, *input_shape] to features [B, F]. It is code: the
    same trust rules as a model factory (``SISA_TRUSTED_FACTORIES``)."""
    backbone_weights: str | None = None
    """Path/URL of the backbone's weights: a safetensors file, or a ``torch.save`` state
    dict read with ``weights_only=True``. Unset: the factory loads its own. Never copied
    into the store: the store holds only what was learned from its points."""
    backbone_sha256: str | None = None
    """Recorded by training: the canonical hash of the backbone's loaded state (every
    tensor's name, dtype, shape and bytes); a store refuses any other backbone."""
    backbone_input: tuple[int, ...] | None = None
    """Recorded by training: the shape of one input row the backbone takes."""
    lora_targets: tuple[str, ...] = ()
    """``lora``: the modules that get adapters, by name or name suffix as peft matches them
    (``["q_proj", "v_proj"]`` in transformers' ViT, BERT and most attention layers)."""
    lora_rank: int = Field(8, ge=1, le=4096)
    """``lora``: the adapters' rank r."""
    lora_alpha: float = Field(16.0, gt=0)
    """``lora``: the adapters' scaling numerator (the update is scaled by alpha / r)."""
    lora_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    """``lora``: dropout on the adapters' input; its masks are drawn per step from the
    step's position, like ``dropout``."""
    feature_batch: int = Field(32, ge=1, le=65_536)
    """Rows per backbone forward at ingest and serving. Every forward has exactly this many
    rows (the last group padded with zeros), so a point's features never depend on how
    many other points share its batch."""

    LATER_FIELDS: ClassVar[frozenset[str]] = frozenset(
        {
            "heads",
            "vocab_size",
            "pad_id",
            "finetune",
            "backbone",
            "backbone_weights",
            "backbone_sha256",
            "backbone_input",
            "lora_targets",
            "lora_rank",
            "lora_alpha",
            "lora_dropout",
            "feature_batch",
        }
    )

    @model_validator(mode="after")
    def _transformer_width(self) -> ModelConfig:
        if self.name == "transformer" and self.hidden[0] % self.heads:
            message = f"must divide the width hidden[0] = {self.hidden[0]}"
            raise _field_error("ModelConfig", ("heads",), message, self.heads)
        return self

    @model_validator(mode="after")
    def _backbone_mode(self) -> ModelConfig:
        mode = self.finetune
        if mode in ("head", "lora"):
            if self.backbone is None:
                message = f"{mode!r} needs model.backbone: the frozen model it trains on"
                raise _field_error("ModelConfig", ("finetune",), message, mode)
            if self.name != "mlp":
                message = f"is the head in finetune = {mode!r}: 'mlp' (hidden = [] for linear)"
                raise _field_error("ModelConfig", ("name",), message, self.name)
        elif self.backbone is not None:
            message = "a backbone is used with finetune = 'head' or 'lora'"
            raise _field_error("ModelConfig", ("backbone",), message, self.backbone)
        if mode == "lora" and not self.lora_targets:
            message = "must name the modules that get adapters in finetune = 'lora'"
            raise _field_error("ModelConfig", ("lora_targets",), message, self.lora_targets)
        if mode != "lora":
            for key in ("lora_targets", "lora_rank", "lora_alpha", "lora_dropout"):
                if getattr(self, key) != type(self).model_fields[key].default:
                    message = f"applies only to finetune = 'lora', not {mode!r}"
                    raise _field_error("ModelConfig", (key,), message, getattr(self, key))
        for key in ("backbone_weights", "backbone_sha256", "backbone_input"):
            if getattr(self, key) is not None and self.backbone is None:
                message = "is given only with model.backbone"
                raise _field_error("ModelConfig", (key,), message, getattr(self, key))
        if not self.hidden and self.name != "mlp":
            message = "must be a non-empty list of positive widths (empty: an MLP is linear)"
            raise _field_error("ModelConfig", ("hidden",), message, self.hidden)
        return self

    @field_validator("backbone")
    @classmethod
    def _backbone_factory(cls, value: str | None) -> str | None:
        if value is not None and (value.count(":") != 1 or not all(value.split(":"))):
            raise ValueError("must be 'package.module:factory'")
        return value

    @field_validator("lora_targets")
    @classmethod
    def _target_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any(not t or t != t.strip() or t.startswith(".") or t.endswith(".") for t in value):
            raise ValueError("must be module names such as 'query' or 'encoder.layer.0.query'")
        return value

    @field_validator("name")
    @classmethod
    def _known_model(cls, value: str) -> str:
        if value not in BUILTIN_MODELS and value.count(":") != 1:
            known = ", ".join(BUILTIN_MODELS)
            raise ValueError(f"must be one of {known} or 'package.module:factory'")
        return value

    @field_validator("hidden")
    @classmethod
    def _positive_widths(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(w < 1 for w in value):
            raise ValueError("must be a list of positive widths")
        return value


class OptimConfig(_Section):
    LATER_FIELDS: ClassVar[frozenset[str]] = frozenset(
        {
            "schedule",
            "warmup_stages",
            "min_lr_ratio",
            "step_gamma",
            "step_stages",
            "clip_norm",
            "label_smoothing",
            "stage_accuracy",
        }
    )

    name: Literal["sgd", "adam", "adamw"] = "sgd"
    """Optimizer; its state (momentum, moments, step counts) is checkpointed every stage.
    ``adamw`` is Adam with decoupled weight decay (``torch.optim.AdamW``)."""
    lr: float = Field(0.05, gt=0)
    """Peak learning rate; ``schedule`` scales it by the step's place in the stages."""
    momentum: float = Field(0.9, ge=0, lt=1)
    """SGD momentum."""
    weight_decay: float = Field(0.0, ge=0)
    """Weight decay: L2 added to the gradient (sgd, adam), decoupled (adamw)."""
    batch_size: int = Field(32, ge=1)
    """Points per step; batches are cut from the stage's hash order of retained IDs."""
    schedule: Literal["constant", "cosine", "step"] = "constant"
    """Learning rate after warmup, by position in the stages (stage, fraction of it done;
    never a step count, which deletions change): constant, cosine decay to
    ``min_lr_ratio`` x lr at the end of stage R, or x ``step_gamma`` every ``step_stages``."""
    warmup_stages: float = Field(0.0, ge=0)
    """Linear warmup from 0 to lr over this many stages (fractions allowed, at most R)."""
    min_lr_ratio: float = Field(0.0, ge=0, le=1)
    """cosine: the rate at the end of stage R, as a fraction of lr."""
    step_gamma: float = Field(0.1, gt=0, le=1)
    """step: factor applied to the rate at each decay."""
    step_stages: float = Field(1.0, gt=0)
    """step: stages (fractions allowed) between decays, counted from the end of warmup."""
    clip_norm: float | None = Field(None, gt=0)
    """Clip each step's gradient to this total L2 norm; unset: no clipping."""
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    """Label smoothing of the cross-entropy loss (0: none)."""
    stage_accuracy: Literal["off", "train"] = "off"
    """``train``: record each stage's accuracy on the shard's points seen so far (slices
    1..stage) with its checkpoint; its mean training loss is recorded always."""

    @model_validator(mode="after")
    def _combinations(self) -> OptimConfig:
        if self.name == "adamw" and self.momentum != type(self).model_fields["momentum"].default:
            raise _field_error(
                "OptimConfig",
                ("momentum",),
                "is SGD's; adamw has no momentum setting (its betas are fixed)",
                self.momentum,
            )
        for key, schedule in (
            ("min_lr_ratio", "cosine"),
            ("step_gamma", "step"),
            ("step_stages", "step"),
        ):
            value = getattr(self, key)
            if self.schedule != schedule and value != type(self).model_fields[key].default:
                raise _field_error(
                    "OptimConfig",
                    (key,),
                    f"applies only to optim.schedule = '{schedule}', not '{self.schedule}'",
                    value,
                )
        return self


class ResourcesConfig(_Section):
    num_cpus: float = Field(1.0, gt=0)
    """CPUs reserved per shard task on Ray."""
    num_gpus: float = Field(0.0, ge=0)
    """GPUs per shard task on Ray; fractions pack several shards on one GPU."""
    device: Literal["cpu", "cuda"] = "cpu"
    """Where shard models train and predict. Bitwise equality holds per device."""
    threads: int = Field(1, ge=1, le=256)
    """torch intra-op threads per shard task; fixed, because it is part of the fingerprint."""

    def for_data(self) -> ResourcesConfig:
        """What a job that only moves data (ingest, held-out data) reserves: no GPU."""
        return ResourcesConfig(num_cpus=self.num_cpus)


class DeletionConfig(_Section):
    batch_window_s: float = Field(0.0, ge=0, le=7 * 86_400)
    """Seconds a pending request waits for others to join its batch before retraining
    starts; requests accepted while a retrain runs join the next batch anyway."""
    deadline_s: float = Field(86_400.0, gt=0, le=366 * 86_400)
    """Bound on the time from acceptance to retrained: a batch starts early when waiting
    longer would, by the calibrated cost model, finish its oldest request after this."""
    lease_s: float = Field(600.0, ge=1, le=7 * 86_400)
    """How long a processing lock held by an unreachable process (another host) stays
    valid without a heartbeat; a dead process on this host frees it at once."""


class ServingConfig(_Section):
    """Settings of the prediction server. They belong to whoever runs it, not to the store:
    they are never written to the store and never change what training produces."""

    host: str = "127.0.0.1"
    """Address the HTTP server binds; only loopback unless you say otherwise (0.0.0.0)."""
    port: int = Field(8000, ge=1, le=65535)
    """TCP port of the HTTP server."""
    token: SecretStr | None = Field(None, exclude=True)
    """Bearer token that POST /forget requires, at least 16 characters; without one,
    deletion over HTTP is refused. Prefer the environment (``SISA_SERVING__TOKEN``) to a
    file; it is never written anywhere."""
    read_token: SecretStr | None = Field(None, exclude=True)
    """Bearer token of the compliance dashboard (GET /dashboard), at least 16 characters,
    other than ``token``: it reads the deletion state and can change nothing. Without
    one the dashboard is off. Prefer the environment (``SISA_SERVING__READ_TOKEN``)."""
    metrics: bool = True
    """Serve GET /metrics (Prometheus) and time every prediction for it."""
    output: Literal["probabilities", "labels"] = "probabilities"
    """The most /predict reveals. ``labels`` withholds probabilities, which leak the most
    to membership inference."""
    max_body_bytes: int = Field(4 << 20, ge=1024, le=1 << 30)
    """Largest request body accepted; larger ones get 413."""
    max_rows: int = Field(1024, ge=1, le=1_000_000)
    """Most rows in one /predict call; more get 413."""
    poll_s: float = Field(1.0, gt=0, le=3600)
    """How often the ensemble looks for a new serving state it was not told about
    (requests accepted elsewhere, retrains committed by another process)."""
    inference: Literal["auto", "loop", "fused"] = "auto"
    """How the shard models are evaluated: one after another, or stacked into one
    vectorised call (``auto`` picks what is faster on the device)."""
    retrain: Literal["background", "external"] = "background"
    """``background``: the server also retrains and purges for accepted requests;
    ``external``: a separate ``sisa process`` does."""
    num_cpus: float = Field(0.5, ge=0, le=1024)
    """CPUs the ensemble deployment reserves on Ray; all shard models share them."""
    num_gpus: float = Field(0.0, ge=0, le=64)
    """GPUs each ensemble replica reserves on Ray; must be > 0 for a store whose models
    run on cuda (``resources.device``), and a fraction shares a GPU."""
    replicas: int = Field(1, ge=1, le=64)
    """Replicas of the ensemble deployment, each holding every shard model."""

    @field_validator("token", "read_token")
    @classmethod
    def _strong_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters")
        if value is not None and not all(33 <= ord(c) < 127 for c in value.get_secret_value()):
            raise ValueError("must be printable ASCII without spaces (it travels in a header)")
        return value

    @model_validator(mode="after")
    def _tokens_apart(self) -> ServingConfig:
        both = self.token is not None and self.read_token is not None
        if both and self.token.get_secret_value() == self.read_token.get_secret_value():
            raise ValueError("read_token must differ from token: the dashboard's cannot forget")
        return self
