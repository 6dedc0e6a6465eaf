"""Foundation benchmarks: ID lookup at scale, and the cost of forgetting vs retraining.

Run:  python benchmarks/foundation.py [--quick] [--out docs/benchmarks/foundation.md]

Figures are ratios measured in one run, because shared machines are noisy:
* lookup: seconds per 10,000 lookups in a Locator over N IDs, for growing N; O(1)
  lookup keeps the ratio to the smallest N near 1.
* forget: one single-point request on synthetic Purchase-100, compared with the paper's
  cost model e*(N/S)*(2/3 + 1/(3R)) sample-epochs and with retraining every shard and a
  monolithic model from scratch.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestrator.executors import InProcessExecutor  # noqa: E402
from sisa.config import build_config  # noqa: E402
from sisa.partition import Locator, assign  # noqa: E402
from sisa.store import SisaStore  # noqa: E402
from sisa.train import train  # noqa: E402
from sisa.trainer import configure  # noqa: E402
from sisa.unlearn import forget  # noqa: E402
from sisa.verify import verify  # noqa: E402


def bench_lookup(sizes: list[int], kind: str) -> list[dict]:
    rows = []
    rng = np.random.default_rng(0)
    for n in sizes:
        ids = np.arange(n) if kind == "int" else np.array([f"user-{i}" for i in range(n)])
        t0 = time.perf_counter()
        shard, _ = assign(
            ids, np.zeros(n, np.int64), None, seed=0, strategy="uniform", shards=20, slices=50
        )
        assign_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        locator = Locator({k: ids[shard == k] for k in range(20)})
        build_s = time.perf_counter() - t0
        query = ids[rng.integers(0, n, 10_000)]
        best = min(_timed(lambda q=query, loc=locator: loc.locate(q)) for _ in range(5))
        rows.append(
            {"kind": kind, "n": n, "assign_s": assign_s, "build_s": build_s, "lookup_10k_s": best}
        )
    return rows


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bench_forget(n: int, shards: int, slices: int, epochs: float) -> dict:
    quiet = InProcessExecutor(progress=False)
    overrides = {
        "data.source": "synthetic-purchase",
        "data.n": n,
        "sisa.shards": shards,
        "sisa.slices": slices,
        "sisa.epochs": epochs,
        "model.hidden": [128],
        "optim.name": "adam",
        "optim.lr": 0.001,
        "optim.batch_size": 64,
    }
    cfg = build_config({}, overrides)
    mono = build_config({}, overrides | {"sisa.shards": 1, "sisa.slices": 1})
    configure(1)
    with tempfile.TemporaryDirectory() as tmp:
        url = str(Path(tmp) / "sisa")
        trained = train(cfg, url, executor=quiet)
        train(mono, str(Path(tmp) / "mono"), executor=quiet)
        mono_url = str(Path(tmp) / "mono")  # verify = retraining from scratch; best of two
        mono_retrain = min(_timed(lambda: verify(mono_url, executor=quiet)) for _ in range(2))
        store = SisaStore(url)
        total = sum(store.shard_head(k).stages[-1]["samples"] for k in range(shards))
        ids = store.read_data(store.shard_head(0).data, features=False)["ids"]
        # Average over several single-point requests at different slices.
        forgets, samples = [], []
        for victim in ids[:: max(1, len(ids) // 5)][:5].tolist():
            report = forget(url, [victim], executor=quiet)
            forgets.append(report.seconds)
            samples.append(report.shards[0].samples)
        proof = verify(url, executor=quiet)
        full_retrain = min(_timed(lambda: verify(url, executor=quiet)) for _ in range(2))
    n_train = trained.n_train
    expected = epochs * (n_train / shards) * (2 / 3 + 1 / (3 * slices))
    return {
        "n_train": n_train,
        "shards": shards,
        "slices": slices,
        "epochs": epochs,
        "train_s": trained.seconds,
        "mono_train_s": mono_retrain,
        "forget_s_mean": float(np.mean(forgets)),
        "forget_samples_mean": float(np.mean(samples)),
        "expected_samples": expected,
        "full_samples": total,
        "full_retrain_s": full_retrain,
        "identical": proof.identical,
    }


def machine() -> str:
    return (
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"torch {torch.__version__}, numpy {np.__version__}"
    )


def render(lookup: list[dict], forget_rows: list[dict], demo_s: float, cmd: str) -> str:
    lines = ["# Foundation benchmarks", "", f"Command: `{cmd}`", "", f"Machine: {machine()}", ""]
    lines += [
        "## ID lookup (O(1) per ID)",
        "",
        "| IDs | kind | assign all (s) | build index (s) | 10k lookups (s) | vs smallest |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for kind in ("int", "str"):
        rows = [r for r in lookup if r["kind"] == kind]
        for r in rows:
            lines.append(
                f"| {r['n']:,} | {kind} | {r['assign_s']:.3f} | {r['build_s']:.3f} | "
                f"{r['lookup_10k_s']:.4f} | {r['lookup_10k_s'] / rows[0]['lookup_10k_s']:.2f}x |"
            )
    lines += [
        "",
        "## Forgetting one point vs retraining (synthetic Purchase-100)",
        "",
        "| N train | S | R | e | samples retrained (mean) | paper model | full (all shards) | "
        "forget (s) | retrain all shards (s) | retrain monolithic (s) | speedup vs all shards | "
        "vs monolithic | paper ideal | verified |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in forget_rows:
        lines.append(
            f"| {r['n_train']:,} | {r['shards']} | {r['slices']} | {r['epochs']:g} | "
            f"{r['forget_samples_mean']:,.0f} | {r['expected_samples']:,.0f} | "
            f"{r['full_samples']:,} | {r['forget_s_mean']:.2f} | {r['full_retrain_s']:.2f} | "
            f"{r['mono_train_s']:.2f} | {r['full_retrain_s'] / r['forget_s_mean']:.1f}x | "
            f"{r['mono_train_s'] / r['forget_s_mean']:.1f}x | "
            f"{r['shards'] / (2 / 3 + 1 / (3 * r['slices'])):.1f}x | {r['identical']} |"
        )
    lines += [
        "",
        "Reading the figures:",
        "- Lookup is one hash-table probe per ID. Its cost grows a little with N only",
        "  because a larger table no longer fits in the CPU caches; per-ID cost stays well",
        "  under a microsecond. Assigning every point is a vectorised hash for integer IDs",
        "  and one BLAKE2b per string ID.",
        "- 'samples retrained' is the mean over five single-point requests at different",
        "  slices. 'paper model' is e*(N/S)*(2/3 + 1/(3R)); 'paper ideal' is",
        "  S/(2/3 + 1/(3R)), the speedup over retraining from scratch. Measured times include",
        "  the fixed costs of a request (reading the shard, checkpoints, purge). Retrain",
        "  times are the best of two runs; forget times the mean of five requests.",
        "- 'retrain all shards' is `verify`, which retrains every shard from scratch;",
        "  'retrain monolithic' retrains a one-shard, one-slice model the same way.",
        "- 'verified': after the five deletions, every shard is bitwise identical to",
        "  training from scratch on its remaining points.",
        "",
        f"`sisa demo` wall time: {demo_s:.1f} s (limit: 120 s).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    sizes = [10_000, 100_000] if args.quick else [100_000, 1_000_000, 5_000_000]
    lookup = bench_lookup(sizes, "int") + bench_lookup(
        sizes[:2] if not args.quick else sizes, "str"
    )
    runs = [(4000, 5, 4, 10)] if args.quick else [(20_000, 5, 10, 20), (20_000, 10, 10, 20)]
    forget_rows = [bench_forget(*r) for r in runs]
    import subprocess

    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "demo"], check=True, capture_output=True
    )
    demo_s = time.perf_counter() - t0
    cmd = "python benchmarks/foundation.py" + (" --quick" if args.quick else "")
    text = render(lookup, forget_rows, demo_s, cmd)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
