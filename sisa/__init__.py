"""sisa: exact machine unlearning with SISA training (Bourtoule et al., IEEE S&P 2021).

The Python API. Executors (in process, Ray) live in ``orchestrator.executors``; every
function here runs shard jobs in this process when no executor is given.
"""

from sisa.config import Config, ConfigError, build_config, load_config
from sisa.data import DataError, Dataset
from sisa.ensemble import Ensemble, InputError, NoModelError
from sisa.predictor import Prediction, Predictor
from sisa.status import evaluate, status
from sisa.store import SisaStore, StoreStateError
from sisa.train import train
from sisa.unlearn import UnknownIDError, forget, plan_forget
from sisa.verify import verify

__all__ = [
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
    "build_config",
    "evaluate",
    "forget",
    "load_config",
    "plan_forget",
    "status",
    "train",
    "verify",
]
