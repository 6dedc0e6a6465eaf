"""The serving benchmark's load generator: HTTP clients on this machine, and the same
work in this process, timed.

Clients are ``requests.Session`` objects (keep-alive). Request bodies are serialised
before the timed loops, so the client's own JSON encoding is not part of the figures
(decoding the response is). The phases:

* ``one_row``: sequential one-row POSTs to several targets, interleaved in blocks;
  ``in_process_floors``: parsing a body and ``Predictor.predict`` in this process;
* ``throughput``: rows/s for each batch size from 1 and from several concurrent clients;
* ``while_retraining``: one-row predictions in a thread while forgets, one at a time,
  retrain shards from slice 0, with every answer checked against the forgets
  acknowledged before it was sent.

CPU is that of this process and everything it started (``tree_cpu_s``).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import requests

from benchmarks.common import tree_cpu_s
from benchmarks.report import percentiles
from benchmarks.stores import training_layout
from orchestrator.api_schema import predict_request
from sisa.serving.ensemble import check_features
from sisa.serving.predictor import Predictor
from sisa.store.artifacts import SisaStore

JSON = {"Content-Type": "application/json"}
TIMEOUT = (10, 600)


def body_of(rows: np.ndarray, probabilities: bool = False) -> bytes:
    return json.dumps({"rows": rows.tolist(), "probabilities": probabilities}).encode()


def timed_posts(
    session: requests.Session, url: str, bodies: list[bytes], count: int
) -> tuple[list[float], list[str]]:
    """``count`` sequential POSTs, cycling through ``bodies``: latencies and errors."""
    latencies, errors = [], []
    for i in range(count):
        t0 = time.perf_counter()
        try:
            r = session.post(url, data=bodies[i % len(bodies)], headers=JSON, timeout=TIMEOUT)
            r.json()
            ok = r.status_code == 200
        except (requests.RequestException, ValueError) as err:
            ok, r = False, err
        latencies.append(time.perf_counter() - t0)
        if not ok:
            errors.append(f"{getattr(r, 'status_code', type(r).__name__)}: {str(r)[:200]}")
    return latencies, errors


def in_process(fn: Callable[[], Any], count: int, warmup: int = 20) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(count):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return percentiles(out)


def parser(shape: tuple[int, ...], max_rows: int) -> Callable[[bytes], np.ndarray]:
    """What the ingress does with a /predict body before the ensemble sees it: the body
    validated by the model ``orchestrator.api`` builds for the store, its rows checked."""
    model = predict_request(int(np.prod(shape)), max_rows)

    def parse(body: bytes) -> np.ndarray:
        request = model.model_validate(json.loads(body))
        return check_features(request.rows, shape)  # type: ignore[attr-defined]

    return parse


def check_answers(base: str, predictor: Predictor, rows: np.ndarray) -> dict[str, Any]:
    """HTTP answers equal the in-process Predictor's, bit for bit (asserted)."""
    with requests.Session() as s:
        r = s.post(f"{base}/predict", data=body_of(rows, True), headers=JSON, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    body, expected = r.json(), predictor.predict(rows, probabilities=True)
    assert body["labels"] == expected.labels.tolist()
    got = np.asarray(body["probabilities"], dtype=np.float32)
    np.testing.assert_array_equal(got, expected.probabilities)
    assert body["model"]["version"] == expected.version
    return {"rows": len(rows), "version": expected.version}


def idle_cores(seconds: float) -> float:
    """CPU of this process tree while nobody sends requests, in cores (CPU s per s):
    Serve's controller and replicas, the ensemble's and retrainer's store polls, Ray."""
    c0, t0 = tree_cpu_s(), time.perf_counter()
    time.sleep(seconds)
    return (tree_cpu_s() - c0) / (time.perf_counter() - t0)


def one_row(
    targets: dict[str, tuple[str, list[bytes], int]], warmup: int, block: int
) -> dict[str, Any]:
    """Sequential one-row POSTs to every target, interleaved in blocks round after round
    (so drifting load on the machine spreads over all targets alike); each target is
    (URL, bodies, requests)."""
    latencies: dict[str, list[float]] = {name: [] for name in targets}
    errors: dict[str, list[str]] = {name: [] for name in targets}
    cpu, wall = dict.fromkeys(targets, 0.0), dict.fromkeys(targets, 0.0)
    with requests.Session() as s:
        for url, bodies, _ in targets.values():
            timed_posts(s, url, bodies, warmup)
        while any(len(latencies[n]) < t[2] for n, t in targets.items()):
            for name, (url, bodies, count) in targets.items():
                todo = min(block, count - len(latencies[name]))
                if todo <= 0:
                    continue
                c0, t0 = tree_cpu_s(), time.perf_counter()
                got, failed = timed_posts(s, url, bodies, todo)
                cpu[name] += tree_cpu_s() - c0
                wall[name] += time.perf_counter() - t0
                latencies[name] += got
                errors[name] += failed
    return {
        name: percentiles(latencies[name])
        | {
            "errors": len(errors[name]),
            "first_errors": errors[name][:3],
            "cpu_s": cpu[name],
            "wall_s": wall[name],
            "cpu_per_request_s": cpu[name] / max(len(latencies[name]), 1),
        }
        for name in targets
    }


def in_process_floors(
    rows: np.ndarray, predictor: Predictor, count: int, max_rows: int
) -> dict[str, Any]:
    parse = parser(predictor.snapshot.ensemble.input_shape, max_rows)
    body, x = body_of(rows[:1]), rows[:1]
    return {
        "parse": in_process(lambda: parse(body), count),
        "predict_labels": in_process(lambda: predictor.predict(x), count),
        "predict_probabilities": in_process(
            lambda: predictor.predict(x, probabilities=True), count
        ),
    }


def throughput_cell(url: str, body: bytes, n: int, clients: int, duration: float) -> dict:
    """``clients`` threads, each with its own session, posting ``body`` until
    ``duration`` has passed (at least 2 requests each); rows/s over the wall time."""
    sessions = [requests.Session() for _ in range(clients)]
    for s in sessions:  # warm: connection open, the path through Serve taken once
        s.post(url, data=body, headers=JSON, timeout=TIMEOUT).raise_for_status()
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors: list[str] = []
    barrier = threading.Barrier(clients + 1)
    deadline = [0.0]

    def client(i: int) -> None:
        barrier.wait()
        while len(latencies[i]) < 2 or time.perf_counter() < deadline[0]:
            t0 = time.perf_counter()
            try:
                r = sessions[i].post(url, data=body, headers=JSON, timeout=TIMEOUT)
                good = r.status_code == 200 and len(r.json()["labels"]) == n
                if not good:
                    errors.append(f"{r.status_code}: {r.text[:200]}")
            except (requests.RequestException, ValueError, KeyError) as err:
                errors.append(f"{type(err).__name__}: {err}"[:200])
            latencies[i].append(time.perf_counter() - t0)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    cpu0 = tree_cpu_s()
    started = time.perf_counter()
    deadline[0] = started + duration
    barrier.wait()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    cpu = tree_cpu_s() - cpu0
    for s in sessions:
        s.close()
    done = sum(len(x) for x in latencies)
    return {
        "rows": n,
        "clients": clients,
        "requests": done,
        "wall_s": wall,
        "rows_per_s": (done - len(errors)) * n / wall,
        "requests_per_s": done / wall,
        "cpu_s": cpu,
        "cpu_per_request_s": cpu / max(done, 1),
        "latency": percentiles([v for x in latencies for v in x]),
        "errors": len(errors),
        "first_errors": errors[:3],
    }


def throughput(
    base: str,
    test_x: np.ndarray,
    predictor: Predictor,
    duration: float,
    batches: Sequence[int],
    clients: Sequence[int],
) -> list[dict[str, Any]]:
    """Rows/s of each batch size (labels only), from each number of concurrent clients;
    beside them, parsing and predicting such a batch in this process."""
    parse = parser(predictor.snapshot.ensemble.input_shape, max(batches))
    out = []
    for n in batches:
        rows = test_x[np.arange(n) % len(test_x)]
        body = body_of(rows)
        repeats = 3 if n >= 1024 else 20
        t_parse = in_process(lambda b=body: parse(b), repeats, 1)["p50"]
        t_pred = in_process(lambda r=rows: predictor.predict(r), repeats, 1)["p50"]
        cell = {
            "rows": n,
            "body_bytes": len(body),
            "in_process_parse_rows_per_s": n / t_parse,
            "in_process_predict_rows_per_s": n / t_pred,
        }
        for c in clients:
            cell[f"c{c}"] = throughput_cell(f"{base}/predict", body, n, c, duration)
        out.append(cell)
        print(
            f"  {n:>5} rows: "
            + ", ".join(
                f"{c} client(s) {cell[f'c{c}']['rows_per_s']:,.0f} rows/s" for c in clients
            ),
            flush=True,
        )
    return out


def first_slice_ids(url: str) -> list[int]:
    """Training IDs in slice 0, shard after shard: the first ID of each shard's first
    slice, then the second of each, and so on."""
    layout, shards = training_layout(url), SisaStore(url).config().sisa.shards
    first = layout.slice == 0
    per_shard = [layout.ids[first & (layout.shard == k)].tolist() for k in range(shards)]
    rounds = min(len(ids) for ids in per_shard)
    return [int(ids[r]) for r in range(rounds) for ids in per_shard]


Record = tuple[float, float, int, str, int, int, tuple[int, ...]]


def while_retraining(
    base: str, url: str, token: str, rows: np.ndarray, target: int, max_s: float
) -> dict[str, Any]:
    """One-row predictions in a thread while forgets, one at a time, retrain shards from
    slice 0; each window lasts from a forget until its request is purged."""
    bodies = [body_of(rows[i : i + 1]) for i in range(len(rows))]
    records: list[Record] = []  # sent, latency, status, version, through, row, labels
    errors: list[str] = []
    stop = threading.Event()

    def loop() -> None:
        with requests.Session() as s:
            i = 0
            while not stop.is_set():
                row = i % len(bodies)
                sent = time.perf_counter()
                try:
                    r = s.post(f"{base}/predict", data=bodies[row], headers=JSON, timeout=TIMEOUT)
                    latency = time.perf_counter() - sent
                    if r.status_code == 200:
                        body = r.json()
                        version, through = body["model"]["version"], body["model"]["through"]
                        labels = tuple(body["labels"])
                        records.append((sent, latency, 200, version, through, row, labels))
                    else:
                        records.append((sent, latency, r.status_code, "", -1, row, ()))
                        errors.append(f"{r.status_code}: {r.text[:200]}")
                except requests.RequestException as err:
                    records.append((sent, time.perf_counter() - sent, 0, "", -1, row, ()))
                    errors.append(f"{type(err).__name__}: {err}"[:200])
                i += 1

    def inside(f: dict[str, Any]) -> list[Record]:
        return [x for x in list(records) if f["sent"] <= x[0] <= f["purged"]]

    forgets: list[dict[str, Any]] = []
    auth = {"Authorization": f"Bearer {token}"}
    worker = threading.Thread(target=loop)
    worker.start()
    started = time.perf_counter()
    time.sleep(0.5)  # the loop is warm before the first forget
    with requests.Session() as s:
        for victim in first_slice_ids(url):
            sent = time.perf_counter()
            r = s.post(f"{base}/forget", json={"ids": [victim]}, headers=auth, timeout=TIMEOUT)
            answered = time.perf_counter()
            if r.status_code != 202:
                forgets.append({"id": victim, "status": r.status_code, "text": r.text[:300]})
                break
            accepted = r.json()
            rid, state = accepted["request_id"], accepted["state"]
            while state != "purged" and time.perf_counter() - answered < 300:
                time.sleep(0.2)
                state = s.get(f"{base}/requests/{rid}", timeout=TIMEOUT).json()["state"]
            forgets.append(
                {
                    "id": victim,
                    "request_id": rid,
                    "seq": int(rid[1:10]),
                    "status": r.status_code,
                    "rolled_back": accepted["rolled_back"],
                    "forget_call_s": answered - sent,
                    "compliance_ms": accepted["compliance_ms"],
                    "sent": sent,
                    "answered": answered,
                    "purged": time.perf_counter(),
                    "final_state": state,
                }
            )
            forgets[-1]["window_s"] = forgets[-1]["purged"] - sent
            if state != "purged":
                break
            measured = sum(len(inside(f)) for f in forgets)
            if measured >= target or time.perf_counter() - started > max_s:
                break
    time.sleep(0.3)
    stop.set()
    worker.join()
    in_windows: list[Record] = []
    in_call: list[float] = []  # latencies of predictions sent while a forget call was open
    violations, per_window = 0, []
    for f in forgets:
        if "purged" not in f:
            continue
        mine = inside(f)
        in_windows += mine
        in_call += [x[1] for x in mine if x[0] <= f["answered"]]
        # a prediction sent after the 202 arrived must honour the request
        violations += sum(1 for x in mine if x[0] > f["answered"] and 0 <= x[4] < f["seq"])
        per_window.append(
            {
                "request_id": f["request_id"],
                "window_s": f["window_s"],
                "forget_call_s": f["forget_call_s"],
                "predictions": len(mine),
                "versions": len({x[3] for x in mine if x[2] == 200}),
                "p50_s": percentiles([x[1] for x in mine]).get("p50"),
                "p99_s": percentiles([x[1] for x in mine]).get("p99"),
                "max_s": max((x[1] for x in mine), default=None),
            }
        )
    ok = [x for x in records if x[2] == 200]
    answers: dict[tuple[str, int], tuple[int, ...]] = {}
    inconsistent = sum(1 for x in ok if answers.setdefault((x[3], x[5]), x[6]) != x[6])
    return {
        "latency": percentiles([x[1] for x in in_windows]),
        "latency_during_forget_call": percentiles(in_call),
        "latency_after_202": percentiles(
            [x[1] for f in forgets if "purged" in f for x in inside(f) if x[0] > f["answered"]]
        ),
        "failed": sum(1 for x in in_windows if x[2] != 200),
        "failed_total": len(records) - len(ok),
        "predictions_total": len(records),
        "first_errors": errors[:3],
        "versions": len({x[3] for x in in_windows if x[2] == 200}),
        "versions_total": len({x[3] for x in ok}),
        "inconsistent": inconsistent,  # one version, one row, two different answers
        "compliance_violations": violations,
        "forgets": [
            {k: v for k, v in f.items() if k not in ("sent", "answered", "purged")} for f in forgets
        ],
        "windows": per_window,
        "forget_call": percentiles([f["forget_call_s"] for f in forgets if "forget_call_s" in f]),
        "window": percentiles([f["window_s"] for f in forgets if "window_s" in f]),
        "phase_s": time.perf_counter() - started,
    }
