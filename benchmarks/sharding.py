"""Deletion-aware sharding against uniform sharding, under a skewed request distribution.

Synthetic Purchase, where 5% of the points (chosen by a hash of the ID) carry 80% of the
deletion probability: each point's ``risk`` is its probability of being deleted, and
requests are drawn in proportion to it. The same data trains three stores: ``uniform``
(the risk is ignored), ``aware`` (``sisa.deletion_risk = "column"`` with the default
tiers: risky points in round(0.05 S) reserved shards, in the last half of their slices)
and ``aware, all slices`` (the same shards, every slice: the effect of fewer shards alone).

For K in the suite's batch sizes and several draws of K independent requests (a point
drawn twice is deleted once), every store gets the same victims on a fresh copy: one
``accept``, then one ``process``. Measured: the samples the retrains trained and the points
in the shards they retrained, against ``sisa.cost.expected_cost`` for the store's layout
and the request distribution (what the cost model expects before any draw), and the plan
recounted here from the layout (exact). Saving = uniform's cost / the variant's, expected
and measured (means over draws). Accuracy: each variant trained under several seeds,
evaluated on its held-out points, the aggregate both ways and the reserved shard's own
model against the others'.
"""

from __future__ import annotations

import itertools
import shutil
import statistics
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness import Report
from orchestrator.executors import InProcessExecutor
from sisa.batch import pending_plan, process
from sisa.config import Config, build_config
from sisa.cost import expected_cost, layout_table, paper_batched_points, retrain_samples
from sisa.data import synthetic_purchase
from sisa.ids import fingerprints, unit_interval
from sisa.partition import place, risk_tiers
from sisa.status import evaluate
from sisa.store import SisaStore
from sisa.train import train
from sisa.unlearn import accept

QUIET = InProcessExecutor(progress=False)
COPIES = itertools.count()  # every copy of a store gets a path of its own
RISKY_SHARE = 0.05  # of the points
RISKY_MASS = 0.8  # of the deletion probability they carry
RISKY_P = 0.6  # a risky point's probability of being deleted (>= sisa.risk_threshold)
SIMULATED = 200  # draws whose plans are only counted (no training): the spread of one draw
VARIANTS: dict[str, dict[str, Any]] = {
    "uniform": {},
    "aware": {"sisa.deletion_risk": "column"},
    "aware, all slices": {"sisa.deletion_risk": "column", "sisa.risky_slice_fraction": 1.0},
}


@dataclass(frozen=True)
class Sizes:
    n: int  # points generated (test_fraction 0.2 of them are held out)
    shards: int
    slices: int
    epochs: float
    hidden: tuple[int, ...]
    draws: dict[int, int]  # K -> draws of K requests
    store_seeds: tuple[int, ...]  # stores trained per variant, for accuracy (the first: costs)


SIZES = {
    "quick": Sizes(2000, 5, 4, 4.0, (32,), {1: 3, 10: 2}, (0,)),
    "full": Sizes(50_000, 20, 10, 10.0, (64,), {1: 12, 10: 6, 100: 3}, (0, 1, 2)),
}


def risky_probability(n: int) -> tuple[np.ndarray, float]:
    """Each point's probability of deletion ([n]), and the other points' value: a hash of
    the ID marks ~5% risky, and the others' value makes the risky carry 80% of the mass."""
    risky = unit_interval(fingerprints(np.arange(n, dtype=np.int64)), "risky") < RISKY_SHARE
    other = RISKY_P * RISKY_SHARE / (1 - RISKY_SHARE) * (1 - RISKY_MASS) / RISKY_MASS
    return np.where(risky, RISKY_P, other), other


def write_data(root: Path, n: int) -> tuple[str, float]:
    ds = synthetic_purchase(n, seed=0)
    risk, other = risky_probability(n)
    path = root / f"purchase-{n}-risk.npz"
    np.savez(path, ids=ds.ids, X=ds.X, y=ds.y, risk=risk)
    return str(path), other


def store_config(sizes: Sizes, source: str, variant: str, seed: int) -> Config:
    return build_config(
        {},
        {
            "data.source": source,
            "data.num_classes": 100,
            "sisa.shards": sizes.shards,
            "sisa.slices": sizes.slices,
            "sisa.epochs": sizes.epochs,
            "sisa.seed": seed,
            "model.hidden": list(sizes.hidden),
            "optim.name": "adam",
            "optim.lr": 0.001,
            "optim.batch_size": 64,
        }
        | VARIANTS[variant],
    )


@dataclass(frozen=True)
class Layout:
    """Every training point of a store: ID, shard, slice and risk. [n] each."""

    ids: np.ndarray
    shard: np.ndarray
    slice: np.ndarray
    risk: np.ndarray


def store_layout(url: str) -> Layout:
    store = SisaStore(url)
    cfg = store.config().sisa
    parts = [store.read_data(store.shard_head(k).data, features=False) for k in range(cfg.shards)]
    slices = [place(cfg, p)[1] for p in parts]
    shards = [np.full(len(p["ids"]), k) for k, p in enumerate(parts)]
    return Layout(
        np.concatenate([p["ids"] for p in parts]),
        np.concatenate(shards),
        np.concatenate(slices),
        np.concatenate([p["risk"] for p in parts]),
    )


def recount(cfg: Config, layout: Layout, victims: np.ndarray) -> int:
    """Samples the batch must train, counted here from the layout: each touched shard
    retrains from its earliest touched slice on what remains."""
    gone = np.isin(layout.ids, victims)
    total = 0
    for k in np.unique(layout.shard[gone]).tolist():
        mine = layout.shard == k
        start = int(layout.slice[mine & gone].min()) + 1
        counts = np.bincount(layout.slice[mine & ~gone], minlength=cfg.sisa.slices)
        total += retrain_samples(cfg.sisa, counts.tolist(), start)
    return total


def measure(url: str, root: Path, cfg: Config, layout: Layout, victims: np.ndarray) -> dict:
    """One batch on a fresh copy: accept the victims, plan, process; what it trained."""
    copy = root / f"copy-{next(COPIES)}"
    shutil.copytree(url, copy)
    accept(str(copy), victims.tolist())
    plan = pending_plan(SisaStore(str(copy)))
    assert plan is not None
    report = process(str(copy), executor=QUIET)
    assert report is not None and report.samples == plan.samples  # the plan is what ran
    assert plan.samples == recount(cfg, layout, victims)  # and what the layout says
    shutil.rmtree(copy)
    return {
        "victims": len(victims),
        "risky_victims": int((layout.risk[np.isin(layout.ids, victims)] >= RISKY_P).sum()),
        "shards": len(plan.shards),
        "start_stages": {s.shard: s.start_stage for s in plan.shards},
        "samples": report.samples,
        "planned_samples": plan.samples,
        "touched_points": sum(s.removed + s.remaining for s in plan.shards),
        "compute_s": report.compute_seconds,
    }


def train_variant(
    sizes: Sizes, source: str, root: Path, variant: str
) -> tuple[str, Config, list[dict[str, Any]]]:
    """The variant's store under each seed, evaluated; the first seed's store is kept for
    the costs (its URL and config returned), the others removed."""
    runs, kept = [], ""
    for seed in sizes.store_seeds:
        url = str(root / f"{variant}-{seed}")
        train(store_config(sizes, source, variant, seed), url, executor=QUIET)
        runs.append(evaluate(url))
        if seed == sizes.store_seeds[0]:
            kept = url
        else:
            shutil.rmtree(url)
    return kept, store_config(sizes, source, variant, sizes.store_seeds[0]), runs


def summarise_accuracy(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The aggregate's test accuracy over the store seeds, and the reserved shard's model
    against the other shards' (shard 0 is the reserved one when risk is used)."""

    def spread(values: list[float]) -> dict[str, float]:
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        return {"mean": statistics.mean(values), "std": std}

    return {
        "seeds": len(runs),
        "average": spread([r["average"] for r in runs]),
        "vote": spread([r["vote"] for r in runs]),
        "shard_0": spread([r["per_shard"].get(0, float("nan")) for r in runs]),
        "other_shards": spread(
            [statistics.mean(a for k, a in r["per_shard"].items() if k != 0) for r in runs]
        ),
    }


def mean(rows: list[dict[str, Any]], key: str) -> float:
    return statistics.mean(r[key] for r in rows)


def standard_error(rows: list[dict[str, Any]], key: str) -> float:
    """Of the mean over draws: how far a measured mean may fall from its expectation."""
    values = [r[key] for r in rows]
    return statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else float("nan")


def run(suite: str) -> Report:
    sizes = SIZES[suite]
    variants = list(VARIANTS)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        source, other_p = write_data(root, sizes.n)
        urls, layouts, configs, acc_runs = {}, {}, {}, {}
        for v in variants:
            urls[v], configs[v], acc_runs[v] = train_variant(sizes, source, root, v)
            layouts[v] = store_layout(urls[v])
        base = layouts["uniform"]
        prob = base.risk / base.risk.sum()  # [n_train] the request distribution
        for v in variants:  # the same training points everywhere, so one distribution
            assert np.array_equal(np.sort(layouts[v].ids), np.sort(base.ids))
        costs = []
        for k, draws in sizes.draws.items():
            rng = np.random.default_rng([k, 2024])
            drawn = [
                np.unique(base.ids[rng.choice(len(base.ids), k, p=prob)]) for _ in range(draws)
            ]
            simulated = [
                np.unique(base.ids[rng.choice(len(base.ids), k, p=prob)]) for _ in range(SIMULATED)
            ]
            for v in variants:
                lay, cfg = layouts[v], configs[v]
                S, R = cfg.sisa.shards, cfg.sisa.slices
                counts = layout_table(lay.shard, lay.slice, S, R)
                mass = layout_table(lay.shard, lay.slice, S, R, lay.risk / lay.risk.sum())
                exp = expected_cost(cfg.sisa, counts, mass, k)
                runs = [measure(urls[v], root, cfg, lay, victims) for victims in drawn]
                sim = [recount(cfg, lay, d) for d in simulated]
                costs.append(
                    {
                        "k": k,
                        "variant": v,
                        "draws": draws,
                        "expected": asdict(exp),
                        "measured_samples": mean(runs, "samples"),
                        "measured_samples_se": standard_error(runs, "samples"),
                        "simulated_samples": statistics.mean(sim),
                        # the spread of a mean of ``draws`` draws, from the simulated ones
                        "draw_mean_sd": statistics.stdev(sim) / draws**0.5,
                        "measured_points": mean(runs, "touched_points"),
                        "measured_shards": mean(runs, "shards"),
                        "measured_compute_s": mean(runs, "compute_s"),
                        "samples_over_expected": mean(runs, "samples") / exp.samples,
                        "paper_points": paper_batched_points(len(lay.ids), S, k),
                        "runs": runs,
                    }
                )
        variant_info = {}
        for v in variants:
            lay, cfg = layouts[v], configs[v]
            tiers = risk_tiers(cfg.sisa)
            sizes_k = np.bincount(lay.shard, minlength=cfg.sisa.shards)
            variant_info[v] = {
                "overrides": VARIANTS[v],
                "reserved_shards": tiers.shards if tiers else 0,
                "risky_slices": tiers.slices if tiers else 0,
                "shard_sizes": sizes_k.tolist(),
                "accuracy": summarise_accuracy(acc_runs[v]),
            }
    n_train = len(base.ids)
    risky = base.risk >= RISKY_P
    distribution = {
        "n_train": n_train,
        "risky_points": int(risky.sum()),
        "risky_share": float(risky.mean()),
        "risky_mass": float(prob[risky].sum()),
        "p_risky": RISKY_P,
        "p_other": other_p,
    }
    savings = savings_table(costs)
    figures = {
        "distribution": distribution,
        "variants": variant_info,
        "costs": costs,
        "savings": savings,
    }
    figures["reading"] = reading(figures, sizes)
    config = asdict(sizes) | {
        "variants": VARIANTS,
        "risky_share": RISKY_SHARE,
        "risky_mass": RISKY_MASS,
        "p_risky": RISKY_P,
    }
    config["draws"] = {str(k): v for k, v in sizes.draws.items()}
    return Report(figures, markdown(figures, sizes), config, {"sharding-savings": plot(savings)})


def savings_table(costs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Uniform's cost over each variant's, per K: expected and measured (means of draws)."""
    uniform = {c["k"]: c for c in costs if c["variant"] == "uniform"}
    out = []
    for c in costs:
        if c["variant"] == "uniform":
            continue
        u = uniform[c["k"]]
        out.append(
            {
                "k": c["k"],
                "variant": c["variant"],
                "expected_samples": u["expected"]["samples"] / c["expected"]["samples"],
                "measured_samples": u["measured_samples"] / c["measured_samples"],
                "expected_points": u["expected"]["touched_points"]
                / c["expected"]["touched_points"],
                "measured_points": u["measured_points"] / c["measured_points"],
                "measured_compute": u["measured_compute_s"] / c["measured_compute_s"],
            }
        )
    return out


Column = tuple[str, Callable[[dict[str, Any]], str]]


def table(columns: list[Column], rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| " + " | ".join(name for name, _ in columns) + " |"]
    lines.append("|---|" + "---:|" * (len(columns) - 1))
    return lines + ["| " + " | ".join(cell(r) for _, cell in columns) + " |" for r in rows]


def pct(spread: dict[str, float]) -> str:
    return f"{spread['mean']:.2%} ± {spread['std']:.2%}"


ACCURACY: list[Column] = [
    ("variant", lambda r: r["name"]),
    ("reserved shards", lambda r: str(r["reserved_shards"])),
    ("risky slices (last)", lambda r: str(r["risky_slices"])),
    ("shard sizes (min-max)", lambda r: f"{min(r['shard_sizes']):,}-{max(r['shard_sizes']):,}"),
    ("aggregate, average", lambda r: pct(r["accuracy"]["average"])),
    ("aggregate, vote", lambda r: pct(r["accuracy"]["vote"])),
    ("shard 0's model", lambda r: pct(r["accuracy"]["shard_0"])),
    ("other shards' models (mean)", lambda r: pct(r["accuracy"]["other_shards"])),
]
COSTS: list[Column] = [
    ("K", lambda r: f"{r['k']:,}"),
    ("variant", lambda r: r["variant"]),
    ("draws", lambda r: str(r["draws"])),
    ("expected samples", lambda r: f"{r['expected']['samples']:,.0f}"),
    (
        "measured samples (± s.e.)",
        lambda r: f"{r['measured_samples']:,.0f} ± {r['measured_samples_se']:,.0f}",
    ),
    ("measured / expected", lambda r: f"{r['samples_over_expected']:.2f}x"),
    ("simulated", lambda r: f"{r['simulated_samples']:,.0f}"),
    ("expected points", lambda r: f"{r['expected']['touched_points']:,.0f}"),
    ("measured points", lambda r: f"{r['measured_points']:,.0f}"),
    ("paper N(1-(1-1/S)^K)", lambda r: f"{r['paper_points']:,.0f}"),
    ("shards retrained", lambda r: f"{r['measured_shards']:.1f}"),
    ("compute (s)", lambda r: f"{r['measured_compute_s']:.2f}"),
]
SAVINGS: list[Column] = [
    ("K", lambda r: f"{r['k']:,}"),
    ("variant", lambda r: r["variant"]),
    ("samples, expected", lambda r: f"{r['expected_samples']:.2f}x"),
    ("samples, measured", lambda r: f"{r['measured_samples']:.2f}x"),
    ("points, expected", lambda r: f"{r['expected_points']:.2f}x"),
    ("points, measured", lambda r: f"{r['measured_points']:.2f}x"),
    ("compute time, measured", lambda r: f"{r['measured_compute']:.2f}x"),
]


def reading(f: dict[str, Any], sizes: Sizes) -> list[str]:
    d, acc = f["distribution"], {v: i["accuracy"] for v, i in f["variants"].items()}
    lines = [
        f"- **Requests**: {d['risky_share']:.1%} of the {d['n_train']:,} training points "
        f"carry {d['risky_mass']:.1%} of the deletion probability (p = {d['p_risky']} against "
        f"{d['p_other']:.4f}).",
    ]
    gaps = [
        abs(c["measured_samples"] - c["expected"]["samples"]) / c["draw_mean_sd"]
        for c in f["costs"]
        if c["draw_mean_sd"] > 0
    ]
    model = max(abs(c["simulated_samples"] / c["expected"]["samples"] - 1) for c in f["costs"])
    lines.append(
        f"- **Measured against expected**: the plan of every draw is exact (checked in the "
        f"run). The mean of {SIMULATED} simulated draws per cell (plans counted, not trained) "
        f"is within {model:.1%} of `expected_cost`, and the measured means are within "
        f"{max(gaps, default=0.0):.1f} standard deviations of a mean of that many draws "
        f"(median {statistics.median(gaps or [0.0]):.1f}): the gaps in the table are the "
        "noise of few draws."
    )
    for v in f["variants"]:
        if v == "uniform":
            continue
        rows = [s for s in f["savings"] if s["variant"] == v]
        exp = ", ".join(f"K={s['k']}: {s['expected_samples']:.2f}x" for s in rows)
        got = ", ".join(f"K={s['k']}: {s['measured_samples']:.2f}x" for s in rows)
        loss = (acc["uniform"]["average"]["mean"] - acc[v]["average"]["mean"]) * 100
        lines.append(
            f"- **{v}**: samples retrained, uniform / {v}, expected {exp}; measured {got}. "
            f"Aggregate accuracy (averaging) {acc[v]['average']['mean']:.2%} against "
            f"{acc['uniform']['average']['mean']:.2%} for uniform ({loss:+.2f} points lost); "
            f"its reserved shard's model {acc[v]['shard_0']['mean']:.2%}, the others "
            f"{acc[v]['other_shards']['mean']:.2%}."
        )
    return lines


def markdown(f: dict[str, Any], sizes: Sizes) -> str:
    variants = [{"name": v} | i for v, i in f["variants"].items()]
    ks = ", ".join(f"{k} ({n} draws)" for k, n in sizes.draws.items())
    out = [
        f"Synthetic Purchase, N = {sizes.n:,} ({f['distribution']['n_train']:,} training "
        f"points), S = {sizes.shards}, R = {sizes.slices}, e = {sizes.epochs:g}, MLP "
        f"{list(sizes.hidden)}, Adam. K independent requests drawn in proportion to each "
        f"point's deletion probability, K = {ks}; each draw is processed as one batch on a "
        "fresh copy of every store. Samples: trained by the retrains (each equals the plan "
        "and the count from the layout, checked in the run). Points: in the shards "
        "retrained. Expected: `sisa.cost.expected_cost` for the store's layout and the "
        f"request distribution. Simulated: the mean over {SIMULATED} more draws, their plans "
        "counted from the layout but not trained.",
        "",
        "## Layout and accuracy",
        "",
        f"Test accuracy over {len(sizes.store_seeds)} store seed(s), mean ± standard deviation.",
        "",
        *table(ACCURACY, variants),
        "",
        "## Cost of K requests",
        "",
        *table(COSTS, f["costs"]),
        "",
        "## Saving against uniform sharding (uniform's cost / the variant's)",
        "",
        *table(SAVINGS, f["savings"]),
        "",
        "![savings](sharding-savings.png)",
        "",
        "## Reading",
        "",
        *f["reading"],
    ]
    return "\n".join(out) + "\n"


def plot(savings: list[dict[str, Any]]) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for variant in dict.fromkeys(s["variant"] for s in savings):
        rows = [s for s in savings if s["variant"] == variant]
        ks = [s["k"] for s in rows]
        ax.plot(ks, [s["expected_samples"] for s in rows], marker="o", label=f"{variant}, expected")
        ax.plot(
            ks,
            [s["measured_samples"] for s in rows],
            marker="x",
            linestyle="--",
            label=f"{variant}, measured",
        )
    ax.axhline(1.0, color="grey", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("K requests per batch")
    ax.set_ylabel("samples retrained: uniform / variant")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
