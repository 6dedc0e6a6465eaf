"""``sisa demo``: the product in one minute on the bundled digits.

Trains a SISA ensemble and a monolithic model on the same data, requests the deletion of a
few points (journaled and compliant at once), processes the request (retrain, purge,
receipt), compares the time with retraining from scratch, audits the store, and verifies
that every shard is bitwise identical to training from scratch without the points.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from orchestrator.executors import InProcessExecutor
from sisa import (
    Config,
    SisaStore,
    accept,
    audit,
    build_config,
    configure,
    evaluate,
    process,
    train,
    verify,
)

DEMO_CONFIG = {
    "data": {"source": "digits", "test_fraction": 0.2},
    "sisa": {"shards": 5, "slices": 4, "epochs": 30, "seed": 0},
    "model": {"name": "mlp", "hidden": [128]},
    "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "batch_size": 32},
}


def pick_ids(url: str, count: int) -> list[int | str]:
    """One ID from each shard in turn, from different slices: a spread of deletions."""
    store = SisaStore(url)
    shards = store.config().sisa.shards
    columns = [
        store.read_data(store.shard_head(k).data, features=False)["ids"] for k in range(shards)
    ]
    picked: list[int | str] = []
    row = 0
    while len(picked) < count and any(row < len(c) for c in columns):
        picked += [c[row].item() for c in columns if row < len(c)][: count - len(picked)]
        row += 7
    return picked


def run_demo(store: str | None, n_forget: int = 5, out: Callable[[str], None] = print) -> bool:
    """Run the demo; return whether verification passed."""
    with tempfile.TemporaryDirectory(prefix="sisa-demo-") as tmp:
        url = store or str(Path(tmp) / "sisa")
        config: Config = build_config(DEMO_CONFIG)
        mono = build_config(DEMO_CONFIG, {"sisa.shards": 1, "sisa.slices": 1})
        quiet = InProcessExecutor(progress=False)
        s = config.sisa
        configure(config.resources.threads)  # one-off start-up cost, kept out of the timings

        report = train(config, url, executor=quiet, overwrite=True)
        acc = evaluate(url)
        out(f"data: digits, {report.n_train} training points, {report.n_test} held out")
        out(
            f"SISA: {s.shards} shards x {s.slices} slices, {s.epochs:g} epochs, "
            f"trained in {report.seconds:.2f}s"
        )
        out(
            f"  accuracy: aggregate {acc['aggregate']:.4f} ({s.aggregation}), vote "
            f"{acc['vote']:.4f}, mean shard {acc['mean_shard']:.4f}"
        )

        mono_report = train(mono, str(Path(tmp) / "monolithic"), executor=quiet, overwrite=True)
        mono_acc = evaluate(str(Path(tmp) / "monolithic"))
        out(
            f"monolithic model on the same data: trained in {mono_report.seconds:.2f}s, "
            f"accuracy {mono_acc['aggregate']:.4f}"
        )

        ids = pick_ids(url, n_forget)
        accepted = accept(url, ids, reason="demo")
        out(
            f"forget {ids}: request {accepted.request_id} journaled; predictions compliant "
            f"{accepted.compliance_seconds * 1000:.1f} ms later (shards "
            f"{sorted(accepted.rolled_back)} served from earlier checkpoints)"
        )
        batch = process(url, executor=quiet)
        assert batch is not None
        seconds = batch.seconds
        stages = sum(len(r.trained) for r in batch.results)
        out(
            f"  processed in {seconds:.2f}s: retrained {len(batch.results)} shard(s), {stages} "
            f"of {s.shards * s.slices} stages ({batch.samples} samples, planned "
            f"{batch.plan.samples}); purged {len(batch.purged)} files; receipt written"
        )

        started = time.perf_counter()
        proof = verify(url, executor=quiet)
        full = time.perf_counter() - started
        out(
            f"retraining from scratch without them: whole ensemble {full:.2f}s "
            f"({full / seconds:.1f}x the forget), monolithic {mono_report.seconds:.2f}s "
            f"({mono_report.seconds / seconds:.1f}x)"
        )
        after = evaluate(url)
        out(f"  accuracy after forgetting: aggregate {after['aggregate']:.4f}")
        audited = audit(url)
        out(
            f"audit: receipt chain of {audited.chain.length} intact, {audited.scanned_files} "
            f"files scanned, " + ("no deleted point anywhere" if audited.ok else "PROBLEMS FOUND")
        )
        fp = proof.fingerprint
        same = sum(v.identical for v in proof.shards)
        out(
            f"verify: {same}/{len(proof.shards)} shards bitwise identical to training from "
            f"scratch on their remaining points (torch {fp['torch']}, {fp['device']}, "
            f"{fp['dtype']}, {fp['threads']} thread)"
        )
        out("VERIFIED" if proof.identical and audited.ok else "NOT VERIFIED")
        return proof.identical and audited.ok
