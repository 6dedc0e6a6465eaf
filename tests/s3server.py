"""A throwaway S3 endpoint for tests: moto's server on 127.0.0.1 with one bucket.

Usable from any test package, typically behind a session-scoped fixture::

    with moto_s3() as (url, storage_options):
        store = Store(f"{url}/some-prefix", storage_options)

Fault tests take the server itself (``moto_server``), stop it at an exact point and start
it again: moto keeps buckets and objects in this process, not in the server thread, so the
restarted server (same port, so the same storage_options) serves the same state.

Dummy credentials are put in the environment (and AWS config files pointed away) so nothing
can reach a real account, and 127.0.0.1 bypasses any configured proxy.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}


class MotoServer:
    """moto's S3 server on one port of 127.0.0.1, which can be stopped and started again."""

    def __init__(self, bucket: str) -> None:
        self.bucket = bucket
        self.port = 0  # a free port on the first start, then the same one
        self._server = None
        self.stopped_at: float | None = None  # time.monotonic() of the last stop

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}"

    @property
    def storage_options(self) -> dict:
        return {
            "key": _ENV["AWS_ACCESS_KEY_ID"],
            "secret": _ENV["AWS_SECRET_ACCESS_KEY"],
            "client_kwargs": {
                "endpoint_url": f"http://127.0.0.1:{self.port}",
                "region_name": "us-east-1",
            },
        }

    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        server.start()
        self.port = server.get_host_and_port()[1]
        self._server = server

    def stop(self) -> None:
        """Stop serving: new connections are refused until ``start``."""
        if self._server is not None:
            self._server.stop()
            self._server = None
            self.stopped_at = time.monotonic()


@contextmanager
def moto_server(bucket: str = "sisa-test") -> Iterator[MotoServer]:
    """A running :class:`MotoServer` with ``bucket`` created; stopped (and the environment
    restored) when the block exits."""
    from s3fs import S3FileSystem

    saved = {k: os.environ.get(k) for k in [*_ENV, "NO_PROXY", "no_proxy"]}
    os.environ.update(_ENV)
    for var in ("NO_PROXY", "no_proxy"):
        current = os.environ.get(var, "")
        os.environ[var] = ",".join(p for p in (current, "127.0.0.1", "localhost") if p)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)

    server = MotoServer(bucket)
    server.start()
    try:
        # No region here: s3fs would send a us-east-1 location constraint, which S3 rejects.
        S3FileSystem(
            skip_instance_cache=True,
            key=_ENV["AWS_ACCESS_KEY_ID"],
            secret=_ENV["AWS_SECRET_ACCESS_KEY"],
            client_kwargs={"endpoint_url": server.storage_options["client_kwargs"]["endpoint_url"]},
        ).mkdir(bucket)
        yield server
    finally:
        server.stop()
        # Cached clients point at this endpoint; later servers get a different port.
        S3FileSystem.clear_instance_cache()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextmanager
def moto_s3(bucket: str = "sisa-test") -> Iterator[tuple[str, dict]]:
    """Run a moto S3 server with ``bucket`` created; yields ``("s3://bucket", storage_options)``.

    The server listens on a free port of 127.0.0.1 and stops (and the environment is restored)
    when the block exits.
    """
    with moto_server(bucket) as server:
        yield server.url, server.storage_options


def stop_before(monkeypatch, server: MotoServer, method: str, suffix: str) -> None:
    """Stop ``server`` just before the S3 driver sends ``method`` (``"_pipe_file"``,
    ``"_cat_file"``, ...) for a path ending in ``suffix``, once: that request, and every
    one until ``server.start()``, meets a server that is down. Clients made after this
    call have the hook; the client and the server stay the real ones."""
    from s3fs import S3FileSystem

    original = getattr(S3FileSystem, method)
    fired = []

    async def stopping(self, path, *args, **kwargs):
        if path.endswith(suffix) and not fired:
            fired.append(path)
            server.stop()
        return await original(self, path, *args, **kwargs)

    monkeypatch.setattr(S3FileSystem, method, stopping)
    S3FileSystem.clear_instance_cache()  # an instance binds its sync methods when made


# What a test lets a dead endpoint cost: one retry, short timeouts.
BOUNDED = {
    "retries": 1,
    "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 1, "read_timeout": 5},
}


@contextmanager
def fresh_prefix(server: MotoServer) -> Iterator[tuple[MotoServer, str, dict]]:
    """(server, a fresh store URL on it, bounded storage_options), with the server running;
    it runs again afterwards, and no cached client keeps a test's hook."""
    import uuid

    from s3fs import S3FileSystem

    if not server.running:
        server.start()
    try:
        yield server, f"{server.url}/{uuid.uuid4().hex}", server.storage_options | BOUNDED
    finally:
        if not server.running:
            server.start()
        S3FileSystem.clear_instance_cache()
