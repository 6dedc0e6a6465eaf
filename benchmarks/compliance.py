"""Time to compliance: from an accepted deletion request to predictions that honour it.

``accept`` journals one single-ID request and commits the serving state; a live ensemble
then refreshes with ``Ensemble.load(store, previous=...)`` and predicts one row. Each
repeat is followed by ``process``, so every request meets a fully trained store, and is
checked: the refreshed ensemble serves what ``compliance.current`` says, the touched shard
is rolled back (or dropped) and untouched shards keep their loaded models. Beside it,
``backlog`` groups the acceptances of a large batch by how many requests were open.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from benchmarks.report import median, timed
from benchmarks.stores import QUIET, training_layout
from sisa.deletion import compliance
from sisa.deletion.accept import Acceptance, accept
from sisa.deletion.batch import process
from sisa.serving.ensemble import Ensemble
from sisa.store.artifacts import SisaStore
from sisa.store.layout import TEST_PREFIX


def check_compliant(old: Ensemble, new: Ensemble, store: SisaStore, acc: Acceptance) -> None:
    """The refreshed ensemble serves the serving state, rolled back where the request hit."""
    state = compliance.current(store)
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
    """``repeats`` single-ID requests, each accepted, served and then processed."""
    store = SisaStore(url)
    cfg = store.config().sisa
    test = store.read_data(store.latest_head(TEST_PREFIX).data)  # type: ignore[union-attr]
    row = test["X"][:1]
    victims = rng.choice(training_layout(url).ids, repeats, replace=False).tolist()
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


def backlog(row: dict[str, Any], edges: tuple[int, ...]) -> list[dict[str, Any]]:
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
