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
in the shards they retrained, against ``sisa.deletion.cost.expected_cost`` for the store's layout
and the request distribution (what the cost model expects before any draw), and the plan
recounted here from the layout (exact). Saving = uniform's cost / the variant's, expected
and measured (means over draws). Accuracy: each variant trained under several seeds,
evaluated on its held-out points, the aggregate both ways and the reserved shard's own
model against the others'.

The tables, the reading and the plot are ``benchmarks.sharding_report``.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.report import Report, mean_std
from benchmarks.sharding_report import markdown, plot, reading
from benchmarks.stores import QUIET, Layout, copy_store, training_layout
from sisa.config import Config, build_config
from sisa.data.loaders import synthetic_purchase
from sisa.data.partition import risk_tiers
from sisa.deletion.accept import accept
from sisa.deletion.batch import process
from sisa.deletion.cost import expected_cost, layout_table, paper_batched_points, retrain_samples
from sisa.deletion.plan import pending_plan
from sisa.evidence.status import evaluate
from sisa.ids import fingerprints, unit_interval
from sisa.store.artifacts import SisaStore
from sisa.training.train import train

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


def store_layout(url: str) -> Layout:
    """Every training point of the store, with its ``risk``."""
    return training_layout(url, ("risk",))


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
    copy = copy_store(url, root, "copy")
    accept(copy, victims.tolist())
    plan = pending_plan(SisaStore(copy))
    assert plan is not None
    report = process(copy, executor=QUIET)
    assert report is not None and report.samples == plan.samples  # the plan is what ran
    assert plan.samples == recount(cfg, layout, victims)  # and what the layout says
    shutil.rmtree(copy)
    risk = layout.columns["risk"][np.isin(layout.ids, victims)]
    return {
        "victims": len(victims),
        "risky_victims": int((risk >= RISKY_P).sum()),
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

    return {
        "seeds": len(runs),
        "average": mean_std([r["average"] for r in runs]),
        "vote": mean_std([r["vote"] for r in runs]),
        "shard_0": mean_std([r["per_shard"].get(0, float("nan")) for r in runs]),
        "other_shards": mean_std(
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
        risk = base.columns["risk"]  # [n_train]
        prob = risk / risk.sum()  # [n_train] the request distribution
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
                mine = lay.columns["risk"]  # [n_train], in this layout's order
                mass = layout_table(lay.shard, lay.slice, S, R, mine / mine.sum())
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
    risky = risk >= RISKY_P
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
    figures["reading"] = reading(figures, SIMULATED)
    config = asdict(sizes) | {
        "variants": VARIANTS,
        "risky_share": RISKY_SHARE,
        "risky_mass": RISKY_MASS,
        "p_risky": RISKY_P,
    }
    config["draws"] = {str(k): v for k, v in sizes.draws.items()}
    plots = {"sharding-savings": plot(savings)}
    return Report(figures, markdown(figures, sizes, SIMULATED), config, plots)


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
