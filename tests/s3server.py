"""A throwaway S3 endpoint for tests: moto's server on 127.0.0.1 with one bucket.

Usable from any test package, typically behind a session-scoped fixture::

    with moto_s3() as (url, storage_options):
        store = Store(f"{url}/some-prefix", storage_options)

Dummy credentials are put in the environment (and AWS config files pointed away) so nothing
can reach a real account, and 127.0.0.1 bypasses any configured proxy.
"""

from __future__ import annotations

import logging
import os
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


@contextmanager
def moto_s3(bucket: str = "sisa-test") -> Iterator[tuple[str, dict]]:
    """Run a moto S3 server with ``bucket`` created; yields ``("s3://bucket", storage_options)``.

    The server listens on a free port of 127.0.0.1 and stops (and the environment is restored)
    when the block exits.
    """
    from moto.server import ThreadedMotoServer
    from s3fs import S3FileSystem

    saved = {k: os.environ.get(k) for k in [*_ENV, "NO_PROXY", "no_proxy"]}
    os.environ.update(_ENV)
    for var in ("NO_PROXY", "no_proxy"):
        current = os.environ.get(var, "")
        os.environ[var] = ",".join(p for p in (current, "127.0.0.1", "localhost") if p)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        _, port = server.get_host_and_port()
        endpoint = f"http://127.0.0.1:{port}"
        options = {
            "key": _ENV["AWS_ACCESS_KEY_ID"],
            "secret": _ENV["AWS_SECRET_ACCESS_KEY"],
            "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"},
        }
        # No region here: s3fs would send a us-east-1 location constraint, which S3 rejects.
        S3FileSystem(
            skip_instance_cache=True,
            key=options["key"],
            secret=options["secret"],
            client_kwargs={"endpoint_url": endpoint},
        ).mkdir(bucket)
        yield f"s3://{bucket}", options
    finally:
        server.stop()
        # Cached clients point at this endpoint; later servers get a different port.
        S3FileSystem.clear_instance_cache()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
