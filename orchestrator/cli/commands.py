"""One function a subcommand: read the arguments, make one call into ``sisa``, print.

Each imports what it runs, inside the function: commands that train nothing (status,
forget, requests...) must not import torch (1.4 s) or pandas, and ``sisa`` imports its
modules lazily (tests/test_startup.py checks it). A command returns its exit code, or
``None`` for 0.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from orchestrator.cli.inputs import (
    CLIError,
    chosen_executor,
    forgotten_ids,
    request_args,
    serving_settings,
)
from orchestrator.cli.printers import (
    VOID_HINT,
    print_acceptance,
    print_accuracy,
    print_audit,
    print_batch,
    print_evidence,
    print_json,
    print_plan,
    print_receipt,
    print_repair,
    print_request,
    print_requests,
    print_serving,
    print_status,
    print_training,
    print_verification,
    print_void,
    report_dict,
    requests_body,
    verification_dict,
)


def cmd_train(args: argparse.Namespace) -> None:
    from sisa import check_factory, load_config, parse_assignments, train

    config = load_config(args.config, overrides=parse_assignments(args.set))
    if args.config is not None:  # a factory module beside the config: say where it is
        check_factory(
            config.model, (config.model.name, config.model.backbone or ""), Path(args.config).parent
        )
    with warnings.catch_warnings(record=True) as caught:  # one line each, not a traceback
        warnings.simplefilter("always", UserWarning)
        report = train(
            config,
            args.store,
            args.storage_options,
            executor=chosen_executor(args),
            overwrite=args.overwrite,
        )
    for warning in caught:
        print(f"sisa: warning: {warning.message}", file=sys.stderr)
    print_training(config, report, args.store)


def cmd_forget(args: argparse.Namespace) -> None:
    """Journal the request (compliant at once); with ``--wait``, retrain and purge too."""
    from sisa import SisaStore, accept, request_status, wait_purged

    ids, group = request_args(args)
    if args.wait:  # it will retrain: refuse before journaling what it could not finish
        _check_models_runnable(args.store, args.storage_options)
    accepted = accept(
        args.store, ids, group=group, reason=args.reason, storage_options=args.storage_options
    )
    waiting = args.wait and accepted.request_id is not None
    if not args.json:
        print_acceptance(accepted, waiting)
    if waiting:
        store = SisaStore(args.store, args.storage_options)
        with _resumable("process"):  # the request is journaled: any process finishes it
            wait_purged(store, accepted.request_id, chosen_executor(args))
        status = request_status(store, accepted.request_id)
    if args.json:
        print_json(asdict(accepted) | ({"status": status.to_dict()} if waiting else {}))
    elif waiting:
        print_receipt(status.receipt)


def _check_models_runnable(url: str, storage_options: dict[str, Any] | None) -> None:
    """Refuse a model factory the store may not run before anything is journaled."""
    from sisa import SisaStore, check_factory

    store = SisaStore(url, storage_options)
    store.require_trained()
    check_factory(store.config().model)


@contextlib.contextmanager
def _resumable(command: str) -> Iterator[None]:
    """A storage failure (a full disk, an unreachable object store) mid-way: say that the
    same command resumes where it stopped, since every step is committed or redone."""
    from storage import StorageIOError

    try:
        yield
    except StorageIOError as err:
        raise CLIError(f"{err}; rerun 'sisa {command}' to resume") from err


def cmd_requests(args: argparse.Namespace) -> None:
    from sisa import SisaStore, damaged_entries, request_status, request_statuses

    store = SisaStore(args.store, args.storage_options)
    if args.id is not None:
        status = request_status(store, args.id)
        if args.json:
            print_json(status.to_dict())
        else:
            print_request(status)
        return
    statuses = [s for s in request_statuses(store) if args.state in (None, s.state)]
    damaged = damaged_entries(store) if args.state in (None, "damaged") else []
    if args.json:
        print_json(requests_body(statuses, damaged))
    else:
        print_requests(statuses, damaged)


def cmd_void(args: argparse.Namespace) -> None:
    from sisa import Journal, SisaStore

    entry = args.entry.removeprefix("journal/").removeprefix("r").removesuffix(".json")
    if not (entry.isascii() and entry.isdigit()) or int(entry) < 1:
        raise CLIError(f"malformed journal entry {args.entry!r}: give its number, such as 3")
    store = SisaStore(args.store, args.storage_options)
    store.require_trained()
    print_void(Journal(store).void(int(entry), args.resubmitted_as))


def cmd_plan(args: argparse.Namespace) -> None:
    from sisa import SisaStore, pending_plan

    plan = pending_plan(SisaStore(args.store, args.storage_options))
    if args.json:
        print_json(None if plan is None else plan.to_body())
    elif plan is None:
        print("nothing pending")
    else:
        print_plan(plan)


def cmd_process(args: argparse.Namespace) -> None:
    from sisa import process

    executor = chosen_executor(args)
    if args.follow:
        _follow(args, executor)
        return
    if args.window is not None or args.deadline is not None or args.metrics_port is not None:
        raise CLIError("--window, --deadline and --metrics-port apply to --follow")
    if args.log_format != "text":
        raise CLIError("--log-format applies to --follow")
    reports = []
    with _resumable("process"):
        while (report := process(args.store, args.storage_options, executor=executor)) is not None:
            reports.append(report)
    if args.json:
        print_json([report_dict(r) for r in reports])
        return
    if not reports:
        print("nothing pending")
    for r in reports:
        print_batch(r)
    _warn_damaged(args.store, args.storage_options)


def _follow(args: argparse.Namespace, executor: Any) -> None:
    """``process --follow``: batch requests as they arrive, one report a batch, until
    interrupted."""
    import threading

    from orchestrator import logs
    from orchestrator.service import DeletionService

    logs.setup(args.log_format)

    def reported(report: Any) -> None:  # one report per batch, as it ends, even into a pipe
        if args.log_format == "json":
            logs.batch_event(report)
        (print_json(report_dict(report)) if args.json else print_batch(report))
        sys.stdout.flush()

    service = DeletionService(
        args.store,
        args.storage_options,
        executor,
        window=args.window,
        deadline=args.deadline,
        on_batch=reported,
        on_error=logs.failure_event,  # then retried, with back-off
        max_errors=args.max_errors,
    )
    if args.metrics_port is not None:
        _serve_metrics(args)
    if args.log_format == "json" and hasattr(executor, "init_kwargs"):
        executor.init_kwargs["configure_logging"] = False  # Ray adds no handler of its own
        logs.adopt("ray")  # and its warnings are JSON lines
    if args.log_format == "json":
        logs.event("following", store=args.store, window_s=service.window,
                   deadline_s=service.deadline, metrics=args.metrics_port)  # fmt: skip
    else:
        print(
            f"processing deletions for {args.store} (window {service.window}s, "
            f"deadline {service.deadline}s); Ctrl-C to stop",
            file=sys.stderr,
        )
    try:
        service.run(threading.Event())
    finally:
        if args.log_format == "json":
            logs.event("stopped", store=args.store, outcome="stopped")


def _serve_metrics(args: argparse.Namespace) -> None:
    """The store's deletion figures on ``--metrics-port``, in a thread of this process."""
    from prometheus_client import start_http_server

    from orchestrator.metrics import store_registry

    if not 0 <= args.metrics_port <= 65535:
        raise CLIError(f"--metrics-port must be 0..65535, not {args.metrics_port}")
    registry = store_registry(args.store, args.storage_options)
    try:
        server, _ = start_http_server(args.metrics_port, args.metrics_host, registry)
    except OSError as err:
        raise CLIError(f"--metrics-port {args.metrics_port}: {err.strerror or err}") from None
    host, port = server.server_address[:2]
    print(f"metrics on http://{host}:{port}/metrics", file=sys.stderr, flush=True)


def _warn_damaged(store_url: str, storage_options: dict[str, Any] | None) -> None:
    """Name each damaged journal entry on stderr: the store is not clean while it stands."""
    from sisa import SisaStore, damaged_entries

    for path in damaged_entries(SisaStore(store_url, storage_options)):
        print(f"sisa: warning: damaged journal entry {path}: {VOID_HINT}", file=sys.stderr)


def cmd_audit(args: argparse.Namespace) -> int:
    """Exit 1 when the audit fails, so a scheduled audit can alert."""
    from sisa import audit

    report = audit(
        args.store, args.storage_options, expect_head=args.expect_head, record=not args.no_record
    )
    if args.json:
        print_json(report.to_dict())
    else:
        print_audit(report)
    return 0 if report.ok else 1


def cmd_repair(args: argparse.Namespace) -> None:
    from sisa import repair_tombstones

    print_repair(repair_tombstones(args.store, args.storage_options))


def cmd_rekey(args: argparse.Namespace) -> None:
    from sisa import rekey

    name = rekey(
        args.store,
        args.storage_options,
        key_store=args.key_store,
        key_store_options=args.key_store_options,
    )
    print(f"the salt of {args.store} is now key {name} of {args.key_store}; the receipt chain")
    print("  is unchanged (audit --expect-head still holds); copies of the old record keep it")


def cmd_receipt(args: argparse.Namespace) -> int:
    """A request not yet purged has no receipt: an error, not an empty answer."""
    from sisa import SisaStore, request_status

    status = request_status(SisaStore(args.store, args.storage_options), args.id)
    if status.receipt is None:
        raise CLIError(f"request {args.id} is {status.state}; its receipt comes once purged")
    if args.json:
        print_json(status.receipt)
    else:
        print_receipt(status.receipt)
    return 0


def cmd_predict(args: argparse.Namespace) -> None:
    from orchestrator.io import read_features, write_predictions
    from sisa import Ensemble, SisaStore

    if args.executor == "ray":
        from orchestrator.scoring import score_on_ray

        if not args.output:
            raise CLIError("--executor ray writes Parquet files into a folder: give --output")
        rows = score_on_ray(
            args.store, args.storage_options, args.input, args.output, address=args.ray_address
        )
        print(f"scored {rows} rows into {args.output}", file=sys.stderr)
        return
    if args.output and not args.output.endswith((".csv", ".json", ".parquet")):
        raise CLIError(f"{args.output}: predictions are written as .csv, .json or .parquet")
    store = SisaStore(args.store, args.storage_options)
    ids, X = read_features(args.input, store.config().data)  # the store's column mapping
    ensemble = Ensemble.load(store)
    scores = ensemble.predict_proba(X)
    write_predictions(args.output, ids, scores, ensemble.class_names)


def cmd_status(args: argparse.Namespace) -> int:
    """Exit 1 when ``--check`` finds a file whose bytes no longer match its hash."""
    from sisa import status

    info = status(args.store, args.storage_options, check=args.check)
    if args.json:
        print_json(info)
    else:
        print_status(info, checked=args.check)
    return int(args.check and not info["check"]["ok"])


def cmd_evaluate(args: argparse.Namespace) -> None:
    from sisa import evaluate

    if args.forgotten or args.forgotten_file:
        return cmd_evidence(args)
    info = evaluate(args.store, args.storage_options)
    if args.json:
        print_json(info)
    else:
        print_accuracy(info)


def cmd_evidence(args: argparse.Namespace) -> None:
    """``evaluate --forgotten``: the store against one trained from scratch on what it
    holds now."""
    from sisa import EvidenceError, SisaStore, forgetting_evidence

    intent = SisaStore(args.store, args.storage_options).intent()
    if intent is None:
        raise CLIError(f"{args.store} is not a trained store (run 'sisa train' first)")
    ids = forgotten_ids(args, intent["id_kind"])
    try:
        report = forgetting_evidence(
            args.store,
            ids,
            source=args.source,
            storage_options=args.storage_options,
            executor=chosen_executor(args),
        )
    except EvidenceError as err:
        raise CLIError(str(err)) from None
    if args.json:
        print_json(report)
    else:
        print_evidence(report)


def cmd_verify(args: argparse.Namespace) -> int:
    """Exit 1 unless every shard is bitwise what training from scratch gives."""
    from sisa import verify

    report = verify(
        args.store, args.shard, storage_options=args.storage_options, executor=chosen_executor(args)
    )
    if args.json:
        print_json(verification_dict(report))
    else:
        print_verification(report)
    return 0 if report.identical else 1


def cmd_serve(args: argparse.Namespace) -> None:
    """Serve until interrupted; the token leaves the environment before Ray starts."""
    from sisa import SisaStore

    settings = serving_settings(args)
    SisaStore(args.store, args.storage_options).require_trained()
    # Ray's processes inherit this environment; the ingress gets the token's digest only
    os.environ.pop("SISA_SERVING__TOKEN", None)
    from orchestrator import logs
    from orchestrator.serve_cluster import run_server

    def ready(server: Any) -> None:
        if args.log_format == "text":
            print_serving(args.store, server, settings)
            return
        logs.event("serving", store=args.store, url=server.url, retrain=settings.retrain,
                   forget=settings.token is not None,
                   metrics=f"{server.url}/metrics" if settings.metrics else None)  # fmt: skip

    # until SIGINT or SIGTERM, then drains and stops (orchestrator.serve_cluster); an
    # interrupt during start-up ends here too, run_server having stopped what it started
    with contextlib.suppress(KeyboardInterrupt):
        run_server(
            args.store,
            args.storage_options,
            settings,
            args.ray_address,
            on_ready=ready,
            log_format=args.log_format,
        )
    if args.log_format == "json":
        logs.event("stopped", store=args.store, outcome="stopped")
    else:
        print("sisa: server stopped", file=sys.stderr)


def cmd_demo(args: argparse.Namespace) -> None:
    from orchestrator.demo import run_demo

    run_demo(args.store, args.forget)


COMMANDS: dict[str, Callable[[argparse.Namespace], int | None]] = {
    "train": cmd_train,
    "forget": cmd_forget,
    "requests": cmd_requests,
    "void": cmd_void,
    "plan": cmd_plan,
    "process": cmd_process,
    "audit": cmd_audit,
    "repair": cmd_repair,
    "rekey": cmd_rekey,
    "receipt": cmd_receipt,
    "predict": cmd_predict,
    "status": cmd_status,
    "evaluate": cmd_evaluate,
    "verify": cmd_verify,
    "serve": cmd_serve,
    "demo": cmd_demo,
}
