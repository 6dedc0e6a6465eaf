"""``sisa serve``: the aggregated ensemble and the deletion API as one Ray Serve application.

``orchestrator.serve_deployments`` holds its three deployments (the ensemble, the
background retrainer, the FastAPI ingress) and says how predictions stay available,
consistent and compliant while deletions arrive; this module binds them to a store,
starts Serve's proxy and the application, and drains and stops it.
``orchestrator.serve_cluster`` runs it all from the command line.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ray import serve

from orchestrator.api_guards import Limits
from orchestrator.executors import require_a_node_that_fits, with_trust
from orchestrator.logs import EventRelay
from orchestrator.serve_deployments import (
    ApiDeployment,
    EnsembleDeployment,
    RetrainerDeployment,
)
from sisa.config import ResourcesConfig, ServingConfig
from sisa.store.artifacts import SisaStore

log = logging.getLogger(__name__)
APP_NAME = "sisa"


def replica_gpus(resources: ResourcesConfig, settings: ServingConfig) -> tuple[float, float]:
    """GPUs an ensemble replica and the background retrainer reserve.

    A store whose models run on cuda needs both to reserve a GPU: a Ray actor that
    reserves none is not assigned one, and would load its models onto whatever GPU its
    node shows first. The retrainer trains in its own process, as a shard task would.
    """
    if resources.device != "cuda":
        return settings.num_gpus, 0.0
    if settings.num_gpus == 0:
        raise ValueError(
            "this store's models run on cuda (resources.device): set serving.num_gpus > 0 "
            "for the ensemble replicas (a fraction shares a GPU)"
        )
    if settings.retrain == "background" and resources.num_gpus == 0:
        raise ValueError(
            "this store trains on cuda (resources.device) but resources.num_gpus = 0, so the "
            "background retrainer would get no GPU: set resources.num_gpus in the store's "
            "config, or serving.retrain = 'external' and run 'sisa process' where a GPU is"
        )
    return settings.num_gpus, resources.num_gpus


def build_application(
    url: str,
    storage_options: dict[str, Any] | None,
    settings: ServingConfig,
    limits: Limits | None = None,
    events: EventRelay | None = None,
) -> serve.Application:
    """The application, bound to a trained store; fails here if the store is not trained
    or its models need a GPU the settings do not reserve. With ``events``, the ingress
    and the retrainer send their events there (``orchestrator.logs``)."""
    store = SisaStore(url, storage_options)
    store.require_trained()
    ensemble_gpus, retrainer_gpus = replica_gpus(store.config().resources, settings)
    public = settings.model_dump(mode="json")  # the token is excluded from dumps
    ensemble = EnsembleDeployment.options(
        num_replicas=settings.replicas,
        # the replicas import the store's factories (a backbone too), under the trust here
        ray_actor_options=with_trust({"num_cpus": settings.num_cpus, "num_gpus": ensemble_gpus}),
    ).bind(url, storage_options, public)
    retrainer = (
        RetrainerDeployment.options(
            ray_actor_options=with_trust({"num_cpus": 0, "num_gpus": retrainer_gpus})
        ).bind(url, storage_options, ensemble, events)
        if settings.retrain == "background"
        else None
    )
    digest, read = (
        None if secret is None else hashlib.sha256(secret.get_secret_value().encode()).digest()
        for secret in (settings.token, settings.read_token)
    )
    return ApiDeployment.bind(
        url, storage_options, public, digest, ensemble, retrainer, limits, read, events
    )


LOGGING = {"enable_access_log": False, "log_level": "WARNING"}
KEEP_ALIVE_S = 5  # idle keep-alive connections close after this (Serve's default: 90 s)
GRACE_S = 0.2  # after a drain, for the proxy to pass the last answers on


@dataclass(frozen=True)
class Server:
    """A running application: its address, and how to stop it."""

    url: str  # http://host:port/prefix, without a trailing slash
    name: str = APP_NAME
    limits: Limits = field(default_factory=Limits)

    def drain(self) -> int:
        """Answer the requests in flight, refusing new ones (503), for at most
        ``limits.drain_s``; returns how many were still in flight (-1: no answer)."""
        timeout = self.limits.drain_s
        try:
            with _serve_quiet():  # a handle's router announces itself at INFO
                handle = serve.get_app_handle(self.name)
                left = handle.drain.remote(timeout).result(timeout_s=timeout + 5)
        except Exception as err:  # noqa: BLE001 - a stop goes on regardless
            log.warning("could not drain %s: %s", self.name, err)
            return -1
        time.sleep(GRACE_S)
        return left

    def stop(self) -> None:
        """Delete the application (Serve drains its replicas); the cluster stays."""
        with _serve_quiet():  # "Deleting app": said at INFO, on Serve's own handler
            serve.delete(self.name)


@contextlib.contextmanager
def _serve_quiet() -> Iterator[None]:
    """Serve's driver-side INFO lines, off: ``serve.run`` always reconnects to the Serve
    it finds and says that "new http_options will not be applied", which is untrue here
    (``start`` checks them itself); errors and warnings still show."""
    logger = logging.getLogger("ray.serve")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def _start_serve(settings: ServingConfig) -> None:
    """Start Serve with our HTTP options, or check that the one running has them."""
    from ray.serve.context import _get_global_client

    client = _get_global_client(raise_if_no_controller_running=False)
    if client is None:
        http = {"host": settings.host, "port": settings.port, "keep_alive_timeout_s": KEEP_ALIVE_S}
        serve.start(http_options=http, logging_config=LOGGING)
        return
    running = client.http_config
    if (running.host, running.port) != (settings.host, settings.port):
        raise ValueError(
            f"Ray Serve already runs on this cluster with its proxy on {running.host}:"
            f"{running.port}; a cluster has one proxy, so serve there (--host/--port) or "
            "on another cluster"
        )


def start(
    url: str,
    storage_options: dict[str, Any] | None,
    settings: ServingConfig,
    *,
    name: str = APP_NAME,
    route_prefix: str = "/",
    limits: Limits | None = None,
    events: EventRelay | None = None,
) -> Server:
    """Start Serve's HTTP proxy on ``settings.host:port`` (127.0.0.1 by default) and run
    the application under ``route_prefix``; returns once it answers (``serve.run`` waits
    for every deployment, and raises if one fails to start).

    Serve has one proxy per cluster: if it already runs, every application started on
    the cluster must name its host and port, or this raises ``ValueError``."""
    limits = limits or Limits()
    app = build_application(url, storage_options, settings, limits, events)
    gpus = replica_gpus(SisaStore(url, storage_options).config().resources, settings)
    require_a_node_that_fits(settings.num_cpus, gpus[0], ("serving", "ensemble replica"))
    if gpus[1]:
        require_a_node_that_fits(0, gpus[1], ("resources", "background retrainer"))
    with _serve_quiet():
        _start_serve(settings)
        serve.run(app, name=name, route_prefix=route_prefix, blocking=False, logging_config=LOGGING)
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    return Server(f"http://{host}:{settings.port}{route_prefix.rstrip('/')}", name, limits)
