"""Named crash points, so tests can kill a process at an exact step of a protocol.

``SISA_CRASH_AT=name`` makes ``crash_point(name)`` kill the process at once with SIGKILL
(no cleanup, no flush, no ``finally``), the way the kernel's OOM killer or a lost machine
would. ``SISA_CRASH_AT=name@/path/marker`` crashes only the first time: the marker file is
created just before dying, so a retried task or a restarted process runs through.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

ENV = "SISA_CRASH_AT"
EXIT_CODE = 137  # what a shell reports for a process killed by SIGKILL (128 + 9)


def crash_point(name: str) -> None:
    """Die here if ``SISA_CRASH_AT`` names this point."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    point, _, marker = spec.partition("@")
    if point != name:
        return
    if marker:
        if Path(marker).exists():
            return
        Path(marker).touch()
    os.kill(os.getpid(), signal.SIGKILL)
    os._exit(EXIT_CODE)  # not reached where SIGKILL exists
