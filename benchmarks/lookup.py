"""ID lookup at scale: where an ID lives must stay O(1) per ID as the store grows.

A deletion request names IDs; ``sisa.data.partition.Locator`` answers (shard, row) for each
with one hash-table probe. For growing N this times assigning every point to a shard and
slice, building the index, and 10,000 random lookups (the best of 5: the fastest run is
the one the machine disturbed least). The lookup time per N divided by the smallest N's
is the figure: O(1) keeps it near 1; cache misses in a larger table move it a little.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from benchmarks.report import Report, markdown_table, timed, times
from sisa.data.partition import Locator, assign

GRIDS: dict[str, dict[str, Any]] = {
    "quick": {"int": [10_000, 100_000], "str": [10_000], "shards": 20, "slices": 50},
    "full": {
        "int": [100_000, 1_000_000, 5_000_000],
        "str": [100_000, 1_000_000],
        "shards": 20,
        "slices": 50,
    },
}
QUERIES = 10_000


def measure(n: int, kind: str, shards: int, slices: int) -> dict[str, Any]:
    ids = np.arange(n) if kind == "int" else np.array([f"user-{i}" for i in range(n)])  # [n]
    labels = np.zeros(n, np.int64)  # [n]
    (shard, _), assign_s = timed(
        lambda: assign(ids, labels, None, seed=0, strategy="uniform", shards=shards, slices=slices)
    )
    locator, build_s = timed(
        lambda: Locator({k: ids[shard == k] for k in range(shards)}).build()  # the hash index
    )
    rows = np.random.default_rng(0).integers(0, n, QUERIES)  # [QUERIES]
    query = ids[rows]
    if not (locator.locate(query).part == shard[rows]).all():  # timing a wrong answer is moot
        raise AssertionError("the locator put an ID in the wrong shard")
    lookup_s = min(timed(lambda: locator.locate(query))[1] for _ in range(5))
    return {"kind": kind, "n": n, "assign_s": assign_s, "build_s": build_s, "lookup_s": lookup_s}


def run(suite: str) -> Report:
    grid = GRIDS[suite]
    rows = []
    for kind in ("int", "str"):
        for n in grid[kind]:
            rows.append(measure(n, kind, grid["shards"], grid["slices"]))
            first = next(r for r in rows if r["kind"] == kind)
            rows[-1]["vs_smallest"] = rows[-1]["lookup_s"] / first["lookup_s"]
            rows[-1]["us_per_id"] = rows[-1]["lookup_s"] / QUERIES * 1e6
    return Report({"rows": rows}, markdown(rows, grid), grid | {"queries": QUERIES})


HEADER = (
    "IDs", "kind", "assign all (s)", "build index (s)", "lookups (s)", "µs per ID", "vs smallest",
)  # fmt: skip


def markdown(rows: list[dict[str, Any]], grid: dict[str, Any]) -> str:
    """The table of the rows, and what they say."""
    lines = [
        f"Seconds to assign N IDs to {grid['shards']} shards × {grid['slices']} slices, to "
        f"index them, and to look up {QUERIES:,} random ones (best of 5); 'vs smallest' is "
        "the lookup time over that of the smallest N of the same kind.",
        "",
    ]
    cells = (
        [
            f"{r['n']:,}",
            r["kind"],
            f"{r['assign_s']:.3f}",
            f"{r['build_s']:.3f}",
            f"{r['lookup_s']:.4f}",
            f"{r['us_per_id']:.2f}",
            times(r["vs_smallest"]),
        ]
        for r in rows
    )
    lines += markdown_table(HEADER, cells, "rlrrrrr")
    worst = max(rows, key=lambda r: r["vs_smallest"])
    lines += [
        "",
        f"From the smallest to the largest N, a lookup costs at most {times(worst['vs_smallest'])} "
        f"as much ({worst['kind']} IDs, N = {worst['n']:,}): one hash probe per ID, slower "
        "only where a larger table leaves the CPU caches. String IDs are hashed with BLAKE2b "
        "one by one, so assigning them costs more than integers, which hash as one vector.",
    ]
    return "\n".join(lines)
