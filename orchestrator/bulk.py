"""Bulk predictions: ``/predict`` bodies and answers as npy or Arrow IPC, beside JSON.

JSON is parsed value by value; a data team scoring millions of rows sends arrays instead:

- ``application/x-npy``: one ``.npy`` array, [rows, features] (or [rows, *input shape]),
  of integers or floats. Read with ``allow_pickle=False``: an object array is refused.
- ``application/vnd.apache.arrow.stream``: an Arrow IPC stream of one table whose columns
  are the features in order (integers or floats, no nulls), or of a single column of
  fixed-size lists, one list per row.

Either way the rows then pass the very checks of a JSON body (``check_features``: shape,
dtype, NaN, float32's range; ``serving.max_rows``; ``serving.max_body_bytes``), with the
same status codes. ``?probabilities=true`` asks for the scores.

The answer takes the form the ``Accept`` header asks for (JSON when it names none of
these): an npy answer holds the label indices, or the probabilities when asked, and says
the class names, ``version`` and ``through`` in ``X-Sisa-*`` headers; an Arrow answer
holds the labels, their values and the probabilities as columns, and the rest as the
schema's metadata.
"""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np

NPY = "application/x-npy"
ARROW = "application/vnd.apache.arrow.stream"
JSON = "application/json"
BINARY = (NPY, ARROW)
BINARY_PATH = "/predict.binary"  # where a binary /predict body is routed (not public)


class UndecodableBody(ValueError):
    """A binary body that is not what its Content-Type says (400)."""


def media_type(header: str | None) -> str:
    """The media type of a Content-Type header, without its parameters."""
    return (header or "").split(";", 1)[0].strip().lower()


def accepted(header: str | None) -> str:
    """The answer's format: the supported type the ``Accept`` header prefers most (by
    ``q``, then by order), JSON when it names none of them."""
    best, best_q = JSON, -1.0
    for part in (header or "").split(","):
        kind, *params = (p.strip() for p in part.split(";"))
        kind = kind.lower()
        if kind not in (*BINARY, JSON):
            continue
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if q > best_q and q > 0:
            best, best_q = kind, q
    return best


def decode(raw: bytes, kind: str) -> np.ndarray:
    """The rows of a binary body, as sent; ``UndecodableBody`` if it does not decode."""
    if kind == NPY:
        if not raw.startswith(b"\x93NUMPY"):
            raise UndecodableBody("the body is not an .npy array (no .npy magic)")
        try:
            return np.lib.format.read_array(io.BytesIO(raw), allow_pickle=False)
        except ValueError as err:
            if "allow_pickle" in str(err):  # an object array: no numbers to score
                from sisa.serving.ensemble import InputError

                raise InputError("features must be real numbers, got object") from None
            raise UndecodableBody(f"the body is not an .npy array: {err}") from None
        except (OSError, EOFError) as err:
            raise UndecodableBody(f"the body is not an .npy array: {err}") from None
    return _arrow_rows(raw)


def _arrow_rows(raw: bytes) -> np.ndarray:
    import pyarrow as pa

    from sisa.serving.ensemble import InputError

    try:
        table = pa.ipc.open_stream(pa.BufferReader(raw)).read_all()
    except (pa.ArrowInvalid, pa.ArrowException, OSError) as err:
        raise UndecodableBody(f"the body is not an Arrow IPC stream: {err}") from None
    if table.num_columns == 0:
        raise InputError("the Arrow table has no columns")
    columns = [table.column(i).combine_chunks() for i in range(table.num_columns)]
    if any(c.null_count for c in columns):
        raise InputError("features must be real numbers, got null")
    first = columns[0]
    if table.num_columns == 1 and pa.types.is_fixed_size_list(first.type):
        values = first.flatten()
        _numeric(values.type)
        width = first.type.list_size
        return values.to_numpy(zero_copy_only=False).reshape(len(first), width)
    for column in columns:
        _numeric(column.type)
    if len(columns) == 1:
        return columns[0].to_numpy(zero_copy_only=False).reshape(-1, 1)
    return np.column_stack([c.to_numpy(zero_copy_only=False) for c in columns])


def _numeric(kind: Any) -> None:
    import pyarrow as pa

    from sisa.serving.ensemble import InputError

    if not (pa.types.is_integer(kind) or pa.types.is_floating(kind)):
        raise InputError(f"features must be real numbers, got {kind}")


def _headers(body: dict[str, Any]) -> dict[str, str]:
    # ASCII JSON: a header carries latin-1 at most, and class names may be any text
    return {
        "X-Sisa-Classes": json.dumps(list(body["classes"]), ensure_ascii=True),
        "X-Sisa-Model-Version": str(body["model"]["version"]),
        "X-Sisa-Model-Through": str(body["model"]["through"]),
    }


def encode(body: dict[str, Any], kind: str) -> tuple[bytes, dict[str, str]]:
    """A prediction body (``orchestrator.api.prediction_body``) in ``kind``: the bytes
    and the headers that go with them."""
    if kind == NPY:
        scores = body.get("probabilities")
        out = np.asarray(scores, dtype=np.float32) if scores is not None else None
        if out is None:
            out = np.asarray(body["labels"], dtype=np.int64)  # [n] class indices
        buffer = io.BytesIO()
        np.save(buffer, out, allow_pickle=False)
        return buffer.getvalue(), _headers(body)
    return _arrow_answer(body), {}


def _arrow_answer(body: dict[str, Any]) -> bytes:
    import pyarrow as pa

    labels = np.asarray(body["labels"], dtype=np.int64)  # [n]
    columns = {"label": pa.array(labels), "label_value": pa.array(list(body["label_names"]))}
    if body.get("probabilities") is not None:
        scores = np.ascontiguousarray(body["probabilities"], dtype=np.float32)  # [n, C]
        flat = pa.array(scores.reshape(-1))
        columns["probabilities"] = pa.FixedSizeListArray.from_arrays(flat, scores.shape[1])
    meta = {
        "classes": json.dumps(list(body["classes"])),
        "version": str(body["model"]["version"]),
        "through": str(body["model"]["through"]),
    }
    table = pa.table(columns).replace_schema_metadata(meta)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def route_path(scope: dict) -> str:
    """The request's path within the app: without the prefix it is mounted under (Ray
    Serve's ``route_prefix`` arrives as ``root_path``)."""
    path, root = scope.get("path", ""), scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


class BinaryBodies:
    """ASGI middleware: routes a ``POST /predict`` whose body is npy or Arrow to the
    app's binary endpoint (``BINARY_PATH``); JSON bodies go on to the validated route.
    It sits inside the body limit, so the same byte and time bounds hold."""

    def __init__(self, app: Any, path: str = "/predict") -> None:
        self.app, self.path = app, path

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            path, root = route_path(scope), scope.get("root_path", "")
            headers = dict(scope.get("headers") or [])
            kind = media_type(headers.get(b"content-type", b"").decode("latin-1"))
            if path == self.path and kind in BINARY:
                routed = root + BINARY_PATH
                scope = scope | {"path": routed, "raw_path": routed.encode()}
            elif path == BINARY_PATH:  # only reachable through /predict
                scope = scope | {"path": root + "/not-found", "raw_path": b"/not-found"}
        await self.app(scope, receive, send)
