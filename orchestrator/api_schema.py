"""The request and response bodies of the HTTP API, exactly as the server treats them.

The OpenAPI document is generated from these models, and a schemathesis run checks the
server against it (``tests/orchestrator/test_api_schema.py``), so each rule the server
enforces is written here: strict types (``"yes"`` is not a boolean, ``"0.5"`` not a
number), rows of exactly the store's feature count, values within float32's range, one of
``ids`` or ``group``. Every error body is ``{"detail": "..."}``, except 422, whose
``detail`` is always a list of ``{loc, msg, type}`` items.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import numpy as np
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    create_model,
    model_validator,
)

from sisa.deletion.accept import MAX_REASON
from sisa.store.journal import STATES

FLOAT32_MAX = float(np.finfo(np.float32).max)
# fail_fast: a body of a million bad numbers yields one error, not a million
Number = Annotated[
    StrictFloat,  # JSON integers too; never booleans or strings
    Field(
        allow_inf_nan=False,
        # documented, checked by sisa.serving.ensemble.check_features with its own message
        json_schema_extra={"minimum": -FLOAT32_MAX, "maximum": FLOAT32_MAX},
    ),
]
AnyID = StrictInt | Annotated[StrictStr, Field(max_length=256)]  # in responses
ClassName = StrictInt | StrictStr  # a class's original label value (the store's vocabulary)


class ErrorBody(BaseModel):
    detail: str


class ErrorItem(BaseModel):
    loc: list[str | int] = Field(description="where: 'body', then field names and indices")
    msg: str
    type: str
    rows: list[int] | None = Field(None, description="the offending rows, when some are")


class ValidationErrorBody(BaseModel):
    detail: list[ErrorItem]
    more_errors: int | None = Field(None, description="errors not shown, when over 10")


def predict_request(width: int, max_rows: int) -> type[BaseModel]:
    """The /predict body for a store whose rows have ``width`` features. The row count
    over ``max_rows`` gets 413, not 422, so it is documented but not validated here."""
    row = Annotated[
        list[Number],
        Field(
            fail_fast=True,
            json_schema_extra={"minItems": width, "maxItems": width},
            description=f"one row: {width} numbers",
        ),
    ]
    rows = Annotated[
        list[row],
        Field(
            min_length=1,
            fail_fast=True,
            json_schema_extra={"maxItems": max_rows},
            description=f"1 to {max_rows} feature rows (serving.max_rows)",
        ),
    ]
    return create_model(
        "PredictRequest",
        __config__=ConfigDict(extra="forbid"),
        rows=(rows, ...),
        probabilities=(StrictBool, Field(False, description="also return the scores")),
    )


class ModelInfo(BaseModel):
    version: str = Field(description="the ensemble that computed every row of this answer")
    through: int = Field(description="deletion requests up to this number are honoured")


class PredictResponse(BaseModel):
    labels: list[int] = Field(description="the class index of each row")
    label_names: list[ClassName] = Field(
        description="the original label value of each row's class (classes[labels[i]])"
    )
    classes: list[ClassName] = Field(
        description="every class's name in class order: probabilities[i][c] scores classes[c]"
    )
    probabilities: list[list[float]] | None = Field(
        None, description="aggregate scores per row and class, all finite"
    )
    model: ModelInfo


NO_GROUPS = "this store's data has no groups; forget by ID instead"


def _integral(value: Any) -> Any:
    """JSON Schema's integers include 3.0: take it as 3 (text and booleans stay refused)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _id_type(kind: str) -> Any:
    """One ID (or group) of a store whose IDs are ``kind`` ("int", "str", or "any" where
    the backend does not say): strict, as JSON carries it."""
    if kind == "any":
        return AnyID
    if kind == "int":
        bounded = Annotated[StrictInt, Field(ge=-(2**63), le=2**63 - 1)]
        return Annotated[bounded, BeforeValidator(_integral)]
    return Annotated[StrictStr, Field(min_length=1, max_length=256, pattern=r"^[^\x00]*$")]


def forget_request(id_kind: str, group_kind: str | None) -> type[BaseModel]:
    """The /forget body for a store: ``ids`` of its ID type, and ``group`` only where its
    data has groups; exactly one of the two, neither null."""
    fields: dict[str, Any] = {
        "ids": (
            list[_id_type(id_kind)],
            Field(
                None,
                min_length=1,
                max_length=100_000,
                fail_fast=True,
                json_schema_extra={"uniqueItems": True},  # duplicates: refused by accept
            ),
        ),
        "reason": (
            StrictStr | None,
            Field(None, max_length=MAX_REASON, description="one line; must not name an ID"),
        ),
    }
    targets = ["ids"]
    if group_kind is not None:
        fields["group"] = (_id_type(group_kind), Field(None, description="a person's points"))
        targets.append("group")

    def one_target(self: BaseModel) -> BaseModel:
        if sum(getattr(self, t, None) is not None for t in targets) != 1:
            raise ValueError("give either 'ids' or 'group'" if len(targets) > 1 else "give 'ids'")
        return self

    extra = {"oneOf": [{"required": [t]} for t in targets]} if len(targets) > 1 else {}
    return create_model(
        "ForgetRequest",
        __config__=ConfigDict(
            extra="forbid",
            json_schema_extra=extra or {"required": ["ids"]},
        ),
        __validators__={"one_target": model_validator(mode="after")(one_target)},
        **fields,
    )


class ForgetResponse(BaseModel):
    request_id: str | None = Field(description="None when every ID was deleted or pending")
    state: Literal["compliant", "accepted", "nothing to do"]
    removed: int = Field(description="training points this request removes")
    removed_from_test: int
    already_deleted: list[AnyID] = Field(description="no-ops: deleted or pending before")
    earlier_requests: list[str] = Field(description="the requests that cover the no-ops")
    rolled_back: list[int] = Field(description="shards served from an earlier checkpoint")
    compliance_ms: float = Field(description="from journaling to the compliant serving state")
    model: ModelInfo | None = Field(description="the ensemble serving from now on")


class RequestStatusBody(BaseModel):
    """The state of a request; what it asked and its receipt only with the bearer token."""

    id: str
    seq: int
    state: Literal[STATES]  # type: ignore[valid-type]
    points: int | None = Field(None, description="with the token")
    test_points: int | None = Field(None, description="with the token")
    shards: list[int] | None = Field(None, description="with the token")
    group: bool | None = Field(None, description="with the token")
    reason: str | None = Field(None, description="with the token")
    accepted_at: float | None = Field(None, description="with the token")
    receipt: dict[str, Any] | None = Field(None, description="with the token, once purged")


class ServedShardBody(BaseModel):
    shard: int
    stage: int = Field(description="R: final; 1..R-1: rolled back; 0: left out")
    pending: list[int]


class EnsembleStatus(BaseModel):
    version: str
    through: int
    loaded_at: float
    aggregation: str
    num_classes: int
    classes: list[ClassName]
    input_shape: list[int]
    output: str
    inference: str | None
    live_shards: list[int]
    shards: list[ServedShardBody]
    last_error: str | None


class RetrainerStatus(BaseModel):
    mode: str
    running: bool | None = None
    batches: int | None = None
    last_decision: str | None = None
    last_error: str | None = None


class StatusResponse(BaseModel):
    ensemble: EnsembleStatus
    pending_requests: int
    oldest_pending_s: float | None
    retrainer: RetrainerStatus
    acknowledged_through: int


class HealthResponse(BaseModel):
    ok: bool
    version: str
    through: int


def _error(description: str, model: type[BaseModel] = ErrorBody) -> dict[str, Any]:
    return {"model": model, "description": description}


# What the guards (orchestrator.api_guards) may answer on any route
GUARDED: dict[int | str, dict[str, Any]] = {
    408: _error("the body stalled or trickled (the connection is closed)"),
    413: _error("body over serving.max_body_bytes (or rows over serving.max_rows)"),
    429: _error("too many requests in flight from this client; see Retry-After"),
    503: _error("the store cannot be read, or the server is shutting down; see Retry-After"),
}
WITH_BODY: dict[int | str, dict[str, Any]] = {
    **GUARDED,
    400: _error("a body that cannot be decoded"),
    422: _error("a body or rows that do not validate", ValidationErrorBody),
}
