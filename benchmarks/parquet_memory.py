"""Peak memory of ingesting a Parquet table: streamed by row group, against read whole.

``python -m benchmarks.parquet_memory`` writes a Parquet table of about 60 MB (``--rows``
rows of 64 float64 features, an ID and a label; row groups of 10,000 rows), and one twice
that size, then ingests each into a fresh store, each time in a fresh child process
(``--repeats`` times, the median kept): once as training does now
(``sisa.data.parquet``: the index columns, then the features a batch at a time), and once
as it did before, the table read whole by pandas and handed over in memory. Each child
reports its peak resident memory (``VmHWM``, ``sisa.training.jobs.peak_rss_bytes``: unlike
``ru_maxrss`` it does not inherit the parent's peak) and its resident memory after the
imports, before reading; the ingest's own share is the difference.

Not part of ``python -m benchmarks run``: it measures memory, not time, on one size, and
a few hundred MB (where the difference matters most) is too large for CI. The result is
committed as ``docs/benchmarks/parquet-memory.md``.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, child_main, git_commit, run_child, write_results

FEATURES, ROW_GROUP = 64, 10_000
MODES = ("streamed", "whole")


def write_table(path: Path, rows: int) -> int:
    """The table (seeded random features), written row group by row group; its bytes."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    names = ["id", "label", *(f"f{j}" for j in range(FEATURES))]
    writer = None
    for start in range(0, rows, ROW_GROUP):
        m = min(ROW_GROUP, rows - start)
        columns = [np.arange(start, start + m), rng.integers(0, 10, m)]
        columns += list(rng.standard_normal((FEATURES, m)))
        batch = pa.table(dict(zip(names, columns, strict=True)))
        writer = writer or pq.ParquetWriter(path, batch.schema)
        writer.write_table(batch, row_group_size=ROW_GROUP)
    assert writer is not None
    writer.close()
    return path.stat().st_size


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """One ingest of ``spec["path"]`` into a fresh store, in this (fresh) process."""
    import pandas  # noqa: F401  # the imports both modes pay, before the baseline
    import pyarrow.parquet  # noqa: F401

    from sisa.config import build_config
    from sisa.training.ingest import IngestJob, run_ingest_job
    from sisa.training.jobs import peak_rss_bytes

    config = build_config({}, {"data.source": spec["path"], "sisa.shards": 4})
    baseline = peak_rss_bytes()
    started = time.perf_counter()
    dataset = None
    if spec["mode"] == "whole":  # as before streaming: pandas reads it, then it is ingested
        from sisa.data.loaders import load_file

        dataset = load_file(spec["path"], data=config.data)
    with tempfile.TemporaryDirectory() as tmp:
        job = IngestJob(url=tmp, storage_options={}, config=config.stored(), dataset=dataset)
        ingested = run_ingest_job(job, lambda *_: None)
    return {
        "baseline_bytes": baseline,
        "peak_bytes": peak_rss_bytes(),
        "seconds": time.perf_counter() - started,
        "points": ingested.n_train + ingested.n_test,
    }


def measure(rows: int, repeats: int) -> dict[str, Any]:
    """Both readings of one table, ``repeats`` times each (fresh processes, alternating);
    the median run of each by its ingest's own memory."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "table.parquet"
        size = write_table(path, rows)
        runs: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
        for _ in range(repeats):
            for m in MODES:
                spec = {"path": str(path), "mode": m}
                runs[m].append(run_child("benchmarks.parquet_memory", spec, f"{m} ingest"))
    for r in (r for mode in runs.values() for r in mode):
        r["own_bytes"] = r["peak_bytes"] - r["baseline_bytes"]
    median = {m: sorted(rs, key=lambda r: r["own_bytes"])[len(rs) // 2] for m, rs in runs.items()}
    return {
        "rows": rows,
        "file_bytes": size,
        "median": median,
        "runs": runs,
        "own_ratio": median["streamed"]["own_bytes"] / median["whole"]["own_bytes"],
        "peak_ratio": median["streamed"]["peak_bytes"] / median["whole"]["peak_bytes"],
    }


def render(result: dict[str, Any]) -> str:
    mb = 1 << 20
    m, tables = result["machine"], result["tables"]
    lines = [
        "# Parquet ingest: peak memory, streamed by row group vs read whole",
        "",
        f"Command: `{result['command']}` ({result['seconds']:.0f} s, {result['date']})",
        "",
        f"Commit: `{result['commit']}`",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['platform']}, Python {m['python']}",
        "",
        f"Parquet tables of {FEATURES} float64 features, an ID and a label (row groups of "
        f"{ROW_GROUP:,} rows), each ingested into a fresh local store (4 shards) by "
        "`run_ingest_job` in a fresh process; peak resident memory is `VmHWM`, and the "
        "ingest's own is the peak less the memory after the imports. Each row is the median "
        f"of {result['repeats']} runs by the ingest's own memory.",
        "",
        "| rows | on disk (MB) | reading | peak RSS (MB) | after imports (MB) | ingest's own "
        "(MB) | seconds |",
        "|---:|---:|---|---:|---:|---:|---:|",
    ]
    for t in tables:
        for mode in MODES:
            r = t["median"][mode]
            lines.append(
                f"| {t['rows']:,} | {t['file_bytes'] / mb:.0f} | {mode} | "
                f"{r['peak_bytes'] / mb:.0f} | {r['baseline_bytes'] / mb:.0f} | "
                f"{r['own_bytes'] / mb:.0f} | {r['seconds']:.1f} |"
            )
    first, last = tables[0], tables[-1]
    grew = {
        mode: last["median"][mode]["own_bytes"] / first["median"][mode]["own_bytes"]
        for mode in MODES
    }
    lines += [
        "",
        f"At {first['file_bytes'] / mb:.0f} MB, streamed, the ingest's own memory is "
        f"{first['own_ratio']:.2f}x what reading the table whole takes (peak RSS "
        f"{first['peak_ratio']:.2f}x); at {last['file_bytes'] / mb:.0f} MB, "
        f"{last['own_ratio']:.2f}x ({last['peak_ratio']:.2f}x). From the smaller table to the "
        f"larger, the streamed ingest's own memory grew {grew['streamed']:.2f}x and the whole "
        f"read's {grew['whole']:.2f}x: streamed, the features in flight are one row group "
        "(in batches of `CHUNK_BYTES` of float64 columns), and what grows is the index (IDs, "
        "labels, parts), not the features.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from benchmarks.harness import machine

    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--rows", type=int, nargs="+", default=[100_000, 200_000], help="rows of each table"
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs of each reading")
    parser.add_argument("--out", type=Path, default=ROOT / "docs/benchmarks/parquet-memory.md")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    tables = [measure(rows, args.repeats) for rows in args.rows]
    result = {
        "benchmark": "parquet-memory",
        "command": " ".join(["python -m benchmarks.parquet_memory", *(argv or [])]),
        "commit": git_commit(),
        "machine": machine(),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "seconds": time.perf_counter() - started,
        "repeats": args.repeats,
        "tables": tables,
    }
    text = render(result)
    write_results(args.out, text, result)
    print(text)
    return 0


if __name__ == "__main__":
    if "--child" in sys.argv:
        sys.exit(child_main(child, "one Parquet ingest (internal)"))
    sys.exit(main(sys.argv[1:]))
