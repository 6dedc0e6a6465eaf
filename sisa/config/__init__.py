"""The one configuration object, validated in one place.

``Config`` holds one section per table of the TOML file: ``[data]`` in
``sisa.config.data``, the others in ``sisa.config.sections``; what they share (strict
fields, errors that name the field) in ``sisa.config.base``. This module reads and
validates them together, and hashes what determines the weights.

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
from typing import Any

from pydantic import ValidationError, model_validator

from sisa.config.base import (
    BUILTIN_MODELS,
    BUILTIN_SOURCES,
    IN_MEMORY,
    TEXT_MODELS,
    ConfigError,
    _field_error,
    _Section,
    resolve_source,
)
from sisa.config.data import DataConfig
from sisa.config.sections import (
    DeletionConfig,
    ModelConfig,
    OptimConfig,
    ResourcesConfig,
    ServingConfig,
    SisaConfig,
)
from sisa.config.storage import StorageConfig

__all__ = [
    "BUILTIN_MODELS",
    "_Section",
    "_field_error",
    "BUILTIN_SOURCES",
    "IN_MEMORY",
    "TEXT_MODELS",
    "Config",
    "ConfigError",
    "DataConfig",
    "DeletionConfig",
    "ModelConfig",
    "OptimConfig",
    "ResourcesConfig",
    "ServingConfig",
    "SisaConfig",
    "StorageConfig",
    "build_config",
    "env_overrides",
    "load_config",
    "parse_assignments",
    "resolve_source",
]

ENV_PREFIX = "SISA_"
SECRETS = {"serving.token", "serving.read_token", "storage.kek"}
RISK_SETTINGS = ("deletion_risk", "risk_threshold", "risky_shard_fraction", "risky_slice_fraction")


class Config(_Section):
    data: DataConfig = DataConfig()
    sisa: SisaConfig = SisaConfig()
    model: ModelConfig = ModelConfig()
    optim: OptimConfig = OptimConfig()
    resources: ResourcesConfig = ResourcesConfig()
    deletion: DeletionConfig = DeletionConfig()
    serving: ServingConfig = ServingConfig()
    storage: StorageConfig = StorageConfig()

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
        mode = self.model.finetune
        if mode in ("head", "lora") and self.data.scale_from == "reference":
            raise _field_error(
                "Config",
                ("data", "scale_from"),
                f"'reference' does not go with model.finetune = {mode!r}: a reference holds "
                "raw points, and the statistics are of what the shards train on (the "
                "backbone's features or prefix outputs; use 'stage', the default)",
                self.data.scale_from,
            )
        if self.model.finetune == "head" and self.data.augment:
            raise _field_error(
                "Config",
                ("data", "augment"),
                "does not go with model.finetune = 'head': each point's features are computed "
                "once, before training, so no per-epoch draw can reach the backbone",
                self.data.augment,
            )
        return self

    def stored(self) -> dict[str, Any]:
        """What a store records of this config: everything but the server's settings."""
        return self.model_dump(mode="json", exclude={"serving"})

    def training_hash(self) -> str:
        """Hash of everything that determines the weights (resources excluded but threads;
        the deletion policy changes when retraining happens, never what it produces, and
        how the bytes are stored changes neither).

        Checkpoints record it; a checkpoint made under another hash is never reused.
        """
        body = self.model_dump(mode="json", exclude={"resources", "deletion", "serving", "storage"})
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
        model = tree.get("model")
        if isinstance(model, dict) and isinstance(model.get("backbone_weights"), str):
            weights = model["backbone_weights"]
            model["backbone_weights"] = resolve_source(weights, Path(path).resolve().parent)
    combined = env_overrides(os.environ if environ is None else environ)
    combined.update(overrides or {})
    return build_config(tree, combined)
