"""Per-point deletion risk: where deletion-aware placement reads it from.

``sisa.deletion_risk = "column"`` takes the data's own ``risk`` column (validated by the
loaders). ``"package.module:function"`` is called once, at training, as
``fn(ids, labels, groups)`` and must return one probability in [0, 1] per point. Its values
are then stored with the points like the column, so every later retrain, plan and audit
places a point from what is stored with it: the function is never imported again (a
store's config is data; importing what it names would run code it names), and a change to
the function cannot move a point that is already placed.

The function must be a function of each point alone (a rank or a normalisation over the
batch would move points when others are removed, and training from scratch without them
would differ). A probe checks it on a reversed half of the first rows.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import replace
from typing import Protocol, TypeVar

import numpy as np

from sisa.config import SisaConfig
from sisa.data.dataset import DataError, risk_values

_PROBE = 256  # rows the pointwise probe evaluates the function on again

RiskFunction = Callable[[np.ndarray, np.ndarray, np.ndarray | None], object]


class Points(Protocol):
    """What risk is read from: a ``Dataset``, or a source's index (no features)."""

    ids: np.ndarray
    y: np.ndarray
    groups: np.ndarray | None
    risk: np.ndarray | None

    def __len__(self) -> int: ...


P = TypeVar("P", bound=Points)


def risk_function(name: str) -> RiskFunction:
    """Import ``package.module:function``; errors name ``sisa.deletion_risk``."""
    module_name, _, attr = name.partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise DataError(f"sisa.deletion_risk: cannot load function {name!r}: {err}") from None
    if not callable(fn):
        raise DataError(f"sisa.deletion_risk: {name!r} is not callable")
    return fn


def _evaluate(fn: RiskFunction, name: str, ds: Points, rows: np.ndarray) -> np.ndarray:
    """The function's values for ``rows``, checked for shape and range. -> [len(rows)]."""
    groups = None if ds.groups is None else ds.groups[rows]
    out = np.asarray(fn(ds.ids[rows], ds.y[rows], groups))
    if out.shape != (len(rows),):
        raise DataError(
            f"sisa.deletion_risk: {name!r} returned shape {out.shape} for {len(rows)} points; "
            f"it must return one probability per point, shape ({len(rows)},)"
        )
    return risk_values(out, ds.ids[rows], f"sisa.deletion_risk: values of {name!r}")


def with_risk(cfg: SisaConfig, ds: P) -> P:
    """``ds`` with the risk that placement reads: unchanged when risk is unused or comes
    from the data's column; with the function's values otherwise."""
    if cfg.deletion_risk is None:
        return ds
    if cfg.deletion_risk == "column":
        if ds.risk is None:
            raise DataError(
                "sisa.deletion_risk = 'column' needs data with a 'risk' column "
                "(an array 'risk' in .npz) holding each point's deletion probability in [0, 1]"
            )
        return ds
    name = cfg.deletion_risk
    fn = risk_function(name)
    risk = _evaluate(fn, name, ds, np.arange(len(ds)))  # [n]
    probe = np.arange(min(len(ds), _PROBE))[::-2]  # others left out, order reversed
    again = _evaluate(fn, name, ds, probe)
    moved = ~np.isclose(again, risk[probe], rtol=1e-9, atol=1e-12)
    if moved.any():
        raise DataError(
            f"sisa.deletion_risk: {name!r} is not a function of each point alone: its value "
            f"for ID {ds.ids[probe][moved][0].item()!r} changed when other points were left "
            "out or reordered (removing a point must never move another)"
        )
    return replace(ds, risk=risk)
