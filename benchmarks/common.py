"""What every benchmark records beside its figures: the commit measured, the CPU, the
Markdown and JSON files written side by side, and how busy the machine was with other
work while it ran; and measurements run in a fresh child process, whose memory and
Ray instance are then their own.

Where ``python -m benchmarks`` reads and writes: ``ROOT``, the repository.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def git_commit() -> str:
    """HEAD, marked when tracked code differs from it (the figures are then not HEAD's)."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True).stdout.strip()

    # the results a run writes are not the code measured
    dirty = git("status", "--short", "--untracked-files=no", "--", ".", ":!docs/benchmarks")
    return git("rev-parse", "HEAD") + (" (tracked files modified)" if dirty else "")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_results(out: str | Path, text: str, result: dict[str, Any]) -> None:
    """The Markdown report at ``out`` and the raw figures as JSON next to it."""
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.with_suffix(".json").write_text(json.dumps(result, indent=1, default=str))


@contextlib.contextmanager
def environ(name: str, value: str) -> Iterator[None]:
    """The environment variable ``name`` set to ``value`` for the block, then as before."""
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def load_average() -> tuple[float, float, float]:
    """The machine's 1/5/15-minute load averages: other work skews timings on a shared box,
    so benchmarks record them before and after their run."""
    return os.getloadavg()


def load_change(before: Sequence[float], after: Sequence[float]) -> str:
    """``before -> after`` for each of the 1/5/15-minute load averages."""
    return " / ".join(f"{a:.2f} -> {b:.2f}" for a, b in zip(before, after, strict=True))


def tree_cpu_s() -> float:
    """CPU seconds (user + system) of this process and all its descendants (for a server
    benchmark: the client, Ray's processes and Serve's replicas, which this one started)."""
    tick = os.sysconf("SC_CLK_TCK")
    parent, cpu = {}, {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent[int(entry.name)] = int(fields[1])
        cpu[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
    mine, grew = {os.getpid()}, True
    while grew:
        more = {pid for pid, ppid in parent.items() if ppid in mine} - mine
        mine |= more
        grew = bool(more)
    return sum(cpu.get(pid, 0.0) for pid in mine)


def system_busy_s() -> float:
    """CPU seconds the whole machine has been busy (``/proc/stat``), every process's."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class Others:
    """Cores busy with work that is not this benchmark's over a ``with`` block (processes
    it did not start, and time the hypervisor stole): what makes two timings of the same
    work differ on a shared machine."""

    cores: float = 0.0

    def __enter__(self) -> Others:
        self.busy, self.mine, self.t0 = system_busy_s(), tree_cpu_s(), time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.perf_counter() - self.t0
        foreign = (system_busy_s() - self.busy) - (tree_cpu_s() - self.mine)
        self.cores = max(foreign, 0.0) / max(wall, 1e-9)


def run_child(module: str, spec: dict[str, Any], name: str) -> Any:
    """``python -m <module> --child SPEC --result FILE`` in a fresh process that joins no
    Ray cluster of ours (``child_main`` is its entry point); what it wrote to FILE.
    ``name`` names the measurement in the error when the child fails."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", module, "--child", json.dumps(spec), "--result", str(result)]
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{name} child failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
        return json.loads(result.read_text())


def child_main(child: Callable[[dict[str, Any]], Any], description: str) -> int:
    """The command line of a child process that ``run_child`` starts: ``child(spec)``,
    written as JSON to the result file."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--child", required=True, help="JSON: the measurement's settings")
    parser.add_argument("--result", type=Path, required=True)
    args = parser.parse_args()
    args.result.write_text(json.dumps(child(json.loads(args.child))))
    return 0
