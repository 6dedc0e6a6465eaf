"""The HTTP API of ``sisa serve``: a FastAPI app over a ``Backend``.

The app only speaks HTTP: it parses and bounds bodies, checks the bearer token, maps
errors to status codes and documents itself (``/docs``, ``/openapi.json``). What a
request does is the backend's (``orchestrator.serve`` runs it on Ray Serve).

Status codes: 413 for a body over ``serving.max_body_bytes`` or more rows than
``serving.max_rows``; 422 for a body or rows that do not validate; 401 for a missing or
wrong token; 403 for what the server's settings forbid; 404 for unknown request IDs;
503 while the store cannot answer.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from typing import Annotated, Any, Protocol

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, model_validator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sisa.config import ServingConfig
from sisa.ensemble import InputError, NoModelError, check_features
from sisa.journal import UnknownRequestError
from sisa.predictor import LabelsOnlyError, StaleStateError
from sisa.unlearn import MAX_REASON
from storage import StorageError

log = logging.getLogger(__name__)

# fail_fast: a body of a million bad numbers yields one error, not a million
Row = Annotated[
    list[Annotated[float, Field(strict=True, allow_inf_nan=False)]], Field(fail_fast=True)
]
AnyID = StrictInt | Annotated[StrictStr, Field(max_length=256)]
SHOWN_ERRORS = 10  # validation errors returned; the rest are counted
BEARER = HTTPBearer(auto_error=False, description="serving.token")


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rows: list[Row] = Field(
        min_length=1, fail_fast=True, description="feature rows, each a list of numbers"
    )
    probabilities: bool = Field(False, description="also return the aggregate scores")


class ModelInfo(BaseModel):
    version: str = Field(description="the ensemble that computed every row of this answer")
    through: int = Field(description="deletion requests up to this number are honoured")


class PredictResponse(BaseModel):
    labels: list[int]
    probabilities: list[list[float]] | None = None
    model: ModelInfo


class ForgetRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ids: list[AnyID] | None = Field(None, min_length=1, max_length=100_000, fail_fast=True)
    group: AnyID | None = None
    reason: str | None = Field(None, max_length=MAX_REASON)

    @model_validator(mode="after")
    def _one_target(self) -> ForgetRequest:
        if (self.ids is None) == (self.group is None):
            raise ValueError("give either 'ids' or 'group'")
        return self


class ForgetResponse(BaseModel):
    request_id: str | None = Field(description="None when every ID was deleted or pending")
    state: str
    removed: int = Field(description="training points this request removes")
    removed_from_test: int
    already_deleted: list[AnyID] = Field(description="no-ops: deleted or pending before")
    earlier_requests: list[str] = Field(description="the requests that cover the no-ops")
    rolled_back: list[int] = Field(description="shards served from an earlier checkpoint")
    compliance_ms: float = Field(description="from journaling to the compliant serving state")
    model: ModelInfo | None = Field(None, description="the ensemble serving from now on")


class Backend(Protocol):
    """What the API calls; each method may raise the errors mapped in ``build_app``."""

    input_shape: tuple[int, ...]

    async def predict(self, x: np.ndarray, probabilities: bool) -> dict[str, Any]: ...
    async def forget(
        self, ids: list[Any] | None, group: Any, reason: str | None
    ) -> dict[str, Any]: ...
    async def request(self, request_id: str) -> dict[str, Any]: ...
    async def status(self) -> dict[str, Any]: ...
    async def health(self) -> dict[str, Any]: ...


class BodyLimit:
    """ASGI middleware: a body over ``limit`` bytes gets 413 before the app reads it.

    A declared Content-Length is checked up front; a streamed body is counted as it
    arrives, and buffered (at most ``limit`` bytes) so the app sees it whole."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            return await self._too_large(scope, receive, send)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
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
        await JSONResponse({"detail": detail}, status_code=413)(scope, receive, send)


def _token_checker(token_sha256: bytes | None) -> Any:
    """A dependency that admits ``Authorization: Bearer <token>`` whose SHA-256 is
    ``token_sha256``; digests are compared in constant time, so timing tells nothing."""

    def check(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
    ) -> None:
        if token_sha256 is None:
            raise HTTPException(
                403, "deletion over HTTP is disabled: start the server with serving.token set"
            )
        # Starlette decodes headers as latin-1; tokens are printable ASCII (serving.token)
        given = credentials.credentials.encode("latin-1") if credentials is not None else b""
        digest = hashlib.sha256(given).digest()
        if credentials is None or not hmac.compare_digest(digest, token_sha256):
            raise HTTPException(
                401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
            )

    return check


PREDICTION_ERRORS: dict[type[Exception], int] = {
    InputError: 422,
    LabelsOnlyError: 403,
    NoModelError: 503,  # every shard waits for a retrain
    StaleStateError: 503,  # the store does not show an acknowledged request yet
}
UNAVAILABLE = "the model store cannot be read right now; retry shortly"


def error_body(err: Exception) -> tuple[dict[str, Any], int, dict[str, str]]:
    """(body, status, headers) for an error a prediction may raise. Backends that run
    predictions elsewhere send this back as a value, not as an exception."""
    status = next(code for kind, code in PREDICTION_ERRORS.items() if isinstance(err, kind))
    headers = {"Retry-After": "1"} if status == 503 else {}
    return {"detail": (str(err).splitlines() or [type(err).__name__])[0]}, status, headers


def unavailable() -> tuple[dict[str, Any], int, dict[str, str]]:
    """503 for a store or replica that failed: the cause goes to the log, not the client
    (it names paths and buckets)."""
    return {"detail": UNAVAILABLE}, 503, {"Retry-After": "1"}


class RejectedRequest(ValueError):
    """A deletion request that was refused before anything was journaled (422)."""


class PredictionFailed(Exception):
    """A prediction error that came back from a backend as ``error_body``'s value."""

    def __init__(self, body: dict[str, Any], status: int, headers: dict[str, str]) -> None:
        super().__init__(body["detail"])
        self.response = (body, status, headers)


def _error(status: int, err: BaseException) -> JSONResponse:
    message = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    return JSONResponse({"detail": message.splitlines()[0] if message else ""}, status)


def build_app(backend: Backend, settings: ServingConfig, token_sha256: bytes | None) -> FastAPI:
    app = FastAPI(
        title="sisa",
        summary="Predictions of a SISA ensemble, and deletion requests that it honours.",
        version="1",
    )
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    authorised = Depends(_token_checker(token_sha256))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, err: RequestValidationError) -> JSONResponse:
        # FastAPI's default echoes the input back, which may be huge, or NaN (not JSON)
        errors = err.errors()
        detail = [
            {"loc": [str(p)[:64] for p in e["loc"]], "msg": e["msg"], "type": e["type"]}
            for e in errors[:SHOWN_ERRORS]
        ]
        more = {"more_errors": len(errors) - SHOWN_ERRORS} if len(errors) > SHOWN_ERRORS else {}
        return JSONResponse({"detail": detail, **more}, 422)

    @app.exception_handler(StorageError)
    @app.exception_handler(OSError)
    async def _store_down(_: Request, err: Exception) -> JSONResponse:
        log.warning("store error: %s", err)
        return JSONResponse(*unavailable())

    @app.exception_handler(PredictionFailed)
    async def _failed(_: Request, err: PredictionFailed) -> JSONResponse:
        return JSONResponse(*err.response)

    @app.exception_handler(InputError)
    @app.exception_handler(NoModelError)
    @app.exception_handler(StaleStateError)
    @app.exception_handler(LabelsOnlyError)
    async def _known(_: Request, err: Exception) -> JSONResponse:
        return JSONResponse(*error_body(err))

    @app.post("/predict", response_model=PredictResponse, response_model_exclude_none=True)
    async def predict(body: PredictRequest) -> dict[str, Any]:
        """Labels of the aggregated ensemble, and with ``probabilities`` its scores."""
        if len(body.rows) > settings.max_rows:
            raise HTTPException(413, f"more than {settings.max_rows} rows (serving.max_rows)")
        if body.probabilities and settings.output == "labels":
            raise LabelsOnlyError("this server releases labels only (serving.output)")
        x = check_features(body.rows, backend.input_shape)  # [n, *f] float32
        return await backend.predict(x, body.probabilities)

    @app.post("/forget", status_code=202, response_model=ForgetResponse)
    async def forget(body: ForgetRequest, _: None = authorised) -> Any:
        """Journal a deletion request. When this answers, predictions no longer use the
        points; retraining and purging follow (see ``GET /requests/{id}``)."""
        try:
            result = await backend.forget(body.ids, body.group, body.reason)
        except RejectedRequest as err:
            return _error(422, err)
        if result["request_id"] is None:
            return JSONResponse(ForgetResponse(**result).model_dump(mode="json"), 200)
        return result

    @app.get("/requests/{request_id}")
    async def request(request_id: str) -> Any:
        """A deletion request's state (accepted, compliant, retrained, purged), and its
        receipt once purged."""
        try:
            return await backend.request(request_id)
        except UnknownRequestError as err:
            return _error(404, err)

    @app.get("/status")
    async def status() -> dict[str, Any]:
        """The ensemble in use, the checkpoint each shard serves, and pending requests."""
        return await backend.status()

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        """200 while the ensemble answers."""
        return await backend.health()

    return app
