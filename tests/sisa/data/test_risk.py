"""Where deletion-aware placement reads each point's risk: the data's column, or a
function evaluated once at training and then stored with the points."""

from __future__ import annotations

import numpy as np
import pytest

from sisa.config import SisaConfig
from sisa.data.dataset import DataError, Dataset, validate
from sisa.data.risk import with_risk


def points(n: int = 40, risk: np.ndarray | None = None) -> Dataset:
    ids = np.arange(100, 100 + n, dtype=np.int64)
    groups = np.array([f"person-{i // 4}" for i in range(n)])
    X = np.zeros((n, 2), np.float32)
    return validate(
        Dataset(ids=ids, X=X, y=np.arange(n) % 2, num_classes=2, groups=groups, risk=risk)
    )


def aware(source: str, **kw: object) -> SisaConfig:
    return SisaConfig(deletion_risk=source, **kw)


def test_without_deletion_risk_the_data_is_untouched() -> None:
    ds = points(risk=np.zeros(40))
    assert with_risk(SisaConfig(), ds) is ds
    assert with_risk(aware("column"), ds) is ds


def test_the_column_route_needs_a_risk_column() -> None:
    with pytest.raises(DataError, match=r"sisa\.deletion_risk = 'column' needs .*'risk' column"):
        with_risk(aware("column"), points())


@pytest.mark.parametrize("name", ["tests.sisa.risks:by_id", "tests.sisa.risks:by_group"])
def test_a_function_gives_each_point_its_risk(name: str) -> None:
    ds = points()
    out = with_risk(aware(name), ds)
    assert out.risk is not None and out.risk.shape == (40,) and out.risk.dtype == np.float64
    assert np.array_equal(out.ids, ds.ids) and np.array_equal(out.X, ds.X)
    if name.endswith("by_id"):
        assert out.risk.tolist() == [0.9 if i % 5 == 0 else 0.01 for i in ds.ids.tolist()]
    else:
        assert set(out.risk[ds.groups == "person-3"]) == {0.8}
        assert set(out.risk[ds.groups == "person-1"]) == {0.05}
    # a subset gets the values the whole got: nothing depends on the other points
    again = with_risk(aware(name), ds.take(np.arange(40)[::3]))
    assert again.risk is not None and np.array_equal(again.risk, out.risk[::3])


@pytest.mark.parametrize(
    "name, match",
    [
        ("tests.sisa.risks:missing", r"sisa\.deletion_risk: cannot load function"),
        ("tests.sisa.nowhere:fn", r"sisa\.deletion_risk: cannot load function"),
        ("tests.sisa.risks:NOT_CALLABLE", r"sisa\.deletion_risk: .* is not callable"),
        ("tests.sisa.risks:two_columns", r"returned shape \(40, 2\) for 40 points"),
        ("tests.sisa.risks:percent", r"values of 'tests\.sisa\.risks:percent' outside \[0, 1\]"),
        ("tests.sisa.risks:by_rank", r"not a function of each point alone: .*ID 1\d\d"),
    ],
)
def test_a_bad_function_is_a_clear_error(name: str, match: str) -> None:
    with pytest.raises(DataError, match=match):
        with_risk(aware(name), points())
