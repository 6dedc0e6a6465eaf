"""The README's two commands are the ones that work: CI runs its test command verbatim,
and every CLI command it shows exists."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from orchestrator.cli.parser import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def bash_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", README, flags=re.S)


def test_two_setup_commands_demo_and_tests():
    blocks = bash_blocks()
    assert blocks[0].strip().endswith("&& sisa demo")
    assert "python -m pytest" in blocks[1]
    for block in blocks[:2]:  # the CPU wheel's release first, nothing that pulls another
        assert block.strip().startswith(
            "python3 -m venv .venv && . .venv/bin/activate && pip install torch==2.13.0 && "
        )
        assert "torch" not in block.replace("torch==2.13.0", "")


def test_ci_runs_the_readme_test_command():
    test_command = bash_blocks()[1].strip()
    assert test_command in (ROOT / ".ci" / "run").read_text()


def test_torch_is_pinned_to_the_cpu_wheel_release():
    assert '"torch==2.13.0"' in (ROOT / "pyproject.toml").read_text()


def test_every_cli_command_in_the_readme_exists():
    parser = build_parser()
    commands = set(parser._subparsers._group_actions[0].choices)  # noqa: SLF001
    shown = set()
    for block in bash_blocks():
        for line in block.splitlines():
            words = shlex.split(line.split("#")[0]) if "sisa " in line else []
            if "sisa" in words:
                shown.add(words[words.index("sisa") + 1])
    assert shown and shown <= commands, shown - commands


def test_the_benchmark_table_names_every_benchmark():
    from benchmarks.harness import BENCHMARKS

    section = README[README.index("## Benchmarks") : README.index("## More")]
    assert re.findall(r"^\| `(\w+)` \|", section, flags=re.M) == list(BENCHMARKS)
