"""``sisa``: a thin command map onto the Python API.

Every command is one call into ``sisa``; this package only parses arguments
(``parser``), picks an executor (``inputs``), runs the command (``commands``) and prints
(``printers``). Here, ``main`` turns what goes wrong into exit codes: bad input ends in a
one-line ``sisa: error: ...`` and exit code 2, an interrupt in 130.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import Any

from orchestrator.cli.commands import COMMANDS
from orchestrator.cli.inputs import CLIError
from orchestrator.cli.parser import build_parser

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


def main(argv: Sequence[str] | None = None) -> int:
    """The console entry point: run one command, return its exit code."""
    args = build_parser().parse_args(argv)
    try:
        code = COMMANDS[args.command](args)
    except KeyboardInterrupt:
        _say(args, "interrupted", "sisa: interrupted")
        return EXIT_INTERRUPTED
    except USER_ERRORS as err:  # one line for the user, not a traceback
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        _say(args, "error", f"sisa: error: {message}", error=type(err).__name__, detail=message)
        return EXIT_ERROR
    return int(code or 0)


def _say(args: Any, event: str, text: str, **fields: Any) -> None:
    """The last line: text, or an event where stderr carries JSON (``--log-format``)."""
    if getattr(args, "log_format", "text") != "json":
        print(text, file=sys.stderr)
        return
    from orchestrator import logs

    logs.setup("json")
    logs.event(event, logging.ERROR if fields else logging.INFO, outcome="stopped", **fields)


def _user_errors() -> tuple[type[BaseException], ...]:
    """What bad input, a bad store or an unreachable one raises: a message, not a bug."""
    from sisa import ConfigError, DataError, StoreStateError, UnknownIDError, UnknownRequestError
    from storage import StorageError

    return (
        CLIError, ConfigError, DataError, StoreStateError, UnknownIDError, UnknownRequestError,
        StorageError, ValueError, OSError, OverflowError, RuntimeError, ImportError,
    )  # fmt: skip


USER_ERRORS = _user_errors()

__all__ = ["EXIT_ERROR", "USER_ERRORS", "CLIError", "build_parser", "main"]
