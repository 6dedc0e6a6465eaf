"""Start-up cost of the command line: what a command pays besides its own work.

A ``sisa`` command is a fresh Python process. What it imports before it does anything is
paid on every call: ``import torch`` alone takes over a second on 2 cores, and
``torch.use_deterministic_algorithms`` imports the compiler stack (``torch._dynamo``,
``torch._inductor``), as does an optimizer's first step. A command that trains nothing
(``status``, ``forget`` without ``--wait``) should import neither torch nor scikit-learn;
one that retrains should pay ``import torch`` once and little else beside the retrain.

This trains a store on synthetic Purchase in this process (not timed), then runs the
commands as subprocesses, as a user does, and times their wall clock (medians over
repeats):

* ``python -c pass``, ``import torch``, ``import pandas``, ``import sklearn.cluster``,
  and ``torch.use_deterministic_algorithms(True)`` after ``import torch``: the costs at
  stake, each in a fresh process;
* ``sisa status`` and ``sisa forget <id>`` (journaled and compliant, no retrain): the goal
  is under ``GOAL_S``;
* ``sisa forget --wait <id>`` of one training point, each in another shard and from
  another stratum of slices, against the retrain's own time in that same call: the shard
  job's seconds (load its data, train, write checkpoints, purge) from the request's
  receipt. The goal: the call takes at most the retrain plus ``import torch`` plus
  ``SLACK_S``.

The forgets without ``--wait`` are processed (untimed) before the timed ``--wait`` calls,
so each of those retrains exactly one shard.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, Others, load_average, load_change
from benchmarks.datasets import DataCache
from benchmarks.report import Report
from benchmarks.stores import store_executor
from sisa.config import build_config
from sisa.data.partition import place
from sisa.store.artifacts import SisaStore
from sisa.training.train import train

GOAL_S = 0.5  # status and forget, wall clock on 2 cores
SLACK_S = 0.3  # forget --wait <= retrain + import torch + SLACK_S
SIZES: dict[str, dict[str, Any]] = {
    "quick": {
        "n": 2_000, "shards": 4, "slices": 4, "epochs": 2, "hidden": [32], "repeats": 2,
    },
    # the setting: synthetic Purchase, N = 50,000, S = 20, R = 10 (the rest as
    # examples/purchase.toml)
    "full": {
        "n": 50_000, "shards": 20, "slices": 10, "epochs": 20, "hidden": [256], "repeats": 5,
    },
}  # fmt: skip
IMPORTS = {
    "python": "pass",
    "torch": "import torch",
    "pandas": "import pandas",
    "sklearn": "import sklearn.cluster",
}
DETERMINISTIC = (
    "import time, torch; t = time.perf_counter(); torch.use_deterministic_algorithms(True); "
    "print(time.perf_counter() - t)"
)


def sisa_command() -> list[str]:
    """The ``sisa`` entry point beside this interpreter, as a user runs it."""
    script = Path(sys.executable).with_name("sisa")
    return [str(script)] if script.exists() else [sys.executable, "-m", "orchestrator.cli"]


def timed_run(argv: list[str]) -> tuple[float, str]:
    """Wall seconds of one subprocess, from fork to exit, and its stdout."""
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=900)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr}")
    return seconds, done.stdout


def median_of(runs: list[float]) -> dict[str, Any]:
    return {"median_s": statistics.median(runs), "runs": runs}


def training_points(url: str) -> list[tuple[int, int, int]]:
    """(ID, shard, 0-based slice) of every training point of the store."""
    store = SisaStore(url)
    cfg = store.config().sisa
    points = []
    for shard in range(cfg.shards):
        arrays = store.read_data(store.shard_head(shard).data, features=False)
        _, slice_of = place(cfg, arrays, store.placement_key())
        points += [(int(i), shard, int(s)) for i, s in zip(arrays["ids"], slice_of, strict=True)]
    return points


def pick_victims(url: str, count: int, slices: int, rng: random.Random) -> list[tuple]:
    """``2 * count`` training points in distinct shards (while there are enough). The
    first ``count``, for ``forget --wait``, the k-th from the k-th of ``count`` equal strata
    of slices (a deletion's retrain depends steeply on its slice); the others, for
    ``forget`` alone, from any slice."""
    points = training_points(url)
    shards = sorted({p[1] for p in points})
    rng.shuffle(shards)
    chosen: list[tuple] = []
    for k in range(2 * count):
        lo, hi = 0, slices
        if k < count:
            lo = k * slices // count
            hi = max((k + 1) * slices // count, lo + 1)
        shard = shards[k % len(shards)]
        pool = [p for p in points if p[1] == shard and lo <= p[2] < hi and p not in chosen]
        chosen.append(rng.choice(pool))
    return chosen


def forget_wait(url: str, victim: tuple[int, int, int]) -> dict[str, Any]:
    """One ``sisa forget --wait`` call, and the retrain's own time from its receipt."""
    argv = [*sisa_command(), "forget", "--wait", "--json", "--no-progress", "--store", url]
    wall, out = timed_run([*argv, str(victim[0])])
    receipt = json.loads(out)["status"]["receipt"]
    actual = receipt["batch"]["actual"]
    (shard,) = receipt["shards"]
    retrain = actual["compute_seconds"]  # the shard job: load, train, checkpoint, purge
    return {
        "id": victim[0],
        "shard": victim[1],
        "slice": victim[2] + 1,
        "stages": shard["stages"],
        "wall_s": wall,
        "retrain_s": retrain,
        "train_s": actual["phases"]["train"],
        "batch_s": actual["wall_seconds"],  # the whole batch: retrain, serving, receipt
        "overhead_s": wall - retrain,
    }


def measure(size: dict[str, Any], url: str) -> dict[str, Any]:
    repeats = size["repeats"]
    imports = {
        name: median_of([timed_run([sys.executable, "-c", code])[0] for _ in range(repeats)])
        for name, code in IMPORTS.items()
    }
    deterministic = [
        float(timed_run([sys.executable, "-c", DETERMINISTIC])[1]) for _ in range(repeats)
    ]
    imports["use_deterministic_algorithms"] = median_of(deterministic)

    sisa = sisa_command()
    status = [timed_run([*sisa, "status", "--store", url])[0] for _ in range(repeats)]
    rng = random.Random(0)
    victims = pick_victims(url, repeats, size["slices"], rng)
    waited, plain = victims[:repeats], victims[repeats:]
    forget = [timed_run([*sisa, "forget", "--store", url, str(v[0])])[0] for v in plain]
    timed_run([*sisa, "process", "--no-progress", "--store", url])  # untimed: clears them
    runs = [forget_wait(url, v) for v in waited]
    return {
        "imports": imports,
        "status": median_of(status),
        "forget": median_of(forget),
        "forget_wait": {
            "runs": runs,
            "median_wall_s": statistics.median(r["wall_s"] for r in runs),
            "median_retrain_s": statistics.median(r["retrain_s"] for r in runs),
            "median_overhead_s": statistics.median(r["overhead_s"] for r in runs),
            "max_overhead_s": max(r["overhead_s"] for r in runs),
        },
    }


def goals(f: dict[str, Any]) -> dict[str, Any]:
    budget = f["imports"]["torch"]["median_s"] + SLACK_S
    wait = f["forget_wait"]
    return {
        "command_s": GOAL_S,
        "slack_s": SLACK_S,
        "status_met": f["status"]["median_s"] < GOAL_S,
        "forget_met": f["forget"]["median_s"] < GOAL_S,
        "overhead_budget_s": budget,  # import torch + SLACK_S
        "forget_wait_met": wait["median_overhead_s"] <= budget,
        "forget_wait_every_run_met": wait["max_overhead_s"] <= budget,
    }


def markdown(f: dict[str, Any], size: dict[str, Any]) -> str:
    imp, g, wait = f["imports"], f["goals"], f["forget_wait"]
    yes = {True: "yes", False: "**no**"}
    lines = [
        f"Synthetic Purchase, N = {size['n']:,}, S = {size['shards']}, R = {size['slices']}, "
        f"{size['epochs']} epochs, MLP {size['hidden']}; the store trained in "
        f"{f['train_s']:.1f} s in process (not timed below). Every figure is the wall clock "
        f"of a fresh process, the median of {size['repeats']}.",
        "",
        "| in a fresh process | seconds |",
        "|---|---:|",
        f"| `python -c pass` | {imp['python']['median_s']:.2f} |",
        f"| `import torch` | {imp['torch']['median_s']:.2f} |",
        f"| `import pandas` | {imp['pandas']['median_s']:.2f} |",
        f"| `import sklearn.cluster` | {imp['sklearn']['median_s']:.2f} |",
        "| `torch.use_deterministic_algorithms(True)` after `import torch` (no longer "
        f"called) | {imp['use_deterministic_algorithms']['median_s']:.2f} |",
        "",
        "| command | seconds | goal | met |",
        "|---|---:|---|---|",
        f"| `sisa status` | {f['status']['median_s']:.2f} | < {GOAL_S} s | "
        f"{yes[g['status_met']]} |",
        f"| `sisa forget <id>` (journaled, compliant) | {f['forget']['median_s']:.2f} | "
        f"< {GOAL_S} s | {yes[g['forget_met']]} |",
        "",
        "`sisa forget --wait <id>`, one training point per call, each in another shard; "
        "'retrain' is that call's shard job (load, train, checkpoint, purge) from its "
        "receipt, 'batch' the whole batch it ran in (retrain, serving switch, receipt):",
        "",
        "| shard | slice | stages retrained | wall (s) | retrain (s) | of which training (s) "
        "| batch (s) | wall − retrain (s) |",
        "|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in wait["runs"]:
        stages = f"{r['stages'][0]}..{r['stages'][-1]}" if r["stages"] else "none"
        lines.append(
            f"| {r['shard']} | {r['slice']} | {stages} | {r['wall_s']:.2f} | "
            f"{r['retrain_s']:.2f} | {r['train_s']:.2f} | {r['batch_s']:.2f} | "
            f"{r['overhead_s']:.2f} |"
        )
    lines += [
        "",
        f"Besides its retrain, a `forget --wait` took {wait['median_overhead_s']:.2f} s "
        f"(median; at most {wait['max_overhead_s']:.2f} s); the goal is `import torch` + "
        f"{SLACK_S} s = {g['overhead_budget_s']:.2f} s: "
        f"{'met' if g['forget_wait_met'] else 'not met'} at the median, "
        f"{'and' if g['forget_wait_every_run_met'] else 'but not'} in every call. "
        f"Of that, `import torch` is {imp['torch']['median_s']:.2f} s and the interpreter "
        f"with the modules of a command that trains nothing is about "
        f"{f['forget']['median_s']:.2f} s (`sisa forget`).",
        "",
        f"The machine is shared with other work: load average (1/5/15 min) "
        f"{f['load_average']} over the run, and other processes kept "
        f"{f['others_cores']:.2f} of its {os.cpu_count()} cores busy on average while the "
        "commands ran. Start-up costs are mostly single-threaded imports, so a busy "
        "neighbour slows them directly.",
    ]
    return "\n".join(lines)


def run(suite: str) -> Report:
    size = SIZES[suite]
    overrides = {
        "data.source": "synthetic-purchase",
        "data.n": size["n"],
        "data.test_fraction": 0.2,
        "sisa.shards": size["shards"],
        "sisa.slices": size["slices"],
        "sisa.epochs": size["epochs"],
        "sisa.sharding": "stratified",
        "model.hidden": size["hidden"],
        "optim.name": "adam",
        "optim.lr": 0.001,
        "optim.batch_size": 64,
        "resources.threads": 1,
    }
    before = load_average()
    with tempfile.TemporaryDirectory() as tmp:
        data = DataCache(tmp).overrides(
            {"data.source": overrides.pop("data.source"), "data.n": overrides.pop("data.n")}
        )
        url = str(Path(tmp) / "store")
        started = time.perf_counter()
        train(build_config({}, overrides | data), url, executor=store_executor(False))
        train_s = time.perf_counter() - started
        with Others() as others:
            figures = measure(size, url)
    figures |= {
        "train_s": train_s,
        "load_average": load_change(before, load_average()),
        "others_cores": others.cores,
    }
    figures["goals"] = goals(figures)
    config = size | {"goal_s": GOAL_S, "slack_s": SLACK_S, "command": sisa_command()[-1]}
    return Report(figures, markdown(figures, size), config)
