"""The evidence benchmark's report: a table per dataset and scenario (methods as rows),
and the reading, computed from the figures."""

from __future__ import annotations

import math
from typing import Any

from benchmarks.report import markdown_table
from sisa.evidence.methods import METHODS

APPROXIMATE = tuple(METHODS) + ("rum",)


def _cell(row: dict[str, Any], key: str, fmt: str = ".3f") -> str:
    v = row.get(key)
    if not isinstance(v, dict):
        return "–"
    if math.isnan(v["ci95"]):
        return f"{v['mean']:{fmt}}"
    return f"{v['mean']:{fmt}} ± {v['ci95']:{fmt}}"


HEADER = ("method", "seconds", "samples", "ToW", "ToW-MIA", "MIA AUC", "SVC-MIA", "F (N)")


def cells(r: dict[str, Any], unlearning: bool) -> list[str]:
    """One method's row: its cost, its scores, F, and accuracy (on the class and the rest
    where a class is unlearnt, else on the test set)."""
    fq = (
        "–"
        if r["forgetting_quality"] is None
        else f"{r['forgetting_quality']:.3f} ({r['fq_models']})"
    )
    accuracy = ("acc_class_test", "acc_other_test") if unlearning else ("acc_test",)
    return [
        r["method"],
        _cell(r, "seconds", ".2f"),
        f"{r['samples']['mean']:,.0f}",
        *(_cell(r, key) for key in ("tow", "tow_mia", "mia_auc", "svc_mia")),
        fq,
        *(_cell(r, key) for key in accuracy),
    ]


def table(rows: list[dict[str, Any]]) -> str:
    out = []
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        for sc in dict.fromkeys(r["scenario"] for r in rows if r["dataset"] == dataset):
            mine = [r for r in rows if (r["dataset"], r["scenario"]) == (dataset, sc)]
            first = mine[0]
            unlearning = first["goal"] == "unlearning"
            accuracy = ("acc. on the class", "acc. on the rest") if unlearning else ("test acc.",)
            out += [
                f"### {dataset}, {sc} ({first['goal']}, |F| = {first['forget_size']:,}, "
                f"{first['seeds']} seeds)",
                "",
                *markdown_table([*HEADER, *accuracy], (cells(r, unlearning) for r in mine)),
            ]
            ref = next(r for r in mine if r["method"] == "retrain")
            out += [
                "",
                f"Reference (retrained without F): MIA AUC {_cell(ref, 'mia_auc_reference')}, "
                f"SVC-MIA {_cell(ref, 'svc_mia_reference')}"
                + (
                    ", accuracy on the class's test points "
                    f"{_cell(ref, 'acc_class_test_reference')}."
                    if unlearning
                    else "."
                ),
                "",
            ]
    return "\n".join(out)


def mean_of(row: dict[str, Any], key: str) -> float:
    """The mean over seeds of a row's figure (NaN where the row has none)."""
    return row[key]["mean"] if isinstance(row.get(key), dict) else math.nan


def _f(row: dict[str, Any]) -> str:
    f = row["forgetting_quality"]
    return "n/a" if f is None else f"{f:.2f}"


def reading(rows: list[dict[str, Any]]) -> list[str]:
    """What the table says, in sentences computed from its figures."""
    lines = ["## Reading", ""]
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        for sc in dict.fromkeys(r["scenario"] for r in rows if r["dataset"] == dataset):
            by = {r["method"]: r for r in rows if (r["dataset"], r["scenario"]) == (dataset, sc)}
            sisa, retrain, original = by["sisa"], by["retrain"], by["original"]
            approx = [by[m] for m in APPROXIMATE]
            best = max(approx, key=lambda r: mean_of(r, "tow"))
            best_mia = max(approx, key=lambda r: mean_of(r, "tow_mia"))
            floor = mean_of(retrain, "tow") - retrain["tow"]["ci95"]
            within = [r["method"] for r in approx if mean_of(r, "tow") >= floor]
            cost = mean_of(sisa, "seconds") / mean_of(retrain, "seconds")
            samples = mean_of(sisa, "samples") / mean_of(retrain, "samples")
            spread = max(
                abs(mean_of(r, "mia_auc") - mean_of(r, "mia_auc_reference")) for r in approx
            )
            text = (
                f"- **{dataset}, {sc}** ({sisa['goal']}, |F| = {sisa['forget_size']:,}): SISA "
                f"equals its retrain, so ToW = {mean_of(sisa, 'tow'):.3f} and F = {_f(sisa)}; the "
                f"deletion trained {samples:.0%} of the samples of a full retrain, in "
                f"{cost:.2f}x its seconds. Without unlearning ToW is "
                f"{mean_of(original, 'tow'):.3f} (F {_f(original)}); an independent retrain "
                f"scores ToW {mean_of(retrain, 'tow'):.3f} and F {_f(retrain)}, the noise floor. "
                f"Best approximate method by ToW: {best['method']} ({mean_of(best, 'tow'):.3f}, "
                f"ToW-MIA {mean_of(best, 'tow_mia'):.3f}, F {_f(best)}); by ToW-MIA "
                f"{best_mia['method']} ({mean_of(best_mia, 'tow_mia'):.3f}). Within the noise "
                f"floor's interval by ToW: {', '.join(within) or 'none'}. The loss-threshold "
                f"AUC of every approximate method is within {spread:.3f} of its reference's."
            )
            if sisa["goal"] == "unlearning":
                gone = [
                    r["method"]
                    for r in approx
                    if mean_of(r, "acc_class_test") <= mean_of(retrain, "acc_class_test") + 0.05
                ]
                text += (
                    " The measure here is accuracy on the class's held-out points: "
                    f"{mean_of(retrain, 'acc_class_test_reference'):.3f} for the retrain, "
                    f"{mean_of(sisa, 'acc_class_test'):.3f} for SISA, "
                    f"{mean_of(original, 'acc_class_test'):.3f} before unlearning; approximate "
                    f"methods within 0.05 of the retrain: {', '.join(gone) or 'none'}."
                )
            lines.append(text)
    lines += [
        "",
        "SISA stands apart by proof, not by a better score: its figures equal its "
        "reference's because its weights do, which `verify` checks bitwise, while an "
        "approximate method's ToW near 1 is a measurement on a few seeds, one forget set "
        "per scenario (the intervals cover seeds, not the draw of the forget set) and one "
        "split. Its cost is that of the shards the forget set reaches, retrained from the "
        "earliest slice it reaches: forget sets this large, deleted at once, reach every "
        "shard near its start, so the deletion trains about as much as a full retrain and "
        "writes checkpoints on top. SISA saves where requests are few against the number of "
        "shards (the speedup and deletion benchmarks), not on bulk deletions. Forgetting "
        "quality from N models per side is coarse (scores below ε = ⌈ln(N − 1)⌉ only), and "
        "the retrain row shows what N independent retrains score against each other. On "
        "the class scenario (unlearning, not untraining) the retrain gap is the wrong "
        "yardstick: the question is whether the class is gone from held-out data.",
    ]
    return lines


def markdown(rows: list[dict[str, Any]]) -> str:
    """The whole report of the benchmark's rows."""
    return (
        "Each approximate method unlearns a monolithic model trained on the whole training "
        "set and is compared with a model retrained from scratch without the forget set F "
        "(same seed); SISA forgets in its own store and is compared with that store retrained "
        "from scratch, which it equals bitwise. Figures are means ± the half-width of a 95% "
        "t-interval over seeds; F is the challenge's forgetting quality over the N models "
        "of the seeds. `original` is the model before unlearning; `retrain` is a second, "
        "independent retrain (other seeds), the noise floor. Samples are rows through a "
        "forward pass (methods) or trained on (retrain, SISA).\n\n"
        + table(rows)
        + "\n"
        + "\n".join(reading(rows))
    )
