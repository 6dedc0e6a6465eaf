"""What every section of the config shares: strict fields, errors that name the field, and
the names of built-in sources and models."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

from pydantic import (
    BaseModel,
    ConfigDict,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError


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
    def _no_booleans(cls, value: Any, info: ValidationInfo) -> Any:
        # Only a setting declared a boolean takes true/false; elsewhere TOML's true/false
        # would pass as 1/0.
        declared = cls.model_fields[info.field_name].annotation if info.field_name else None
        if isinstance(value, bool) and declared is not bool:
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
