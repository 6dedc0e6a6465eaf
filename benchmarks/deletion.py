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
import itertools
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import git_commit, write_results  # noqa: E402
from orchestrator.executors import InProcessExecutor  # noqa: E402
from sisa import serving  # noqa: E402
from sisa.batch import pending_plan, process  # noqa: E402
from sisa.config import build_config  # noqa: E402
from sisa.ensemble import Ensemble  # noqa: E402
from sisa.store import TEST, SisaStore  # noqa: E402
from sisa.train import train  # noqa: E402
from sisa.trainer import configure  # noqa: E402
from sisa.unlearn import Acceptance, accept  # noqa: E402

T = TypeVar("T")
GOAL_S = 0.100  # the goal for accepted -> compliant
QUIET = InProcessExecutor(progress=False)
COPIES = itertools.count()
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


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    t0 = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - t0


def train_store(root: Path, name: str, overrides: dict[str, Any]) -> str:
    url = str(root / name)
    train(build_config({}, overrides), url, executor=QUIET)
    return url


def copy_store(url: str, root: Path, name: str) -> str:
    """A fresh copy of a trained store (paths in a store are relative).

    Every copy gets a path of its own: ``sisa.journal`` caches request documents per
    process by (URL, salt, number), and copies share the salt.
    """
    dest = str(root / f"{name}-{next(COPIES)}")
    shutil.copytree(url, dest)
    return dest


def training_ids(store: SisaStore) -> np.ndarray:
    shards = store.config().sisa.shards
    parts = [store.read_data(store.shard_head(k).data, features=False) for k in range(shards)]
    return np.concatenate([p["ids"] for p in parts])


def check_compliant(old: Ensemble, new: Ensemble, store: SisaStore, acc: Acceptance) -> None:
    """The refreshed ensemble serves the serving state, rolled back where the request hit."""
    state = serving.current(store)
    assert new.served == state.shards  # same generation, stage and checkpoint per shard
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
        acc, accept_s = timed(lambda v=victim: accept(url, [v]))
        fresh, load_s = timed(lambda e=ensemble: Ensemble.load(store, previous=e))
        _, predict_s = timed(lambda f=fresh: f.predict(row))
        check_compliant(ensemble, fresh, store, acc)
        _, cold_s = timed(lambda: Ensemble.load(store))  # without ``previous``: every shard
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


def bench_batch(url: str, root: Path, k: int, rng: np.random.Generator) -> dict[str, Any]:
    """K requests accepted one by one, then one ``process`` on a fresh copy of the store."""
    copy = copy_store(url, root, f"batch-{k}")
    store = SisaStore(copy)
    victims = rng.choice(training_ids(store), k, replace=False).tolist()
    timings = [timed(lambda v=v: accept(copy, [v])) for v in victims]  # backlog grows
    accepted = [acc for acc, _ in timings]
    plan = pending_plan(store)
    report = process(copy, executor=QUIET)
    assert plan is not None and report is not None and report.plan.samples == plan.samples
    starts: dict[int, int] = {}  # each shard restarts once, from its earliest touched slice
    for acc in accepted:
        for shard, start in acc.start_stages.items():
            starts[shard] = min(start, starts.get(shard, start))
    assert {s.shard: s.start_stage for s in plan.shards} == starts
    shutil.rmtree(copy)
    touched = sum(s.removed + s.remaining for s in plan.shards)
    return {
        "k": k,
        "victims": victims,
        "accept_total_s": sum(t for _, t in timings),
        "last_compliance_s": accepted[-1].compliance_seconds,
        "accept_each_s": [t for _, t in timings],
        "compliance_each_s": [acc.compliance_seconds for acc in accepted],
        "planned_samples": plan.samples,
        "trained_samples": report.samples,
        "predicted_s": plan.predicted_seconds,
        "calibrated_from": plan.calibrated_from,
        "planned_us_per_sample": (plan.seconds_per_sample or 0.0) * 1e6,
        "measured_us_per_sample": report.compute_seconds / max(report.samples, 1) * 1e6,
        "compute_s": report.compute_seconds,
        "wall_s": report.seconds,
        "shards_retrained": len(report.results),
        "paper_touched_points": plan.paper["touched_points"],
        "touched_points": touched,
        "full_retrain_samples": plan.full_retrain_samples,
        "deletions_per_s": k / report.seconds,
    }


def backlog(row: dict[str, Any], edges: list[int]) -> list[dict[str, Any]]:
    """Acceptance times of one batch run, grouped by how many requests were already open."""
    out = []
    for lo, hi in itertools.pairwise(edges):
        comply, calls = row["compliance_each_s"][lo:hi], row["accept_each_s"][lo:hi]
        if comply:
            out.append(
                {
                    "open": f"{lo}-{lo + len(comply) - 1}",
                    "accepts": len(comply),
                    "compliance_s": median(comply),
                    "max_compliance_s": max(comply),
                    "accept_s": median(calls),
                }
            )
    return out


def bench_sequential(url: str, root: Path, batch: dict[str, Any]) -> dict[str, Any]:
    """The batch's requests again, each processed before the next is accepted."""
    copy = copy_store(url, root, f"sequential-{batch['k']}")
    samples, wall = 0, 0.0
    for victim in batch["victims"]:
        accept(copy, [victim])
        report = process(copy, executor=QUIET)
        assert report is not None
        samples, wall = samples + report.samples, wall + report.seconds
    shutil.rmtree(copy)
    assert batch["k"] > 1 or samples == batch["trained_samples"]  # the same work when K = 1
    return {
        "k": batch["k"],
        "samples": samples,
        "wall_s": wall,
        "batched_samples": batch["trained_samples"],
        "batched_wall_s": batch["wall_s"],
        "samples_gain": samples / batch["trained_samples"],
        "wall_gain": wall / batch["wall_s"],
    }


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of the numeric figures over repeats (the repeat itself is kept for JSON)."""
    out: dict[str, Any] = {"k": rows[0]["k"], "repeats": len(rows)}
    for key, value in rows[0].items():
        if isinstance(value, int | float) and key != "k":
            out[key] = median([r[key] for r in rows])
    return out | {"calibrated_from": rows[0]["calibrated_from"]}


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


Column = tuple[str, Callable[[dict[str, Any]], str]]


def table(columns: list[Column], rows: list[dict[str, Any]]) -> list[str]:
    """A Markdown table: a header, then one line per row; the first column left-aligned."""
    lines = ["| " + " | ".join(name for name, _ in columns) + " |"]
    lines.append("|---|" + "---:|" * (len(columns) - 1))
    return lines + ["| " + " | ".join(cell(r) for _, cell in columns) + " |" for r in rows]


def ms(key: str, digits: int = 1) -> Callable[[dict[str, Any]], str]:
    return lambda r: f"{r[key] * 1e3:.{digits}f}"


def num(key: str, fmt: str = ",.0f") -> Callable[[dict[str, Any]], str]:
    return lambda r: format(r[key], fmt)


COMPLIANCE: list[Column] = [
    ("store", lambda r: r["name"]),
    ("N train", num("n_train")),
    ("S", num("shards", "d")),
    ("R", num("slices", "d")),
    ("repeats", num("repeats", "d")),
    ("accept call (ms)", ms("accept_s")),
    ("journal→serving commit (ms)", ms("compliance_s")),
    ("reload with previous (ms)", ms("reload_s")),
    ("predict 1 row (ms)", ms("predict_s", 2)),
    ("accepted→compliant predictions (ms)", ms("end_to_end_s")),
    ("max (ms)", ms("max_end_to_end_s")),
    ("cold reload (ms)", ms("cold_reload_s")),
    ("< 100 ms (median)", lambda r: "yes" if r["end_to_end_s"] < GOAL_S else "no"),
]
BATCHED: list[Column] = [
    ("K", num("k")),
    ("repeats", num("repeats", "d")),
    ("samples planned", num("planned_samples")),
    ("samples trained", num("trained_samples")),
    ("predicted (s)", num("predicted_s", ".2f")),
    ("compute (s)", num("compute_s", ".2f")),
    ("wall (s)", num("wall_s", ".2f")),
    ("shards retrained", num("shards_retrained", "g")),
    ("paper: points touched", num("paper_touched_points")),
    ("points in retrained shards", num("touched_points")),
    ("deletions/s", num("deletions_per_s", ".1f")),
    ("accepting all K (s)", num("accept_total_s", ".2f")),
    ("last accept's compliance (ms)", ms("last_compliance_s", 0)),
]
SEQUENTIAL: list[Column] = [
    ("K", num("k", "g")),
    ("repeats", num("repeats", "d")),
    ("one at a time: samples", num("samples")),
    ("wall (s)", num("wall_s", ".2f")),
    ("one batch: samples", num("batched_samples")),
    ("wall (s)", num("batched_wall_s", ".2f")),
    ("gain in samples", lambda r: f"{r['samples_gain']:.1f}x"),
    ("gain in wall time", lambda r: f"{r['wall_gain']:.1f}x"),
]


BACKLOG: list[Column] = [
    ("requests open before the accept", lambda r: r["open"]),
    ("accepts", num("accepts", "d")),
    ("journal→serving commit, median (ms)", ms("compliance_s")),
    ("max (ms)", ms("max_compliance_s")),
    ("accept call, median (ms)", ms("accept_s")),
]


def render(result: dict[str, Any]) -> str:
    m = result["machine"]
    compliance = [{"name": name} | c for name, c in result["compliance"].items()]
    before, after = m["load_before"], m["load_after"]
    load = " / ".join(f"{a:.2f} -> {b:.2f}" for a, b in zip(before, after, strict=True))
    return "\n".join(
        [
            "# Deletion benchmarks",
            "",
            f"Command: `{result['command']}` ({result['total_s'] / 60:.1f} minutes)",
            "",
            f"Commit: `{result['commit']}`",
            "",
            f"Machine: {m['platform']}, {m['cores']} cores, Python {m['python']}, torch "
            f"{m['torch']}, numpy {m['numpy']}, {m['torch_threads']} torch thread(s); load "
            f"average (1/5/15 min) before -> after the run: {load}",
            "",
            f"Purchase store: `{json.dumps(result['stores']['purchase'])}`. Digits store: "
            "`data.source = digits` with the defaults (S=5, R=4, e=20, MLP [128], SGD).",
            "",
            "## Time to compliance (one single-ID request, nothing else pending)",
            "",
            *table(COMPLIANCE, compliance),
            "",
            "Medians over the repeats; 'max' is the slowest repeat. 'accepted→compliant",
            "predictions' = journal→serving commit + reload with `previous` + predict.",
            "",
            "## Batched processing (K single-ID requests, then one `process`; purchase store)",
            "",
            *table(BATCHED, result["batched"]),
            "",
            "Medians over the repeats (fresh copies of the store, new random IDs each).",
            "",
            "The same requests processed one at a time (accept, process, accept, ...), against",
            "the batch of the same repeat; medians over the repeats:",
            "",
            *table(SEQUENTIAL, result["sequential"]),
            "",
            f"## Acceptance under a backlog (the K = {result['batched'][-1]['k']:,} run)",
            "",
            *table(BACKLOG, result["backlog"]),
            "",
            "## Reading",
            "",
            *result["reading"],
            "",
        ]
    )


def reading(result: dict[str, Any]) -> list[str]:
    """The honest summary: computed from the figures, with the reasons behind them."""
    lines = []
    for name, c in result["compliance"].items():
        verdict = (
            "met on every repeat"
            if c["max_end_to_end_s"] < GOAL_S
            else "met at the median, not on every repeat"
            if c["end_to_end_s"] < GOAL_S
            else "not met"
        )
        lines.append(
            f"- **Compliance, {name}**: the serving state commits {c['compliance_s'] * 1e3:.0f} ms "
            f"(median; max {c['max_compliance_s'] * 1e3:.0f}) after the journal commit; a live "
            f"predictor that reloads with `previous` and predicts is compliant "
            f"{c['end_to_end_s'] * 1e3:.0f} ms (max {c['max_end_to_end_s'] * 1e3:.0f}) after it. "
            f"The < 100 ms goal is {verdict}. The whole `accept` call, validation included, "
            f"takes {c['accept_s'] * 1e3:.0f} ms. {c['dropped']} of {c['repeats']} requests hit "
            "a first slice and dropped their shard from the vote."
        )
    lines.append(
        "- Compliance is cheap because it trains nothing: `accept` rewrites one small serving "
        "document from the heads and the open requests, and the reload reads only the "
        "rolled-back shard's checkpoint and reuses every other loaded model (asserted); a "
        "reload without `previous` reads every shard. Validation, the rest of the `accept` "
        "call, reads every shard's ID list to locate the IDs, so it grows with N."
    )
    big, buckets = result["batched"][-1], result["backlog"]
    slow = [b for b in buckets if b["compliance_s"] >= GOAL_S]
    lines.append(
        f"- **Backlog**: the median journal→serving commit is "
        f"{buckets[0]['compliance_s'] * 1e3:.0f} ms with {buckets[0]['open']} requests open and "
        f"{buckets[-1]['compliance_s'] * 1e3:.0f} ms with {buckets[-1]['open']} open; "
        f"accepting all {big['k']:,} one by one took {big['accept_total_s']:.0f} s. Validation "
        "(`deleted_or_requested`) and `serving.refresh` both walk every open request, so one "
        "acceptance costs O(open requests). This process reads each journal document once and "
        "then keeps it (`sisa.journal` caches them per process); a fresh process per request, "
        "such as one CLI call each, reads every open document again. "
        + (
            f"The 100 ms goal fails, at the median, once {slow[0]['open']} requests are open; "
            "it holds only while `process` keeps the backlog short."
            if slow
            else "The 100 ms goal still holds at the median under this backlog (slowest "
            f"journal→serving commit: {max(b['max_compliance_s'] for b in buckets) * 1e3:.0f} ms)."
        )
    )
    exact = all(b["planned_samples"] == b["trained_samples"] for b in result["batched"])
    ratios = [b["predicted_s"] / b["compute_s"] for b in result["batched"]]
    speeds = ", ".join(f"{b['measured_us_per_sample']:.0f}" for b in result["batched"])
    extra = ", ".join(
        f"K={b['k']:,}: {b['wall_s'] - b['compute_s']:.1f} s" for b in result["batched"]
    )
    lines.append(
        f"- **Plan**: the planned samples {'equal' if exact else 'differ from'} the samples "
        f"trained for every K. The predicted seconds are {min(ratios):.2f}-{max(ratios):.2f}x "
        "the measured compute: each copy is fresh, so the plan calibrates from training, which "
        f"ran at {big['planned_us_per_sample']:.0f} µs per sample, while the retrains ran at "
        f"{speeds} µs per sample (K ascending). On a shared machine the speed of one phase "
        "says little about the next; after a first batch the plan calibrates from it. Wall "
        f"time minus compute, which the model does not predict: {extra}. It grows with K "
        "because every request gets its own fsync'd receipt."
    )
    paper = ", ".join(
        f"K={b['k']:,}: {b['touched_points'] / b['paper_touched_points']:.2f}x"
        for b in result["batched"]
    )
    lines.append(
        f"- **Paper**: points in the shards retrained vs N(1 - (1 - 1/S)^K): {paper}. One random "
        "draw per repeat, so small K scatters around the expectation."
    )
    gains = ", ".join(
        f"K={s['k']:g}: {s['samples_gain']:.1f}x the samples, {s['wall_gain']:.1f}x the wall time"
        for s in result["sequential"]
    )
    rates = ", ".join(f"K={b['k']:,}: {b['deletions_per_s']:.1f}" for b in result["batched"])
    lines.append(
        f"- **Batching**: one at a time vs one batch: {gains}. A batch retrains each touched "
        "shard once, from its earliest touched slice; while K is well below S the requests "
        "rarely share a shard, so batching saves little training, and the gain grows as they "
        f"pile onto the same shards. Deletions per second of `process` wall time: {rates}."
    )
    lines.append(
        "- Timings come from a shared 2-core machine (see the load averages); other work ran "
        "beside this one, so single figures move by tens of percent between runs."
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="small store, few repeats")
    parser.add_argument("--repeats", type=int, default=None, help="compliance repeats")
    parser.add_argument("--out", default=None, help="Markdown path; JSON goes next to it")
    args = parser.parse_args()
    repeats = args.repeats or (5 if args.quick else 21)
    ks = [1, 10] if args.quick else [1, 10, 100, 1000]
    batch_repeats = {1: 5, 10: 3, 100: 3, 1000: 1}
    sequential_repeats = {1: 5, 10: 3, 100: 1}  # the same requests, one process each
    out = args.out or (None if args.quick else "docs/benchmarks/deletion.md")
    purchase = PURCHASE | ({"data.n": 4000, "sisa.shards": 5} if args.quick else {})
    configure(1)
    rng = np.random.default_rng(0)
    started, load_before, commit = time.perf_counter(), os.getloadavg(), git_commit()
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
            rows, seq = [], []
            for i in range(batch_repeats[k]):  # one at a time right after, under the same load
                rows.append(bench_batch(urls["purchase"], root, k, rng))
                if i < sequential_repeats.get(k, 0):
                    seq.append(bench_sequential(urls["purchase"], root, rows[-1]))
            raw += rows
            batched.append(summarise(rows))
            if seq:
                medians = {key: median([r[key] for r in seq]) for key in seq[0]}
                sequential.append(medians | {"repeats": len(seq)})
    result: dict[str, Any] = {
        "command": " ".join(["python", "benchmarks/deletion.py", *sys.argv[1:]]),
        "commit": commit if commit == git_commit() else f"{commit}, then {git_commit()}",
        "machine": machine() | {"load_before": load_before, "load_after": os.getloadavg()},
        "total_s": time.perf_counter() - started,
        "goal_s": GOAL_S,
        "stores": {"purchase": purchase, "digits": DIGITS},
        "compliance": compliance,
        "batched": batched,
        "sequential": sequential,
        "backlog": backlog(raw[-1], [0, 10, 100, 250, 500, 750, 1000]),
        "batched_runs": [{k: v for k, v in r.items() if k != "victims"} for r in raw],
    }
    result["reading"] = reading(result)
    text = render(result)
    print(text)
    if out:
        write_results(out, text, result)


if __name__ == "__main__":
    main()
