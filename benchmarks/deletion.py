"""Deletion benchmarks: time to compliance, and the cost of batched processing.

Run:  python benchmarks/deletion.py [--quick] [--repeats N] [--out docs/benchmarks/deletion.md]

Writes Markdown to --out (default docs/benchmarks/deletion.md; a --quick run only prints
unless --out is given) and the raw figures as JSON next to it.

* compliance: ``accept`` one single-ID request, then refresh a live ensemble with
  ``Ensemble.load(store, previous=...)`` and predict one row. Reported as medians over
  repeats; each repeat is followed by ``process`` so every request meets a fully trained
  store. The script asserts that the refreshed ensemble serves what ``serving.current``
  says, that the touched shard is rolled back (or dropped) and that untouched shards keep
  their loaded models.
* batched: K random single-ID requests accepted one by one, then one ``process``; the
  plan's predictions against what the retrain did, and the paper's batched expectation
  N(1 - (1 - 1/S)^K) against the points in the shards retrained. For small K the same
  requests are also processed one at a time, for the batching gain.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestrator.executors import InProcessExecutor  # noqa: E402
from sisa import serving  # noqa: E402
from sisa.batch import BatchReport, pending_plan, process  # noqa: E402
from sisa.config import build_config  # noqa: E402
from sisa.ensemble import Ensemble  # noqa: E402
from sisa.store import TEST, SisaStore  # noqa: E402
from sisa.train import train  # noqa: E402
from sisa.trainer import configure  # noqa: E402
from sisa.unlearn import Acceptance, accept  # noqa: E402

GOAL_S = 0.100  # the goal for accepted -> compliant
QUIET = InProcessExecutor(progress=False)
PURCHASE: dict[str, Any] = {
    "data.source": "synthetic-purchase",
    "data.n": 20_000,
    "sisa.shards": 20,
    "sisa.slices": 10,
    "sisa.epochs": 5,
    "model.hidden": [64],
    "optim.name": "adam",
    "optim.lr": 0.001,
    "optim.batch_size": 64,
}
DIGITS: dict[str, Any] = {"data.source": "digits"}  # the embedded default: S=5, R=4, e=20


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def train_store(root: Path, name: str, overrides: dict[str, Any]) -> str:
    url = str(root / name)
    train(build_config({}, overrides), url, executor=QUIET)
    return url


def copy_store(url: str, root: Path, name: str) -> str:
    """A fresh copy of a trained store (paths in a store are relative)."""
    dest = str(root / name)
    shutil.copytree(url, dest)
    return dest


def training_ids(store: SisaStore) -> np.ndarray:
    shards = store.config().sisa.shards
    parts = [store.read_data(store.shard_head(k).data, features=False) for k in range(shards)]
    return np.concatenate([p["ids"] for p in parts])


def check_compliant(old: Ensemble, new: Ensemble, store: SisaStore, acc: Acceptance) -> None:
    """The refreshed ensemble serves the serving state, rolled back where the request hit."""
    state = serving.current(store)
    assert {k: s.stage for k, s in new.served.items()} == {
        k: s.stage for k, s in state.shards.items()
    }
    assert set(new.models) == {k for k, s in state.shards.items() if s.live}
    assert acc.rolled_back and set(acc.rolled_back) == set(acc.start_stages)
    for shard, start in acc.start_stages.items():
        assert old.served[shard].stage == store.config().sisa.slices  # was final
        assert new.served[shard].stage == start - 1  # the stage before the touched slice
        assert (shard in new.models) == (start > 1)  # first slice touched: left out
    for shard in set(new.models) - set(acc.start_stages):
        assert new.models[shard] is old.models[shard]  # untouched shards are not reloaded


def bench_compliance(url: str, repeats: int, rng: np.random.Generator) -> dict[str, Any]:
    store = SisaStore(url)
    cfg = store.config().sisa
    test = store.read_data(store.latest_head(TEST).data)  # type: ignore[union-attr]
    row = test["X"][:1]
    victims = rng.choice(training_ids(store), repeats, replace=False).tolist()
    ensemble = Ensemble.load(store)
    runs: list[dict[str, float]] = []
    for victim in victims:
        t0 = time.perf_counter()
        acc = accept(url, [victim])
        accept_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        fresh = Ensemble.load(store, previous=ensemble)
        load_s = time.perf_counter() - t1
        t2 = time.perf_counter()
        fresh.predict(row)
        predict_s = time.perf_counter() - t2
        check_compliant(ensemble, fresh, store, acc)
        t3 = time.perf_counter()
        Ensemble.load(store)  # what a predictor without ``previous`` would pay
        cold_s = time.perf_counter() - t3
        runs.append(
            {
                "accept_s": accept_s,
                "compliance_s": acc.compliance_seconds,
                "reload_s": load_s,
                "predict_s": predict_s,
                "cold_reload_s": cold_s,
                "end_to_end_s": acc.compliance_seconds + load_s + predict_s,
                "dropped": float(min(acc.start_stages.values()) == 1),
            }
        )
        process(url, executor=QUIET)  # retrain, so the next request meets a final store
        ensemble = Ensemble.load(store, previous=fresh)
    summary = {k: median([r[k] for r in runs]) for k in runs[0] if k != "dropped"}
    summary |= {f"max_{k}": max(r[k] for r in runs) for k in ("compliance_s", "end_to_end_s")}
    n_train = int(store.require_trained()["n_train"])
    return summary | {
        "n_train": n_train,
        "shards": cfg.shards,
        "slices": cfg.slices,
        "repeats": repeats,
        "dropped": int(sum(r["dropped"] for r in runs)),
        "runs": runs,
    }


def accept_all(url: str, victims: list[object]) -> list[Acceptance]:
    return [accept(url, [v]) for v in victims]


def bench_batch(
    url: str, root: Path, k: int, repeat: int, rng: np.random.Generator
) -> dict[str, Any]:
    """K requests accepted one by one, then one ``process`` on a fresh copy of the store."""
    copy = copy_store(url, root, f"batch-{k}-{repeat}")
    store = SisaStore(copy)
    victims = rng.choice(training_ids(store), k, replace=False).tolist()
    t0 = time.perf_counter()
    accepted = accept_all(copy, victims)
    accept_s = time.perf_counter() - t0
    plan = pending_plan(store)
    report: BatchReport | None = process(copy, executor=QUIET)
    assert plan is not None and report is not None and report.plan.samples == plan.samples
    shutil.rmtree(copy)
    touched = sum(s.removed + s.remaining for s in plan.shards)
    return {
        "k": k,
        "victims": victims,
        "accept_total_s": accept_s,
        "last_compliance_s": accepted[-1].compliance_seconds,
        "planned_samples": plan.samples,
        "trained_samples": report.samples,
        "predicted_s": plan.predicted_seconds,
        "calibrated_from": plan.calibrated_from,
        "compute_s": report.compute_seconds,
        "wall_s": report.seconds,
        "shards_retrained": len(report.results),
        "paper_touched_points": plan.paper["touched_points"],
        "touched_points": touched,
        "full_retrain_samples": plan.full_retrain_samples,
        "deletions_per_s": k / report.seconds,
    }


def bench_sequential(url: str, root: Path, victims: list[object]) -> dict[str, float]:
    """The same requests, each processed before the next is accepted."""
    copy = copy_store(url, root, f"sequential-{len(victims)}")
    samples, wall = 0, 0.0
    for victim in victims:
        accept(copy, [victim])
        report = process(copy, executor=QUIET)
        assert report is not None
        samples, wall = samples + report.samples, wall + report.seconds
    shutil.rmtree(copy)
    return {"samples": samples, "wall_s": wall}


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of the numeric figures over repeats (the repeat itself is kept for JSON)."""
    out: dict[str, Any] = {"k": rows[0]["k"], "repeats": len(rows)}
    for key, value in rows[0].items():
        if isinstance(value, int | float) and key != "k":
            out[key] = median([r[key] for r in rows])
    return out | {"calibrated_from": rows[0]["calibrated_from"]}


def git_commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True).stdout.strip()

    return git("rev-parse", "HEAD") + (" (working tree has changes)" if git("status", "-s") else "")


def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "cpu": platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "torch_threads": torch.get_num_threads(),
    }


def render(result: dict[str, Any]) -> str:
    m, meta = result["machine"], result
    lines = [
        "# Deletion benchmarks",
        "",
        f"Command: `{meta['command']}`",
        "",
        f"Commit: `{meta['commit']}`",
        "",
        f"Machine: {m['platform']}, {m['cores']} cores, Python {m['python']}, torch "
        f"{m['torch']}, numpy {m['numpy']}, {m['torch_threads']} torch thread(s)",
        "",
        f"Purchase store: `{json.dumps(meta['stores']['purchase'])}`; digits store: "
        "`data.source = digits` with the defaults (S=5, R=4, e=20, MLP [128], SGD).",
        "",
        "## Time to compliance (one single-ID request, nothing else pending)",
        "",
        "| store | N train | S | R | repeats | accept call (ms) | journal→serving commit (ms) "
        "| reload with previous (ms) | predict 1 row (ms) | accepted→compliant predictions (ms) "
        "| max (ms) | cold reload (ms) | < 100 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, c in result["compliance"].items():
        met = "yes" if c["end_to_end_s"] < GOAL_S else "no"
        lines.append(
            f"| {name} | {c['n_train']:,} | {c['shards']} | {c['slices']} | {c['repeats']} | "
            f"{c['accept_s'] * 1e3:.1f} | {c['compliance_s'] * 1e3:.1f} | "
            f"{c['reload_s'] * 1e3:.1f} | {c['predict_s'] * 1e3:.2f} | "
            f"{c['end_to_end_s'] * 1e3:.1f} | {c['max_end_to_end_s'] * 1e3:.1f} | "
            f"{c['cold_reload_s'] * 1e3:.1f} | {met} |"
        )
    lines += [
        "",
        "## Batched processing (K single-ID requests, then one `process`; purchase store)",
        "",
        "| K | repeats | samples planned | samples trained | predicted (s) | compute (s) "
        "| wall (s) | shards retrained | paper touched points | points in retrained shards "
        "| deletions/s | accepting all K (s) | last accept's compliance (ms) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for b in result["batched"]:
        lines.append(
            f"| {b['k']:,} | {b['repeats']} | {b['planned_samples']:,.0f} | "
            f"{b['trained_samples']:,.0f} | {b['predicted_s']:.2f} | {b['compute_s']:.2f} | "
            f"{b['wall_s']:.2f} | {b['shards_retrained']:g} | {b['paper_touched_points']:,.0f} | "
            f"{b['touched_points']:,.0f} | {b['deletions_per_s']:.1f} | "
            f"{b['accept_total_s']:.2f} | {b['last_compliance_s'] * 1e3:.0f} |"
        )
    lines += [
        "",
        "| K | one at a time: samples | wall (s) | batched: samples | wall (s) "
        "| gain in samples | gain in wall time |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in result["sequential"]:
        lines.append(
            f"| {s['k']} | {s['samples']:,} | {s['wall_s']:.2f} | {s['batched_samples']:,} | "
            f"{s['batched_wall_s']:.2f} | {s['samples'] / s['batched_samples']:.1f}x | "
            f"{s['wall_s'] / s['batched_wall_s']:.1f}x |"
        )
    lines += ["", "## Reading", "", *result["reading"], ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="small store, few repeats")
    parser.add_argument("--repeats", type=int, default=None, help="compliance repeats")
    parser.add_argument("--out", default=None, help="Markdown path; JSON goes next to it")
    args = parser.parse_args()
    repeats = args.repeats or (5 if args.quick else 21)
    ks = [1, 10] if args.quick else [1, 10, 100, 1000]
    batch_repeats = {1: 5, 10: 3, 100: 3, 1000: 1}
    out = args.out or (None if args.quick else "docs/benchmarks/deletion.md")
    purchase = PURCHASE | ({"data.n": 4000, "sisa.shards": 5} if args.quick else {})
    configure(1)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        urls = {"purchase": train_store(root, "purchase", purchase)}
        urls["digits"] = train_store(root, "digits", DIGITS)
        compliance = {
            name: bench_compliance(copy_store(url, root, f"{name}-live"), repeats, rng)
            for name, url in urls.items()
        }
        batched, sequential, raw = [], [], []
        for k in ks:
            rows = [bench_batch(urls["purchase"], root, k, i, rng) for i in range(batch_repeats[k])]
            raw += rows
            batched.append(summarise(rows))
            if k <= 10:
                seq = bench_sequential(urls["purchase"], root, rows[0]["victims"])
                b = rows[0]
                sequential.append(
                    seq
                    | {"k": k, "batched_samples": b["trained_samples"]}
                    | {"batched_wall_s": b["wall_s"]}
                )
    result: dict[str, Any] = {
        "command": " ".join(["python", "benchmarks/deletion.py", *sys.argv[1:]]),
        "commit": git_commit(),
        "machine": machine(),
        "goal_s": GOAL_S,
        "stores": {"purchase": purchase, "digits": DIGITS},
        "compliance": compliance,
        "batched": batched,
        "sequential": sequential,
        "batched_runs": [{k: v for k, v in r.items() if k != "victims"} for r in raw],
    }
    result["reading"] = reading(result)
    text = render(result)
    print(text)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text)
        Path(out).with_suffix(".json").write_text(json.dumps(result, indent=1, default=str))


def reading(result: dict[str, Any]) -> list[str]:
    """Filled in after a run; see the Markdown."""
    return []


if __name__ == "__main__":
    main()
