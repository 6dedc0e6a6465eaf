"""The servers the serving benchmark calls over HTTP, beside ``sisa serve`` itself.

Each shows where a request's time goes by leaving something out:

* ``Echo``: a trivial Serve ingress on the same proxy, which reads the body and answers a
  constant (the floor of Serve's proxy and one replica), or, bound to ``Constant``, what
  a second deployment returns (one ``DeploymentHandle`` hop more);
* the plain server: the same FastAPI app as ``sisa serve`` (``orchestrator.api.build_app``)
  under uvicorn in a subprocess, over ``LocalBackend`` (the ``Predictor`` in the server
  process), without Ray: ``python -m benchmarks.http_servers --plain-server URL PORT``.

``LIMITS`` are the serving settings of every server here: the body and row limits raised
so that the largest batch the benchmark sends is accepted (they change nothing else).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import numpy as np  # noqa: E402
import requests  # noqa: E402
from fastapi import FastAPI  # noqa: E402
from fastapi.responses import JSONResponse  # noqa: E402
from ray import serve  # noqa: E402
from ray.serve.handle import DeploymentHandle  # noqa: E402

from benchmarks.common import ROOT  # noqa: E402
from sisa.config import build_config  # noqa: E402
from sisa.serving.predictor import Predictor  # noqa: E402

MAX_BODY = 32 << 20  # serving.max_body_bytes for every run (default 4 MiB)
MAX_ROWS = 4096  # serving.max_rows for every run (default 1,024): the largest batch sent
LIMITS = {  # raised for every run, so that the largest batch is accepted; nothing else changes
    "serving.max_body_bytes": MAX_BODY,
    "serving.max_rows": MAX_ROWS,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@serve.deployment(name="bench-constant", ray_actor_options={"num_cpus": 0})
class Constant:
    def predict(self, size: int) -> dict[str, Any]:
        return {"labels": [0], "size": size}


@serve.deployment(name="bench-echo", ray_actor_options={"num_cpus": 0})
@serve.ingress()
class Echo:
    """``POST /predict``: reads the body and answers a constant, or with ``constant``,
    what a second deployment returns."""

    def __init__(self, constant: DeploymentHandle | None = None) -> None:
        self.constant = constant

    def __serve_build_asgi_app__(self) -> Any:
        app = FastAPI()

        async def predict(request: Any) -> JSONResponse:  # a Starlette Request
            body = await request.body()
            if self.constant is None:
                return JSONResponse({"labels": [0], "size": len(body)})
            return JSONResponse(await self.constant.predict.remote(len(body)))

        # a plain Starlette route: no annotations to resolve (this class is pickled by
        # value, and FastAPI would read the string annotations of a by-value function)
        app.router.add_route("/predict", predict, methods=["POST"])
        return app


class LocalBackend:
    """``orchestrator.api``'s backend without Ray: the Predictor in the server process."""

    def __init__(self, url: str) -> None:
        self.predictor = Predictor(url)
        self.input_shape = self.predictor.snapshot.ensemble.input_shape

    async def predict(self, x: np.ndarray, probabilities: bool) -> dict[str, Any]:
        from orchestrator.api import prediction_body  # the body the real service answers

        return prediction_body(self.predictor.predict(x, probabilities=probabilities))

    async def health(self) -> dict[str, Any]:
        return {"ok": True, "version": self.predictor.version, "through": 0}

    async def forget(self, *args: Any) -> dict[str, Any]:
        raise NotImplementedError

    async def request(self, request_id: str) -> dict[str, Any]:
        raise NotImplementedError

    async def status(self) -> dict[str, Any]:
        raise NotImplementedError


def serve_plain(url: str, port: int) -> None:
    """``--plain-server``: the same FastAPI app under uvicorn, one process, no Ray."""
    import uvicorn

    from orchestrator.api import build_app

    settings = build_config({}, LIMITS).serving
    app = build_app(LocalBackend(url), settings, None)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def start_plain(url: str) -> tuple[subprocess.Popen, str]:
    """The plain server in a subprocess, once it answers ``/healthz``: it and its URL."""
    port = free_port()
    cmd = [sys.executable, "-m", "benchmarks.http_servers", "--plain-server", url, str(port)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{base}/healthz", timeout=5).status_code == 200:
                return proc, base
        except requests.ConnectionError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the plain uvicorn server did not start")


if __name__ == "__main__":  # the uvicorn reference, started by ``start_plain``
    if len(sys.argv) != 4 or sys.argv[1] != "--plain-server":
        sys.exit("usage: python -m benchmarks.http_servers --plain-server URL PORT")
    serve_plain(sys.argv[2], int(sys.argv[3]))


@contextlib.contextmanager
def serve_cluster(object_store_mb: int) -> Iterator[int]:
    """A local Ray cluster of 2 CPUs with Serve's proxy on a free loopback port (yielded),
    both shut down when the block ends."""
    import ray

    from orchestrator.serve import LOGGING

    ray.init(
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=object_store_mb * 1024 * 1024,
        log_to_driver=False,
        configure_logging=False,
    )
    try:
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port}, logging_config=LOGGING)
        yield port
    finally:
        serve.shutdown()
        ray.shutdown()
