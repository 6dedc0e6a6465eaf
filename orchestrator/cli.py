"""``sisa``: a thin command map onto the Python API.

Every command is one call into ``sisa``; this module only parses arguments, picks an
executor and prints. Bad input ends in a one-line ``sisa: error: ...`` and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from orchestrator.executors import make_executor
from orchestrator.io import read_features, write_predictions

EXIT_ERROR = 2
_INT = re.compile(r"^-?\d+$")


class CLIError(Exception):
    """Bad input detected by the command line layer."""


def _store_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", required=True, help="store URL: a path, file://, s3://, memory://")
    p.add_argument(
        "--storage-options",
        type=_options,
        default=None,
        metavar="JSON",
        help="fsspec storage options as JSON, e.g. '{\"anon\": false}'",
    )


def _options(text: str) -> dict[str, Any]:
    value = json.loads(text)
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def _exec_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--executor", choices=["local", "ray"], default="local")
    p.add_argument("--ray-address", default=None, help="join this Ray cluster (default: local)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sisa", description="Exact machine unlearning with SISA training."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a store from a config")
    p.add_argument("--config", help="TOML config file (defaults apply without one)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a config value, e.g. --set sisa.shards=8",
    )
    p.add_argument("--overwrite", action="store_true", help="replace a trained store")
    _store_args(p)
    _exec_args(p)

    p = sub.add_parser("forget", help="forget points by ID or by group, exactly")
    p.add_argument("ids", nargs="*", help="IDs to forget")
    p.add_argument("--ids-file", help="file with one ID per line")
    p.add_argument("--group", help="forget every point of this group")
    p.add_argument("--json", action="store_true")
    _store_args(p)
    _exec_args(p)

    p = sub.add_parser("predict", help="predict with the aggregated ensemble")
    p.add_argument("--input", required=True, help=".npz (X[, ids]), .csv or .parquet")
    p.add_argument("--output", help="write .csv or .json here (default: CSV to stdout)")
    _store_args(p)

    p = sub.add_parser("status", help="shards, generations and weights of a store")
    p.add_argument("--json", action="store_true")
    _store_args(p)

    p = sub.add_parser("evaluate", help="accuracy per shard and aggregated, on the test data")
    p.add_argument("--json", action="store_true")
    _store_args(p)

    p = sub.add_parser("verify", help="prove shards equal training from scratch, bitwise")
    p.add_argument("--shard", type=int, default=None)
    p.add_argument("--json", action="store_true")
    _store_args(p)
    _exec_args(p)

    p = sub.add_parser("demo", help="train on digits, forget, compare with retraining, verify")
    p.add_argument("--store", default=None, help="keep the demo store here (default: temp dir)")
    p.add_argument("--forget", type=int, default=5, help="how many points to forget")
    return parser


def _executor(args: argparse.Namespace) -> Any:
    return make_executor(args.executor, args.ray_address, progress=not args.no_progress)


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


def parse_ids(values: Sequence[str], id_kind: str, what: str = "ID") -> list[int | str]:
    """CLI strings as the store's ID (or group) type; integer stores need 64-bit integers."""
    out: list[int | str] = []
    for value in values:
        if value == "" or "\x00" in value:
            raise CLIError(f"malformed {what} {value!r}")
        if id_kind == "int":
            if not _INT.match(value) or not -(2**63) <= int(value) < 2**63:
                raise CLIError(
                    f"{what} {value!r} is not a 64-bit integer; this store's {what}s are integers"
                )
            out.append(int(value))
        else:
            out.append(value)
    return out


def read_ids_file(path: str) -> list[str]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CLIError(f"{path}: no such IDs file") from None
    except UnicodeDecodeError:
        raise CLIError(f"{path}: IDs file is not UTF-8 text") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def cmd_train(args: argparse.Namespace) -> None:
    from sisa.config import load_config, parse_assignments
    from sisa.train import train

    config = load_config(args.config, overrides=parse_assignments(args.set))
    report = train(
        config, args.store, args.storage_options, executor=_executor(args), overwrite=args.overwrite
    )
    print(
        f"trained {len(report.shards)} shards x {config.sisa.slices} slices on "
        f"{report.n_train} points ({report.n_test} held out) in {report.seconds:.1f}s "
        f"-> {args.store}"
    )


def cmd_forget(args: argparse.Namespace) -> None:
    from sisa.store import SisaStore
    from sisa.unlearn import forget

    raw = list(args.ids) + (read_ids_file(args.ids_file) if args.ids_file else [])
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
    report = forget(
        args.store, ids, group=group, storage_options=args.storage_options, executor=_executor(args)
    )
    if args.json:
        body = asdict(report)
        body["shards"] = [{k: v for k, v in s.items() if k != "head"} for s in body["shards"]]
        _print_json(body)
        return
    print(
        f"forgot {len(report.removed)} training points"
        f" and {len(report.removed_from_test)} test points in {report.seconds:.2f}s"
    )
    for s in report.shards:
        print(
            f"  shard {s.shard}: generation {s.generation}, retrained stages "
            f"{s.start_stage}..{s.start_stage + len(s.trained) + len(s.resumed) - 1}"
        )
    print(f"  purged {len(report.purged)} files that had seen a deleted point")
    if report.already_deleted:
        print(f"  already deleted (no-op): {', '.join(map(str, report.already_deleted))}")


def cmd_predict(args: argparse.Namespace) -> None:
    from sisa.ensemble import Ensemble
    from sisa.store import SisaStore

    if args.output and not args.output.endswith((".csv", ".json")):
        raise CLIError(f"{args.output}: predictions are written as .csv or .json")
    ids, X = read_features(args.input)
    ensemble = Ensemble.load(SisaStore(args.store, args.storage_options))
    scores = ensemble.predict_proba(X)
    write_predictions(args.output, ids, scores)


def cmd_status(args: argparse.Namespace) -> None:
    from sisa.status import status

    info = status(args.store, args.storage_options)
    if args.json:
        _print_json(info)
        return
    print(
        f"{info['store']}: {len(info['shards'])} shards x {info['slices']} slices, "
        f"{info['points']} points, {info['test_points']} test point(s), "
        f"{info['deleted']} deleted"
    )
    for s in info["shards"]:
        print(
            f"  shard {s['shard']:>3}  points {s['points']:>7}  generation {s['generation']:>3}"
            f"  weights {s['weights_sha256'][:16]}"
        )


def cmd_evaluate(args: argparse.Namespace) -> None:
    from sisa.status import evaluate

    info = evaluate(args.store, args.storage_options)
    if args.json:
        _print_json(info)
        return
    print(
        f"aggregate accuracy {info['aggregate']:.4f} (average {info['average']:.4f}, "
        f"vote {info['vote']:.4f}, mean shard {info['mean_shard']:.4f}) "
        f"on {info['test_points']} test points"
    )


def cmd_verify(args: argparse.Namespace) -> int:
    from sisa.verify import verify

    report = verify(
        args.store, args.shard, storage_options=args.storage_options, executor=_executor(args)
    )
    if args.json:
        _print_json(
            {
                "identical": report.identical,
                "same_environment": report.same_environment,
                "fingerprint": report.fingerprint,
                "recorded_fingerprint": report.recorded_fingerprint,
                "shards": [asdict(v) | {"identical": v.identical} for v in report.shards],
            }
        )
    else:
        for v in report.shards:
            verdict = "identical" if v.identical else "DIFFERENT"
            print(
                f"shard {v.shard}: generation {v.generation}, {v.n} points, "
                f"{len(v.stages)} stages {verdict} to training from scratch"
            )
        fp = report.fingerprint
        print(
            f"environment: torch {fp['torch']}, {fp['device']} ({fp['device_name']}), "
            f"{fp['dtype']}, {fp['threads']} thread(s)"
            + ("" if report.same_environment else "; differs from the training environment")
        )
        print("VERIFIED: bitwise identical" if report.identical else "NOT VERIFIED")
    return 0 if report.identical else 1


def cmd_demo(args: argparse.Namespace) -> None:
    from orchestrator.demo import run_demo

    run_demo(args.store, args.forget)


def _user_errors() -> tuple[type[BaseException], ...]:
    from sisa.config import ConfigError
    from sisa.data import DataError
    from sisa.store import StoreStateError
    from sisa.unlearn import UnknownIDError
    from storage import StorageError

    return (
        CLIError, ConfigError, DataError, StoreStateError, UnknownIDError, StorageError,
        ValueError, OSError, OverflowError, RuntimeError, ImportError,
    )  # fmt: skip


USER_ERRORS = _user_errors()

COMMANDS = {
    "train": cmd_train,
    "forget": cmd_forget,
    "predict": cmd_predict,
    "status": cmd_status,
    "evaluate": cmd_evaluate,
    "verify": cmd_verify,
    "demo": cmd_demo,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("sisa: interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as err:  # one line for the user, not a traceback
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"sisa: error: {message}", file=sys.stderr)
        return EXIT_ERROR
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
