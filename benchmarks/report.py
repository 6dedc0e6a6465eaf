"""What a benchmark hands the harness, and what every benchmark's Markdown is made of.

A benchmark returns a ``Report``: its figures (JSON-ready), their Markdown, the settings
it ran with and its plots; or it raises ``BenchmarkUnavailable``. The rest is shared by
every benchmark (and by ``benchmarks.summary``), so that a table, a duration or a ratio
reads the same wherever it appears:

* tables: ``markdown_table`` (header, rows of cells, an alignment per column) and
  ``table`` (``Column`` specs, each a header and how to write a row's cell);
* number formats: ``ms`` and ``us`` (seconds as milli- or microseconds), ``times`` (a
  ratio, ``1.25x``), ``spread`` (the range of some figures);
* timing and its statistics: ``timed``, ``median``, ``percentiles``, ``mean_std``;
* ``pyplot``: matplotlib, for the plots, imported only by a run that draws one.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")


@dataclass(frozen=True)
class Report:
    """What a benchmark returns: its figures (JSON-ready) and their Markdown."""

    figures: dict[str, Any]
    markdown: str
    config: dict[str, Any]  # the sizes and settings it ran with
    plots: dict[str, Any] = field(default_factory=dict)  # file stem -> matplotlib Figure


class BenchmarkUnavailable(RuntimeError):
    """This machine cannot run the benchmark (no GPU for ``gpu``); it writes nothing."""


# -- timing -------------------------------------------------------------------------------


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    """``fn()``, and the wall seconds it took."""
    started = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - started


def median(values: Iterable[float]) -> float:
    return float(statistics.median(values))


def percentiles(seconds: Sequence[float]) -> dict[str, float]:
    """Count, p50, p90, p99, max and mean of latencies in seconds (``{"n": 0}`` if none)."""
    if not seconds:
        return {"n": 0}
    a = np.asarray(seconds)
    return {
        "n": len(seconds),
        "p50": float(np.percentile(a, 50)),
        "p90": float(np.percentile(a, 90)),
        "p99": float(np.percentile(a, 99)),
        "max": float(a.max()),
        "mean": float(a.mean()),
    }


def mean_std(values: Sequence[float]) -> dict[str, float]:
    """Mean and sample standard deviation over repeats (0 for a single one)."""
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.mean(values), "std": std}


# -- number formats -----------------------------------------------------------------------


def ms(seconds: float | None, digits: int = 1) -> str:
    """Seconds as milliseconds, without the unit; "-" for a figure that is missing."""
    return "-" if seconds is None else f"{seconds * 1e3:.{digits}f}"


def us(seconds: float) -> str:
    """Seconds as whole microseconds with thousands separators, without the unit."""
    return f"{seconds * 1e6:,.0f}"


def times(ratio: float, digits: int = 2) -> str:
    """A ratio of two figures: ``1.25x``."""
    return f"{ratio:.{digits}f}x"


def spread(values: Sequence[float], fmt: str = ".2f") -> str:
    """``lo-hi`` of some figures (one figure when they agree at this precision)."""
    lo, hi = format(min(values), fmt), format(max(values), fmt)
    return lo if lo == hi else f"{lo}-{hi}"


# -- tables -------------------------------------------------------------------------------

RULE = {"l": "---", "r": "---:", "c": ":---:"}  # left, right, centred


def markdown_table(
    header: Sequence[str], rows: Iterable[Sequence[str]], align: str | None = None
) -> list[str]:
    """A Markdown table, one string per line: the header, the rule, one line per row.

    ``align`` has one letter per column, ``l``, ``r`` or ``c``; by default the first
    column (what a row is) is left-aligned and the others (its figures) right-aligned.
    An empty header cell is written as one space."""
    align = align or "l" + "r" * (len(header) - 1)
    if len(align) != len(header):
        raise ValueError(f"{len(header)} columns, {len(align)} alignments ({align!r})")
    head = "|" + "|".join(f" {name} " if name else " " for name in header) + "|"
    lines = [head, "|" + "|".join(RULE[a] for a in align) + "|"]
    return lines + ["| " + " | ".join(cells) + " |" for cells in rows]


Column = tuple[str, Callable[[dict[str, Any]], str]]  # header, a row's cell


def table(
    columns: Sequence[Column], rows: Iterable[dict[str, Any]], align: str | None = None
) -> list[str]:
    """A Markdown table of ``rows``, one cell per column as its ``Column`` writes it."""
    cells = ([cell(row) for _, cell in columns] for row in rows)
    return markdown_table([name for name, _ in columns], cells, align)


def ms_of(key: str, digits: int = 1) -> Callable[[dict[str, Any]], str]:
    """A column's cell: ``row[key]`` seconds, in milliseconds."""
    return lambda row: ms(row[key], digits)


def num(key: str, fmt: str = ",.0f") -> Callable[[dict[str, Any]], str]:
    """A column's cell: ``row[key]`` formatted with ``fmt``."""
    return lambda row: format(row[key], fmt)


def times_of(key: str, digits: int = 2) -> Callable[[dict[str, Any]], str]:
    """A column's cell: the ratio ``row[key]``."""
    return lambda row: times(row[key], digits)


# -- plots --------------------------------------------------------------------------------


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend (files only, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    return plt
