"""The sharding benchmark's report: its tables, its reading (computed from the figures)
and the plot of the saving against K."""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING, Any

from benchmarks.report import Column, pyplot, table, times_of

if TYPE_CHECKING:
    from benchmarks.sharding import Sizes


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
    ("measured / expected", times_of("samples_over_expected")),
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
    ("samples, expected", times_of("expected_samples")),
    ("samples, measured", times_of("measured_samples")),
    ("points, expected", times_of("expected_points")),
    ("points, measured", times_of("measured_points")),
    ("compute time, measured", times_of("measured_compute")),
]


def reading(f: dict[str, Any], simulated: int) -> list[str]:
    """The reading, computed from the figures; ``simulated``: the draws per cell whose
    plans were counted, not trained."""
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
        f"run). The mean of {simulated} simulated draws per cell (plans counted, not trained) "
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


def markdown(f: dict[str, Any], sizes: Sizes, simulated: int) -> str:
    variants = [{"name": v} | i for v, i in f["variants"].items()]
    ks = ", ".join(f"{k} ({n} draws)" for k, n in sizes.draws.items())
    out = [
        f"Synthetic Purchase, N = {sizes.n:,} ({f['distribution']['n_train']:,} training "
        f"points), S = {sizes.shards}, R = {sizes.slices}, e = {sizes.epochs:g}, MLP "
        f"{list(sizes.hidden)}, Adam. K independent requests drawn in proportion to each "
        f"point's deletion probability, K = {ks}; each draw is processed as one batch on a "
        "fresh copy of every store. Samples: trained by the retrains (each equals the plan "
        "and the count from the layout, checked in the run). Points: in the shards "
        "retrained. Expected: `sisa.deletion.cost.expected_cost` for the store's layout and the "
        f"request distribution. Simulated: the mean over {simulated} more draws, their plans "
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
    plt = pyplot()
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
