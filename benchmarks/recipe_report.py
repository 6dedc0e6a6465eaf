"""The recipe benchmark's report: its summaries, tables and reading, from the figures."""

from __future__ import annotations

from typing import Any

from benchmarks.report import markdown_table, mean_std, median, times


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean ± std over seeds per (recipe, S, R), and the loss in accuracy points against
    the monolithic model (S = R = 1) trained with the same recipe."""
    out = []
    cells = dict.fromkeys((r["recipe"], r["shards"], r["slices"]) for r in runs)
    mono = {
        recipe: mean_std(
            [
                r["average"]
                for r in runs
                if r["recipe"] == recipe and (r["shards"], r["slices"]) == (1, 1)
            ]
        )["mean"]  # fmt: skip
        for recipe, _, _ in cells
    }
    for recipe, shards, slices in cells:
        mine = [
            r for r in runs if (r["recipe"], r["shards"], r["slices"]) == (recipe, shards, slices)
        ]
        spread = mean_std([r["average"] for r in mine])
        out.append(
            {"recipe": recipe, "shards": shards, "slices": slices, "seeds": len(mine)}
            | spread
            | {
                "vote": mean_std([r["vote"] for r in mine])["mean"],
                "mean_shard": mean_std([r["mean_shard"] for r in mine])["mean"],
                "train_s": median(r["train_s"] for r in mine),
                "loss_points": (mono[recipe] - spread["mean"]) * 100,
            }
        )
    return out


def at_top(figures: dict[str, Any]) -> list[dict[str, Any]]:
    """The summary rows at the largest S and its largest R (the headline's), one per recipe."""
    top = [s for s in figures["recipes"] if s["shards"] == figures["goal_shards"]]
    slices = max(s["slices"] for s in top)
    return [s for s in top if s["slices"] == slices]


def recipe_table(summary: list[dict[str, Any]]) -> str:
    header = ("recipe", "S", "R", "aggregate (mean ± std)", "vote", "mean shard",
              "loss vs S=R=1 (points)", "train (s)")  # fmt: skip
    rows = (
        [
            s["recipe"], str(s["shards"]), str(s["slices"]), f"{s['mean']:.4f} ± {s['std']:.4f}",
            f"{s['vote']:.4f}", f"{s['mean_shard']:.4f}", f"{s['loss_points']:+.2f}",
            f"{s['train_s']:.1f}",
        ]
        for s in summary
    )  # fmt: skip
    return "\n".join(markdown_table(header, rows, "lrrrrrrr"))


def ingest_table(ing: dict[str, Any]) -> str:
    header = ("source", "images", "ingest job (s)", "images/s", "feature bytes/image",
              "data bytes/image", "train call (s)")  # fmt: skip
    rows = (
        [
            name, f"{s['images']:,}", f"{s['ingest_s']:.2f}", f"{s['images_per_s']:,.0f}",
            f"{s['features_bytes_per_image']:,.1f}", f"{s['data_bytes_per_image']:,.1f}",
            f"{s['train_call_s']:.2f}",
        ]
        for name, s in ing["sources"].items()
    )  # fmt: skip
    return "\n".join(markdown_table(header, rows))


def cost_table(cost: dict[str, Any]) -> str:
    k = cost["k"]
    header = ("deletions", "wall, no scaling (s)", "wall, per-stage scaling (s)", "ratio",
              "samples, no scaling", "samples, scaling")  # fmt: skip
    seq, bat = cost["sequential"], cost["batched"]
    rows = [
        [f"{k} one at a time (sum)", f"{seq['none']['wall_s']:.2f}",
         f"{seq['standard']['wall_s']:.2f}", times(cost["sequential_ratio"]),
         f"{seq['none']['samples']:,}", f"{seq['standard']['samples']:,}"],
        [f"{k} in one batch", f"{bat['none']['wall_s']:.2f}", f"{bat['standard']['wall_s']:.2f}",
         times(cost["batched_ratio"]), f"{bat['none']['samples']:,}",
         f"{bat['standard']['samples']:,}"],
    ]  # fmt: skip
    return "\n".join(markdown_table(header, rows))


def scaling_table(summary: list[dict[str, Any]]) -> str:
    variants = list(dict.fromkeys(s["variant"] for s in summary))
    cells = dict.fromkeys((s["shards"], s["slices"]) for s in summary)
    header = ["S", "R", *variants, "global − per-stage (points)"]
    rows = []
    for shards, slices in cells:
        mine = {s["variant"]: s for s in summary if (s["shards"], s["slices"]) == (shards, slices)}
        row = [str(shards), str(slices)]
        row += [f"{mine[v]['mean']:.4f} ± {mine[v]['std']:.4f}" for v in variants]
        row.append(f"{mine[variants[0]]['per_stage_below_global_points']:+.2f}")
        rows.append(row)
    return "\n".join(markdown_table(header, rows))


def reading(figures: dict[str, Any], config: dict[str, Any]) -> str:
    """Short conclusions, every number computed from the figures."""
    top, goal = figures["goal_shards"], figures["goal_loss_points"]
    rows = {s["recipe"]: s for s in at_top(figures)}
    ref = figures["tabular_reference"]
    losses = ", ".join(f"{r} {s['loss_points']:+.2f}" for r, s in rows.items())
    met = [r for r, s in rows.items() if s["loss_points"] <= goal]
    best = max(rows.values(), key=lambda s: s["mean"])
    out = [
        f"At S = {top} (R = {rows[best['recipe']]['slices']}) the aggregate loses, in points "
        f"against the monolithic model of the same recipe: {losses}"
        + (
            f" (the tabular digits with the MLP lose {ref['loss_points']:.2f} at R = 1, "
            f"{ref['source']})"
            if ref
            else ""
        )  # fmt: skip
        + f". Goal ≤ {goal:g}: met by {', '.join(met) or 'none'}. The most accurate aggregate "
        f"at S = {top} is `{best['recipe']}` ({best['mean']:.4f})."
    ]
    mono = {s["recipe"]: s for s in figures["recipes"] if (s["shards"], s["slices"]) == (1, 1)}
    out.append(
        "The monolithic model (S = R = 1): "
        + ", ".join(f"{r} {s['mean']:.4f}" for r, s in mono.items())
        + "."
    )
    if "crop" in rows and "crop+flip" in rows and "crop" in mono:
        out.append(
            "Adding flip to crop (digits are not mirror-symmetric): "
            f"{(mono['crop+flip']['mean'] - mono['crop']['mean']) * 100:+.2f} points at S = 1, "
            f"{(rows['crop+flip']['mean'] - rows['crop']['mean']) * 100:+.2f} at S = {top}."
        )
    ing = figures["ingest"]
    png, npz = ing["sources"]["image folder (PNG)"], ing["sources"]["npz (float32)"]
    h, w = ing["size"]
    out.append(
        f"Ingest of {png['images']:,} PNGs resized to {h}x{w}: {png['images_per_s']:,.0f} "
        f"images/s for the ingest job alone ({npz['images_per_s']:,.0f}/s from a float32 "
        f".npz of the same pixels, so decoding costs {times(1 / ing['speed_ratio'])}). The "
        f"store keeps {png['features_bytes_per_image']:,.1f} feature bytes per image (uint8, "
        f"{ing['pixel_bytes']['uint8']} pixel bytes from the shape) against "
        f"{npz['features_bytes_per_image']:,.1f} from float32: {times(ing['stored_ratio'])}."
    )
    cost = figures["scaling_cost"]
    out.append(
        f"Per-stage scaling in deletions: {cost['k']} single-point deletions one at a time "
        f"take {times(cost['sequential_ratio'])} the wall time without scaling (median "
        f"ratio per deletion {times(cost['median_ratio'])}), one batch of them "
        f"{times(cost['batched_ratio'])}; samples retrained "
        + ("equal in every case." if cost["samples_equal"] else "**differ**.")
    )
    acc = figures["scaling_accuracy"]["summary"]
    gaps = {(s["shards"], s["slices"]): s["per_stage_below_global_points"] for s in acc}
    out.append(
        "Per-stage against whole-set statistics (global − per-stage, points): "
        + ", ".join(f"S={s} R={r}: {g:+.2f}" for (s, r), g in gaps.items())
        + "."
    )
    if config["device"] == "cpu":
        out.append(
            "No GPU was used: the image stores trained on the CPU. Where torch sees a GPU "
            'the benchmark trains them with `resources.device = "cuda"`; rerun it there '
            "with `--only recipe` for the image figures at larger sizes."
        )
    return "\n\n".join(out)


def markdown(figures: dict[str, Any], config: dict[str, Any]) -> str:
    """The report of the figures, from them and the settings they were measured with."""
    img, sc, data = config["images"], config["scaling"], config["cost"]["data"]
    load = figures["load_average"]
    return "\n\n".join(
        [
            "The training recipe on images, image ingest and per-stage scaling. The cores "
            "were shared with other work (1-minute load average "
            f"{load['before'][0]:.2f} at the start, {load['after'][0]:.2f} at the end): "
            "timings are ratios within this run; samples, bytes and accuracies are counts.",
            "## Recipe: digits as an image folder",
            f"sklearn's digits as 8x8 grey PNGs, resized (bilinear) to {img['size']}x"
            f"{img['size']} at ingest; model {img['model']['model.name']} "
            f"{img['model']['model.hidden']}, "
            f"{img['epochs']:g} epochs (equal-cost schedule), batch {img['batch_size']}, "
            f"seeds {img['seeds']} (the seed draws the split and the shards); uniform "
            f"sharding, averaging. Recipes: `off` = SGD (momentum 0.9), constant rate 0.05; "
            "`optim` = AdamW (lr 0.01, weight decay 0.01), cosine to 0 with warmup over 5% "
            "of the stages, label smoothing 0.1; `crop` and `crop+flip` add those "
            "augmentations (padding 2) to `optim`.",
            recipe_table(figures["recipes"]),
            "## Ingest and storage",
            ingest_table(figures["ingest"]),
            "The ingest job is timed alone (an in-process executor clocks each job "
            "`train` runs); the train call adds config checks and a training of a few samples.",
            "## Per-stage scaling: cost in deletions",
            f"Data {data['data.source']} (N = {data.get('data.n', 1797):,}), "
            f"S = {data['sisa.shards']}, R = {data['sisa.slices']}, {data['sisa.epochs']:g} "
            "epochs; the same random training IDs deleted from both stores, which take "
            "turns going first. Wall time of `process`, retrain and purge included.",
            cost_table(figures["scaling_cost"]),
            "## Per-stage scaling: accuracy against whole-set statistics",
            "Digits with every feature multiplied by a random factor in [0.1, 10] "
            f"(log-uniform); MLP (128), SGD 0.05, {sc['epochs']:g} epochs, "
            f"seeds {sc['seeds']}. `original`: sklearn's features (pixel counts 0..16) "
            "unscaled (the built-in `digits` source divides them by 16); `none`: "
            'the distorted digits unscaled; `per-stage`: `data.scale = "standard"`; '
            "`global`: pre-scaled with the statistics of all training points (forbidden by "
            "the exactness rule; for comparison only).",
            scaling_table(figures["scaling_accuracy"]["summary"]),
            "## Reading",
            reading(figures, config),
        ]
    )
