"""The command line ``sisa`` accepts: every subcommand, its options and their help.

Only argparse: building the parser imports nothing of ``sisa``, so ``sisa --help`` and a
mistyped option answer at once.
"""

from __future__ import annotations

import argparse
import json
from typing import Any


def build_parser() -> argparse.ArgumentParser:
    """The whole ``sisa`` command line; ``main`` parses with it, the README test reads it."""
    parser = argparse.ArgumentParser(
        prog="sisa", description="Exact machine unlearning with SISA training."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a store from a config")
    _config_args(p, "TOML config file (defaults apply without one)", "SECTION", "sisa.shards=8")
    p.add_argument("--overwrite", action="store_true", help="replace a trained store")
    _store_args(p)
    _exec_args(p)

    p = sub.add_parser(
        "forget",
        help="request deletion by ID or group: journaled and compliant at once",
        description="Journal a deletion request and print its ID. Predictions are compliant "
        "when this returns; retraining happens in 'sisa process' (or here with --wait).",
    )
    p.add_argument("ids", nargs="*", help="IDs to forget")
    p.add_argument("--ids-file", help="file with one ID per line")
    p.add_argument("--group", help="forget every point of this group")
    p.add_argument("--reason", help="kept in the receipt; must not contain the IDs")
    p.add_argument("--wait", action="store_true", help="block until retrained and purged")
    p.add_argument("--json", action="store_true")
    _store_args(p)
    _exec_args(p)

    p = sub.add_parser("requests", help="deletion requests and their states")
    p.add_argument("id", nargs="?", help="show one request (with its receipt once purged)")
    p.add_argument("--state", choices=["accepted", "compliant", "retrained", "purged", "damaged"])
    p.add_argument("--json", action="store_true")
    _store_args(p)

    p = sub.add_parser(
        "void",
        help="journal the void of a damaged journal entry, once its request was resubmitted",
    )
    p.add_argument("entry", help="the damaged entry's number (1 for journal/r000000001.json)")
    p.add_argument("--resubmitted-as", help="the request ID that resubmitted it")
    _store_args(p)

    p = sub.add_parser("plan", help="what the next batch will retrain, and its predicted cost")
    p.add_argument("--json", action="store_true")
    _store_args(p)

    p = sub.add_parser("process", help="retrain and purge for pending requests, batched")
    p.add_argument(
        "--follow", action="store_true", help="keep running: batch requests as they arrive"
    )
    p.add_argument("--window", type=float, help="seconds to coalesce requests (--follow)")
    p.add_argument("--deadline", type=float, help="seconds a request may wait (--follow)")
    p.add_argument(
        "--max-errors",
        type=int,
        default=10,
        help="with --follow: give up after this many failed attempts in a row",
    )
    _log_format_arg(p, "with --follow: events on stderr as text, or one JSON object a line")
    p.add_argument(
        "--metrics-port",
        type=int,
        help="with --follow: serve the store's deletion metrics (Prometheus) on this port",
    )
    p.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        help="address the metrics bind to (default 127.0.0.1: this machine only)",
    )
    p.add_argument("--json", action="store_true")
    _store_args(p)
    _exec_args(p)

    p = sub.add_parser("audit", help="verify the receipt chain and scan the store")
    p.add_argument("--expect-head", help="receipt chain head hash you recorded earlier")
    p.add_argument(
        "--no-record",
        action="store_true",
        help="do not keep the verdict in the store (metrics and the dashboard read the last)",
    )
    p.add_argument("--json", action="store_true")
    _store_args(p)

    p = sub.add_parser(
        "repair",
        help="drop group tombstones an earlier version wrote for groups that still have points",
    )
    _store_args(p)

    p = sub.add_parser(
        "rekey",
        help="move the store's salt into a key store, so the store alone cannot confirm "
        "a guessed ID (the KEK from SISA_STORAGE__KEK)",
    )
    p.add_argument("--key-store", required=True, help="fsspec URL apart from the store")
    p.add_argument(
        "--key-store-options",
        type=json.loads,
        help="fsspec options of the key store as JSON (an endpoint; never credentials)",
    )
    _store_args(p)

    p = sub.add_parser("receipt", help="the receipt of a purged request")
    p.add_argument("id", help="request ID, as printed by 'sisa forget'")
    p.add_argument("--json", action="store_true")
    _store_args(p)

    p = sub.add_parser("predict", help="predict with the aggregated ensemble")
    p.add_argument("--input", required=True, help=".npz (X[, ids]), .csv or .parquet")
    p.add_argument(
        "--output",
        help="write .csv, .json or .parquet here (default: CSV to stdout); with "
        "--executor ray, a folder of Parquet files",
    )
    _store_args(p)
    _exec_args(p)

    p = sub.add_parser("status", help="shards, generations and weights of a store")
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--check",
        action="store_true",
        help="read every live file and report those whose bytes no longer match its hash",
    )
    _store_args(p)

    p = sub.add_parser(
        "evaluate",
        help="accuracy on the test data; with --forgotten, evidence that points are forgotten",
        description="Without --forgotten: accuracy per shard and aggregated on the test data. "
        "With it: membership-inference and Tug-of-War figures of the store against a store "
        "trained from scratch on what it holds now (one full training), for an auditor.",
    )
    p.add_argument("--forgotten", nargs="+", metavar="ID", help="IDs the store has forgotten")
    p.add_argument("--forgotten-file", help="file with one forgotten ID per line")
    p.add_argument(
        "--source", help="where the forgotten points' features are (default: the store's source)"
    )
    p.add_argument("--json", action="store_true")
    _store_args(p)
    _exec_args(p)

    p = sub.add_parser("verify", help="prove shards equal training from scratch, bitwise")
    p.add_argument("--shard", type=int, default=None)
    p.add_argument("--json", action="store_true")
    _store_args(p)
    _exec_args(p)

    p = sub.add_parser(
        "serve",
        help="serve predictions and deletion requests over HTTP (Ray Serve)",
        description="Start the HTTP API on Ray Serve and block until interrupted. Settings "
        "come from [serving] in --config, SISA_SERVING__* variables, then --set; the token "
        "for POST /forget is best given as SISA_SERVING__TOKEN.",
    )
    _config_args(p, "TOML file with a [serving] table", "serving", "serving.port=8080")
    p.add_argument("--host", help="bind address (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, help="TCP port (default 8000)")
    p.add_argument("--ray-address", default=None, help="join this Ray cluster (default: local)")
    _log_format_arg(p, "events (requests, batches, failures) on stderr as text, or JSON lines")
    _store_args(p)

    p = sub.add_parser("demo", help="train on digits, forget, compare with retraining, verify")
    p.add_argument("--store", default=None, help="keep the demo store here (default: temp dir)")
    p.add_argument("--forget", type=int, default=5, help="how many points to forget")
    return parser


def _log_format_arg(p: argparse.ArgumentParser, help_text: str) -> None:
    """``--log-format``, as the long-running commands take it (``orchestrator.logs``)."""
    p.add_argument("--log-format", choices=["text", "json"], default="text", help=help_text)


def _store_args(p: argparse.ArgumentParser) -> None:
    """Where the store is: every command but ``demo`` reads or writes one."""
    p.add_argument("--store", required=True, help="store URL: a path, file://, s3://, memory://")
    p.add_argument(
        "--storage-options",
        type=_options,
        default=None,
        metavar="JSON",
        help="fsspec storage options as JSON, e.g. '{\"anon\": false}'",
    )


def _options(text: str) -> dict[str, Any]:
    """``--storage-options`` as a dict. argparse names this function in its message for
    invalid JSON (``invalid _options value``), so the name is part of the output."""
    value = json.loads(text)
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def _config_args(p: argparse.ArgumentParser, file_help: str, section: str, example: str) -> None:
    """A TOML file and ``--set`` overrides, as ``train`` and ``serve`` take them."""
    p.add_argument("--config", help=file_help)
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar=f"{section}.KEY=VALUE",
        help=f"override a config value, e.g. --set {example}",
    )


def _exec_args(p: argparse.ArgumentParser) -> None:
    """Where shard jobs run, for the commands that may train."""
    p.add_argument("--executor", choices=["local", "ray"], default="local")
    p.add_argument("--ray-address", default=None, help="join this Ray cluster (default: local)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
