"""Running ``sisa serve``: a Ray cluster of its own on loopback, the app, and a clean stop.

**Exposure.** ``ray.init()`` on Linux takes the machine's outward address as the node's
IP, even when given 127.0.0.1 (``resolve_ip_for_localhost``), and Ray 2.60 binds its
gRPC servers (GCS, raylet, workers, agents) to the node IP: so they listened on every
interface. A cluster started here sets ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, Ray's own
switch for a single-machine cluster, which makes the node IP 127.0.0.1; every port Ray
opens is then on loopback (``docs/serving.md`` lists them). Ray's token authentication
stays on (``RAY_AUTH_MODE=token``), and its token file is made readable by its owner
only. Usage statistics are off. A joined cluster (``--ray-address``) is left as it is.

**Stop.** On SIGINT or SIGTERM the ingress drains: new requests get 503, and the stop
waits up to ``Limits.drain_s`` for those in flight to be answered. Then a cluster of our
own is shut down whole with ``ray.shutdown()``, which stops every process it started;
``serve.shutdown()`` first would only add Serve's own slow graceful stop (7 s here) and
its ``graceful_shutdown failed`` message. On a joined cluster only the application is
deleted. A retrain killed midway is resumed by the next ``process`` (crash safety).
"""

from __future__ import annotations

import logging
import os
import signal
import stat
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestrator import logs
from orchestrator.api_guards import Limits
from sisa.config import ServingConfig

log = logging.getLogger(__name__)

LOCAL_CLUSTER_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # node IP 127.0.0.1: all of Ray on loopback
    "RAY_AUTH_MODE": "token",  # explicit, so a stray 'disabled' cannot turn it off
    "RAY_USAGE_STATS_ENABLED": "0",
}
LOOPBACK = ("127.0.0.1", "::1")
RAY_LOGGERS = ("ray", "ray.serve")  # each with a stderr handler of its own


def init_ray(address: str | None, log_to_driver: bool = True) -> None:
    """Join the cluster at ``address``, or start one of our own on loopback only.
    Without ``log_to_driver``, what Ray's workers print stays in Ray's log files."""
    if address is None:
        os.environ.update(LOCAL_CLUSTER_ENV)  # Ray's processes inherit it
        constants = sys.modules.get("ray._private.ray_constants")
        if constants is not None:  # read at import: Ray was imported before us
            constants.ENABLE_RAY_CLUSTER = False
    import ray

    ray.init(
        address=address,
        include_dashboard=False,
        configure_logging=False,
        log_to_driver=log_to_driver,
    )
    if address is None:
        ip = ray.util.get_node_ip_address()
        if ip not in LOOPBACK:
            ray.shutdown()
            raise RuntimeError(f"Ray bound its node to {ip}, not to loopback: not serving")
        _private_token_file()


def _private_token_file() -> None:
    """Ray writes its cluster token to ~/.ray/auth_token with the umask's mode (0644 by
    default): anyone on the machine could read it and run code on the cluster."""
    path = Path.home() / ".ray" / "auth_token"
    try:
        info = path.stat()
        if info.st_uid == os.getuid() and info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            path.chmod(0o600)
    except OSError:  # no token file (another path, or none): nothing to tighten
        pass


def stop_server(
    server: Any, own_cluster: bool, before_shutdown: Callable[[], None] = lambda: None
) -> None:
    """Drain ``server`` (a ``orchestrator.serve.Server`` or None), then stop: the whole
    cluster if it is our own, else only the application; ``before_shutdown`` runs while
    the cluster still answers."""
    import ray

    if server is not None:
        left = server.drain()
        if left > 0:
            log.warning("stopping with %d request(s) still in flight", left)
    if not own_cluster and server is not None:
        try:
            server.stop()
        except Exception as err:  # noqa: BLE001 - disconnect all the same
            log.warning("could not delete application %s: %s", server.name, err)
    before_shutdown()
    ray.shutdown()


def run_server(
    store: str,
    storage_options: dict[str, Any] | None,
    settings: ServingConfig,
    ray_address: str | None,
    *,
    on_ready: Callable[[Any], None] = lambda _: None,
    limits: Limits | None = None,
    log_format: str = "text",
) -> None:
    """Serve ``store`` until SIGINT or SIGTERM, then drain and stop.

    Both signals are handled, also where SIGINT arrives ignored (a shell's background
    job); the previous handlers are restored once stopped. The deployments' events
    (``orchestrator.logs``) are written to stderr here, in ``log_format``; in JSON, Ray
    forwards no worker output, so every line there is an event."""
    stop, written = threading.Event(), threading.Event()
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    server = None
    logs.setup(log_format)
    logs.adopt(*RAY_LOGGERS)  # before Ray starts: its start-up warnings are JSON too
    init_ray(ray_address, log_to_driver=log_format == "text")
    pump: threading.Thread | None = None

    def write_the_rest() -> None:
        # after the drain: a retrain still running is stopped with the cluster, so its
        # event never comes (the next 'sisa process' resumes its batch)
        written.set()
        if pump is not None:
            pump.join(timeout=10)
            if pump.is_alive():
                log.warning("stopping before every event was written")

    try:
        from orchestrator.serve import start

        events = logs.EventRelay()
        pump = events.pump(written)
        server = start(store, storage_options, settings, limits=limits, events=events)
        logs.adopt(*RAY_LOGGERS)  # Serve sets its driver-side handler up as it starts
        for signum in previous:
            signal.signal(signum, lambda *_: stop.set())
        on_ready(server)
        stop.wait()
    finally:
        stop_server(server, own_cluster=ray_address is None, before_shutdown=write_the_rest)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
