"""The serving app (``orchestrator.api.build_app``) over an in-process backend, on a real
uvicorn server on 127.0.0.1 in a thread: real HTTP, without a Ray cluster. The backend
calls what ``sisa serve``'s ingress calls (``Predictor``, ``accept``, ``request_status``,
``overview``), in this process."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np


class InProcessBackend:
    """A ``Backend`` of ``build_app`` that runs everything in this process."""

    def __init__(self, url: str) -> None:
        from sisa.serving.predictor import Predictor
        from sisa.store.artifacts import SisaStore

        self.url = url
        self.predictor = Predictor(url)
        self.input_shape = self.predictor.snapshot.ensemble.input_shape
        intent = SisaStore(url).intent() or {}
        self.id_kind, self.group_kind = intent["id_kind"], intent.get("group_kind")

    async def predict(self, x: np.ndarray, probabilities: bool) -> dict[str, Any]:
        from orchestrator.api import prediction_body

        self.predictor.refresh()
        return prediction_body(self.predictor.predict(x, probabilities=probabilities))

    async def forget(self, ids: list[Any] | None, group: Any, reason: str | None) -> dict:
        from orchestrator.api import RejectedRequest, accepted_body
        from sisa.deletion.accept import accept

        try:
            accepted = await asyncio.to_thread(accept, self.url, ids, group=group, reason=reason)
        except (ValueError, TypeError) as err:  # as the ingress: 422, nothing journaled
            raise RejectedRequest(str(err)) from None
        return accepted_body(accepted, "compliant", None)

    async def request(self, request_id: str) -> dict[str, Any]:
        from sisa.deletion.lifecycle import request_status

        return (await asyncio.to_thread(request_status, self.url, request_id)).to_dict()

    async def overview(self) -> dict[str, Any]:
        from sisa.evidence.overview import overview

        return await asyncio.to_thread(overview, self.url)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(app: Any) -> Iterator[str]:
    """Run ``app`` on 127.0.0.1 until the block ends; yields its base URL."""
    import uvicorn

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


ROOT = Path(__file__).resolve().parents[2]


def spawn(argv: list[str], **env: str) -> Any:
    """A Python process of the project, stdout and stderr piped, without an inherited
    ``SISA_CRASH_AT``; ``env`` adds variables."""
    import os
    import subprocess
    import sys

    base = {k: v for k, v in os.environ.items() if k != "SISA_CRASH_AT"}
    return subprocess.Popen(
        [sys.executable, *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=base | env,
        cwd=ROOT,
    )


@contextlib.contextmanager
def following(url: str, *options: str) -> Iterator[Any]:
    """``sisa process --follow`` on ``url`` in a process of its own, interrupted (SIGINT,
    as Ctrl-C) when the block ends."""
    import signal

    argv = ["-m", "orchestrator.cli", "process", "--store", url, "--follow", "--no-progress"]
    follow = spawn([*argv, *options])
    try:
        yield follow
    finally:
        follow.send_signal(signal.SIGINT)
        follow.wait(30)
