"""One entry point for the benchmarks: ``python -m benchmarks run --suite quick|full``.

A benchmark is a function of the suite's sizes that returns its figures and a Markdown
table. The harness wraps every result in the same envelope (the command, the suite, the
git commit, the machine, when and how long) and writes ``<name>.json`` and ``<name>.md``
into the output folder (``docs/benchmarks/`` by default). Where that folder has a
``README.md``, its headline table is then regenerated from all the JSON there
(``benchmarks.summary``; ``python -m benchmarks summary`` does only that).

Rules every benchmark keeps: timings are medians over repeats; comparisons are ratios of
figures measured in the same run; the quick suite proves the code runs on small sizes and
asserts no timing; committed results come from the full suite. A benchmark that needs
what a machine lacks (a GPU) raises ``BenchmarkUnavailable``: it writes nothing, and the
run exits non-zero after the others.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import ROOT, cpu_model, git_commit, write_results
from benchmarks.report import BenchmarkUnavailable, Report
from benchmarks.summary import update_readme

SUITES = ("quick", "full")
# the full suite's results are the committed ones; a quick run never overwrites them
DEFAULT_OUT = {"full": ROOT / "docs" / "benchmarks", "quick": ROOT / ".benchmarks-quick"}

Benchmark = Callable[[str], Report]  # suite name -> report (``benchmarks.report``)


# run in this order; a module may name the suites it runs in (``SUITES``, default both)
BENCHMARKS = (
    "speedup",
    "deletion",
    "accuracy",
    "training",
    "inference",
    "serving",
    "lookup",
    "evidence",
    "scale",
    "sharding",
    "startup",
    "recipe",
    "backbones",
    "encryption",
    "bulk",
    "scoring",
    "gpu",
)


def registry(suite: str | None = None) -> dict[str, Benchmark]:
    """Each benchmark module's ``run``, keeping those that run in ``suite`` (all if None)."""
    found = {}
    for name in BENCHMARKS:
        module = importlib.import_module(f"benchmarks.{name}")
        if suite in (None, *getattr(module, "SUITES", SUITES)):
            found[name] = module.run
    return found


def ray_running() -> bool:
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


def shutdown_ray() -> None:
    if ray_running():
        sys.modules["ray"].shutdown()


def machine() -> dict[str, Any]:
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
    }


def envelope(name: str, suite: str, report: Report, seconds: float, command: str) -> dict[str, Any]:
    return {
        "benchmark": name,
        "suite": suite,
        "command": command,
        "commit": git_commit(),
        "machine": machine(),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "seconds": round(seconds, 1),
        "config": report.config,
        "figures": report.figures,
    }


def render(result: dict[str, Any], markdown: str) -> str:
    m = result["machine"]
    return (
        f"# {result['benchmark']} ({result['suite']} suite)\n\n"
        f"Command: `{result['command']}` ({result['seconds']:.0f} s, {result['date']})\n\n"
        f"Commit: `{result['commit']}`\n\n"
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['platform']}, Python {m['python']}, "
        f"torch {m['torch']} ({m['torch_threads']} threads), device {m['device']}\n\n"
        f"{markdown.rstrip()}\n"
    )


def run(
    suite: str, out: Path, only: list[str] | None = None, command: str = ""
) -> list[dict[str, Any]]:
    """Run the suite's benchmarks (or ``only`` these) and write their files into ``out``.

    A benchmark this machine cannot run (``BenchmarkUnavailable``) writes nothing; the
    others run, and then ``BenchmarkUnavailable`` names what was left out."""
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; use one of {SUITES}")
    known, benchmarks = registry(), registry(suite)
    unknown = sorted(set(only or []) - set(known))
    if unknown:
        raise ValueError(f"unknown benchmark(s) {unknown}; known: {sorted(known)}")
    elsewhere = sorted(set(only or []) - set(benchmarks))
    if elsewhere:
        raise ValueError(f"{', '.join(elsewhere)} not in the {suite} suite; try --suite full")
    results, unavailable = [], []
    for name, bench in benchmarks.items():
        if only and name not in only:
            continue
        started = time.perf_counter()
        ray_before = ray_running()
        try:
            report = bench(suite)
        except BenchmarkUnavailable as err:
            print(f"{name}: not run: {err}", file=sys.stderr, flush=True)
            unavailable.append(name)
            continue
        finally:
            if not ray_before:
                shutdown_ray()  # one the benchmark started, so the next starts clean
        result = envelope(name, suite, report, time.perf_counter() - started, command)
        write_results(out / f"{name}.md", render(result, report.markdown), result)
        for stem, figure in report.plots.items():
            figure.savefig(out / f"{stem}.png", dpi=120, bbox_inches="tight")
        results.append(result)
        print(f"{name}: {result['seconds']:.0f} s -> {out / name}.md", flush=True)
    if results and (out / "README.md").exists():
        update_readme(out)
        print(f"headline table -> {out / 'README.md'}", flush=True)
    if unavailable:  # after the others wrote theirs: the suite did not run whole
        raise BenchmarkUnavailable(f"not run on this machine: {', '.join(unavailable)}")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run a suite and write JSON and Markdown")
    p.add_argument("--suite", choices=SUITES, default="quick")
    p.add_argument(
        "--out", type=Path, help="folder (default: docs/benchmarks, .benchmarks-quick for quick)"
    )
    p.add_argument("--only", action="append", help="run this benchmark only (repeatable)")
    p = sub.add_parser("summary", help="rewrite the headline table of README.md from the JSON")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT["full"], help="results folder")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    if args.command == "summary":
        update_readme(args.out)
        return 0
    command = "python -m benchmarks " + shlex.join(argv)
    try:
        run(args.suite, args.out or DEFAULT_OUT[args.suite], args.only, command)
    except BenchmarkUnavailable as err:
        print(f"python -m benchmarks: {err}", file=sys.stderr)
        return 1
    return 0
