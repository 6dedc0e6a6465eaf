"""What the commands print: the API's reports as text for people, or as JSON for scripts.

Printers take what ``sisa`` returns and import nothing of it, so formatting costs no
start-up time; the text is the CLI's interface, kept line for line.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from typing import Any

VOID_HINT = (
    "resubmit its request with 'sisa forget', then 'sisa void --store S N "
    "--resubmitted-as <new request ID>' (docs/faults.md)"
)

EVIDENCE_LINES = (
    ("accuracy on the forgotten points", "acc_forget"),
    ("accuracy on the remaining training points", "acc_retain"),
    ("accuracy on the test points", "acc_test"),
    ("loss-threshold MIA, AUC (forgotten vs test)", "mia_auc"),
    ("SVC-MIA efficacy (share of forgotten points that look unseen)", "svc_mia"),
    ("logistic-regression MIA accuracy (forgotten vs test)", "lr_mia"),
)


def print_json(obj: Any) -> None:
    """``--json``: indented, with what JSON lacks (paths, timestamps) as strings."""
    print(json.dumps(obj, indent=2, default=str))


def shown(values: list[Any]) -> str:
    """The first 20 values, and how many more: a long list stays one readable line."""
    return ", ".join(map(str, values[:20])) + (
        f" and {len(values) - 20} more" if len(values) > 20 else ""
    )


def print_training(config: Any, report: Any, url: str) -> None:
    """``sisa train``: what was trained, and what a resumed run took over."""
    print(
        f"trained {config.sisa.shards} shards x {config.sisa.slices} slices on "
        f"{report.n_train} points ({report.n_test} held out) in {report.seconds:.1f}s "
        f"-> {url}"
    )
    if report.resumed:
        done = report.resumed_shards
        parts = [f"shard(s) {shown(done)} committed earlier"] if done else []
        parts += [
            f"shard {r.shard} after stage {max(r.resumed)}" for r in report.shards if r.resumed
        ]
        print("  resumed an interrupted training: " + "; ".join(parts))


def print_acceptance(accepted: Any, waiting: bool) -> None:
    """``sisa forget``: the request ID first, flushed, so a script has it before any wait."""
    if accepted.request_id is None:
        print(f"nothing to do: already deleted or requested: {shown(accepted.already_deleted)}")
        if accepted.earlier_requests:
            print(f"  by request(s): {shown(accepted.earlier_requests)}")
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
        print(f"  already deleted or requested (no-op): {shown(accepted.already_deleted)}")
    if not waiting:
        print("  pending: run 'sisa process' (or forget with --wait) to retrain and purge")
    sys.stdout.flush()


def print_receipt(receipt: dict[str, Any]) -> None:
    """A purged request's receipt: per shard, what was retrained and purged."""
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


def print_request(status: Any) -> None:
    """``sisa requests ID``: its state, and its receipt once purged."""
    print(f"{status.id}: {status.state}")
    if status.receipt is not None:
        print_receipt(status.receipt)


def requests_body(statuses: list[Any], damaged: list[str]) -> list[dict[str, Any]]:
    """``sisa requests --json``: the requests, then each damaged entry (it has no ID)."""
    flagged = [{"id": None, "state": "damaged", "entry": path} for path in damaged]
    return [s.to_dict() for s in statuses] + flagged


def print_requests(statuses: list[Any], damaged: list[str]) -> None:
    """``sisa requests``: one line a request, then the damaged entries and what to do."""
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
        print(f"{path}  DAMAGED: unreadable, never processed; {VOID_HINT}")


def print_void(void: Any) -> None:
    """``sisa void``: the voiding request, and when it is receipted."""
    print(f"{void.id}: voids damaged entry {void.voids}; receipted by the next 'sisa process'")


def print_plan(plan: Any) -> None:
    """A batch plan: per shard, the stages to retrain, and the predicted cost."""
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


def report_dict(report: Any) -> dict[str, Any]:
    """A processed batch as JSON: its plan beside what it actually cost."""
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


def print_batch(report: Any) -> None:
    """A processed batch: its plan, then the actual cost against the predicted."""
    plan = report.plan
    print_plan(plan)
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


def print_audit(report: Any) -> None:
    """``sisa audit``: the receipt chain, the findings of the scan, and the verdict."""
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


def print_repair(repair: Any) -> None:
    """``sisa repair``: what it dropped; deleted IDs stay deleted either way."""
    if repair.dropped_groups:
        print(
            f"dropped {repair.dropped_groups} stale group tombstone(s) "
            f"(tombstones generation {repair.tombstone_generation}); every deleted ID stays "
            "deleted"
        )
    else:
        print("nothing to repair")


def print_status(info: dict[str, Any], checked: bool) -> None:
    """``sisa status``: the store, damaged entries, each shard; once ``--check`` read the
    bytes, the files that no longer match their hash."""
    print(
        f"{info['store']}: {len(info['shards'])} shards x {info['slices']} slices, "
        f"{info['points']} points, {info['test_points']} test point(s), "
        f"{info['deleted']} deleted, {len(info['pending_requests'])} request(s) pending"
    )
    if info.get("classes") is not None:
        print(f"  classes: {', '.join(map(str, info['classes']))} (recorded at training)")
    for path in info["damaged_journal_entries"]:
        print(f"  DAMAGED journal entry {path}: its request cannot be processed; {VOID_HINT}")
    for s in info["shards"]:
        stage = s["served_stage"]
        served = "" if stage == info["slices"] else f"  serving stage {stage}"
        metrics = "" if s.get("loss") is None else f"  loss {s['loss']:.4f}"
        if s.get("accuracy") is not None:
            metrics += f"  accuracy {s['accuracy']:.4f}"
        print(
            f"  shard {s['shard']:>3}  points {s['points']:>7}  generation {s['generation']:>3}"
            f"  weights {s['weights_sha256'][:16]} (recorded){metrics}{served}"
        )
    if not checked:
        print("hashes as recorded when written; 'sisa status --check' reads the bytes")
        return
    check = info["check"]
    for problem in check["problems"]:
        print(f"  MISMATCH: {problem}")
    print(
        f"checked {check['artifacts']} artifact(s): "
        + ("every file matches its hash" if check["ok"] else f"{len(check['problems'])} problem(s)")
    )


def print_accuracy(info: dict[str, Any]) -> None:
    """``sisa evaluate``: the aggregate accuracy beside the rules it could have used."""
    print(
        f"aggregate accuracy {info['aggregate']:.4f} (average {info['average']:.4f}, "
        f"vote {info['vote']:.4f}, mean shard {info['mean_shard']:.4f}) "
        f"on {info['test_points']} test points"
    )


def print_evidence(report: dict[str, Any]) -> None:
    """``sisa evaluate --forgotten``: each figure beside the from-scratch reference's."""
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


def verification_dict(report: Any) -> dict[str, Any]:
    """``sisa verify --json``: the verdict, both environments, and each shard's."""
    return {
        "identical": report.identical,
        "same_environment": report.same_environment,
        "fingerprint": report.fingerprint,
        "recorded_fingerprint": report.recorded_fingerprint,
        "shards": [asdict(v) | {"identical": v.identical} for v in report.shards],
    }


def print_verification(report: Any) -> None:
    """``sisa verify``: each shard against training from scratch, where it ran, verdict."""
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


def print_serving(url: str, server: Any, settings: Any) -> None:
    """``sisa serve``, once up: where, and whether POST /forget is on; flushed for logs."""
    forget = "on" if settings.token is not None else "off (no serving.token)"
    spec = f"{server.url}/openapi.json"
    print(f"serving {url} at {server.url}  (OpenAPI: {spec})", flush=True)
    print(f"  POST /forget: {forget}; retraining: {settings.retrain}", flush=True)
