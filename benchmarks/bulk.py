"""Bulk predictions: rows/s of ``POST /predict`` with npy and Arrow bodies against JSON
and against the ensemble's own in-process rate; and what the metrics cost one row.

In the full suite only: it starts a Ray cluster of its own (as ``benchmarks.serving``).
Synthetic Purchase (N=20,000, S=20, R=10, 4 epochs; 600 features, 100 classes) is served
by ``orchestrator.serve.start`` on 127.0.0.1 on a local Ray cluster of 2 CPUs, twice: with
``serving.metrics`` on (the default) and off. One ``requests.Session`` client (keep-alive)
on the same machine:

* throughput: 4,096-row batches, labels only, for a fixed duration per format: a JSON body
  answered in JSON, an npy body answered in npy, an Arrow IPC body answered in Arrow. The
  client decodes each answer. Against it: ``Predictor.predict`` of the same batch in this
  process, for the same duration. Bodies are serialised once, before the timed loops.
  The goal: binary bodies at 80% of the in-process rate or more.
* metrics: one-row ``POST /predict`` p50 and p99 on the server with metrics and on the one
  without, interleaved in blocks so both see the same machine. The goal: within noise.
"""

from __future__ import annotations

import io
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import requests

from benchmarks.common import load_average
from benchmarks.http_load import JSON as JSON_HEADERS
from benchmarks.http_load import body_of
from benchmarks.http_servers import LIMITS, MAX_ROWS, serve_cluster
from benchmarks.report import Report, markdown_table, ms, percentiles, times
from benchmarks.serving import PURCHASE as SERVED_PURCHASE
from benchmarks.stores import train_store
from orchestrator.bulk import ARROW, NPY
from sisa.config import build_config
from sisa.serving.predictor import Predictor
from sisa.store.artifacts import SisaStore
from sisa.store.layout import TEST_PREFIX

SUITES = ("full",)
PURCHASE = SERVED_PURCHASE  # the serving benchmark's store
GOAL = 0.80  # binary bodies at this share of the in-process rate, or more
DURATION_S = 10.0  # per throughput cell
ONE_ROW = 1_500  # one-row requests per server, in blocks of BLOCK
BLOCK = 100


def _npy(rows: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, rows, allow_pickle=False)
    return buffer.getvalue()


def _arrow(rows: np.ndarray) -> bytes:
    column = pa.FixedSizeListArray.from_arrays(pa.array(rows.reshape(-1)), rows.shape[1])
    table = pa.table({"x": column})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _decoders() -> dict[str, Any]:
    return {
        "json": lambda r: r.json()["labels"],
        "npy": lambda r: np.load(io.BytesIO(r.content), allow_pickle=False),
        "arrow": lambda r: pa.ipc.open_stream(pa.BufferReader(r.content)).read_all(),
    }


def _rate(call: Any, rows: int, duration: float) -> dict[str, Any]:
    """Calls of ``call`` for ``duration`` seconds (after 3 to warm up): rows/s."""
    for _ in range(3):
        call()
    count, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < duration:
        call()
        count += 1
    return {"requests": count, "seconds": elapsed, "rows_per_s": count * rows / elapsed}


def throughput(base: str, app: str, rows: np.ndarray, predictor: Predictor) -> dict[str, Any]:
    binary = rows.astype(np.uint8)  # Purchase's features are 0 or 1: the data's own dtype
    assert np.array_equal(binary, rows)
    bodies = {
        "json": (body_of(rows), JSON_HEADERS),
        "npy": (_npy(rows), {"Content-Type": NPY, "Accept": NPY}),
        "arrow": (_arrow(rows), {"Content-Type": ARROW, "Accept": ARROW}),
        "npy_uint8": (_npy(binary), {"Content-Type": NPY, "Accept": NPY}),
        "arrow_uint8": (_arrow(binary), {"Content-Type": ARROW, "Accept": ARROW}),
    }
    decode = _decoders()
    expected = predictor.predict(rows).labels
    out: dict[str, Any] = {}
    with requests.Session() as session:
        for kind, (body, headers) in bodies.items():
            answer = session.post(f"{base}/predict", data=body, headers=headers, timeout=300)
            assert answer.status_code == 200, answer.text[:300]
            got = decode[kind.split("_")[0]](answer)
            labels = got.column("label").to_numpy() if "arrow" in kind else np.asarray(got)
            assert np.array_equal(labels, expected), f"{kind}: answers differ in process"

            def call(body: bytes = body, headers: dict = headers, kind: str = kind) -> None:
                r = session.post(f"{base}/predict", data=body, headers=headers, timeout=300)
                r.raise_for_status()
                decode[kind.split("_")[0]](r)

            out[kind] = _rate(call, len(rows), DURATION_S)
            print(f"[bulk] {kind}: {out[kind]['rows_per_s']:,.0f} rows/s", flush=True)
    for kind in ("json", "npy", "arrow"):  # two clients: one's transfer beside the other's compute
        body, headers = bodies[kind]
        out[f"{kind}_2"] = _concurrent(base, body, headers, decode[kind], len(rows), 2)
        print(f"[bulk] {kind}, 2 clients: {out[f'{kind}_2']['rows_per_s']:,.0f} rows/s", flush=True)
    # the ensemble replica alone, through a Serve handle: what is left once HTTP, Serve's
    # proxy and the ingress are gone (the rows still cross Ray's object store)
    from ray import serve

    handle = serve.get_deployment_handle("ensemble", app)
    out["handle"] = _rate(
        lambda: handle.predict.remote(rows, False, 0).result(), len(rows), DURATION_S
    )
    print(f"[bulk] ensemble handle: {out['handle']['rows_per_s']:,.0f} rows/s", flush=True)
    out["in_process"] = _rate(lambda: predictor.predict(rows), len(rows), DURATION_S)
    print(f"[bulk] in process: {out['in_process']['rows_per_s']:,.0f} rows/s", flush=True)
    return out


def _concurrent(
    base: str, body: bytes, headers: dict, decode: Any, rows: int, clients: int
) -> dict[str, Any]:
    """``clients`` threads, a session each, posting ``body`` for ``DURATION_S``: rows/s."""
    import threading

    counts = [0] * clients
    stop = threading.Event()

    def client(i: int) -> None:
        with requests.Session() as session:
            while not stop.is_set():
                r = session.post(f"{base}/predict", data=body, headers=headers, timeout=300)
                r.raise_for_status()
                decode(r)
                counts[i] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(DURATION_S)
    stop.set()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    return {"requests": sum(counts), "seconds": elapsed, "rows_per_s": sum(counts) * rows / elapsed}


def one_row(urls: dict[str, str], row: np.ndarray) -> dict[str, Any]:
    """One-row latencies of each server, interleaved in blocks."""
    body = body_of(row)
    seconds: dict[str, list[float]] = {name: [] for name in urls}
    with requests.Session() as session:
        for url in urls.values():  # warm up
            for _ in range(50):
                session.post(url, data=body, headers=JSON_HEADERS, timeout=60).raise_for_status()
        for _ in range(ONE_ROW // BLOCK):
            for name, url in urls.items():
                for _ in range(BLOCK):
                    t0 = time.perf_counter()
                    session.post(url, data=body, headers=JSON_HEADERS, timeout=60).json()
                    seconds[name].append(time.perf_counter() - t0)
    return {name: percentiles(s) for name, s in seconds.items()}


def run(suite: str) -> Report:
    from orchestrator.serve import start

    before = load_average()
    with tempfile.TemporaryDirectory() as tmp:
        url, train_s = train_store(Path(tmp), "purchase", PURCHASE)
        store = SisaStore(url)
        test_x = store.read_data(store.latest_head(TEST_PREFIX).data)["X"]  # type: ignore[union-attr]
        test_x = test_x.reshape(len(test_x), -1).astype(np.float32)
        rows = np.resize(test_x, (MAX_ROWS, test_x.shape[1]))  # [4096, 600]
        predictor = Predictor(url)
        with serve_cluster(160) as port:
            servers = {}
            for name, on in (("metrics on", True), ("metrics off", False)):
                settings = build_config(
                    {},
                    {"serving.port": port, "serving.retrain": "external", "serving.metrics": on}
                    | LIMITS,
                ).serving
                prefix = "/on" if on else "/off"
                servers[name] = start(
                    url, None, settings, name=f"bulk-{prefix[1:]}", route_prefix=prefix
                )
            base = servers["metrics on"].url
            bulk = throughput(base, "bulk-on", rows, predictor)
            latency = one_row({n: f"{s.url}/predict" for n, s in servers.items()}, rows[:1])
            metrics_page = requests.get(f"{base}/metrics", timeout=60).text
    figures = {
        "store": PURCHASE | {"train_s": train_s, "features": int(rows.shape[1])},
        "batch": MAX_ROWS,
        "duration_s": DURATION_S,
        "throughput": bulk,
        "one_row": latency,
        "metrics_exposed": "sisa_predict_seconds" in metrics_page,
        "goal": GOAL,
        "load_average": {"before": before, "after": load_average()},
    }
    ip = bulk["in_process"]["rows_per_s"]
    kinds = ("json", "npy", "arrow", "npy_uint8", "arrow_uint8", "json_2", "npy_2", "arrow_2")
    figures["ratios"] = {k: bulk[k]["rows_per_s"] / ip for k in (*kinds, "handle")}
    figures["verdicts"] = {k: figures["ratios"][k] >= GOAL for k in kinds[1:]}
    return Report(figures, markdown(figures), {"suite": suite})


def markdown(f: dict[str, Any]) -> str:
    t, r = f["throughput"], f["ratios"]
    rows = [
        [label, f"{t[k]['rows_per_s']:,.0f}", str(t[k]["requests"]), times(r.get(k, 1.0))]
        for k, label in (
            ("json", "JSON body, JSON answer"),
            ("npy", "npy body (float32), npy answer"),
            ("arrow", "Arrow IPC body (float32), Arrow answer"),
            ("npy_uint8", "npy body (uint8, the data's own 0/1), npy answer"),
            ("arrow_uint8", "Arrow IPC body (uint8), Arrow answer"),
            ("json_2", "JSON, 2 clients"),
            ("npy_2", "npy (float32), 2 clients"),
            ("arrow_2", "Arrow (float32), 2 clients"),
            ("handle", "the ensemble replica through a Serve handle (no HTTP)"),
            ("in_process", "`Predictor.predict` in process"),
        )
    ]  # fmt: skip
    table = markdown_table(("4,096-row batches", "rows/s", "requests", "of in process"), rows)
    lat = f["one_row"]
    latency = markdown_table(
        ("one row, JSON", "p50 ms", "p99 ms", "requests"),
        [[name, ms(v["p50"], 2), ms(v["p99"], 2), str(v["n"])] for name, v in lat.items()],
    )
    on, off = lat["metrics on"], lat["metrics off"]
    verdict = {True: "met", False: "**not met**"}
    la, lb = f["load_average"]["after"][0], f["load_average"]["before"][0]
    return "\n\n".join(
        [
            f"Synthetic Purchase, N = 20,000, S = 20, R = 10, {f['store']['features']} features, "
            "served by `sisa serve` (Ray Serve) on 127.0.0.1 on a local Ray cluster of 2 CPUs, "
            f"one client with keep-alive, {f['duration_s']:g} s per cell. 1-minute load "
            f"average {lb:.2f} at the start, {la:.2f} at the end.",
            "\n".join(table),
            f"Goal: binary bodies at {f['goal']:.0%} of the in-process rate or more. "
            + "; ".join(
                f"{k.replace('_', ' ')}: {verdict[f['verdicts'][k]]} ({times(r[k])})"
                for k in ("npy", "arrow", "npy_uint8", "arrow_uint8", "npy_2", "arrow_2")
            )
            + ". A 4,096-row float32 body is 9.8 MB; the rows then cross Serve's proxy, the "
            "ingress and the ensemble replica, all on the same 2 cores as the client. The "
            f"replica alone, called through its handle, reaches {times(r['handle'])} of the "
            "in-process rate: what one client loses beyond that is HTTP, Serve's proxy and "
            "the ingress; a second client's transfer overlaps the first one's compute.",
            f"Cost of metrics (`serving.metrics`), interleaved in blocks of {BLOCK}:",
            "\n".join(latency),
            f"With metrics / without: p50 {times(on['p50'] / off['p50'])}, p99 "
            f"{times(on['p99'] / off['p99'])}.",
        ]
    )
