"""Named crash points, so tests can kill a process at an exact step of a protocol.

``SISA_CRASH_AT=name`` makes ``crash_point(name)`` kill the process at once with SIGKILL
(no cleanup, no flush, no ``finally``), the way the kernel's OOM killer or a lost machine
would. ``SISA_CRASH_AT=name#N`` dies at the N-th time this process reaches the point (a
point inside a loop, such as ``mid-stage``, is reached once per stage). A ``@/path/marker``
suffix crashes only the first time: the marker file is created just before dying, so a
retried task or a restarted process runs through.

``SISA_STOP_AT`` takes the same forms and stops the process with SIGSTOP instead: frozen,
alive, its threads (a lease's heartbeat) frozen too, until a SIGCONT. That is a process
that stalls past its lease, as a long pause or a suspended VM does.
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from pathlib import Path

ENV = "SISA_CRASH_AT"
STOP_ENV = "SISA_STOP_AT"
EXIT_CODE = 137  # what a shell reports for a process killed by SIGKILL (128 + 9)

_reached: Counter[tuple[str, str]] = Counter()  # times this process reached each armed point


def crash_point(name: str) -> None:
    """Die here if ``SISA_CRASH_AT`` names this point (and this is the arrival it names);
    stop here if ``SISA_STOP_AT`` does."""
    for env, sig in ((ENV, signal.SIGKILL), (STOP_ENV, signal.SIGSTOP)):
        spec = os.environ.get(env)
        if spec and _armed(env, spec, name):
            os.kill(os.getpid(), sig)
            if sig == signal.SIGKILL:
                os._exit(EXIT_CODE)  # not reached where SIGKILL exists


def _armed(env: str, spec: str, name: str) -> bool:
    point, _, marker = spec.partition("@")
    point, _, nth = point.partition("#")
    if point != name:
        return False
    _reached[env, name] += 1
    if nth:
        if not (nth.isascii() and nth.isdigit()) or int(nth) < 1:
            raise ValueError(f"{env}={spec!r}: the count after '#' must be a positive integer")
        if _reached[env, name] != int(nth):
            return False
    if marker:
        if Path(marker).exists():
            return False
        Path(marker).touch()
    return True
