"""The Ray Serve deployments of ``sisa serve``; ``orchestrator.serve`` binds them into one
application:

* ``ensemble``: one deployment holding every shard model in a ``Predictor``. It reserves
  ``serving.num_cpus`` in all, not a CPU per shard, so it fits a two-core machine.
* ``retrainer`` (``serving.retrain = "background"``): the ``DeletionService``, which
  batches accepted requests, retrains, purges, and tells the ensemble when models commit.
* ``api``: the FastAPI ingress (``orchestrator.api``).

How predictions stay available, consistent and compliant while deletions arrive:

1. ``POST /forget`` answers 202 only after ``accept`` committed the compliant serving
   state **and** the ensemble swapped to it. The ingress then passes the highest request
   number it acknowledged with every prediction, and an ensemble replica whose snapshot
   is behind refreshes before predicting: no prediction sent after a 202 uses a point of
   that request, whichever replica answers it.
2. When a retrain commits, the retrainer asks the ensemble to refresh, and it swaps to
   the retrained models; every ``serving.poll_s`` it also looks for states it was not
   told about (requests accepted by ``sisa forget``, batches of ``sisa process``).
3. A refresh builds the next snapshot aside and swaps one reference (``sisa.serving.predictor``),
   so a prediction never sees a half-loaded ensemble, and a failed refresh keeps the
   snapshot in use: swaps never fail a request.

The token never reaches Ray: the ingress is given its SHA-256 and compares digests in
constant time. The ingress guards its slots (``orchestrator.api_guards``): a stalled body
is cut off, one client holds at most ``Limits.per_client`` of them, and ``drain`` lets a
stop answer the requests in flight first (``orchestrator.serve_cluster``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from ray import serve
from ray.serve.handle import DeploymentHandle

from orchestrator import logs
from orchestrator.api import (
    PREDICTION_ERRORS,
    PredictionFailed,
    RejectedRequest,
    accepted_body,
    build_app,
    error_body,
    prediction_body,
    unavailable,
)
from orchestrator.api_guards import Limits
from orchestrator.executors import InProcessExecutor
from orchestrator.logs import EventRelay
from orchestrator.metrics import ServingMetrics
from orchestrator.service import DeletionService
from sisa.config import ServingConfig
from sisa.deletion.accept import UnknownIDError, accept
from sisa.deletion.batch import BatchReport
from sisa.deletion.lifecycle import request_status
from sisa.evidence.overview import overview
from sisa.ids import typed_ids
from sisa.serving.ensemble import served_input_shape
from sisa.serving.predictor import Predictor
from sisa.store.artifacts import SisaStore
from sisa.store.journal import Journal, parse_request_id

log = logging.getLogger(__name__)


def _since(started: float) -> float:
    return round(time.perf_counter() - started, 4)


def _model(version: str, through: int) -> dict[str, Any]:
    return {"version": version, "through": through}


@serve.deployment(name="ensemble")
class EnsembleDeployment:
    """Every shard model of the store, behind one Predictor."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None, settings: dict) -> None:
        cfg = ServingConfig.model_validate(settings)
        self.predictor = Predictor(url, storage_options, output=cfg.output, inference=cfg.inference)
        self.predictor.watch(cfg.poll_s)

    def predict(self, x: np.ndarray, probabilities: bool, at_least: int) -> dict[str, Any]:
        """Labels (and scores) as a JSON body; a known failure as ``{"error": ...}``,
        because exceptions lose their type on the way back through Ray."""
        try:
            if at_least > self.predictor.snapshot.through:
                self.predictor.refresh(at_least)  # behind a request the ingress acknowledged
            out = self.predictor.predict(x, probabilities=probabilities)
        except tuple(PREDICTION_ERRORS) as err:
            return {"error": error_body(err)}
        except Exception as err:  # noqa: BLE001 - the store failed: no compliant answer now
            log.warning("cannot refresh to request %d: %s", at_least, err)
            return {"error": unavailable()}
        return prediction_body(out, arrays=True)  # arrays: fast through Ray

    def refresh(self, at_least: int = 0) -> dict[str, Any]:
        snap = self.predictor.refresh(at_least)
        return _model(snap.version, snap.through)

    def status(self) -> dict[str, Any]:
        return self.predictor.status()

    def __del__(self) -> None:
        self.predictor.close()


@serve.deployment(name="retrainer", ray_actor_options={"num_cpus": 0})
class RetrainerDeployment:
    """Retrains and purges for accepted requests, in the background."""

    def __init__(
        self,
        url: str,
        storage_options: dict[str, Any] | None,
        ensemble: DeploymentHandle,
        events: EventRelay | None = None,
    ) -> None:
        self.ensemble, self.events = ensemble, events
        self.last_error: str | None = None
        self.service = DeletionService(
            url,
            storage_options,
            executor=InProcessExecutor(progress=False),
            on_batch=self._committed,
            on_error=self._failed,
        )
        self.thread, self.stop = self.service.start()

    def _committed(self, report: BatchReport) -> None:
        self.last_error = None
        self._emit(lambda: ("batch", logging.INFO, logs.batch_fields(report)))
        try:
            self.ensemble.refresh.remote().result()  # serve the retrained models now
        except Exception as err:  # noqa: BLE001 - the ensemble's poll will catch up
            log.warning("could not tell the ensemble about batch %s: %s", report.batch, err)

    def _failed(self, err: BaseException) -> None:
        self.last_error = f"{type(err).__name__}: {err}"
        log.warning("deletion batch failed, will retry: %s", err)
        self._emit(lambda: ("batch_failed", logging.WARNING, logs.failure_fields(err)))

    def _emit(self, make: Callable[[], tuple[str, int, dict[str, Any]]]) -> None:
        """Send the event ``make`` builds; nothing here may fail a batch."""
        if self.events is None:
            return
        try:
            name, level, fields = make()
        except Exception as err:  # noqa: BLE001 - a report it could not read: no event
            log.warning("no event for this batch: %r", err)
            return
        self.events.emit_now(name, level, **fields)

    def status(self) -> dict[str, Any]:
        decision = self.service.last_decision
        return {
            "mode": "background",
            "running": self.thread.is_alive(),
            "batches": self.service.completed,
            "last_decision": decision.reason if decision is not None else None,
            "last_error": self.last_error,
        }

    def __del__(self) -> None:
        self.stop.set()


# Every request holds an ingress slot while it waits (on its body, or on the ensemble),
# so there are many: the guards bound what one client holds. The queue behind them stays
# bounded, because Serve's proxy buffers the bodies of queued requests whole.
INGRESS_SLOTS = 256


@serve.deployment(
    name="api",
    ray_actor_options={"num_cpus": 0},
    max_ongoing_requests=INGRESS_SLOTS,
    max_queued_requests=64,
)
@serve.ingress()
class ApiDeployment:
    """The HTTP ingress: the ``Backend`` of ``orchestrator.api.build_app``."""

    def __init__(
        self,
        url: str,
        storage_options: dict[str, Any] | None,
        settings: dict,
        token_sha256: bytes | None,
        ensemble: DeploymentHandle,
        retrainer: DeploymentHandle | None,
        limits: Limits | None = None,
        read_sha256: bytes | None = None,
        events: EventRelay | None = None,
    ) -> None:
        self.url, self.options, self.events = url, storage_options, events
        self.limits = limits or Limits()
        self.settings = ServingConfig.model_validate(settings)
        self.token_sha256, self.read_sha256 = token_sha256, read_sha256
        self.ensemble, self.retrainer = ensemble, retrainer
        intent = SisaStore(url, storage_options).intent() or {}
        self.input_shape = served_input_shape(intent)  # raw rows in "head" mode
        self.id_kind, self.group_kind = intent["id_kind"], intent.get("group_kind")
        # the highest request number a client was told about; from the journal at start,
        # so a restarted ingress never forgets what an earlier one acknowledged
        self.acknowledged = max(Journal(SisaStore(url, storage_options)).seqs(), default=0)

    def __serve_build_asgi_app__(self) -> Any:
        # this replica's own latencies, and the store's figures
        metrics = ServingMetrics(self.url, self.options) if self.settings.metrics else None
        app = build_app(
            self, self.settings, self.token_sha256, self.limits, metrics, self.read_sha256
        )
        self.gate = app.state.gate
        return app

    async def drain(self, timeout_s: float) -> int:
        """Refuse new requests (503) and wait for those in flight; returns how many were
        still in flight after ``timeout_s``. Called by a stop, not over HTTP."""
        return await self.gate.drain(timeout_s)

    def _store(self) -> SisaStore:
        return SisaStore(self.url, self.options)

    def _emit(self, name: str, level: int = logging.INFO, **fields: Any) -> None:
        if self.events is not None:  # sent aside: the request never waits on it
            self.events.emit(name, level, **fields)

    async def predict(self, x: np.ndarray, probabilities: bool) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            body = await self.ensemble.predict.remote(x, probabilities, self.acknowledged)
        except Exception as err:  # noqa: BLE001 - e.g. the replica died; Serve restarts it
            log.warning("ensemble unavailable: %s", err)
            body = {"error": unavailable()}
        if "error" in body:
            content, status, _ = body["error"]
            if status >= 500:  # the server's failure, not the client's: operators see it
                self._emit(
                    "predict_failed",
                    logging.WARNING,
                    status=status,
                    detail=content["detail"],  # the server's own words, never the rows'
                    rows=len(x),
                    seconds=_since(started),
                    outcome="failed",
                )
            raise PredictionFailed(*body["error"])
        return body

    async def forget(self, ids: list[Any] | None, group: Any, reason: str | None) -> dict:
        """Journal a request; its event names it by request ID and counts, never by the
        IDs it names (nor by the refusal's message, which may quote one)."""
        started = time.perf_counter()
        try:
            body = await self._forget(ids, group, reason)
        except RejectedRequest:
            self._emit("forget", request=None, seconds=_since(started), outcome="rejected")
            raise
        except Exception as err:
            self._emit("forget", logging.WARNING, request=None, error=type(err).__name__,
                       seconds=_since(started), outcome="failed")  # fmt: skip
            raise
        self._emit(
            "forget",
            request=body["request_id"],
            requests=body["earlier_requests"],
            points=body["removed"],
            shards=body["rolled_back"],
            seconds=_since(started),
            outcome=body["state"].replace(" ", "_"),
        )
        return body

    async def _forget(self, ids: list[Any] | None, group: Any, reason: str | None) -> dict:
        try:
            typed = typed_ids(ids, self.id_kind) if ids is not None else None
            if group is not None:
                if self.group_kind is None:
                    raise ValueError("this store's data has no groups; forget by ID instead")
                group = typed_ids([group], self.group_kind, what="group")[0]
            accepted = await asyncio.to_thread(
                accept, self.url, typed, group=group, reason=reason, storage_options=self.options
            )
        except UnknownIDError as err:
            raise RejectedRequest(str(err)) from None
        except (ValueError, TypeError) as err:
            raise RejectedRequest(str(err)) from None
        # This request, or (a no-op) the earlier ones that cover it: either way the client
        # now believes these points are gone, so every later prediction must honour them.
        covering = [accepted.request_id] if accepted.request_id else accepted.earlier_requests
        seq = max((parse_request_id(r) for r in covering), default=0)
        self.acknowledged = max(self.acknowledged, seq)
        model, state = None, "compliant"
        try:
            model = await self.ensemble.refresh.remote(seq)  # compliant before we answer
        except Exception as err:  # noqa: BLE001 - journaled: predictions refresh or answer 503
            log.warning("journaled request %d, but the ensemble did not refresh: %s", seq, err)
            state = "accepted"
        return accepted_body(accepted, state, model)

    async def request(self, request_id: str) -> dict[str, Any]:
        status = await asyncio.to_thread(request_status, self._store(), request_id)
        return status.to_dict()

    async def overview(self) -> dict[str, Any]:
        return await asyncio.to_thread(overview, self._store())

    async def _ensemble_status(self) -> dict[str, Any]:
        try:
            return await self.ensemble.status.remote()
        except Exception as err:  # noqa: BLE001 - e.g. the replica died; Serve restarts it
            log.warning("ensemble unavailable: %s", err)
            raise PredictionFailed(*unavailable()) from None

    async def status(self) -> dict[str, Any]:
        ensemble = await self._ensemble_status()
        pending = await asyncio.to_thread(lambda: Journal(self._store()).open_requests())
        retrainer = (
            await self.retrainer.status.remote()
            if self.retrainer is not None
            else {"mode": "external: run 'sisa process'"}
        )
        now = time.time()
        for part in (ensemble, retrainer):  # the type only: messages name paths and buckets
            if part.get("last_error"):
                part["last_error"] = part["last_error"].split(":")[0]
        return {
            "ensemble": ensemble,
            # counts, not IDs: a request ID is its requester's handle on the receipt
            "pending_requests": len(pending),
            "oldest_pending_s": max((now - r.accepted_at for r in pending), default=None),
            "retrainer": retrainer,
            "acknowledged_through": self.acknowledged,
        }

    async def health(self) -> dict[str, Any]:
        ensemble = await self._ensemble_status()
        return {"ok": True, "version": ensemble["version"], "through": ensemble["through"]}
