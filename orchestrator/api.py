"""The HTTP API of ``sisa serve``: a FastAPI app over a ``Backend``.

The app only speaks HTTP: it parses and bounds bodies (``orchestrator.api_guards``),
checks the bearer token, maps errors to status codes and describes itself exactly in
``/openapi.json`` (``orchestrator.api_schema``). What a request does is the backend's
(``orchestrator.serve`` runs it on Ray Serve).

Status codes: 400 for a body that cannot be decoded; 401 for a missing or wrong token;
403 for what the server's settings forbid; 404 for unknown request IDs; 408 for a body
that stalls; 413 for a body over ``serving.max_body_bytes`` or more rows than
``serving.max_rows``; 422 for a body or rows that do not validate, or rows whose scores
are not finite; 429 for a client with too many requests in flight; 503 while the store
cannot answer or the server shuts down. There is no ``/docs`` page: Swagger UI would load
its scripts from a CDN, so the OpenAPI JSON is the documentation.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any, Protocol

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from orchestrator import bulk
from orchestrator.api_guards import Admission, BodyLimit, Gate, Limits, token_matches
from orchestrator.api_schema import (
    GUARDED,
    NO_GROUPS,
    WITH_BODY,
    ForgetResponse,
    HealthResponse,
    PredictResponse,
    RequestStatusBody,
    StatusResponse,
    ValidationErrorBody,
    _error,
    forget_request,
    predict_request,
)
from orchestrator.dashboard import add_dashboard
from orchestrator.metrics import CONTENT_TYPE, PredictTimer, ServingMetrics
from sisa.config import ServingConfig
from sisa.serving.ensemble import InputError, NoModelError, check_features
from sisa.serving.predictor import LabelsOnlyError, Prediction, StaleStateError
from sisa.store.journal import UnknownRequestError
from storage import StorageError

log = logging.getLogger(__name__)

SHOWN_ERRORS = 10  # validation errors returned; the rest are counted
BEARER = HTTPBearer(auto_error=False, description="serving.token")


class Backend(Protocol):
    """What the API calls; each method may raise the errors mapped in ``build_app``."""

    input_shape: tuple[int, ...]
    # optional: "int" or "str", the store's IDs and groups (None: it has no groups);
    # without them /forget takes IDs and groups of either type
    id_kind: str
    group_kind: str | None

    async def predict(self, x: np.ndarray, probabilities: bool) -> dict[str, Any]: ...
    async def forget(
        self, ids: list[Any] | None, group: Any, reason: str | None
    ) -> dict[str, Any]: ...
    async def request(self, request_id: str) -> dict[str, Any]: ...
    async def status(self) -> dict[str, Any]: ...
    async def health(self) -> dict[str, Any]: ...
    async def overview(self) -> dict[str, Any]: ...  # the dashboard's data


STATE_ONLY = ("id", "seq", "state")  # what GET /requests/{id} tells without the token


def _token_checker(token_sha256: bytes | None) -> Any:
    """A dependency that admits ``Authorization: Bearer <token>`` whose SHA-256 is
    ``token_sha256`` (``api_guards.token_matches``: constant time). ``BEARER`` only
    declares the scheme in the OpenAPI document."""

    def check(
        request: Request,
        _: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
    ) -> None:
        if token_sha256 is None:
            raise HTTPException(
                403, "deletion over HTTP is disabled: start the server with serving.token set"
            )
        # Starlette decodes headers as latin-1; tokens are printable ASCII (serving.token)
        header = request.headers.get("authorization")
        given = header.encode("latin-1") if header is not None else None
        if not token_matches(given, token_sha256):
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


def prediction_body(out: Prediction, arrays: bool = False) -> dict[str, Any]:
    """A ``Prediction`` as the /predict body (``PredictResponse``): class indices, the
    original label values beside them, the class names, and the scores if any; with
    ``arrays``, the rows as numpy arrays (``as_json`` makes them lists), which travel
    from a replica much faster than lists and encode as npy or Arrow directly."""
    body: dict[str, Any] = {
        "labels": out.labels if arrays else out.labels.tolist(),
        "label_names": list(out.label_names),
        "classes": list(out.classes),
        "model": {"version": out.version, "through": out.through},
    }
    if out.probabilities is not None:
        body["probabilities"] = out.probabilities if arrays else out.probabilities.tolist()
    return body


def as_json(body: dict[str, Any]) -> dict[str, Any]:
    """A prediction body with its rows as lists."""
    return {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in body.items()}


def accepted_body(accepted: Any, state: str, model: dict[str, Any] | None) -> dict[str, Any]:
    """An ``accept`` result as the /forget body (``ForgetResponse``)."""
    return {
        "request_id": accepted.request_id,
        "state": state if accepted.request_id else "nothing to do",
        "removed": len(accepted.removed),
        "removed_from_test": len(accepted.removed_from_test),
        "already_deleted": accepted.already_deleted,
        "earlier_requests": accepted.earlier_requests,
        "rolled_back": accepted.rolled_back,
        "compliance_ms": accepted.compliance_seconds * 1000,
        "model": model,
    }


def _bad_flag(probabilities: str) -> JSONResponse | None:
    """422 for a ``?probabilities=`` other than ``true`` or ``false``, whatever the body."""
    if probabilities in ("true", "false"):
        return None
    return JSONResponse(invalid("must be true or false", ["query", "probabilities"]), 422)


def _first_line(err: BaseException) -> str:
    return (str(err).splitlines() or [type(err).__name__])[0]


def invalid(message: str, loc: list[str | int], rows: list[int] | None = None) -> dict:
    """A 422 body: ``detail`` is always a list, as for the validation errors."""
    item: dict[str, Any] = {"loc": loc, "msg": message, "type": "value_error"}
    return {"detail": [item | ({"rows": rows} if rows else {})]}


def error_body(err: Exception) -> tuple[dict[str, Any], int, dict[str, str]]:
    """(body, status, headers) for an error a prediction may raise. Backends that run
    predictions elsewhere send this back as a value, not as an exception."""
    status = next(code for kind, code in PREDICTION_ERRORS.items() if isinstance(err, kind))
    headers = {"Retry-After": "1"} if status == 503 else {}
    if status == 422:
        return invalid(_first_line(err), ["body", "rows"], getattr(err, "rows", None)), 422, {}
    return {"detail": _first_line(err)}, status, headers


def unavailable() -> tuple[dict[str, Any], int, dict[str, str]]:
    """503 for a store or replica that failed: the cause goes to the log, not the client
    (it names paths and buckets)."""
    return {"detail": UNAVAILABLE}, 503, {"Retry-After": "1"}


class RejectedRequest(ValueError):
    """A deletion request that was refused before anything was journaled (422)."""


class PredictionFailed(Exception):
    """A prediction error that came back from a backend as ``error_body``'s value."""

    def __init__(self, body: dict[str, Any], status: int, headers: dict[str, str]) -> None:
        super().__init__(str(body["detail"]))
        self.response = (body, status, headers)


def _is_group_of_no_groups(error: dict[str, Any]) -> bool:
    """A 'group' where the store has none: say so, not just "extra input"."""
    return error["type"] == "extra_forbidden" and tuple(error["loc"]) == ("body", "group")


def _not_found(err: BaseException) -> JSONResponse:
    message = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    return JSONResponse({"detail": message.splitlines()[0] if message else "not found"}, 404)


def build_app(
    backend: Backend,
    settings: ServingConfig,
    token_sha256: bytes | None,
    limits: Limits | None = None,
    metrics: ServingMetrics | None = None,
    read_sha256: bytes | None = None,
) -> FastAPI:
    """The app; its ``state.gate`` counts the requests in flight and drains them. With
    ``metrics``, ``GET /metrics`` serves them and every prediction is timed; with
    ``read_sha256`` (``serving.read_token``'s digest) the dashboard shows its data."""
    limits = limits or Limits()
    app = FastAPI(
        title="sisa",
        summary="Predictions of a SISA ensemble, and deletion requests that it honours.",
        version="1",
        docs_url=None,  # Swagger UI and ReDoc load their scripts from a CDN
        redoc_url=None,
    )
    app.state.gate = Gate(limits.per_client, token_sha256)
    app.add_middleware(bulk.BinaryBodies)  # inside the body limit: the same bounds
    app.add_middleware(
        BodyLimit,
        limit=settings.max_body_bytes,
        idle_s=limits.body_idle_s,
        total_s=limits.body_total_s,
    )
    app.add_middleware(Admission, gate=app.state.gate)  # refuses before reading
    if metrics is not None:  # outermost: times refusals too
        app.add_middleware(PredictTimer, metrics=metrics)
    authorised = Depends(_token_checker(token_sha256))
    add_dashboard(app, backend, read_sha256, token_sha256)
    width = int(np.prod(backend.input_shape))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, err: RequestValidationError) -> JSONResponse:
        # FastAPI's default echoes the input back, which may be huge, or NaN (not JSON)
        errors = err.errors()
        detail = [
            {
                "loc": [p if isinstance(p, int) else str(p)[:64] for p in e["loc"]],
                "msg": NO_GROUPS if _is_group_of_no_groups(e) else e["msg"],
                "type": e["type"],
            }
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

    async def answer(rows: Any, probabilities: bool, http: Request) -> Any:
        """The checks and the answer of every /predict, whatever the body's format."""
        if len(rows) > settings.max_rows:
            raise HTTPException(413, f"more than {settings.max_rows} rows (serving.max_rows)")
        if probabilities and settings.output == "labels":
            raise LabelsOnlyError("this server releases labels only (serving.output)")
        x = check_features(rows, backend.input_shape)  # [n, *f] float32
        body = await backend.predict(x, probabilities)
        http.state.rows = len(x)  # counted by the metrics once it is answered
        kind = bulk.accepted(http.headers.get("accept"))
        if kind == bulk.JSON:
            return as_json(body)
        data, headers = await asyncio.to_thread(bulk.encode, body, kind)
        return Response(data, media_type=kind, headers=headers)

    async def predict(body: Any, http: Request) -> Any:
        """Labels of the aggregated ensemble (class indices and the original label values
        beside them), and with ``probabilities`` its scores, one column per class. The
        body may also be npy or Arrow IPC, and the answer is in the format ``Accept``
        names (``orchestrator.bulk``)."""
        if (refused := _bad_flag(http.query_params.get("probabilities", "false"))) is not None:
            return refused
        return await answer(body.rows, body.probabilities, http)

    @app.post(bulk.BINARY_PATH, include_in_schema=False)
    async def predict_binary(http: Request, probabilities: str = "false") -> Any:
        """A /predict whose body is npy or Arrow IPC (``bulk.BinaryBodies`` routes it)."""
        if (refused := _bad_flag(probabilities)) is not None:
            return refused
        kind = bulk.media_type(http.headers.get("content-type"))
        try:
            rows = await asyncio.to_thread(bulk.decode, await http.body(), kind)
        except bulk.UndecodableBody as err:
            return JSONResponse({"detail": _first_line(err)}, 400)
        return await answer(rows, probabilities == "true", http)

    # the bodies' models are built for this store (its row width, its ID type, whether it
    # has groups), so they are no names FastAPI could resolve from the (postponed)
    # annotations: each endpoint is given its class before it is routed
    predict.__annotations__["body"] = predict_request(width, settings.max_rows)
    binary = {"schema": {"type": "string", "format": "binary"}}
    app.post(
        "/predict",
        response_model=PredictResponse,
        response_model_exclude_none=True,
        responses={
            **WITH_BODY,
            200: {"content": {bulk.NPY: binary, bulk.ARROW: binary}},
            403: _error("probabilities from a labels-only server"),
        },
        openapi_extra={
            "requestBody": {"content": {bulk.NPY: binary, bulk.ARROW: binary}},
            "parameters": [
                {
                    "name": "probabilities",
                    "in": "query",
                    "required": False,
                    "description": "with an npy or Arrow body: also return the scores",
                    "schema": {"type": "string", "enum": ["true", "false"]},
                }
            ],
        },
    )(predict)

    async def forget(body: Any, _: None = authorised) -> Any:
        """Journal a deletion request. When this answers, predictions no longer use the
        points; retraining and purging follow (see ``GET /requests/{id}``)."""
        try:
            result = await backend.forget(body.ids, getattr(body, "group", None), body.reason)
        except RejectedRequest as err:
            return JSONResponse(invalid(_first_line(err), ["body"]), 422)
        if result["request_id"] is None:
            return JSONResponse(ForgetResponse(**result).model_dump(mode="json"), 200)
        return result

    # a backend that does not say what its store's IDs are gets a body of any IDs
    id_kind = getattr(backend, "id_kind", "any")
    group_kind = getattr(backend, "group_kind", "any" if id_kind == "any" else None)
    forget.__annotations__["body"] = forget_request(id_kind, group_kind)
    app.post(
        "/forget",
        status_code=202,
        response_model=ForgetResponse,
        responses={
            **WITH_BODY,
            200: {"model": ForgetResponse, "description": "nothing to do: all deleted before"},
            401: _error("missing or wrong bearer token"),
            403: _error("deletion over HTTP is disabled (no serving.token)"),
        },
    )(forget)

    @app.get(
        "/requests/{request_id}",
        response_model=RequestStatusBody,
        response_model_exclude_none=True,
        responses={
            **GUARDED,
            404: _error("no such request"),
            422: _error("never sent: any text names a request", ValidationErrorBody),
        },
    )
    async def request(request_id: str, http: Request) -> Any:
        """A deletion request's state (accepted, compliant, retrained, purged). With the
        bearer token, also what it asked and its receipt once purged; without, the state
        only, so a request ID handed to whoever asked for the deletion reveals nothing
        else."""
        try:
            found = await backend.request(request_id)
        except UnknownRequestError as err:
            return _not_found(err)
        header = http.headers.get("authorization")
        given = header.encode("latin-1") if header is not None else None
        if token_sha256 is None or not token_matches(given, token_sha256):
            return {key: found[key] for key in STATE_ONLY}
        return found

    @app.get("/status", response_model=StatusResponse, responses=GUARDED)
    async def status() -> dict[str, Any]:
        """The ensemble in use, the checkpoint each shard serves, and pending requests."""
        return await backend.status()

    if metrics is not None:

        @app.get(
            "/metrics",
            response_class=PlainTextResponse,
            responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text"}},
        )
        async def metrics_text() -> PlainTextResponse:
            """Prometheus metrics: this process's prediction latency and rows, and the
            store's deletion figures, read from the store (``orchestrator.metrics``)."""
            body = await asyncio.to_thread(metrics.text)  # reads the store
            return PlainTextResponse(body, media_type=CONTENT_TYPE)

    @app.get(
        "/healthz",
        response_model=HealthResponse,
        responses={k: v for k, v in GUARDED.items() if k != 429},  # never counted
    )
    async def healthz() -> dict[str, Any]:
        """200 while the ensemble answers."""
        return await backend.health()

    return app
