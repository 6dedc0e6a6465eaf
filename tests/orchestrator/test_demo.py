"""``sisa demo`` trains, forgets, audits and verifies, and prints what the README shows."""

import re
from pathlib import Path

from orchestrator.cli import main

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
# a request ID, a number, or the README's "..." (the fingerprint): figures vary by machine
_VARYING = re.compile(r"(r\d{9}-[0-9a-f]{32}|\d+(?:\.\d+)?|\.\.\.)")


def readme_demo_output() -> list[str]:
    block = README.split("Demo output on a 2-core machine", 1)[1].split("```\n", 2)[1]
    return block.splitlines()


def line_pattern(line: str) -> re.Pattern[str]:
    """The README's line with its figures left open, everything else as printed."""
    parts = _VARYING.split(line)
    out = []
    for i, part in enumerate(parts):
        if i % 2 == 0:
            out.append(re.escape(part))
        elif part == "...":
            out.append(".+")
        elif part.startswith("r"):
            out.append(r"r\d{9}-[0-9a-f]{32}")
        else:
            out.append(r"\d+(?:\.\d+)?")
    return re.compile("".join(out))


def test_demo_trains_forgets_and_verifies_and_prints_the_readme_output(capsys):
    assert main(["demo"]) == 0
    out = capsys.readouterr().out.splitlines()
    expected = readme_demo_output()
    assert len(out) == len(expected), out
    for got, want in zip(out, expected, strict=True):
        assert line_pattern(want).fullmatch(got), (got, want)
    assert "5/5 shards bitwise identical" in out[-2] and out[-1] == "VERIFIED"
    assert any("receipt chain of 1 intact" in line for line in out)


def test_the_readme_pattern_fails_on_a_changed_line():
    rid = "r000000001-" + "25bda045" * 4
    pattern = line_pattern(f"forget [1, 2]: request {rid} journaled (...)")
    assert pattern.fullmatch(
        f"forget [3, 4]: request r000000002-{'0a1b2c3d' * 4} journaled (torch)"
    )
    assert not pattern.fullmatch("forget [3, 4]: request r000000002-0a1b2c3d journaled (torch)")
    assert not pattern.fullmatch("forget [3, 4]: 0.81s, retrained 5 shard(s)")
