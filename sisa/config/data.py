"""``[data]``: where the points come from and how their columns, labels, images, texts and
statistics are read. Every statistic computed from data follows the rule of
docs/design.md ("Statistics computed from data"): given, from a reference set, or per stage."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from sisa.config.base import (
    _field_error,
    _Section,
)


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
