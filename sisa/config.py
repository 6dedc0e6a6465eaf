"""The one configuration object, validated in one place.

Sources, lowest precedence first: a TOML file, ``SISA_<SECTION>__<KEY>`` environment
variables (for example ``SISA_SISA__SHARDS=8``), then CLI overrides (``--set sisa.shards=8``).
Unknown keys and bad values raise ``ConfigError`` whose message names the field as the user
typed it (``sisa.shards``).
"""

from __future__ import annotations

import hashlib
import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

ENV_PREFIX = "SISA_"
SECRETS = {"serving.token"}
RISK_SETTINGS = ("deletion_risk", "risk_threshold", "risky_shard_fraction", "risky_slice_fraction")


class ConfigError(ValueError):
    """A configuration problem; the message names the offending field."""


def _field_error(title: str, loc: tuple[str, ...], message: str, value: Any) -> ValidationError:
    """A validation error placed on field ``loc``, for checks that span several fields
    (a plain ``ValueError`` there would name the section, not the field)."""
    error = PydanticCustomError("value_error", message)
    return ValidationError.from_exception_data(
        title, [InitErrorDetails(type=error, loc=loc, input=value)]
    )


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # Fields added after stores were first written. Their defaults do what those stores
    # did, so the training hash leaves such a field out while it holds its default: the
    # hash of an older store's config stays what it was (``Config.training_hash``).
    LATER_FIELDS: ClassVar[frozenset[str]] = frozenset()

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans(cls, value: Any) -> Any:
        # No setting is a boolean; TOML's true/false would otherwise pass as 1/0.
        if isinstance(value, bool):
            raise ValueError("must not be true/false")
        return value


IN_MEMORY = "in-memory"  # data.source of a store trained from data passed to ``train``
BUILTIN_MODELS = ("mlp", "cnn", "resnet", "textbag", "transformer")
TEXT_MODELS = ("textbag", "transformer")
BUILTIN_SOURCES = ("digits", "synthetic-purchase", IN_MEMORY)


def resolve_source(source: str, base: str | Path | None = None) -> str:
    """``data.source`` with a relative local path made absolute: against ``base`` (the
    config file's folder, for a path written in it), else the working folder. Training
    stores what this returns, so every later command reads the same file from anywhere."""
    if source.startswith("file://"):
        return "file://" + resolve_source(source.removeprefix("file://"), base)
    if source in BUILTIN_SOURCES or "://" in source or "::" in source:
        return source
    path = Path(source).expanduser()
    if not path.is_absolute() and base is not None:
        path = Path(base) / path
    return os.path.abspath(path)


class DataConfig(_Section):
    source: str = "digits"
    """``"digits"`` (bundled), ``"synthetic-purchase"``, a path/URL to .npz, .csv or .parquet,
    or a folder (of images, or of Parquet files read as one table). A relative path in a
    config file is relative to that file's folder; typed on the command line or in
    ``SISA_DATA__SOURCE``, to the working folder. Training stores it resolved;
    ``"in-memory"`` records that ``train`` was given the data (``data=``)."""
    n: int = Field(10_000, ge=10)
    """Number of points for ``synthetic-purchase``."""
    test_fraction: float = Field(0.2, ge=0.0, lt=1.0)
    """Share of points held out for evaluation, chosen per ID by a keyed hash."""
    num_classes: int | None = Field(None, ge=2)
    """Number of classes for user files with integer labels; inferred as max(label)+1 when
    unset. With a vocabulary (``classes``, or string labels) it must equal its length."""
    id_column: str = Field("id", min_length=1)
    """Table column (CSV, Parquet, DataFrame) holding each point's unique ID."""
    label_column: str = Field("label", min_length=1)
    """Table column holding the label: integers, or strings / any values (a vocabulary)."""
    group_column: str = Field("group", min_length=1)
    """Table column of groups (points erased together); optional in the table."""
    risk_column: str = Field("risk", min_length=1)
    """Table column of deletion probabilities in [0, 1]; optional in the table."""
    feature_columns: tuple[str, ...] | None = None
    """Table columns used as features, in this order. Unset: every other numeric column,
    in table order (text columns are left out; a boolean column is an error)."""
    classes: tuple[str | int, ...] | None = None
    """The label vocabulary, in class order (class i is ``classes[i]``). Unset: integer
    labels are classes as they are; other labels get their sorted distinct values, recorded
    at training. Declare it when a class name could identify a person (docs/design.md)."""
    fill_missing: float | None = None
    """Constant that replaces missing (NaN) features; unset: missing features are refused.
    Labels, IDs, groups and risks are never filled."""
    split: Literal["auto", "id", "group"] = "auto"
    """Rule of the held-out split: by a keyed hash of each point's ``id``, or of its
    ``group`` (a group is never on both sides). ``auto``: by group when the data has
    groups. The rule used is recorded; a store trained before the rule existed used ``id``."""
    image_size: tuple[int, int] | None = None
    """[height, width] every image of an image folder is resized to (bilinear). Unset:
    every image must have the size of the first."""
    image_mode: Literal["RGB", "L"] = "RGB"
    """Colour mode of the stored pixels: three channels, or one (grey). Images are converted
    to it when ``image_size`` is set; without resizing, an image of another mode is refused."""
    image_column: str | None = Field(None, min_length=1)
    """Column of image paths when ``source`` is a manifest (a CSV or Parquet table): each
    row's image, relative to the manifest's folder, is decoded as an image folder's are and
    is the point's features; IDs, labels and groups come from their columns."""
    input_scale: float | None = Field(None, gt=0)
    """Every batch of features is multiplied by this, in training and in prediction: a
    given constant, never computed from the points. Unset: 1/255 for an image folder or
    manifest (its uint8 pixels to [0, 1]), else 1. Training stores the value it used."""
    augment: tuple[Literal["crop", "flip"], ...] = ()
    """Augmentations of image batches: ``crop`` (pad by ``crop_padding``, cut a window of
    the original size), ``flip`` (mirror half the points). Each point's draw is a keyed
    hash of (seed, shard, stage, epoch, its ID), so a retrain reproduces it bitwise."""
    crop_padding: int = Field(4, ge=1, le=64)
    """Pixels of zero padding on each side for ``crop``."""
    scale: Literal["none", "standard"] = "none"
    """``standard``: features minus a mean, over a scale, per feature, inside the model."""
    scale_from: str = "stage"
    """Where ``scale``'s statistics come from: ``stage`` (per shard, from the slices each
    stage has seen; stored and purged with its checkpoint), ``constants`` (``scale_mean``,
    ``scale_std``) or ``reference`` (computed from ``scale_reference``). Statistics of the
    whole training set are refused: a deletion could not take a point back out of them."""
    scale_mean: tuple[float, ...] | None = None
    """Given means for ``scale_from = "constants"``: one for every feature, or one each.
    With ``reference``, recorded by training from the reference (leave it unset)."""
    scale_std: tuple[float, ...] | None = None
    """Given scales for ``scale_from = "constants"``: one for every feature, or one each.
    With ``reference``, recorded by training from the reference (leave it unset)."""
    scale_reference: str | None = None
    """Path/URL of a reference set never subject to deletion, for ``scale_from =
    "reference"``: an ``.npz`` whose ``X`` holds features as stored, or a CSV/Parquet table
    read by the same column mapping as the source (labels and IDs not needed). Training
    computes the mean and scale of every feature from it, records them with the file's
    sha256, and refuses a file that changed since."""
    scale_reference_sha256: str | None = None
    """Recorded by training: the sha256 of ``scale_reference``'s file (leave it unset)."""
    text_column: str | None = None
    """Table column of texts; each becomes ``max_length`` token IDs by ``tokenizer``, the
    point's only features. Unset: the table's features are its numeric columns."""
    tokenizer: str | None = None
    """Path/URL of a tokenizer file (``tokenizers`` JSON) for ``text_column``. It is given,
    never fitted on the training points; training records its sha256 and refuses a file
    that changed since."""
    tokenizer_sha256: str | None = None
    """Recorded by training: the sha256 of ``tokenizer``'s file (leave it unset)."""
    max_length: int = Field(64, ge=1, le=4096)
    """Tokens per text: longer texts are cut, shorter ones padded."""
    categorical_columns: tuple[str, ...] | None = None
    """Table columns of text or integer values that are categories, not numbers: each is
    encoded by ``categorical_encoding`` where it sits among the features (with
    ``feature_columns`` set, it must be listed there). Its categories are given
    (``categories``) or read from ``category_reference``, never computed from the
    training points (docs/design.md, "Statistics computed from data")."""
    categorical_encoding: Literal["onehot", "ordinal"] = "onehot"
    """``onehot``: one 0/1 feature per category, in category order; ``ordinal``: one
    feature, the category's index (a float)."""
    categories: dict[str, tuple[str | int, ...]] | None = None
    """The categories of some ``categorical_columns``, in order (column -> values); a value
    matches a category by its text (7 and "7" are one). A value outside them is refused."""
    category_reference: str | None = None
    """Path/URL of a CSV or Parquet table never subject to deletion (public data, a code
    list): a categorical column without given ``categories`` takes the distinct values of
    its column of the same name, in order of first appearance. Training records its
    sha256 and refuses a file that changed since."""
    category_reference_sha256: str | None = None
    """Recorded by training: the sha256 of ``category_reference``'s file (leave it unset)."""

    LATER_FIELDS: ClassVar[frozenset[str]] = frozenset(
        {
            "scale",
            "scale_from",
            "scale_mean",
            "scale_std",
            "scale_reference",
            "scale_reference_sha256",
            "text_column",
            "tokenizer",
            "tokenizer_sha256",
            "max_length",
            "image_size",
            "image_mode",
            "image_column",
            "input_scale",
            "augment",
            "crop_padding",
            "id_column",
            "label_column",
            "group_column",
            "risk_column",
            "feature_columns",
            "classes",
            "fill_missing",
            "split",
            "categorical_columns",
            "categorical_encoding",
            "categories",
            "category_reference",
            "category_reference_sha256",
        }
    )

    @field_validator("image_size", mode="before")
    @classmethod
    def _square(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            return (value, value)  # one number: a square
        return value

    @field_validator("image_size")
    @classmethod
    def _positive_size(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        if value is not None and not all(1 <= side <= 4096 for side in value):
            raise ValueError("must be [height, width] in 1..4096 pixels")
        return value

    @field_validator("scale_from")
    @classmethod
    def _allowed_statistics(cls, value: str) -> str:
        if value in ("global", "all", "training", "dataset", "whole"):
            raise ValueError(
                f"{value!r} would compute the statistics over the whole training set, which "
                "the exactness rule forbids (docs/design.md, 'Statistics computed from "
                "data'): use 'stage', or give 'constants'"
            )
        if value not in ("stage", "constants", "reference"):
            raise ValueError("must be 'stage', 'constants' or 'reference'")
        return value

    @model_validator(mode="after")
    def _scale_constants(self) -> DataConfig:
        given = self.scale_mean is not None or self.scale_std is not None
        both = self.scale_mean is not None and self.scale_std is not None
        if self.scale_from == "constants" and not both:
            message = "scale_from = 'constants' needs data.scale_mean and data.scale_std"
            raise _field_error("DataConfig", ("scale_from",), message, self.scale_from)
        reference = self.scale_from == "reference"
        if reference and self.scale_reference is None:
            message = "scale_from = 'reference' needs data.scale_reference, a file never deleted"
            raise _field_error("DataConfig", ("scale_from",), message, self.scale_from)
        if self.scale_reference is not None and not reference:
            message = "is given only with scale_from = 'reference'"
            raise _field_error("DataConfig", ("scale_reference",), message, self.scale_reference)
        if self.scale_reference_sha256 is not None and self.scale_reference is None:
            message = "is recorded only with data.scale_reference"
            value = self.scale_reference_sha256
            raise _field_error("DataConfig", ("scale_reference_sha256",), message, value)
        recorded = reference and self.scale_reference_sha256 is not None and both
        if given and self.scale_from != "constants" and not recorded:
            message = (
                "is given only with scale_from = 'constants' (with 'reference' training "
                "records it, with the reference's sha256)"
            )
            raise _field_error("DataConfig", ("scale_mean",), message, self.scale_mean)
        if self.scale_std is not None and min(self.scale_std) <= 0:
            raise _field_error("DataConfig", ("scale_std",), "must be positive", self.scale_std)
        return self

    @field_validator("augment")
    @classmethod
    def _distinct_augments(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError("must not repeat an augmentation")
        return value

    @field_validator("feature_columns", "classes", mode="before")
    @classmethod
    def _no_boolean_items(cls, value: Any) -> Any:
        if isinstance(value, list | tuple) and any(isinstance(v, bool) for v in value):
            raise ValueError("must not hold true/false")
        return value

    @field_validator("feature_columns", "classes")
    @classmethod
    def _distinct(cls, value: tuple[Any, ...] | None) -> tuple[Any, ...] | None:
        if value is not None and not value:
            raise ValueError("must not be empty (leave it unset instead)")
        if value is not None and len(set(value)) != len(value):
            raise ValueError("must not repeat a value")
        return value

    @field_validator("classes")
    @classmethod
    def _two_classes(cls, value: tuple[Any, ...] | None) -> tuple[Any, ...] | None:
        if value is not None and len(value) < 2:
            raise ValueError("must name at least 2 classes")
        return value

    @field_validator("categorical_columns")
    @classmethod
    def _distinct_columns(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None and (not value or len(set(value)) != len(value)):
            raise ValueError("must name distinct columns (leave it unset for none)")
        return value

    @field_validator("categories", mode="before")
    @classmethod
    def _category_values(cls, value: Any) -> Any:
        for column, items in (value or {}).items() if isinstance(value, Mapping) else ():
            if not isinstance(items, list | tuple) or not items:
                raise ValueError(f"{column!r}: must be a non-empty list of categories")
            if any(isinstance(v, bool) or not isinstance(v, str | int) for v in items):
                raise ValueError(f"{column!r}: categories are strings or integers")
            if len({str(v) for v in items}) != len(items):  # matched by their text
                raise ValueError(f"{column!r}: must not repeat a category (7 and '7' are one)")
        return value

    @model_validator(mode="after")
    def _categorical(self) -> DataConfig:
        columns = self.categorical_columns or ()
        for key in ("categories", "category_reference"):
            if getattr(self, key) is not None and not columns:
                message = "is given only with data.categorical_columns"
                raise _field_error("DataConfig", (key,), message, getattr(self, key))
        if self.category_reference_sha256 is not None and self.category_reference is None:
            message = "is recorded only with data.category_reference"
            value = self.category_reference_sha256
            raise _field_error("DataConfig", ("category_reference_sha256",), message, value)
        stray = sorted(set(self.categories or {}) - set(columns))
        if stray:
            message = f"names {stray[0]!r}, which is not in data.categorical_columns"
            raise _field_error("DataConfig", ("categories",), message, self.categories)
        bare = [c for c in columns if c not in (self.categories or {})]
        if bare and self.category_reference is None:
            message = (
                f"column {bare[0]!r} has no categories: give them in data.categories or name "
                "a data.category_reference file. They are never computed from the training "
                "data, a whole-set statistic that a deletion could not take a point back out "
                "of (docs/design.md, 'Statistics computed from data')"
            )
            raise _field_error("DataConfig", ("categorical_columns",), message, columns)
        if columns and self.text_column is not None:
            message = "does not go with data.text_column (the texts are the only features)"
            raise _field_error("DataConfig", ("categorical_columns",), message, columns)
        unlisted = [c for c in columns if c not in (self.feature_columns or columns)]
        if unlisted:
            message = f"names {unlisted[0]!r}, which data.feature_columns does not list"
            raise _field_error("DataConfig", ("categorical_columns",), message, columns)
        return self


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

    LATER_FIELDS: ClassVar[frozenset[str]] = frozenset({"heads", "vocab_size", "pad_id"})

    @model_validator(mode="after")
    def _transformer_width(self) -> ModelConfig:
        if self.name == "transformer" and self.hidden[0] % self.heads:
            message = f"must divide the width hidden[0] = {self.hidden[0]}"
            raise _field_error("ModelConfig", ("heads",), message, self.heads)
        return self

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
        if not value or any(w < 1 for w in value):
            raise ValueError("must be a non-empty list of positive widths")
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

    @field_validator("token")
    @classmethod
    def _strong_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters")
        if value is not None and not all(33 <= ord(c) < 127 for c in value.get_secret_value()):
            raise ValueError("must be printable ASCII without spaces (it travels in a header)")
        return value


class Config(_Section):
    data: DataConfig = DataConfig()
    sisa: SisaConfig = SisaConfig()
    model: ModelConfig = ModelConfig()
    optim: OptimConfig = OptimConfig()
    resources: ResourcesConfig = ResourcesConfig()
    deletion: DeletionConfig = DeletionConfig()
    serving: ServingConfig = ServingConfig()

    @model_validator(mode="after")
    def _warmup_within_training(self) -> Config:
        if self.optim.warmup_stages > self.sisa.slices:
            raise _field_error(
                "Config",
                ("optim", "warmup_stages"),
                f"must be at most sisa.slices = {self.sisa.slices}: warmup is counted in "
                "stages, and training has no more",
                self.optim.warmup_stages,
            )
        return self

    def stored(self) -> dict[str, Any]:
        """What a store records of this config: everything but the server's settings."""
        return self.model_dump(mode="json", exclude={"serving"})

    def training_hash(self) -> str:
        """Hash of everything that determines the weights (resources excluded but threads;
        the deletion policy changes when retraining happens, never what it produces).

        Checkpoints record it; a checkpoint made under another hash is never reused.
        """
        body = self.model_dump(mode="json", exclude={"resources", "deletion", "serving"})
        for name, section in body.items():
            model = getattr(self, name)
            for key in model.LATER_FIELDS:  # at its default: as before the field existed
                if getattr(model, key) == type(model).model_fields[key].default:
                    del section[key]
        if self.sisa.deletion_risk is None:  # the tier settings then change nothing
            for key in RISK_SETTINGS:
                del body["sisa"][key]
        body["threads"] = self.resources.threads
        body["device"] = self.resources.device
        text = json.dumps(body, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


def _parse_value(text: str) -> Any:
    """Parse a CLI/env value as TOML (``8``, ``0.1``, ``[64, 32]``, ``true``), else a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"{dotted}: expected 'section.key', e.g. sisa.shards")
    section = tree.setdefault(parts[0], {})
    if not isinstance(section, dict):
        raise ConfigError(f"{parts[0]}: must be a table of settings")
    section[parts[1]] = value


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """``SISA_SECTION__KEY=value`` variables as dotted overrides (``section.key``)."""
    out: dict[str, Any] = {}
    for name, value in environ.items():
        if name.startswith(ENV_PREFIX) and "__" in name:
            section, _, key = name[len(ENV_PREFIX) :].partition("__")
            dotted = f"{section.lower()}.{key.lower()}"
            out[dotted] = value if dotted in SECRETS else _parse_value(value)
    return out


def parse_assignments(items: list[str]) -> dict[str, Any]:
    """CLI ``section.key=value`` strings as dotted overrides."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"{item}: expected section.key=value")
        dotted = key.strip()
        out[dotted] = value.strip() if dotted in SECRETS else _parse_value(value.strip())
    return out


def _field_name(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc)


def build_config(
    tree: Mapping[str, Any] | None = None, overrides: Mapping[str, Any] | None = None
) -> Config:
    """Validate a nested mapping plus dotted overrides into a ``Config``."""
    merged: dict[str, Any] = {
        k: dict(v) if isinstance(v, Mapping) else v for k, v in (tree or {}).items()
    }
    for dotted, value in (overrides or {}).items():
        _set_path(merged, dotted, value)
    try:
        return Config.model_validate(merged)
    except ValidationError as err:
        problems = []
        for e in err.errors():
            field = _field_name(e["loc"])
            if e["type"] == "extra_forbidden":
                problems.append(f"{field}: unknown setting")
            elif field in SECRETS:  # never echo a secret into a log
                problems.append(f"{field}: {e['msg']}")
            else:
                problems.append(f"{field}: {e['msg']} (got {e.get('input')!r})")
        raise ConfigError("; ".join(problems)) from None


def load_config(
    path: str | Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Read a TOML file (optional), then apply env variables, then CLI overrides."""
    tree: dict[str, Any] = {}
    if path is not None:
        try:
            tree = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such config file") from None
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{path}: not valid TOML ({err})") from None
        data = tree.get("data")
        # files: next to the config
        for key in ("source", "tokenizer", "category_reference", "scale_reference"):
            if isinstance(data, dict) and isinstance(data.get(key), str):
                data[key] = resolve_source(data[key], Path(path).resolve().parent)
    combined = env_overrides(os.environ if environ is None else environ)
    combined.update(overrides or {})
    return build_config(tree, combined)
