"""What every benchmark records beside its figures: the commit measured, the CPU, and
the Markdown and JSON files written side by side."""

from __future__ import annotations

import json
import platform
import subprocess
from pathlib import Path
from typing import Any


def git_commit() -> str:
    """HEAD, marked when tracked files differ from it (the figures are then not HEAD's)."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True).stdout.strip()

    dirty = git("status", "--short", "--untracked-files=no")
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
