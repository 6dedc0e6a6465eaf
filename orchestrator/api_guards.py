"""Guards in front of the HTTP API: what one slow or greedy client can hold, and a drain.

Ray Serve's proxy hands a request to the ingress replica as soon as its headers arrive,
and the replica then pulls the body from the proxy as it comes. So a client that sends
headers and stalls holds an ingress slot for as long as it likes: 66 such sockets once
held every slot (and the queue behind them) for 107 s, so that ``/healthz`` and an
authorised ``/forget`` timed out. Two ASGI middlewares bound that:

* ``BodyLimit``: 413 for a body over ``serving.max_body_bytes``; 408 for a body that
  stalls (no byte for ``Limits.body_idle_s``) or trickles (not whole within
  ``Limits.body_total_s``). Either way the slot is free again within that time.
* ``Admission``: at most ``Limits.per_client`` requests in flight per client address,
  429 beyond. Requests that carry the valid bearer token, and ``GET /healthz``, are not
  counted: an operator can always reach the server, and a health check always answers.
  It also drains for shutdown: once ``Gate.drain`` is called, new requests get 503, and it
  returns when the requests in flight have been answered.

A client is its peer address: behind a reverse proxy every client shares one, so set the
reverse proxy's own limits there.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from dataclasses import dataclass

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


@dataclass(frozen=True)
class Limits:
    """How long a body may take, how much one client may hold, how long a stop waits."""

    body_idle_s: float = 10.0  # a body with no byte for this long gets 408
    body_total_s: float = 60.0  # a body not whole after this long gets 408
    per_client: int = 32  # requests in flight per client address, the token holder aside
    drain_s: float = 2.0  # how long a stop waits for the requests in flight


def token_matches(authorization: bytes | None, token_sha256: bytes | None) -> bool:
    """Whether an ``Authorization: Bearer <token>`` header carries the token whose SHA-256
    is ``token_sha256``; digests are compared in constant time, so timing tells nothing."""
    if token_sha256 is None or authorization is None:
        return False
    scheme, _, credentials = authorization.partition(b" ")
    if scheme.lower() != b"bearer" or not credentials:
        return False
    return hmac.compare_digest(hashlib.sha256(credentials).digest(), token_sha256)


RETRY = {"Retry-After": "1"}


async def _refuse(
    scope: Scope, receive: Receive, send: Send, status: int, detail: str, retry: bool = False
) -> None:
    """A JSON error that also closes the connection: its body may be left unread."""
    headers = {"Connection": "close", **(RETRY if retry else {})}
    await JSONResponse({"detail": detail}, status, headers)(scope, receive, send)


def _header(scope: Scope, name: bytes) -> bytes | None:
    return next((v for k, v in scope.get("headers") or [] if k == name), None)


class Gate:
    """Counts the requests in flight, in all and per client; refuses all once draining."""

    def __init__(self, per_client: int, token_sha256: bytes | None) -> None:
        self.per_client, self.token_sha256 = per_client, token_sha256
        self.in_flight = 0
        self.by_client: dict[str, int] = {}
        self.draining = False

    def counted(self, scope: Scope) -> bool:
        """Whether a request counts against its client: not a health check, not the
        token holder."""
        path = scope.get("path", "")
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        if scope.get("method") == "GET" and path == "/healthz":
            return False
        return not token_matches(_header(scope, b"authorization"), self.token_sha256)

    async def drain(self, timeout_s: float) -> int:
        """Refuse new requests from now on; return once none is in flight, or after
        ``timeout_s``, with the number still in flight."""
        self.draining = True
        deadline = asyncio.get_running_loop().time() + timeout_s
        while self.in_flight and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        return self.in_flight


class Admission:
    """ASGI middleware over a ``Gate``: 429 past the per-client bound, 503 while draining."""

    def __init__(self, app: ASGIApp, gate: Gate) -> None:
        self.app, self.gate = app, gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        gate = self.gate
        if gate.draining:
            detail = "the server is shutting down; retry on another replica or later"
            return await _refuse(scope, receive, send, 503, detail, retry=True)
        client = str((scope.get("client") or ("unknown",))[0])
        counted = gate.counted(scope)
        if counted and gate.by_client.get(client, 0) >= gate.per_client:
            detail = f"more than {gate.per_client} requests in flight from this client"
            return await _refuse(scope, receive, send, 429, detail, retry=True)
        gate.in_flight += 1
        if counted:
            gate.by_client[client] = gate.by_client.get(client, 0) + 1
        try:
            await self.app(scope, receive, send)
        finally:
            gate.in_flight -= 1
            if counted:
                left = gate.by_client[client] - 1
                if left:
                    gate.by_client[client] = left
                else:
                    del gate.by_client[client]  # a long-lived server forgets its clients


class BodyLimit:
    """ASGI middleware: reads the whole body first, bounded in size and in time.

    A declared Content-Length over ``limit`` gets 413 before anything is read; a streamed
    body is counted as it arrives. The body is then replayed to the app in one message."""

    def __init__(self, app: ASGIApp, limit: int, idle_s: float, total_s: float) -> None:
        self.app, self.limit, self.idle_s, self.total_s = app, limit, idle_s, total_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = _header(scope, b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            return await self._too_large(scope, receive, send)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.total_s
        chunks, size, more = [], 0, True
        while more:
            try:
                async with asyncio.timeout(min(self.idle_s, deadline - loop.time())):
                    message = await receive()
            except TimeoutError:
                detail = (
                    f"request body stalled: no byte for {self.idle_s:g} s, or not whole "
                    f"after {self.total_s:g} s"
                )
                return await _refuse(scope, receive, send, 408, detail)
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                return await self._too_large(scope, receive, send)
            chunks.append(chunk)
            more = message.get("more_body", False)
        body, sent = b"".join(chunks), False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        detail = f"request body over {self.limit} bytes (serving.max_body_bytes)"
        await _refuse(scope, receive, send, 413, detail)
