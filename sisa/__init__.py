"""sisa: exact machine unlearning with SISA training (Bourtoule et al., IEEE S&P 2021).

The Python API. Executors (in process, Ray) live in ``orchestrator.executors``; every
function here runs shard jobs in this process when no executor is given.

The names below are imported on first use (PEP 562): ``import sisa`` and the submodules
that read a store, journal a request or report its status import neither torch nor
scikit-learn, which cost 1.4 s and 0.95 s of every command's start; torch is imported by
what trains or runs a model, when it does. ``from sisa import X`` works as before.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import TYPE_CHECKING, Any

# every public name and the submodule that defines it
_EXPORTS = {
    "Config": "sisa.config",
    "ConfigError": "sisa.config",
    "DataError": "sisa.data",
    "Dataset": "sisa.data",
    "Ensemble": "sisa.ensemble",
    "InputError": "sisa.ensemble",
    "NoModelError": "sisa.ensemble",
    "Prediction": "sisa.predictor",
    "Predictor": "sisa.predictor",
    "SisaStore": "sisa.store",
    "StoreStateError": "sisa.store",
    "UnknownIDError": "sisa.unlearn",
    "RequestStatus": "sisa.lifecycle",
    "accept": "sisa.unlearn",
    "audit": "sisa.audit",
    "build_config": "sisa.config",
    "evaluate": "sisa.status",
    "forget": "sisa.unlearn",
    "load_config": "sisa.config",
    "plan_forget": "sisa.unlearn",
    "process": "sisa.batch",
    "request_status": "sisa.lifecycle",
    "status": "sisa.status",
    "train": "sisa.train",
    "verify": "sisa.verify",
}

__all__ = [  # the keys of _EXPORTS, spelt out for linters and type checkers
    "Config",
    "ConfigError",
    "DataError",
    "Dataset",
    "Ensemble",
    "InputError",
    "NoModelError",
    "Prediction",
    "Predictor",
    "SisaStore",
    "StoreStateError",
    "UnknownIDError",
    "RequestStatus",
    "accept",
    "audit",
    "build_config",
    "evaluate",
    "forget",
    "load_config",
    "plan_forget",
    "process",
    "request_status",
    "status",
    "train",
    "verify",
]

if TYPE_CHECKING:  # what type checkers and IDEs see: the same names, eagerly
    from sisa.audit import audit
    from sisa.batch import process
    from sisa.config import Config, ConfigError, build_config, load_config
    from sisa.data import DataError, Dataset
    from sisa.ensemble import Ensemble, InputError, NoModelError
    from sisa.lifecycle import RequestStatus, request_status
    from sisa.predictor import Prediction, Predictor
    from sisa.status import evaluate, status
    from sisa.store import SisaStore, StoreStateError
    from sisa.train import train
    from sisa.unlearn import UnknownIDError, accept, forget, plan_forget
    from sisa.verify import verify


class _Package(types.ModuleType):
    """``sisa`` itself. ``train``, ``status``, ``evaluate``... name functions, and three of
    them (``train``, ``status``, ``verify``) are also submodules: importing
    ``sisa.status`` binds the submodule on the package, which would hide the function.
    The package binds the function instead, so ``sisa.status`` is the function whichever
    was imported first, as when this file imported everything eagerly."""

    def __setattr__(self, name: str, value: Any) -> None:
        if _EXPORTS.get(name) == f"{self.__name__}.{name}" and isinstance(value, types.ModuleType):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    """A public name, imported from its submodule on first use; or a submodule not yet
    imported (``import sisa; sisa.journal``), which the eager package had imported."""
    module = _EXPORTS.get(name)
    if module is not None:
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value  # later lookups skip this function
        return value
    if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f"{__name__}.{name}")  # binds itself on the package
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
