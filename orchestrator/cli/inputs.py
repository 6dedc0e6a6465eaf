"""What the commands read from their arguments, as the API takes it: IDs and groups typed as
the store's, IDs files, the ``serve`` settings and an executor.

Input the API would misread is refused here with a ``CLIError``, which ``main`` prints as
one ``sisa: error: ...`` line.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any


class CLIError(Exception):
    """Bad input detected by the command line layer."""


def chosen_executor(args: argparse.Namespace) -> Any:
    """The executor ``--executor``, ``--ray-address`` and ``--no-progress`` name."""
    from orchestrator.executors import make_executor  # torch: only for commands that train

    return make_executor(args.executor, args.ray_address, progress=not args.no_progress)


def parse_ids(values: Sequence[str], id_kind: str, what: str = "ID") -> list[int | str]:
    """CLI strings as the store's ID (or group) type; integer stores need 64-bit integers."""
    from sisa import typed_ids

    try:
        return typed_ids(values, id_kind, what)
    except ValueError as err:
        raise CLIError(str(err)) from None


def read_ids_file(path: str) -> list[str]:
    """The IDs of a file with one a line, blank lines skipped."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CLIError(f"{path}: no such IDs file") from None
    except UnicodeDecodeError:
        raise CLIError(f"{path}: IDs file is not UTF-8 text") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def request_args(args: argparse.Namespace) -> tuple[list[int | str] | None, Any]:
    """IDs (or a group) from the command line, typed as the store's IDs; checks only."""
    from sisa import SisaStore

    raw = list(args.ids) + (read_ids_file(args.ids_file) if args.ids_file else [])
    if args.ids_file and not raw and not args.ids:
        raise CLIError(f"{args.ids_file}: the IDs file holds no IDs")
    if bool(raw) == bool(args.group):
        raise CLIError("give IDs (arguments or --ids-file) or --group, not both or neither")
    store = SisaStore(args.store, args.storage_options)
    intent = store.intent() if store.meta() else None
    if intent is None:
        raise CLIError(f"{args.store} is not a trained store (run 'sisa train' first)")
    ids = parse_ids(raw, intent["id_kind"]) if raw else None
    group = None
    if args.group is not None:
        if intent.get("group_kind") is None:
            raise CLIError("this store's data has no groups; forget by ID instead")
        group = parse_ids([args.group], intent["group_kind"], what="group")[0]
    return ids, group


def forgotten_ids(args: argparse.Namespace, id_kind: str) -> list[int | str]:
    """The IDs of ``evaluate --forgotten`` and ``--forgotten-file``, typed as the store's."""
    raw = list(args.forgotten or []) + (
        read_ids_file(args.forgotten_file) if args.forgotten_file else []
    )
    return parse_ids(raw, id_kind)


def serving_settings(args: argparse.Namespace) -> Any:
    """The [serving] settings of ``sisa serve``: file, then environment, then flags."""
    from sisa import load_config, parse_assignments

    overrides = parse_assignments(args.set)
    if any(not key.startswith("serving.") for key in overrides):
        raise CLIError("sisa serve takes serving.* settings only; the store fixes the rest")
    if args.host is not None:
        overrides["serving.host"] = args.host
    if args.port is not None:
        overrides["serving.port"] = args.port
    return load_config(args.config, overrides=overrides).serving
