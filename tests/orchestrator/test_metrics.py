"""Prometheus metrics: the store's deletion figures, read from the store at each scrape,
and the serving process's own latency, read back with ``prometheus_client``'s parser
from a real server on loopback and from ``process --follow --metrics-port``."""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from orchestrator.metrics import ServingMetrics, store_registry
from sisa.deletion.accept import accept
from sisa.deletion.batch import process
from sisa.evidence.audit import audit
from sisa.store.artifacts import SisaStore
from tests.orchestrator.local_app import InProcessBackend, following, serving
from tests.sisa.deletion.test_batch import pick

ROOT = Path(__file__).resolve().parents[2]


def samples(text: str) -> dict[str, float]:
    """Every sample of a metrics page: ``name{label="v"}`` -> value."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def scrape(url: str) -> dict[str, float]:
    return samples(generate_latest(store_registry(url)).decode())


def test_the_deletion_figures_are_read_from_the_store(url):
    config = SisaStore(url).config()
    idle = scrape(url)
    assert idle["sisa_requests_pending"] == 0 and idle["sisa_oldest_pending_seconds"] == 0
    assert idle["sisa_deadline_seconds"] == config.deletion.deadline_s
    assert idle["sisa_time_to_compliance_seconds_count"] == 0
    assert idle["sisa_audit_ok"] == 0 and idle["sisa_audit_timestamp_seconds"] == 0
    assert idle["sisa_serving_rolled_back_shards"] == 0
    accept(url, pick(url, 0, 1))
    accept(url, pick(url, 2, 0))  # slice 0: shard 2 is left out until retrained
    time.sleep(0.05)
    pending = scrape(url)
    assert pending["sisa_requests_pending"] == 2
    assert pending["sisa_oldest_pending_seconds"] >= 0.05
    assert pending["sisa_serving_rolled_back_shards"] == 2
    report = process(url)
    audit(url)
    done, again = scrape(url), scrape(url)  # a second scrape reads the receipts it cached
    assert done == again
    assert done["sisa_requests_pending"] == 0 and done["sisa_serving_rolled_back_shards"] == 0
    assert done["sisa_time_to_compliance_seconds_count"] == 2
    assert done['sisa_time_to_compliance_seconds_bucket{le="+Inf"}'] == 2
    assert done["sisa_retrain_seconds_count"] == 1  # one batch
    assert done["sisa_retrain_seconds_sum"] == pytest.approx(report.compute_seconds)
    assert done["sisa_samples_retrained_total"] == report.samples > 0
    assert done["sisa_audit_ok"] == 1 and done["sisa_audit_timestamp_seconds"] > 0


def test_every_replica_reports_what_any_process_did(url):
    """Two serving processes, and a forget run elsewhere in between: both see it."""
    first, second = ServingMetrics(url), ServingMetrics(url)
    accept(url, pick(url, 1, 2))
    a, b = samples(first.text().decode()), samples(second.text().decode())
    assert a["sisa_requests_pending"] == b["sisa_requests_pending"] == 1


@pytest.fixture
def server(url):
    """The real app on 127.0.0.1, with metrics, over an in-process backend."""
    from orchestrator.api import build_app
    from sisa.config import ServingConfig

    backend = InProcessBackend(url)
    app = build_app(backend, ServingConfig(), None, metrics=ServingMetrics(url))
    with serving(app) as base:
        yield base, backend


def test_the_server_times_every_prediction_by_outcome_and_counts_rows(server, url):
    base, backend = server
    width = int(np.prod(backend.input_shape))
    rows = np.zeros((3, width)).tolist()
    assert requests.post(f"{base}/predict", json={"rows": rows}, timeout=30).status_code == 200
    assert requests.post(f"{base}/predict", json={"rows": rows[:1]}, timeout=30).ok
    bad = requests.post(f"{base}/predict", json={"rows": [[0.0]]}, timeout=30)  # too narrow
    assert bad.status_code == 422
    accept(url, pick(url, 0, 0))  # by another process: the page shows it
    page = requests.get(f"{base}/metrics", timeout=30)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/plain")
    got = samples(page.text)
    assert got['sisa_predict_seconds_count{outcome="ok"}'] == 2
    assert got['sisa_predict_seconds_count{outcome="rejected"}'] == 1
    assert got.get('sisa_predict_seconds_count{outcome="failed"}', 0) == 0
    assert got["sisa_predict_rows_total"] == 4  # rows of the answered requests only
    assert got["sisa_requests_pending"] == 1 and got["sisa_serving_rolled_back_shards"] == 1
    assert not re.search(r"\bid=|request=", page.text)  # outcomes are the only labels


@pytest.mark.slow  # a follower in a process of its own
def test_process_follow_serves_the_deletion_metrics_on_loopback(url):
    with following(url, "--window", "0.1", "--metrics-port", "0") as follow:
        line = follow.stderr.readline()
        match = re.search(r"metrics on http://(127\.0\.0\.1):(\d+)/metrics", line)
        assert match, line + follow.stderr.read() if follow.poll() is not None else line
        page = f"http://127.0.0.1:{match.group(2)}/metrics"
        accept(url, pick(url, 1, 1))
        deadline = time.monotonic() + 120
        while True:  # the follower processes it; the figures follow the store
            got = samples(requests.get(page, timeout=30).text)
            if got["sisa_time_to_compliance_seconds_count"] == 1:
                break
            assert time.monotonic() < deadline, got
            time.sleep(0.2)
        assert got["sisa_requests_pending"] == 0 and got["sisa_samples_retrained_total"] > 0


def test_metrics_port_goes_with_follow(url, capsys):
    from orchestrator.cli import main

    assert main(["process", "--store", url, "--metrics-port", "9"]) == 2
    assert "--metrics-port apply to --follow" in capsys.readouterr().err


def test_without_metrics_the_server_serves_no_metrics_page(url):
    """An app built without metrics (the ingress under ``serving.metrics = false``)."""
    from orchestrator.api import build_app
    from sisa.config import ServingConfig

    app = build_app(InProcessBackend(url), ServingConfig(metrics=False), None)
    with serving(app) as base:
        assert requests.get(f"{base}/metrics", timeout=30).status_code == 404
