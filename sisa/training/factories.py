"""User factories named ``"package.module:callable"``: when they may be imported, and how.

A factory name is code to import, and a store's config is data that anyone with write
access to the store can change. So one rule holds for every command: **a command that
runs the store's models imports its factory only when trusted**, that is named by the
caller who trains (``trusted``: the config they passed), or listed in
``SISA_TRUSTED_FACTORIES`` (comma-separated ``module:callable`` or ``module:*``) by
whoever runs it. Commands that run models: ``train`` (trusts its own config), ``process``,
``forget --wait``, ``verify``, ``evaluate``, ``predict`` and ``serve``. Commands that only
read or journal (``status``, ``forget``, ``requests``, ``plan``, ``audit``, ``receipt``)
never import a factory.

A factory is imported from ``sys.path``. The ``sisa`` command does not put the working
folder there, and nothing here adds it: a command that reads a store would otherwise run
whatever module of that name a folder holds. Run with ``PYTHONPATH`` naming the folder
of the module, or install it.

This module imports no torch: the checks run before anything is planned or journaled.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from sisa.config import BUILTIN_MODELS, ModelConfig

TRUST_ENV = "SISA_TRUSTED_FACTORIES"


def is_trusted(name: str, trusted: Collection[str] = ()) -> bool:
    allowed = set(trusted) | {n.strip() for n in os.environ.get(TRUST_ENV, "").split(",")}
    return name in allowed or f"{name.partition(':')[0]}:*" in allowed


def _not_found_hint(module: str, beside: Path | None = None) -> str:
    """Where the module's file lies, if it is in the working folder or ``beside`` (the
    config file's folder), and how to put it on the path: never done for the user, since a
    folder on the path would run whatever module it holds."""
    top = module.partition(".")[0]
    places = [(Path("."), "the working folder")]
    if beside is not None and beside.resolve() != Path.cwd().resolve():
        places.append((beside, "the config file's folder"))
    for folder, what in places:
        for found in (folder / f"{top}.py", folder / top / "__init__.py"):
            if found.exists():
                shown = "$PWD" if folder == Path(".") else str(folder.resolve())
                return (
                    f" ({found} is in {what}, not on the import path); run with PYTHONPATH={shown} "
                    f"sisa ..., or install it as a package"
                )
    return (
        f"; run with PYTHONPATH set to the folder that holds {top!r} "
        f"(for example PYTHONPATH=$PWD sisa ...), or install it as a package"
    )


def check_factory(
    cfg: ModelConfig, trusted: Collection[str] = (), beside: Path | None = None
) -> None:
    """Raise ValueError naming ``model.name`` unless its factory may and can be imported;
    imports nothing but the module's parent packages. ``beside``: the config file's folder,
    searched for the module's file only to say where it is."""
    if cfg.finetune == "lora" and cfg.backbone is not None:  # its shard models run it
        check_named(cfg.backbone, "model.backbone", trusted, beside)
    if cfg.name in BUILTIN_MODELS:
        return
    check_named(cfg.name, "model.name", trusted, beside)


def check_named(
    name: str, field: str, trusted: Collection[str] = (), beside: Path | None = None
) -> None:
    """The trust and import checks of ``check_factory`` for any factory setting (``field``:
    ``model.name`` or ``model.backbone``)."""
    if not is_trusted(name, trusted):
        raise ValueError(
            f"{field}: factory {name!r} is not trusted, so it is not imported; "
            f"allow it with {TRUST_ENV}={name}"
        )
    module = name.partition(":")[0]
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise ValueError(
            f"{field}: cannot load factory {name!r}: no module named {module!r}"
            + _not_found_hint(module, beside)
        )


def load_factory(cfg: ModelConfig, trusted: Collection[str] = ()) -> Callable[..., Any]:
    """The trusted factory ``cfg.name`` names, imported."""
    return load_named(cfg.name, "model.name", trusted)


def load_named(name: str, field: str, trusted: Collection[str] = ()) -> Callable[..., Any]:
    """The trusted factory ``name`` (the value of setting ``field``), imported."""
    check_named(name, field, trusted)
    module_name, _, attr = name.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except ModuleNotFoundError as err:
        hint = _not_found_hint(err.name or module_name)
        raise ValueError(f"{field}: cannot load factory {name!r}: {err}{hint}") from None
    except (ImportError, AttributeError) as err:
        raise ValueError(f"{field}: cannot load factory {name!r}: {err}") from None
