"""Serving: ``sisa serve`` (Ray Serve on loopback) called over HTTP.

In the full suite only (``SUITES``): it takes about 7 minutes on 2 cores, and it starts a
Ray cluster of its own, which cannot share a process with another one (such as a test
session's). Its parts: the servers measured beside ``sisa serve``
(``benchmarks.http_servers``, where the uvicorn reference runs in a subprocess), the
clients that load them (``benchmarks.http_load``) and the report
(``benchmarks.serving_report``); this module trains the stores, serves them in turn and
runs the phases.

Two stores are trained into temporary directories: the bundled digits with the default
config (S=5, R=4, MLP [128]) and synthetic Purchase (N=20,000, S=20, R=10, 4 epochs).
Each is served in turn by ``orchestrator.serve.start`` on 127.0.0.1 (a free port, a
token, ``serving.retrain = "background"``) on a local Ray cluster of 2 CPUs, and called
by ``requests.Session`` clients (keep-alive) on the same machine:

* one row: sequential ``POST /predict`` of one test row, labels only and with
  probabilities; client-side latency percentiles. The goal: p99 <= 50 ms. Interleaved
  with them, in blocks, the same body goes to references that show where the time goes:
  the same FastAPI app (``orchestrator.api.build_app``) under plain uvicorn in a
  subprocess, without Ray; a trivial Serve ingress on the same proxy; and one that also
  awaits a constant from a second deployment (one ``DeploymentHandle`` hop). In this
  process: parsing and validating the body, and ``Predictor.predict`` of the row.
* CPU: the CPU time of this process and everything it started (Ray, Serve's proxy and
  replicas, the uvicorn reference) per request, net of what the tree burns idle.
* while retraining: the one-row loop runs in a thread while ``POST /forget`` requests of
  one training ID each, in slice 0 of shard after shard (so the shard retrains from its
  first slice), are sent one at a time; each window lasts from the forget until
  ``GET /requests/{id}`` says ``purged``. Failed predictions, model versions seen,
  answers that ignore an acknowledged forget and answers that differ within one version
  are counted.
* throughput: rows/s for batches of 1, 16, 256 and 4096 rows, labels only, from 1 client
  and from 4 concurrent clients (threads, one session each), over a fixed duration.
  ``serving.max_body_bytes`` is raised to 32 MiB and ``serving.max_rows`` to 4,096 for
  every run, because 4096 Purchase rows are about 12 MiB of JSON (they change nothing
  else).

Request bodies are serialised once before the timed loops, so the client's own JSON
encoding is not part of the figures (decoding the response is). Answers are checked bit
for bit against an in-process ``Predictor`` first.
"""

from __future__ import annotations

import secrets
import tempfile
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import requests
import torch

from benchmarks.common import Others, load_average
from benchmarks.http_load import (
    JSON,
    body_of,
    check_answers,
    idle_cores,
    in_process_floors,
    one_row,
    throughput,
    while_retraining,
)
from benchmarks.http_servers import LIMITS, MAX_ROWS, Constant, Echo, serve_cluster, start_plain
from benchmarks.report import Report, ms
from benchmarks.serving_report import reading, render
from benchmarks.stores import train_store
from sisa.config import build_config
from sisa.serving.predictor import Predictor
from sisa.store.artifacts import SisaStore
from sisa.store.layout import TEST_PREFIX

GOAL_S = 0.050  # the project's goal: p99 of a one-row prediction
BATCHES = (1, 16, 256, MAX_ROWS)  # rows per request in the throughput phase
CLIENTS = (1, 4)
DIGITS: dict[str, Any] = {"data.source": "digits"}  # the embedded default: S=5, R=4, e=20
PURCHASE: dict[str, Any] = {
    "data.source": "synthetic-purchase",
    "data.n": 20_000,
    "sisa.shards": 20,
    "sisa.slices": 10,
    "sisa.epochs": 4,
}
SUITES = ("full",)


@dataclass(frozen=True)
class Sizes:
    stores: dict[str, dict[str, Any]]  # name -> overrides
    requests: int  # one-row requests per target (the references get half)
    warmup: int  # requests per target before the timed ones
    block: int  # one-row requests per target per interleaved round
    duration_s: float  # per throughput cell
    retrain_max_s: float  # the while-retraining phase stops after this much


SIZES = {"full": Sizes({"digits": DIGITS, "purchase": PURCHASE}, 1000, 50, 100, 3.0, 75.0)}


def versions() -> dict[str, Any]:
    """What the harness's machine facts leave out and the serving stack's speed depends on."""
    ram = 0.0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = int(line.split()[1]) / 2**20
    except OSError:
        pass
    versions = {}
    for pkg in ("torch", "ray", "fastapi", "starlette", "pydantic", "uvicorn", "requests"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = "missing"
    return {
        "ram_gib": round(ram, 1),
        "numpy": np.__version__,
        "client_torch_threads": torch.get_num_threads(),
        **versions,
    }


def bench_store(name: str, url: str, port: int, token: str, sizes: Sizes) -> dict[str, Any]:
    from orchestrator.serve import start

    settings = build_config(
        {},
        {
            "serving.port": port,
            "serving.token": token,
            "serving.retrain": "background",
        }
        | LIMITS,
    ).serving
    store = SisaStore(url)
    test_x = store.read_data(store.latest_head(TEST_PREFIX).data)["X"]  # type: ignore[union-attr]
    test_x = test_x.reshape(len(test_x), -1).astype(np.float32)
    rows = test_x[:256]
    t0 = time.perf_counter()
    server = start(url, None, settings, name=f"sisa-{name}", route_prefix="/")
    start_s = time.perf_counter() - t0
    base = server.url
    predictor = Predictor(url)
    print(f"[{name}] serving at {base} (started in {start_s:.1f} s)", flush=True)
    result: dict[str, Any] = {
        "start_s": start_s,
        "settings": settings.model_dump(mode="json"),
        "checked": check_answers(base, predictor, rows[:64]),
    }
    cfg = store.config()
    result["store"] = {
        "n_train": int(store.require_trained()["n_train"]),
        "n_test": len(test_x),
        "shards": cfg.sisa.shards,
        "slices": cfg.sisa.slices,
        "features": int(test_x.shape[1]),
        "classes": int(predictor.snapshot.ensemble.num_classes),
        "hidden": list(cfg.model.hidden),
        "threads": cfg.resources.threads,
    }
    labels = [body_of(rows[i : i + 1]) for i in range(len(rows))]
    probs = [body_of(rows[i : i + 1], True) for i in range(len(rows))]
    plain, plain_base = start_plain(url)
    others: dict[str, float] = {}
    try:
        result["idle_cores"] = idle_cores(3.0)
        n, half = sizes.requests, sizes.requests // 2
        with Others() as o:
            result["one_row"] = one_row(
                {
                    "labels": (f"{base}/predict", labels, n),
                    "probabilities": (f"{base}/predict", probs, n),
                    "echo": (f"{base}/_echo/predict", labels, half),
                    "hop": (f"{base}/_hop/predict", labels, half),
                    "plain": (f"{plain_base}/predict", labels, half),
                },
                sizes.warmup,
                sizes.block,
            )
        others["one_row"] = o.cores
    finally:
        plain.terminate()
        plain.wait(30)
    for floor in ("echo", "hop", "plain"):
        assert not result["one_row"][floor]["errors"], result["one_row"][floor]["first_errors"]
    result["in_process"] = in_process_floors(rows, predictor, sizes.requests, MAX_ROWS)
    print(
        f"[{name}] one row: "
        + ", ".join(
            f"{k} p50 {ms(v['p50'])} ms p99 {ms(v['p99'])} ms"
            for k, v in (result["one_row"] | result["in_process"]).items()
        ),
        flush=True,
    )
    with Others() as o:
        result["throughput"] = throughput(
            base, test_x, predictor, sizes.duration_s, BATCHES, CLIENTS
        )
    others["throughput"] = o.cores
    with Others() as o:
        result["retraining"] = while_retraining(
            base, url, token, rows, sizes.requests, sizes.retrain_max_s
        )
    others["retraining"] = o.cores
    result["other_work_cores"] = others
    r = result["retraining"]
    print(
        f"[{name}] while retraining: {r['latency']['n']} predictions, p50 "
        f"{r['latency'].get('p50', float('nan')) * 1e3:.1f} ms, p99 "
        f"{r['latency'].get('p99', float('nan')) * 1e3:.1f} ms, {r['failed']} failed, "
        f"{r['versions']} versions, {len(r['forgets'])} forgets",
        flush=True,
    )
    final = Predictor(url)
    with requests.Session() as s:
        served = s.post(f"{base}/predict", data=body_of(rows[:1]), headers=JSON).json()
    result["after"] = {
        "served_version": served["model"]["version"],
        "store_version": final.version,
        "through": served["model"]["through"],
    }
    server.stop()
    return result


def run(suite: str) -> Report:
    from ray import serve

    sizes = SIZES[suite]
    before = load_average()
    token = secrets.token_urlsafe(24)
    results: dict[str, Any] = {}
    train_s: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        urls = {}
        for name, overrides in sizes.stores.items():
            urls[name], train_s[name] = train_store(root, name, overrides)
            print(f"[{name}] trained in {train_s[name]:.1f} s", flush=True)
        with serve_cluster(80) as port:
            serve.run(Echo.bind(), name="bench-echo", route_prefix="/_echo")
            serve.run(Echo.bind(Constant.bind()), name="bench-hop", route_prefix="/_hop")
            for name, url in urls.items():
                results[name] = bench_store(name, url, port, token, sizes)
    figures: dict[str, Any] = {
        "goal_s": GOAL_S,
        "overrides": sizes.stores,
        "train_s": train_s,
        "requests": sizes.requests,
        "warmup": sizes.warmup,
        "block": sizes.block,
        "duration_s": sizes.duration_s,
        "stores": results,
        "versions": versions(),
        "load_average": {"before": before, "after": load_average()},
    }
    figures["reading"] = reading(figures)
    config = asdict(sizes) | {"limits": LIMITS, "batches": BATCHES, "clients": CLIENTS}
    return Report(figures, render(figures, config), config)
