"""Prometheus metrics of a served store and of a deletion follower (``prometheus-client``).

Two kinds, on purpose:

- **The deletion figures are read from the store** at each scrape (``StoreCollector``):
  requests pending and the oldest one's age, the deadline, time to compliance and retrain
  time (histograms over the receipts), samples retrained, the last audit's verdict, and
  the shards served rolled back. So they stay true when ``forget`` or ``process`` ran
  elsewhere, and every replica and follower reports the same values. Receipts never
  change once written, so each is read once per process.
- **Latency is the serving process's own** (``ServingMetrics``): ``sisa_predict_seconds``
  by outcome, and ``sisa_predict_rows_total``.

Nothing here carries an ID: the labels are outcomes, never requests or points.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from orchestrator.bulk import route_path
from sisa.deletion import compliance, receipts
from sisa.evidence.audit import last_audit
from sisa.store.artifacts import SisaStore
from sisa.store.journal import Journal

CONTENT_TYPE = CONTENT_TYPE_LATEST
# seconds: from a fraction of a second (a forget in process) to days (a batch window)
DELETION_BUCKETS = (0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400)
PREDICT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)


def _histogram(name: str, doc: str, values: list[float]) -> HistogramMetricFamily:
    """A histogram family of ``values`` over ``DELETION_BUCKETS``."""
    buckets, total = [], 0
    for bound in DELETION_BUCKETS:
        total = sum(1 for v in values if v <= bound)
        buckets.append((repr(float(bound)), total))
    buckets.append(("+Inf", len(values)))
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=float(sum(values)))


class StoreCollector(Collector):
    """The deletion figures of one store, read from it at each scrape."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        self.url, self.options = url, storage_options
        self._receipts: dict[int, tuple[float, int, float, int]] = {}
        self._lock = threading.Lock()  # scrapes may come in parallel

    def _receipt(self, store: SisaStore, seq: int) -> tuple[float, int, float, int]:
        """(time to compliance, batch through, batch compute seconds, batch samples)."""
        if seq not in self._receipts:
            body = receipts.read(store, seq)
            actual = body.get("batch", {}).get("actual", {})
            self._receipts[seq] = (
                max(0.0, float(body["compliant_at"]) - float(body["accepted_at"])),
                int(body.get("batch", {}).get("through", seq)),
                float(actual.get("compute_seconds", 0.0)),
                int(actual.get("samples", 0)),
            )
        return self._receipts[seq]

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            yield from self._collect()

    def _collect(self) -> Iterator[Metric]:
        store = SisaStore(self.url, self.options)
        config = store.config()
        journal = Journal(store)
        now = time.time()
        pending = journal.open_requests()
        oldest = max((now - r.accepted_at for r in pending), default=0.0)
        yield GaugeMetricFamily(
            "sisa_requests_pending", "Deletion requests journaled and not yet purged.",
            value=len(pending),
        )  # fmt: skip
        yield GaugeMetricFamily(
            "sisa_oldest_pending_seconds",
            "Age of the oldest pending deletion request (0 when none is pending).",
            value=oldest,
        )
        yield GaugeMetricFamily(
            "sisa_deadline_seconds",
            "The store's deadline from acceptance to purge (deletion.deadline_s).",
            value=config.deletion.deadline_s,
        )
        done = [self._receipt(store, seq) for seq in journal.receipted()]
        batches = {through: (seconds, samples) for _, through, seconds, samples in done}
        yield _histogram(
            "sisa_time_to_compliance_seconds",
            "From a request's acceptance until predictions no longer used its points.",
            [r[0] for r in done],
        )
        yield _histogram(
            "sisa_retrain_seconds",
            "Compute time of each processed batch's retraining, summed over its shard jobs.",
            [seconds for seconds, _ in batches.values()],
        )
        samples = CounterMetricFamily(
            "sisa_samples_retrained", "Samples trained by deletion batches (sample-steps)."
        )
        samples.add_metric([], sum(n for _, n in batches.values()))
        yield samples
        audit = last_audit(store)
        yield GaugeMetricFamily(
            "sisa_audit_ok",
            "1 if the store's last recorded audit passed, 0 if it failed or none is recorded.",
            value=1 if audit is not None and audit["ok"] else 0,
        )
        yield GaugeMetricFamily(
            "sisa_audit_timestamp_seconds",
            "When the last recorded audit ran (0: never).",
            value=0 if audit is None else float(audit["at"]),
        )
        state = compliance.current(store)
        slices = config.sisa.slices
        yield GaugeMetricFamily(
            "sisa_serving_rolled_back_shards",
            "Shards served from an earlier checkpoint, or left out, while a request is open.",
            value=sum(1 for s in state.shards.values() if s.stage < slices),
        )


class ServingMetrics:
    """The registry of one serving process: its own latency and rows, and the store's
    deletion figures."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        self.registry = CollectorRegistry()
        self.predict_seconds = Histogram(
            "sisa_predict_seconds",
            "Time to answer POST /predict, by outcome (ok, rejected: 4xx, failed: 5xx).",
            ["outcome"],
            buckets=PREDICT_BUCKETS,
            registry=self.registry,
        )
        self.predict_rows = Counter(
            "sisa_predict_rows", "Rows answered by POST /predict.", registry=self.registry
        )
        self.registry.register(StoreCollector(url, storage_options))

    def observe(self, seconds: float, status: int, rows: int) -> None:
        outcome = "ok" if status < 400 else "rejected" if status < 500 else "failed"
        self.predict_seconds.labels(outcome).observe(seconds)
        if status < 400:
            self.predict_rows.inc(rows)

    def text(self) -> bytes:
        return generate_latest(self.registry)


class PredictTimer:
    """ASGI middleware: times every ``POST /predict`` to its answer, whatever answers it
    (the endpoint, a validation error, the admission gate), and counts the rows of those
    that succeed (the endpoint leaves their number in ``request.state.rows``)."""

    def __init__(self, app: Any, metrics: ServingMetrics, path: str = "/predict") -> None:
        self.app, self.metrics, self.path = app, metrics, path

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or route_path(scope) != self.path:
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), [500]

        async def answered(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, answered)
        finally:
            rows = int(scope.get("state", {}).get("rows", 0))
            self.metrics.observe(time.perf_counter() - started, status[0], rows)


def store_registry(url: str, storage_options: dict[str, Any] | None = None) -> CollectorRegistry:
    """A registry of the store's deletion figures alone (``process --follow``)."""
    registry = CollectorRegistry()
    registry.register(StoreCollector(url, storage_options))
    return registry
