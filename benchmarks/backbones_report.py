"""The backbones benchmark's report: its verdicts, tables and reading, from the figures."""

from __future__ import annotations

from typing import Any

from benchmarks.report import markdown_table, times


def cell(figures: dict[str, Any], variant: str, shards: int) -> dict[str, Any] | None:
    """The accuracy summary of (variant, S), if the grid has it."""
    return next(
        (s for s in figures["accuracy"] if (s["variant"], s["shards"]) == (variant, shards)),
        None,
    )


MODES = ("head", "lora")  # the variants on the backbone that the goals speak of


def verdicts(figures: dict[str, Any]) -> dict[str, bool | None]:
    """Each goal of issue 19 against its figure; None where the grid lacks the figure."""
    g, out = figures["goals"], {}
    for mode in MODES:
        for shards, goal in g["loss_points"].items():
            s = cell(figures, mode, int(shards))
            out[f"loss_at_{shards}_{mode}"] = None if s is None else s["loss_points"] <= goal
    out["speedup"] = figures["deletion"]["full_over"]["head"] >= g["speedup"]
    for name, served in figures["inference"].items():
        out[f"inference_{name}"] = served["rows"][-1]["ratio"] <= g["inference"]
    b = figures["bytes"]
    for mode in MODES:
        out[f"weights_{mode}"] = b[mode]["weights_of_backbone"] <= g["weights"]
        out[f"with_state_{mode}"] = b[mode]["with_state_of_backbone"] <= g["with_state"]
    return out


def _met(value: bool | None) -> str:
    return "n/a (S not in this grid)" if value is None else "met" if value else "**not met**"


def setup_text(figures: dict[str, Any], grid: dict[str, Any]) -> str:
    s, b = figures["setup"], figures["setup"]["backbone"]
    p, lora = grid["pretrain"], figures["setup"]["lora"]
    arch = " → ".join(str(w) for w in [600, *s["widths"]])
    return (
        f"**The backbone is pretrained on a disjoint public part of the data, not downloaded.** "
        f"Synthetic Purchase (600 binary features, 100 classes) of N = {s['n']:,} points is "
        f"generated once; a keyed hash of each ID puts {s['public_points']:,} of them "
        f"({s['public_fraction']:.0%} by the key) in a public part that never enters a store "
        f"and is never subject to deletion (the ID sets are "
        f"{'disjoint' if s['disjoint'] else 'NOT disjoint'}). The other "
        f"{s['private_points']:,} points, with their IDs, are the stores' `.npz` source; each "
        "store holds out 20% of them (a keyed hash of the seed and the ID) for its test "
        f"accuracy. Backbone: an MLP {arch} (Linear-ReLU), {b['params']:,} parameters, "
        f"{b['tensor_bytes'] / 1e6:.1f} MB as float32, trained with a linear layer to the "
        f"classes on the public part alone in plain torch ({p['epochs']} epochs, Adam "
        f"{p['lr']:g}, batch {p['batch_size']}, {b['train_s']:.0f} s; accuracy on its own "
        f"points {b['public_train_accuracy']:.4f}); its hidden layers are saved as "
        "safetensors and named by `model.backbone` / `model.backbone_weights`. Stores: "
        f"Adam, batch 64, {s['epochs']:g} epochs (equal-cost), uniform sharding, averaging, "
        f"`model.feature_batch = {s['feature_batch']}`, in process on 1 torch thread. "
        f'Low-rank adapters (`model.finetune = "lora"`): rank {lora["model.lora_rank"]}, '
        f"alpha {lora['model.lora_alpha']}, no dropout, on the backbone's last Linear "
        f"(`model.lora_targets = {lora['model.lora_targets']}`), with a linear head; the "
        f"layers before it ({' → '.join(str(w) for w in [600, *s['widths'][:-1]])}) are its "
        "frozen prefix, computed once per point at ingest and stored as the shard's data, "
        "so each shard trains the adapted last layer and its head."
    )


def variants_text(grid: dict[str, Any]) -> str:
    parts = []
    for name, o in grid["variants"].items():
        if "model.hidden" in o:
            parts.append(
                f'`{name}`: from-scratch SISA (`model.finetune = "full"`), an MLP '
                f"{list(o['model.hidden'])} on the raw points, Adam {o['optim.lr']:g}"
            )
        elif o.get("model.finetune") == "lora":
            parts.append(
                f'`{name}`: `model.finetune = "lora"`, adapters on the last Linear and a '
                f"linear head per shard, Adam {o['optim.lr']:g}"
            )
        else:
            parts.append(
                f'`{name}`: `model.finetune = "head"`, a linear head per shard '
                f"(`model.hidden = []`) on the frozen backbone's features, Adam {o['optim.lr']:g}"
            )
    return "; ".join(parts) + "."


def accuracy_table(summary: list[dict[str, Any]]) -> str:
    header = ("variant", "S", "seeds", "aggregate (mean ± SE)", "loss vs S=1 (points ± SE)",
              "vote", "mean shard", "train (s)")  # fmt: skip
    rows = (
        [
            s["variant"], str(s["shards"]), str(s["seeds"]), f"{s['mean']:.4f} ± {s['se']:.4f}",
            f"{s['loss_points']:+.2f} ± {s['loss_se']:.2f}", f"{s['vote']:.4f}",
            f"{s['mean_shard']:.4f}", f"{s['train_s']:.1f}",
        ]
        for s in summary
    )  # fmt: skip
    return "\n".join(markdown_table(header, rows, "lrrrrrrr"))


def deletion_table(d: dict[str, Any]) -> str:
    m, f = d["mono_head"], d["full_fine_tune"]
    header = ("deletion of one point", "seconds", "samples retrained (median)",
              "full fine-tune / this", "test accuracy")  # fmt: skip
    rows = [
        [f"\"{mode}\", S={h['sisa.shards']} R={h['sisa.slices']}: `forget` (median of "
         f"{len(h['deletions'])})", f"{h['median_s']:.3f}", f"{h['median_samples']:,.0f}",
         times(d["full_over"][mode], 0), f"{h['accuracy']:.4f}"]
        for mode, h in ((mode, d[mode]) for mode in MODES)
    ] + [
        [f"monolithic head, S=R=1: `forget` (median of {len(m['deletions'])})",
         f"{m['median_s']:.3f}", f"{m['median_samples']:,.0f}",
         times(d["full_over_mono_head"], 1), f"{m['accuracy']:.4f}"],
        ["monolithic full fine-tune: one retrain (1 run, plain torch)", f"{f['retrain_s']:.1f}",
         f"{f['samples']:,}", times(1.0, 0), f"{f['accuracy']:.4f}"],
    ]  # fmt: skip
    return "\n".join(markdown_table(header, rows))


INFERENCE_NAMES = {
    "head": '"head" on the pretrained MLP',
    "lora": '"lora" on the pretrained MLP (its frozen prefix once per row, then every '
    "shard's adapted last layer and head)",
    "vit": '"head" on the ViT-B-sized backbone (random weights, random 32x32 images)',
}


def inference_table(inf: dict[str, Any]) -> str:
    header = ("rows N", "ensemble predict_proba (ms)", "one full model (ms)", "ratio",
              "of which: backbone in groups (ms)", "shard models + aggregation (ms)",
              "backbone, one forward (ms)")  # fmt: skip
    rows = (
        [f"{r['n']:,}", f"{r['ensemble_s'] * 1e3:.2f}", f"{r['one_model_s'] * 1e3:.2f}",
         times(r["ratio"]), f"{r['backbone_groups_s'] * 1e3:.2f}",
         f"{r['heads_s'] * 1e3:.2f}", f"{r['one_backbone_s'] * 1e3:.2f}"]
        for r in inf["rows"]
    )  # fmt: skip
    return "\n".join(markdown_table(header, rows))


def inference_section(served: dict[str, Any]) -> str:
    parts = []
    for name, inf in served.items():
        parts.append(
            f"{INFERENCE_NAMES[name]}: S = {inf['shards']}, `{inf['strategy']}` forward, "
            f"`model.feature_batch = {inf['feature_batch']}`."
        )
        parts.append(inference_table(inf))
    return "\n\n".join(parts)


def bytes_table(b: dict[str, Any]) -> str:
    f, bb = b["full_fine_tune"], b["backbone_bytes"]
    header = ("what", "bytes", "of the backbone")
    rows = [["backbone (float32 tensors)", f"{bb:,}", "100%"]]
    for mode in MODES:
        h = b[mode]
        rows += [
            [f"\"{mode}\": a stage's weights file", f"{h['weights_per_stage']:,}",
             f"{h['weights_per_stage'] / bb:.3%}"],
            [f"\"{mode}\": a stage's weights + optimizer state",
             f"{h['with_state_per_stage']:,}", f"{h['with_state_per_stage'] / bb:.3%}"],
            [f"\"{mode}\": a shard's {h['stages']} stages", f"{h['shard_total']:,}",
             f"{h['shard_total'] / bb:.2%}"],
        ]  # fmt: skip
    rows += [
        ["full fine-tune: a stage's weights file", f"{f['weights_per_stage']:,}",
         f"{f['weights_per_stage'] / bb:.1%}"],
        ["full fine-tune: a stage's weights + optimizer state",
         f"{f['with_state_per_stage']:,}", f"{f['with_state_per_stage'] / bb:.1%}"],
        [f"full fine-tune: a shard's {f['stages']} stages", f"{f['shard_total']:,}",
         f"{f['shard_total'] / bb:.0%}"],
    ]  # fmt: skip
    return "\n".join(markdown_table(header, rows))


def _accuracy_reading(figures: dict[str, Any]) -> list[str]:
    g, v, out = figures["goals"], figures["verdicts"], []
    for mode in MODES:
        losses = []
        for shards, goal in g["loss_points"].items():
            s = cell(figures, mode, int(shards))
            if s is None:
                continue
            full = cell(figures, "full", int(shards))
            losses.append(
                f"at S = {shards} it loses {s['loss_points']:+.2f} ± {s['loss_se']:.2f} points "
                f"against its monolithic model (goal ≤ {goal:g}: "
                f"{_met(v[f'loss_at_{shards}_{mode}'])})"
                + (
                    f", from-scratch SISA {full['loss_points']:+.2f} ± {full['loss_se']:.2f}"
                    if full
                    else ""
                )
            )
        if losses:
            out.append(f'Accuracy ("{mode}"): ' + "; ".join(losses) + ".")
    monos = [s for s in figures["accuracy"] if s["shards"] == 1 and s["variant"] != "full"]
    best = max(monos, key=lambda s: s["mean"])
    for mode in MODES:
        mono = cell(figures, mode, 1)
        against = [
            f"S = {s['shards']}: {(best['mean'] - s['mean']) * 100:+.2f}"
            for s in figures["accuracy"]
            if s["variant"] == mode and str(s["shards"]) in g["loss_points"]
        ]
        if against and mono is not None and best["variant"] != mode:
            out.append(
                f"The monolithic model of `{mode}` ({mono['mean']:.4f}) is not the best "
                f"monolithic model on the backbone: `{best['variant']}` reaches "
                f"{best['mean']:.4f} at S = 1. Against that one (unpaired means), `{mode}` "
                "loses " + ", ".join(against) + " points."
            )
    top = max(s["shards"] for s in figures["accuracy"])
    row = ", ".join(
        f"{s['variant']} {s['loss_points']:+.2f}" for s in figures["accuracy"] if s["shards"] == top
    )
    out.append(f"At the largest S = {top}, loss in points by variant: {row}.")
    return out


def _deletion_reading(figures: dict[str, Any]) -> str:
    g, v, d = figures["goals"], figures["verdicts"], figures["deletion"]
    f, m = d["full_fine_tune"], d["mono_head"]
    lora = d["lora"]
    return (
        f'Deletion: "head" forgets one point in {d["head"]["median_s"]:.3f} s (median), '
        f"{times(d['full_over']['head'], 0)} faster than retraining the monolithic full "
        f"fine-tune ({f['retrain_s']:.1f} s; goal ≥ {g['speedup']:g}x: {_met(v['speedup'])}) "
        f"and {times(d['mono_head_over']['head'], 1)} faster than the monolithic head "
        f'({m["median_s"]:.2f} s). "lora" forgets one in {lora["median_s"]:.3f} s: '
        f"{times(d['full_over']['lora'], 0)} faster than the full fine-tune, "
        f"{times(d['mono_head_over']['lora'], 1)} against the monolithic head (no goal). "
        "The issue asks for a size where the full fine-tune's retrain takes at least 2 "
        "minutes: "
        + (
            "it does here."
            if f["retrain_s"] >= 120
            else f"it took {f['retrain_s']:.0f} s here, so that condition was NOT met "
            "(the suite must fit about 15 minutes on 2 shared cores)."
        )
        + f" The full fine-tune reaches {f['accuracy']:.4f} on the monolithic store's "
        f"held-out points, the monolithic head {m['accuracy']:.4f}."
    )


def _inference_reading(figures: dict[str, Any]) -> list[str]:
    g, v, setup = figures["goals"], figures["verdicts"], figures["setup"]
    inf, vit = figures["inference"]["head"], figures["inference"]["vit"]
    widths, last, first = setup["widths"], inf["rows"][-1], inf["rows"][0]
    heads = inf["shards"] * (widths[-1] + 1) * setup["num_classes"]
    vit_last = vit["rows"][-1]
    lora_last = figures["inference"]["lora"]["rows"][-1]
    return [
        f'Inference, "head" at S = {inf["shards"]} on the pretrained MLP: the ensemble over '
        f"{last['n']:,} rows takes {times(last['ratio'])} one full model's forward (goal ≤ "
        f"{g['inference']:g}x: {_met(v['inference_head'])}). At {last['n']:,} rows the backbone "
        f"in its groups takes {last['backbone_groups_s'] * 1e3:.1f} ms (one forward over all "
        f"rows: {last['one_backbone_s'] * 1e3:.1f} ms) and the {inf['shards']} heads with the "
        f"aggregation {last['heads_s'] * 1e3:.1f} ms: {inf['shards']} linear heads of "
        f"{widths[-1]} features to the classes are {heads:,} weights against the backbone's "
        f"{setup['backbone']['params']:,} ({heads / setup['backbone']['params']:.1%} of its "
        "multiply-adds per row), so on a backbone this small the heads are not free.",
        f"On the ViT-B-sized backbone the same {vit['shards']} heads cost what they cost "
        f"beside a real one: over {vit_last['n']:,} rows the ensemble takes "
        f"{times(vit_last['ratio'])} one full model's forward (goal ≤ {g['inference']:g}x: "
        f"{_met(v['inference_vit'])}); the heads with the aggregation take "
        f"{vit_last['heads_s'] * 1e3:.1f} ms of {vit_last['ensemble_s'] * 1e3:.0f} ms.",
        f"For {first['n']:,} row(s) the MLP's ensemble takes {times(first['ratio'])}: every "
        f"backbone forward has exactly `feature_batch` = {inf['feature_batch']} rows, the rest "
        "zeros, so a small request pays for a whole group.",
        f'"lora" over {lora_last["n"]:,} rows: {times(lora_last["ratio"])} one model\'s '
        "forward (no goal): each of its shard models runs its own adapted "
        f"{widths[-2]} → {widths[-1]} layer, so it costs more than a head.",
    ]


def reading(figures: dict[str, Any]) -> str:
    """Short conclusions, every number computed from the figures."""
    g, v, b = figures["goals"], figures["verdicts"], figures["bytes"]
    out = _accuracy_reading(figures)
    out.append(_deletion_reading(figures))
    out += _inference_reading(figures)
    for mode in MODES:
        out.append(
            f'Bytes: a "{mode}" stage\'s weights are {b[mode]["weights_of_backbone"]:.3%} of '
            f"the backbone (goal ≤ {g['weights']:.0%}: {_met(v[f'weights_{mode}'])}), with the "
            f"optimizer state {b[mode]['with_state_of_backbone']:.3%} (goal ≤ "
            f"{g['with_state']:.0%}: {_met(v[f'with_state_{mode}'])}); a shard's "
            f"{b[mode]['stages']} stages take {b[mode]['shard_total_of_full']:.3%} of a full "
            "fine-tune's."
        )
    return "\n\n".join(out)


def markdown(figures: dict[str, Any], grid: dict[str, Any]) -> str:
    lb, la = figures["load_average"]["before"][0], figures["load_average"]["after"][0]
    d = figures["deletion"]
    return "\n\n".join(
        [
            'Frozen pretrained backbones with per-shard heads (`model.finetune = "head"`) and '
            'low-rank adapters (`"lora"`) against from-scratch SISA and monolithic models. '
            "The cores were shared with other work (1-minute load average "
            f"{lb:.2f} at the start, {la:.2f} at the end): timings are ratios within this "
            "run; bytes, points and accuracies are counts.",
            "## Setup",
            setup_text(figures, grid),
            "## Accuracy against S",
            "R = 1; each store against the monolithic store (S = R = 1) of its variant and "
            "seed, the loss paired per seed (the seed draws the held-out split and the "
            f"shards). Seeds {grid['seeds']}. Variants: " + variants_text(grid),
            accuracy_table(figures["accuracy"]),
            "## Time per deletion",
            f"In process. {len(d['head']['deletions'])} random training points forgotten "
            "one by one (`forget`: accept, retrain the affected shard from the point's "
            'slice, purge) from the "head" store and from the "lora" store, and '
            f"{len(d['mono_head']['deletions'])} from the monolithic head store; "
            "the monolithic full fine-tune (the pretrained backbone and a fresh linear "
            "head, trained end to end on the raw points, Adam "
            f"{grid['fine_tune_lr']:g}, batch 64, {grid['epochs']:g} epochs) retrained once on "
            "the monolithic store's training points without the first point it forgot. "
            "Test accuracy: of the store after its deletions, on its held-out points.",
            deletion_table(d),
            "## Aggregated inference",
            "`Ensemble.predict_proba` over N raw rows (the backbone once per row, every shard "
            "model on its output) against one full model (the same backbone module, then one "
            "shard model, softmax) over the same rows; medians of "
            f"{figures['inference']['head']['repeats']} (ViT: "
            f"{figures['inference']['vit']['repeats']}), alternating. The ViT-B-sized "
            "backbone (transformers `ViTConfig` defaults but 32x32 images: "
            "12 layers of width 768, 85.7 M parameters, 5 tokens) has random weights and "
            f"its {figures['inference']['vit']['shards']} heads were trained one epoch on "
            "random images: it times serving only.",
            inference_section(figures["inference"]),
            "## Checkpoint bytes",
            "Files on disk, per stage checkpoint of shard 0: the weights (safetensors) and "
            "the optimizer state with the counters (Adam: two moments per weight). The full "
            "fine-tune store has the same architecture as backbone + head (MLP hidden = "
            f"{figures['setup']['widths']}), S = 1 and the same R, trained briefly on a few "
            "points (its files' sizes do not depend on the data).",
            bytes_table(figures["bytes"]),
            "## Reading",
            reading(figures),
        ]
    )
