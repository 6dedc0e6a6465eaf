"""Events of the long-running commands, as text or as one JSON object per line.

``--log-format json`` on ``process --follow`` writes each event to stderr as one JSON
object: ``{"time", "level", "event", ...}`` with the event's own fields (request IDs,
batch numbers, durations, outcomes). Fields name requests by their IDs and points only by
counts: an event never carries a raw ID, and ``event`` refuses a field it does not know,
so nothing new slips in unreviewed.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

EVENTS = logging.getLogger("sisa.events")
# every field an event may carry: none of them can hold a point's ID
FIELDS = frozenset(
    {
        "store", "window_s", "deadline_s", "metrics", "batch", "requests", "shards",
        "samples", "compute_seconds", "seconds", "resumed", "purged_files", "outcome",
        "error", "detail",
    }
)  # fmt: skip


class JsonLines(logging.Formatter):
    """One JSON object per record: time, level, event and the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        body = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "event": getattr(record, "event", record.getMessage()),
        }
        return json.dumps(body | getattr(record, "fields", {}), default=str, sort_keys=False)


class Text(logging.Formatter):
    """``sisa: <event> key=value ...``, for people."""

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", {})
        pairs = " ".join(f"{k}={v}" for k, v in fields.items())
        return f"sisa: {getattr(record, 'event', record.getMessage())} {pairs}".rstrip()


def setup(fmt: str) -> None:
    """Send the events to stderr in ``fmt`` (``text`` or ``json``)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLines() if fmt == "json" else Text())
    EVENTS.handlers[:] = [handler]
    EVENTS.setLevel(logging.INFO)
    EVENTS.propagate = False


def event(name: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one event; a field outside ``FIELDS`` is a programming error."""
    unknown = set(fields) - FIELDS
    if unknown:
        raise ValueError(f"event {name!r}: fields {sorted(unknown)} are not known to be ID-free")
    EVENTS.log(level, name, extra={"event": name, "fields": fields})


def batch_event(report: Any) -> None:
    """A processed batch: its number, requests, shards, cost and outcome."""
    event(
        "batch",
        batch=report.plan.through,
        requests=[r["request"] for r in report.receipts],
        shards=sorted(s.shard for s in report.plan.shards),
        samples=report.samples,
        compute_seconds=round(report.compute_seconds, 4),
        seconds=round(report.seconds, 4),
        resumed=report.resumed,
        purged_files=len(report.purged),
        outcome="purged",
    )


def failure_event(err: BaseException) -> None:
    """A batch that failed and will be retried; the detail is the error's first line (a
    store path or a reason: processing names points by salted hash only)."""
    detail = (str(err).splitlines() or [""])[0][:500]
    event("batch_failed", logging.WARNING, error=type(err).__name__, detail=detail,
          outcome="retrying")  # fmt: skip
