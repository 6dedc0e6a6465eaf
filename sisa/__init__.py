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
from typing import TYPE_CHECKING, Any

# every public name and the submodule that defines it
_EXPORTS = {
    "Config": "sisa.config",
    "ConfigError": "sisa.config",
    "DataError": "sisa.data.dataset",
    "Dataset": "sisa.data.dataset",
    "Ensemble": "sisa.serving.ensemble",
    "EvidenceError": "sisa.evidence.forgetting",
    "InputError": "sisa.serving.ensemble",
    "Journal": "sisa.store.journal",
    "NoModelError": "sisa.serving.ensemble",
    "Prediction": "sisa.serving.predictor",
    "Predictor": "sisa.serving.predictor",
    "RequestStatus": "sisa.deletion.lifecycle",
    "SisaStore": "sisa.store.artifacts",
    "StoreStateError": "sisa.store.artifacts",
    "UnknownIDError": "sisa.deletion.accept",
    "UnknownRequestError": "sisa.store.journal",
    "accept": "sisa.deletion.accept",
    "audit": "sisa.evidence.audit",
    "build_config": "sisa.config",
    "check_factory": "sisa.training.factories",
    "configure": "sisa.training.environment",
    "damaged_entries": "sisa.deletion.lifecycle",
    "evaluate": "sisa.evidence.status",
    "forget": "sisa.deletion.accept",
    "forgetting_evidence": "sisa.evidence.forgetting",
    "load_config": "sisa.config",
    "parse_assignments": "sisa.config",
    "pending_plan": "sisa.deletion.plan",
    "plan_forget": "sisa.deletion.accept",
    "process": "sisa.deletion.batch",
    "rekey": "sisa.store.rekey",
    "repair_tombstones": "sisa.store.tombstones",
    "request_status": "sisa.deletion.lifecycle",
    "request_statuses": "sisa.deletion.lifecycle",
    "status": "sisa.evidence.status",
    "train": "sisa.training.train",
    "typed_ids": "sisa.ids",
    "verify": "sisa.evidence.verify",
    "wait_purged": "sisa.deletion.accept",
}

__all__ = [  # the keys of _EXPORTS, spelt out for linters and type checkers
    "Config",
    "ConfigError",
    "DataError",
    "Dataset",
    "Ensemble",
    "EvidenceError",
    "InputError",
    "Journal",
    "NoModelError",
    "Prediction",
    "Predictor",
    "RequestStatus",
    "SisaStore",
    "StoreStateError",
    "UnknownIDError",
    "UnknownRequestError",
    "accept",
    "audit",
    "build_config",
    "check_factory",
    "configure",
    "damaged_entries",
    "evaluate",
    "forget",
    "forgetting_evidence",
    "load_config",
    "parse_assignments",
    "pending_plan",
    "plan_forget",
    "process",
    "rekey",
    "repair_tombstones",
    "request_status",
    "request_statuses",
    "status",
    "train",
    "typed_ids",
    "verify",
    "wait_purged",
]

if TYPE_CHECKING:  # what type checkers and IDEs see: the same names, eagerly
    from sisa.config import Config, ConfigError, build_config, load_config, parse_assignments
    from sisa.data.dataset import DataError, Dataset
    from sisa.deletion.accept import UnknownIDError, accept, forget, plan_forget, wait_purged
    from sisa.deletion.batch import process
    from sisa.deletion.lifecycle import (
        RequestStatus,
        damaged_entries,
        request_status,
        request_statuses,
    )
    from sisa.deletion.plan import pending_plan
    from sisa.evidence.audit import audit
    from sisa.evidence.forgetting import EvidenceError, forgetting_evidence
    from sisa.evidence.status import evaluate, status
    from sisa.evidence.verify import verify
    from sisa.ids import typed_ids
    from sisa.serving.ensemble import Ensemble, InputError, NoModelError
    from sisa.serving.predictor import Prediction, Predictor
    from sisa.store.artifacts import SisaStore, StoreStateError
    from sisa.store.journal import Journal, UnknownRequestError
    from sisa.store.rekey import rekey
    from sisa.store.tombstones import repair_tombstones
    from sisa.training.environment import configure
    from sisa.training.factories import check_factory
    from sisa.training.train import train


def __getattr__(name: str) -> Any:
    """A public name, imported from its submodule on first use; or a submodule not yet
    imported (``import sisa; sisa.store.journal``), which the eager package had imported."""
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
