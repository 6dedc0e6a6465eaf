"""Encryption at rest (``storage.encryption = "aes-256-gcm"``): what it costs, and how soon
purged artifacts are shredded.

Two stores of the same config, one sealed (its key store in a folder beside it) and one
plaintext, measured in this process (1 torch thread), alternating, medians:

1. Training: ``train`` end to end on synthetic Purchase. Goal: the sealed store within
   ``GOALS["overhead"]`` of the plaintext one.
2. Deletion: single-point ``forget`` calls (accept, retrain from the point's slice, purge)
   on a second store of each kind, trained for it (a copy of a sealed store may read but
   never purge: its keys belong to the original), the same points for both.
   Goal: within ``GOALS["overhead"]``.
3. Serving: the one-row ``Predictor.predict`` latency (p50, p99) once loaded, and the
   load itself (``Predictor`` opening every checkpoint, the sealed store unwrapping a data
   key per artifact).
4. Bytes: every file of each store, and of the key store.
5. Time to shred: ``accept`` a point, then ``process``: the seconds from the start of
   ``process`` until the data keys of the batch's purged artifacts are destroyed (the
   end of the first shred that destroys keys), and until ``process`` returns.

Timings are ratios within one run on a shared machine; bytes and counts are exact.
"""

from __future__ import annotations

import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import environ, load_average
from benchmarks.report import Report, markdown_table, median, ms, percentiles, times
from benchmarks.stores import QUIET, training_layout
from sisa.config import build_config
from sisa.deletion.accept import accept, forget
from sisa.deletion.batch import process
from sisa.serving.predictor import Predictor
from sisa.store.artifacts import SisaStore
from sisa.training.train import train
from sisa.training.trainer import configure
from storage.keys import Sealing

GOALS = {"overhead": 0.05}  # training and deletion: sealed at most 5% slower
KEK_ENV = "SISA_STORAGE__KEK"
SIZES: dict[str, dict[str, Any]] = {
    "quick": {"n": 2_000, "shards": 4, "slices": 2, "epochs": 2.0, "repeats": 1,
              "deletions": 2, "predictions": 50},
    "full": {"n": 20_000, "shards": 8, "slices": 4, "epochs": 10.0, "repeats": 5,
             "deletions": 9, "predictions": 2_000},
}  # fmt: skip


def _config(s: dict[str, Any], sealed: Path | None) -> dict[str, Any]:
    cfg = {
        "data.source": "synthetic-purchase",
        "data.n": s["n"],
        "sisa.shards": s["shards"],
        "sisa.slices": s["slices"],
        "sisa.epochs": s["epochs"],
        "model.hidden": [128],
        "optim.name": "adam",
        "optim.batch_size": 64,
    }
    if sealed is not None:
        cfg |= {"storage.encryption": "aes-256-gcm", "storage.key_store": str(sealed)}
    return cfg


def _bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


class ShredClock:
    """When the first shred that destroys keys ends, on a clock started by ``start``."""

    def __init__(self) -> None:
        self.started = 0.0
        self.first: float | None = None
        self.destroyed = 0
        self._shred = Sealing.shred

    def start(self) -> None:
        self.started, self.first, self.destroyed = time.perf_counter(), None, 0

    def __enter__(self) -> ShredClock:
        clock, shred = self, self._shred

        def timed(sealing: Sealing, *args: Any, **kwargs: Any) -> list[str]:
            gone = shred(sealing, *args, **kwargs)
            if gone and clock.first is None:
                clock.first = time.perf_counter() - clock.started
            clock.destroyed += len(gone)
            return gone

        Sealing.shred = timed  # type: ignore[method-assign]
        return self

    def __exit__(self, *_: object) -> None:
        Sealing.shred = self._shred  # type: ignore[method-assign]


def run(suite: str) -> Report:
    s = SIZES[suite]
    configure(1, "cpu")
    before = load_average()
    # a fresh key-encryption key in the environment, where every command reads it
    with tempfile.TemporaryDirectory() as tmp, environ(KEK_ENV, secrets.token_hex(32)):
        root = Path(tmp)
        kinds = {"plain": None, "sealed": root / "keys"}
        train_s: dict[str, list[float]] = {k: [] for k in kinds}
        for r in range(s["repeats"]):  # alternating, so both see the same machine
            for kind, keys in kinds.items():
                url = root / f"{kind}-{r}"
                if keys is not None and r < s["repeats"] - 1:
                    keys = root / f"keys-{r}"  # one key store per store: counted apart
                started = time.perf_counter()
                train(build_config({}, _config(s, keys)), str(url), executor=QUIET)
                train_s[kind].append(time.perf_counter() - started)
        last = s["repeats"] - 1
        urls = {k: root / f"{k}-{last}" for k in kinds}
        sizes = {
            "plain": _bytes(urls["plain"]),
            "sealed": _bytes(urls["sealed"]),
            "key_store": _bytes(root / "keys"),
            "keys": len(list((root / "keys").rglob("*.key"))),
        }
        forget_s: dict[str, list[float]] = {k: [] for k in kinds}
        # stores of their own (a copy of a sealed store may not purge its keys), placed
        # alike: the sealed store's placement is keyed by its key store, and the plaintext
        # one takes the same key, so each deletion retrains the same slices in both
        copies = {k: root / f"{k}-forget" for k in ("sealed", "plain")}
        sealed_config = build_config({}, _config(s, root / "keys-forget"))
        train(sealed_config, str(copies["sealed"]), executor=QUIET)
        like = SisaStore(str(copies["sealed"]))
        train(build_config({}, _config(s, None)), str(copies["plain"]), executor=QUIET,
              placement_like=like)  # fmt: skip
        victims = np.random.default_rng(0).choice(
            training_layout(str(copies["plain"])).ids, s["deletions"], replace=False
        )
        for victim in victims.tolist():
            for kind, url in copies.items():
                started = time.perf_counter()
                forget(str(url), [victim], executor=QUIET)
                forget_s[kind].append(time.perf_counter() - started)
        serving = {kind: _serving(str(url), s["predictions"]) for kind, url in urls.items()}
        shred = _time_to_shred(str(urls["sealed"]), int(victims[0]))
    figures = {
        "goals": GOALS,
        "sizes": s,
        "train_s": train_s,
        "forget_s": forget_s,
        "train_ratio": median(train_s["sealed"]) / median(train_s["plain"]),
        "forget_ratio": median(forget_s["sealed"]) / median(forget_s["plain"]),
        "serving": serving,
        "bytes": sizes,
        "shred": shred,
        "load_average": {"before": before, "after": load_average()},
    }
    figures["verdicts"] = {
        "training": figures["train_ratio"] <= 1 + GOALS["overhead"],
        "deletion": figures["forget_ratio"] <= 1 + GOALS["overhead"],
    }
    return Report(figures, markdown(figures), s)


def _serving(url: str, calls: int) -> dict[str, Any]:
    started = time.perf_counter()
    predictor = Predictor(url)
    row = np.random.default_rng(1).random((1, 600)).astype(np.float32)
    predictor.predict(row)  # loaded, and warm
    load_s = time.perf_counter() - started
    seconds = []
    for _ in range(calls):
        t = time.perf_counter()
        predictor.predict(row)
        seconds.append(time.perf_counter() - t)
    return {"load_s": load_s} | percentiles(seconds)


def _time_to_shred(url: str, victim: int) -> dict[str, Any]:
    """``accept`` one point, then ``process``: when its purged artifacts' keys are gone."""
    accept(url, [victim])
    with ShredClock() as clock:
        clock.start()
        process(url, executor=QUIET)
        total = time.perf_counter() - clock.started
    return {"first_shred_s": clock.first, "process_s": total, "keys_destroyed": clock.destroyed}


def _ms(seconds: float | None, digits: int = 1) -> str:
    return f"{ms(seconds, digits)} ms"


def markdown(f: dict[str, Any]) -> str:
    s, b, sv = f["sizes"], f["bytes"], f["serving"]
    lb, la = f["load_average"]["before"][0], f["load_average"]["after"][0]
    rows = [
        ["train (median of " + str(s["repeats"]) + ")", f"{median(f['train_s']['plain']):.2f} s",
         f"{median(f['train_s']['sealed']):.2f} s", times(f["train_ratio"], 3)],
        [f"one `forget` (median of {s['deletions']})", _ms(median(f["forget_s"]["plain"])),
         _ms(median(f["forget_s"]["sealed"])), times(f["forget_ratio"], 3)],
        ["`Predictor` load", _ms(sv["plain"]["load_s"]), _ms(sv["sealed"]["load_s"]),
         times(sv["sealed"]["load_s"] / sv["plain"]["load_s"])],
        [f"one-row predict p50 ({s['predictions']:,} calls)", _ms(sv["plain"]["p50"], 2),
         _ms(sv["sealed"]["p50"], 2), times(sv["sealed"]["p50"] / sv["plain"]["p50"])],
        ["one-row predict p99", _ms(sv["plain"]["p99"], 2), _ms(sv["sealed"]["p99"], 2),
         times(sv["sealed"]["p99"] / sv["plain"]["p99"])],
        ["store bytes", f"{b['plain']:,}", f"{b['sealed']:,}", times(b["sealed"] / b["plain"], 4)],
    ]  # fmt: skip
    table = "\n".join(markdown_table(("measure", "plaintext", "sealed", "sealed / plain"), rows))
    sh = f["shred"]
    verdict = {True: "met", False: "**not met**"}
    return "\n\n".join(
        [
            f"Synthetic Purchase, N = {s['n']:,}, S = {s['shards']}, R = {s['slices']}, "
            f"{s['epochs']:g} epochs, an MLP [128], Adam, in process on 1 torch thread. The "
            'sealed store (`storage.encryption = "aes-256-gcm"`) keeps its keys in a folder '
            "beside it, and its placement is keyed by them (training pays for that too). "
            "The two stores that forget are placed alike, so each deletion retrains the same "
            f"slices in both. 1-minute load average {lb:.2f} at the start, {la:.2f} at the end.",
            table,
            f"The key store holds {b['keys']} data keys ({b['key_store']:,} bytes): one per "
            "artifact, the key of the store's ID hashes, and its KEK's public ID.",
            f"Time to shred: after `accept` of one point, `process` destroyed the data keys "
            f"of the batch's purged artifacts ({sh['keys_destroyed']} keys) "
            f"{_ms(sh['first_shred_s'])} after it started, and returned after "
            f"{_ms(sh['process_s'])}.",
            f"Goals: training within {GOALS['overhead']:.0%}: "
            f"{verdict[f['verdicts']['training']]} ({times(f['train_ratio'], 3)}); deletion "
            f"within {GOALS['overhead']:.0%}: {verdict[f['verdicts']['deletion']]} "
            f"({times(f['forget_ratio'], 3)}).",
        ]
    )
