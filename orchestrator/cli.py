"""``sisa``: a thin command map onto the Python API.

Every command is one call into ``sisa``; this module only parses arguments, picks an
executor and prints. Bad input ends in a one-line ``sisa: error: ...`` and exit code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

# Commands that train nothing (status, forget, requests...) must not import torch (1.4 s)
# or pandas: each command imports what it runs, and ``sisa`` imports its modules lazily.
# tests/test_startup.py checks it.

EXIT_ERROR = 2


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


def _config_args(p: argparse.ArgumentParser, file_help: str, section: str, example: str) -> None:
    p.add_argument("--config", help=file_help)
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar=f"{section}.KEY=VALUE",
        help=f"override a config value, e.g. --set {example}",
    )


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
    p.add_argument("--json", action="store_true")
    _store_args(p)
    _exec_args(p)

    p = sub.add_parser("audit", help="verify the receipt chain and scan the store")
    p.add_argument("--expect-head", help="receipt chain head hash you recorded earlier")
    p.add_argument("--json", action="store_true")
    _store_args(p)

    p = sub.add_parser(
        "repair",
        help="drop group tombstones an earlier version wrote for groups that still have points",
    )
    _store_args(p)

    p = sub.add_parser("receipt", help="the receipt of a purged request")
    p.add_argument("id", help="request ID, as printed by 'sisa forget'")
    p.add_argument("--json", action="store_true")
    _store_args(p)

    p = sub.add_parser("predict", help="predict with the aggregated ensemble")
    p.add_argument("--input", required=True, help=".npz (X[, ids]), .csv or .parquet")
    p.add_argument("--output", help="write .csv or .json here (default: CSV to stdout)")
    _store_args(p)

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
    _store_args(p)

    p = sub.add_parser("demo", help="train on digits, forget, compare with retraining, verify")
    p.add_argument("--store", default=None, help="keep the demo store here (default: temp dir)")
    p.add_argument("--forget", type=int, default=5, help="how many points to forget")
    return parser


def _executor(args: argparse.Namespace) -> Any:
    from orchestrator.executors import make_executor  # torch: only for commands that train

    return make_executor(args.executor, args.ray_address, progress=not args.no_progress)


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


def parse_ids(values: Sequence[str], id_kind: str, what: str = "ID") -> list[int | str]:
    """CLI strings as the store's ID (or group) type; integer stores need 64-bit integers."""
    from sisa.ids import typed_ids

    try:
        return typed_ids(values, id_kind, what)
    except ValueError as err:
        raise CLIError(str(err)) from None


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
    from sisa.training.train import train

    config = load_config(args.config, overrides=parse_assignments(args.set))
    with warnings.catch_warnings(record=True) as caught:  # one line each, not a traceback
        warnings.simplefilter("always", UserWarning)
        report = train(
            config,
            args.store,
            args.storage_options,
            executor=_executor(args),
            overwrite=args.overwrite,
        )
    for warning in caught:
        print(f"sisa: warning: {warning.message}", file=sys.stderr)
    print(
        f"trained {config.sisa.shards} shards x {config.sisa.slices} slices on "
        f"{report.n_train} points ({report.n_test} held out) in {report.seconds:.1f}s "
        f"-> {args.store}"
    )
    if report.resumed:
        done = report.resumed_shards
        parts = [f"shard(s) {_shown(done)} committed earlier"] if done else []
        parts += [
            f"shard {r.shard} after stage {max(r.resumed)}" for r in report.shards if r.resumed
        ]
        print("  resumed an interrupted training: " + "; ".join(parts))


def _request_args(args: argparse.Namespace) -> tuple[list[int | str] | None, Any]:
    """IDs (or a group) from the command line, typed as the store's IDs; checks only."""
    from sisa.store.artifacts import SisaStore

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


def cmd_forget(args: argparse.Namespace) -> None:
    from sisa.deletion.accept import accept, wait_purged
    from sisa.deletion.lifecycle import request_status
    from sisa.store.artifacts import SisaStore

    ids, group = _request_args(args)
    if args.wait:  # it will retrain: refuse before journaling what it could not finish
        _check_models_runnable(args.store, args.storage_options)
    accepted = accept(
        args.store, ids, group=group, reason=args.reason, storage_options=args.storage_options
    )
    waiting = args.wait and accepted.request_id is not None
    if not args.json:
        _print_acceptance(accepted, waiting)
    if waiting:
        store = SisaStore(args.store, args.storage_options)
        with _resumable("process"):  # the request is journaled: any process finishes it
            wait_purged(store, accepted.request_id, _executor(args))
        status = request_status(store, accepted.request_id)
    if args.json:
        _print_json(asdict(accepted) | ({"status": status.to_dict()} if waiting else {}))
    elif waiting:
        _print_receipt(status.receipt)


def _check_models_runnable(url: str, storage_options: dict[str, Any] | None) -> None:
    from sisa.store.artifacts import SisaStore
    from sisa.training.factories import check_factory

    store = SisaStore(url, storage_options)
    store.require_trained()
    check_factory(store.config().model)


def _print_acceptance(accepted: Any, waiting: bool) -> None:
    if accepted.request_id is None:
        print(f"nothing to do: already deleted or requested: {_shown(accepted.already_deleted)}")
        if accepted.earlier_requests:
            print(f"  by request(s): {_shown(accepted.earlier_requests)}")
        return
    print(accepted.request_id, flush=True)  # first line: the request ID, for scripts
    print(
        f"  accepted {len(accepted.removed)} training and {len(accepted.removed_from_test)} "
        f"test point(s); predictions compliant "
        f"{accepted.compliance_seconds * 1000:.1f} ms after journaling"
    )
    if accepted.rolled_back:
        print(f"  shards served from an earlier checkpoint until retrained: {accepted.rolled_back}")
    if accepted.already_deleted:
        print(f"  already deleted or requested (no-op): {_shown(accepted.already_deleted)}")
    if not waiting:
        print("  pending: run 'sisa process' (or forget with --wait) to retrain and purge")
    sys.stdout.flush()


def _shown(values: list[Any]) -> str:
    return ", ".join(map(str, values[:20])) + (
        f" and {len(values) - 20} more" if len(values) > 20 else ""
    )


def _print_receipt(receipt: dict[str, Any]) -> None:
    print(f"receipt of {receipt['request']} (request {receipt['seq']}): purged")
    for s in receipt["shards"]:
        stages = s["stages"]
        what = f"stages {stages[0]}..{stages[-1]}" if stages else "nothing (already removed)"
        print(
            f"  shard {s['shard']}: retrained {what}; generation {s['old_generation']} -> "
            f"{s['new_generation']}; checkpoint {str(s['old_checkpoint'])[:12]} -> "
            f"{str(s['new_checkpoint'])[:12]}; purged {len(s['purged'])} artifact(s)"
        )
    if receipt["test_points"]:
        print(f"  removed {receipt['test_points']} test point(s)")
    print(f"  {len(receipt['ids'])} salted ID hash(es); previous receipt {receipt['prev']}")


def cmd_requests(args: argparse.Namespace) -> None:
    from sisa.deletion.lifecycle import damaged_entries, request_status, request_statuses
    from sisa.store.artifacts import SisaStore

    store = SisaStore(args.store, args.storage_options)
    if args.id is not None:
        status = request_status(store, args.id)
        if args.json:
            _print_json(status.to_dict())
            return
        print(f"{status.id}: {status.state}")
        if status.receipt is not None:
            _print_receipt(status.receipt)
        return
    statuses = [s for s in request_statuses(store) if args.state in (None, s.state)]
    damaged = damaged_entries(store) if args.state in (None, "damaged") else []
    if args.json:
        flagged = [{"id": None, "state": "damaged", "entry": path} for path in damaged]
        _print_json([s.to_dict() for s in statuses] + flagged)
        return
    if not statuses and not damaged:
        print("no requests")
    for s in statuses:
        print(
            f"{s.id}  {s.state:<9}  {s.points} point(s) in shards {s.shards}"
            + (f", {s.test_points} test" if s.test_points else "")
            + (f"  reason: {s.reason}" if s.reason else "")
            + (f"  (voids damaged entry {s.voids})" if s.voids is not None else "")
        )
    for path in damaged:
        print(f"{path}  DAMAGED: unreadable, never processed; {_VOID_HINT}")


_VOID_HINT = (
    "resubmit its request with 'sisa forget', then 'sisa void --store S N "
    "--resubmitted-as <new request ID>' (docs/faults.md)"
)


def _warn_damaged(store_url: str, storage_options: dict[str, Any] | None) -> None:
    """Name each damaged journal entry on stderr: the store is not clean while it stands."""
    from sisa.deletion.lifecycle import damaged_entries
    from sisa.store.artifacts import SisaStore

    for path in damaged_entries(SisaStore(store_url, storage_options)):
        print(f"sisa: warning: damaged journal entry {path}: {_VOID_HINT}", file=sys.stderr)


def cmd_void(args: argparse.Namespace) -> None:
    from sisa.store.artifacts import SisaStore
    from sisa.store.journal import Journal

    entry = args.entry.removeprefix("journal/").removeprefix("r").removesuffix(".json")
    if not (entry.isascii() and entry.isdigit()) or int(entry) < 1:
        raise CLIError(f"malformed journal entry {args.entry!r}: give its number, such as 3")
    store = SisaStore(args.store, args.storage_options)
    store.require_trained()
    void = Journal(store).void(int(entry), args.resubmitted_as)
    print(f"{void.id}: voids damaged entry {void.voids}; receipted by the next 'sisa process'")


def cmd_plan(args: argparse.Namespace) -> None:
    from sisa.deletion.batch import pending_plan
    from sisa.store.artifacts import SisaStore

    plan = pending_plan(SisaStore(args.store, args.storage_options))
    if args.json:
        _print_json(None if plan is None else plan.to_body())
        return
    if plan is None:
        print("nothing pending")
        return
    _print_plan(plan)


def _print_plan(plan: Any) -> None:
    print(
        f"batch of {len(plan.seqs)} request(s) (through request {plan.through}): "
        f"{len(plan.shards)} shard(s) to retrain, {plan.test_removed} test point(s) to drop"
    )
    for s in plan.shards:
        print(
            f"  shard {s.shard}: stages {s.start_stage}..{len(s.old_checkpoints)}, "
            f"-{s.removed} point(s), {s.samples} samples"
        )
    seconds = "uncalibrated" if plan.predicted_seconds is None else f"{plan.predicted_seconds:.2f}s"
    print(
        f"  predicted {plan.samples} samples ({seconds}, calibrated from "
        f"{plan.calibrated_from}); retraining from scratch: {plan.full_retrain_samples} samples"
    )


def cmd_process(args: argparse.Namespace) -> None:
    from sisa.deletion.batch import process

    executor = _executor(args)
    if args.follow:
        _follow(args, executor)
        return
    if args.window is not None or args.deadline is not None:
        raise CLIError("--window and --deadline apply to --follow")
    reports = []
    with _resumable("process"):
        while (report := process(args.store, args.storage_options, executor=executor)) is not None:
            reports.append(report)
    if args.json:
        _print_json([_report_dict(r) for r in reports])
        return
    if not reports:
        print("nothing pending")
    for r in reports:
        _print_batch(r)
    _warn_damaged(args.store, args.storage_options)


@contextlib.contextmanager
def _resumable(command: str) -> Iterator[None]:
    """A storage failure (a full disk, an unreachable object store) mid-way: say that the
    same command resumes where it stopped, since every step is committed or redone."""
    from storage import StorageIOError

    try:
        yield
    except StorageIOError as err:
        raise CLIError(f"{err}; rerun 'sisa {command}' to resume") from err


def _report_dict(report: Any) -> dict[str, Any]:
    return {
        "plan": report.plan.to_body(),
        "actual": {
            "samples": report.samples,
            "compute_seconds": report.compute_seconds,
            "seconds": report.seconds,
            "resumed": report.resumed,
        },
        "receipts": [r["request"] for r in report.receipts],
        "purged": report.purged,
    }


def _print_report_line(report: Any) -> None:
    """One JSON object per line (JSON Lines), for log collectors and ``jq``."""
    print(json.dumps(_report_dict(report), default=str))


def _print_batch(report: Any) -> None:
    plan = report.plan
    _print_plan(plan)
    predicted = "-" if plan.predicted_seconds is None else f"{plan.predicted_seconds:.2f}s"
    resumed = ""
    if report.resumed:  # a killed run leaves its lease; one stopped by an error releases it
        crashed = report.after_crash
        resumed = " (resumed after a crash)" if crashed else " (resumed an unfinished batch)"
    print(
        f"  actual: {report.samples} samples in {report.compute_seconds:.2f}s of compute "
        f"(predicted {plan.samples} in {predicted}); {report.seconds:.2f}s wall{resumed}"
    )
    print(f"  purged {len(report.purged)} file(s); receipts: {len(report.receipts)}")


def _follow(args: argparse.Namespace, executor: Any) -> None:
    import threading

    from orchestrator.service import DeletionService

    service = DeletionService(
        args.store,
        args.storage_options,
        executor,
        window=args.window,
        deadline=args.deadline,
        on_batch=lambda r: (
            (_print_json(_report_dict(r)) if args.json else _print_batch(r)) or sys.stdout.flush()
        ),  # one report per batch, as it ends, even into a pipe
    )
    print(
        f"processing deletions for {args.store} (window {service.window}s, "
        f"deadline {service.deadline}s); Ctrl-C to stop",
        file=sys.stderr,
    )
    service.run(threading.Event())


def cmd_audit(args: argparse.Namespace) -> int:
    from sisa.evidence.audit import audit

    report = audit(args.store, args.storage_options, expect_head=args.expect_head)
    if args.json:
        _print_json(report.to_dict())
    else:
        chain = report.chain
        print(
            f"receipt chain: {chain.length} receipt(s), "
            + ("intact" if chain.ok else "BROKEN")
            + f"; head {chain.head}"
        )
        for problem in chain.problems:
            print(f"  {problem}")
        print(f"scanned {report.scanned_files} file(s)")
        for f in report.findings:
            print(f"  {f.severity}: {f.kind}: {f.path}: {f.detail}")
        print("AUDIT PASSED" if report.ok else "AUDIT FAILED")
    return 0 if report.ok else 1


def cmd_repair(args: argparse.Namespace) -> None:
    from sisa.store.tombstones import repair_tombstones

    repair = repair_tombstones(args.store, args.storage_options)
    if repair.dropped_groups:
        print(
            f"dropped {repair.dropped_groups} stale group tombstone(s) "
            f"(tombstones generation {repair.tombstone_generation}); every deleted ID stays "
            "deleted"
        )
    else:
        print("nothing to repair")


def cmd_receipt(args: argparse.Namespace) -> int:
    from sisa.deletion.lifecycle import request_status
    from sisa.store.artifacts import SisaStore

    status = request_status(SisaStore(args.store, args.storage_options), args.id)
    if status.receipt is None:
        raise CLIError(f"request {args.id} is {status.state}; its receipt comes once purged")
    if args.json:
        _print_json(status.receipt)
    else:
        _print_receipt(status.receipt)
    return 0


def cmd_predict(args: argparse.Namespace) -> None:
    from orchestrator.io import read_features, write_predictions
    from sisa.serving.ensemble import Ensemble
    from sisa.store.artifacts import SisaStore

    if args.output and not args.output.endswith((".csv", ".json")):
        raise CLIError(f"{args.output}: predictions are written as .csv or .json")
    ids, X = read_features(args.input)
    ensemble = Ensemble.load(SisaStore(args.store, args.storage_options))
    scores = ensemble.predict_proba(X)
    write_predictions(args.output, ids, scores)


def cmd_status(args: argparse.Namespace) -> int:
    from sisa.evidence.status import status

    info = status(args.store, args.storage_options, check=args.check)
    if args.json:
        _print_json(info)
        return int(args.check and not info["check"]["ok"])
    print(
        f"{info['store']}: {len(info['shards'])} shards x {info['slices']} slices, "
        f"{info['points']} points, {info['test_points']} test point(s), "
        f"{info['deleted']} deleted, {len(info['pending_requests'])} request(s) pending"
    )
    for path in info["damaged_journal_entries"]:
        print(f"  DAMAGED journal entry {path}: its request cannot be processed; {_VOID_HINT}")
    for s in info["shards"]:
        stage = s["served_stage"]
        served = "" if stage == info["slices"] else f"  serving stage {stage}"
        print(
            f"  shard {s['shard']:>3}  points {s['points']:>7}  generation {s['generation']:>3}"
            f"  weights {s['weights_sha256'][:16]} (recorded){served}"
        )
    if not args.check:
        print("hashes as recorded when written; 'sisa status --check' reads the bytes")
        return 0
    check = info["check"]
    for problem in check["problems"]:
        print(f"  MISMATCH: {problem}")
    print(
        f"checked {check['artifacts']} artifact(s): "
        + ("every file matches its hash" if check["ok"] else f"{len(check['problems'])} problem(s)")
    )
    return int(not check["ok"])


def cmd_evaluate(args: argparse.Namespace) -> None:
    from sisa.evidence.status import evaluate

    if args.forgotten or args.forgotten_file:
        return cmd_evidence(args)
    info = evaluate(args.store, args.storage_options)
    if args.json:
        _print_json(info)
        return
    print(
        f"aggregate accuracy {info['aggregate']:.4f} (average {info['average']:.4f}, "
        f"vote {info['vote']:.4f}, mean shard {info['mean_shard']:.4f}) "
        f"on {info['test_points']} test points"
    )


EVIDENCE_LINES = (
    ("accuracy on the forgotten points", "acc_forget"),
    ("accuracy on the remaining training points", "acc_retain"),
    ("accuracy on the test points", "acc_test"),
    ("loss-threshold MIA, AUC (forgotten vs test)", "mia_auc"),
    ("SVC-MIA efficacy (share of forgotten points that look unseen)", "svc_mia"),
    ("logistic-regression MIA accuracy (forgotten vs test)", "lr_mia"),
)


def cmd_evidence(args: argparse.Namespace) -> None:
    from sisa.evidence.forgetting import EvidenceError, forgetting_evidence
    from sisa.store.artifacts import SisaStore

    intent = SisaStore(args.store, args.storage_options).intent()
    if intent is None:
        raise CLIError(f"{args.store} is not a trained store (run 'sisa train' first)")
    raw = list(args.forgotten or []) + (
        read_ids_file(args.forgotten_file) if args.forgotten_file else []
    )
    ids = parse_ids(raw, intent["id_kind"])
    try:
        report = forgetting_evidence(
            args.store,
            ids,
            source=args.source,
            storage_options=args.storage_options,
            executor=_executor(args),
        )
    except EvidenceError as err:
        raise CLIError(str(err)) from None
    if args.json:
        _print_json(report)
        return
    f = report["figures"]
    print(
        f"{report['forgotten']} forgotten points against a reference trained from scratch on "
        f"the {report['retain']} remaining ({report['test']} test points)"
    )
    if report["held_out"]:
        n = report["held_out"]
        print(
            f"  ({n} forgotten ID{' was a' if n == 1 else 's were'} test point"
            f"{'' if n == 1 else 's'}, never trained on)"
        )
    print(f"  weights identical to the reference: {'yes' if report['identical'] else 'NO'}")
    print(f"  Tug-of-War {f['tow']:.4f}, ToW-MIA {f['tow_mia']:.4f} (1 = the reference)")
    for label, key in EVIDENCE_LINES:
        value = "n/a" if f[key] is None else f"{f[key]:.4f}"
        ref = f.get(f"{key}_reference")
        ref_text = "n/a" if ref is None else f"{ref:.4f}"
        print(f"  {label}: {value} (reference {ref_text})")


def cmd_verify(args: argparse.Namespace) -> int:
    from sisa.evidence.verify import verify

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


def serving_settings(args: argparse.Namespace) -> Any:
    """The [serving] settings of ``sisa serve``: file, then environment, then flags."""
    from sisa.config import load_config, parse_assignments

    overrides = parse_assignments(args.set)
    if any(not key.startswith("serving.") for key in overrides):
        raise CLIError("sisa serve takes serving.* settings only; the store fixes the rest")
    if args.host is not None:
        overrides["serving.host"] = args.host
    if args.port is not None:
        overrides["serving.port"] = args.port
    return load_config(args.config, overrides=overrides).serving


def cmd_serve(args: argparse.Namespace) -> None:
    import contextlib
    import os

    from sisa.store.artifacts import SisaStore

    settings = serving_settings(args)
    SisaStore(args.store, args.storage_options).require_trained()
    # Ray's processes inherit this environment; the ingress gets the token's digest only
    os.environ.pop("SISA_SERVING__TOKEN", None)
    from orchestrator.serve_cluster import run_server

    def ready(server: Any) -> None:
        forget = "on" if settings.token is not None else "off (no serving.token)"
        spec = f"{server.url}/openapi.json"
        print(f"serving {args.store} at {server.url}  (OpenAPI: {spec})", flush=True)
        print(f"  POST /forget: {forget}; retraining: {settings.retrain}", flush=True)

    # until SIGINT or SIGTERM, then drains and stops (orchestrator.serve_cluster); an
    # interrupt during start-up ends here too, run_server having stopped what it started
    with contextlib.suppress(KeyboardInterrupt):
        run_server(args.store, args.storage_options, settings, args.ray_address, on_ready=ready)
    print("sisa: server stopped", file=sys.stderr)


def cmd_demo(args: argparse.Namespace) -> None:
    from orchestrator.demo import run_demo

    run_demo(args.store, args.forget)


def _user_errors() -> tuple[type[BaseException], ...]:
    from sisa.config import ConfigError
    from sisa.data.dataset import DataError
    from sisa.deletion.accept import UnknownIDError
    from sisa.store.artifacts import StoreStateError
    from sisa.store.journal import UnknownRequestError
    from storage import StorageError

    return (
        CLIError, ConfigError, DataError, StoreStateError, UnknownIDError, UnknownRequestError,
        StorageError, ValueError, OSError, OverflowError, RuntimeError, ImportError,
    )  # fmt: skip


USER_ERRORS = _user_errors()

COMMANDS = {
    "train": cmd_train,
    "forget": cmd_forget,
    "requests": cmd_requests,
    "void": cmd_void,
    "plan": cmd_plan,
    "process": cmd_process,
    "audit": cmd_audit,
    "repair": cmd_repair,
    "receipt": cmd_receipt,
    "predict": cmd_predict,
    "status": cmd_status,
    "evaluate": cmd_evaluate,
    "verify": cmd_verify,
    "serve": cmd_serve,
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
