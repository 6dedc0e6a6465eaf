"""Events of the long-running commands, as text or as one JSON object per line.

``--log-format json`` on ``process --follow`` and ``serve`` writes each event to stderr
as one JSON object: ``{"time", "level", "event", ...}`` with the event's own fields
(request IDs, batch numbers, durations, outcomes). Fields name requests by their IDs and
points only by counts: an event never carries a raw ID, and ``event`` refuses a field it
does not know, so nothing new slips in unreviewed.

``sisa serve`` runs its deployments in Ray's processes: they send their events through
an ``EventRelay`` (a Ray queue) to the ``sisa serve`` process, which writes them. So its
stderr is one stream, in one format, and Ray's own forwarding of worker output stays off.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import sys
import threading
import time
from typing import Any

EVENTS = logging.getLogger("sisa.events")
# every field an event may carry: none of them can hold a point's ID
FIELDS = frozenset(
    {
        "store", "window_s", "deadline_s", "metrics", "batch", "requests", "shards",
        "samples", "compute_seconds", "seconds", "resumed", "purged_files", "outcome",
        "error", "detail", "url", "forget", "retrain", "request", "points", "rows",
        "status", "logger",
    }
)  # fmt: skip


class JsonLines(logging.Formatter):
    """One JSON object per record: time, level, event and the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        body = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "event": getattr(record, "event", "log"),
        }
        fields = getattr(record, "fields", None)
        if fields is None:  # a warning of the process itself, through the root logger
            fields = {"logger": record.name, "detail": record.getMessage()}
        return json.dumps(body | fields, default=str, sort_keys=False)


class Text(logging.Formatter):
    """``sisa: <event> key=value ...``, for people."""

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", {})
        pairs = " ".join(f"{k}={v}" for k, v in fields.items())
        return f"sisa: {getattr(record, 'event', record.getMessage())} {pairs}".rstrip()


class Stderr(logging.StreamHandler):
    """A handler on ``sys.stderr`` as it is at each record, not as it was when made."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _: Any) -> None:
        pass


def adopt(*names: str) -> None:
    """In JSON, loggers that write to stderr through handlers of their own (Ray's, Serve's)
    pass their warnings to the root logger instead, which writes them as JSON lines; in
    text, they stay as they were. Each is a package that sets its logger up as it is
    imported, so it is imported first; ``ray.init(configure_logging=False)`` then clears
    the handlers of Ray's logger again and leaves it propagating, so this may come before."""
    if not any(isinstance(h, Stderr) for h in logging.getLogger().handlers):
        return  # text: nothing of ours on the root logger
    for name in names:
        importlib.import_module(name)
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True


def setup(fmt: str) -> None:
    """Send the events to stderr in ``fmt`` (``text`` or ``json``). In JSON, the process's
    own warnings (through the root logger) are JSON lines too: stderr stays parseable."""
    handler = Stderr()
    handler.setFormatter(JsonLines() if fmt == "json" else Text())
    EVENTS.handlers[:] = [handler]
    EVENTS.setLevel(logging.INFO)
    EVENTS.propagate = False
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if not isinstance(h, Stderr)]
    if fmt == "json":
        warnings = Stderr()
        warnings.setLevel(logging.WARNING)  # others' INFO lines stay out, as in text
        warnings.setFormatter(JsonLines())
        root.addHandler(warnings)


def checked(name: str, fields: dict[str, Any]) -> dict[str, Any]:
    """``fields``, once each is known to be ID-free; else a programming error."""
    unknown = set(fields) - FIELDS
    if unknown:
        raise ValueError(f"event {name!r}: fields {sorted(unknown)} are not known to be ID-free")
    return fields


def event(name: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one event; a field outside ``FIELDS`` is a programming error."""
    EVENTS.log(level, name, extra={"event": name, "fields": checked(name, fields)})


def batch_fields(report: Any) -> dict[str, Any]:
    """A processed batch: its number, requests, shards, cost and outcome."""
    return {
        "batch": report.plan.through,
        "requests": [r["request"] for r in report.receipts],
        "shards": sorted(s.shard for s in report.plan.shards),
        "samples": report.samples,
        "compute_seconds": round(report.compute_seconds, 4),
        "seconds": round(report.seconds, 4),
        "resumed": report.resumed,
        "purged_files": len(report.purged),
        "outcome": "purged",
    }


def failure_fields(err: BaseException) -> dict[str, Any]:
    """A batch that failed and will be retried; the detail is the error's first line (a
    store path or a reason: processing names points by salted hash only)."""
    detail = (str(err).splitlines() or [""])[0][:500]
    return {"error": type(err).__name__, "detail": detail, "outcome": "retrying"}


def batch_event(report: Any) -> None:
    event("batch", **batch_fields(report))


def failure_event(err: BaseException) -> None:
    event("batch_failed", logging.WARNING, **failure_fields(err))


class EventRelay:
    """Events from Ray's processes to the one that writes them, through a Ray queue.

    It pickles (the queue is an actor handle), so deployments are given it at bind time.
    Sending never fails its caller and never holds it up: a replica's request goes on
    while a task of its own sends the event, and the retrainer's thread waits
    ``SEND_S`` at most. A full queue (the writer stalled) or a gone one (the writer
    stopped) drops the event, and the sender's own log (Ray's log files) says so.
    """

    MAXSIZE = 10_000
    POLL_S = 0.25  # the writer's wait for the next event, between looks at its stop flag
    SEND_S = 1.0  # the longest a send waits on the queue before it drops the event

    def __init__(self, maxsize: int = MAXSIZE) -> None:
        from ray.util.queue import Queue

        self.queue = Queue(maxsize, actor_options={"num_cpus": 0})

    def __getstate__(self) -> dict[str, Any]:
        return {"queue": self.queue}  # not the sends in flight

    @staticmethod
    def _item(name: str, level: int, fields: dict[str, Any]) -> dict[str, Any]:
        return {"event": name, "level": level, "time": time.time(),
                "fields": checked(name, fields)}  # fmt: skip

    def emit(self, name: str, level: int = logging.INFO, **fields: Any) -> None:
        """From a replica's event loop; returns at once."""
        try:
            task = asyncio.get_running_loop().create_task(
                self._send(self._item(name, level, fields))
            )
        except Exception as err:  # noqa: BLE001 - logging never fails a request
            _dropped(name, err)
            return
        sending = self.__dict__.setdefault("_sending", set())  # held until sent
        sending.add(task)
        task.add_done_callback(sending.discard)

    async def _send(self, item: dict[str, Any]) -> None:
        try:
            await asyncio.wait_for(self.queue.put_async(item, block=False), self.SEND_S)
        except Exception as err:  # noqa: BLE001 - full, gone or stalled: dropped
            _dropped(item["event"], err)

    def emit_now(self, name: str, level: int = logging.INFO, **fields: Any) -> None:
        """From a thread (the retrainer's callbacks); waits ``SEND_S`` at most."""
        import ray

        try:
            item = self._item(name, level, fields)
            ray.get(self.queue.actor.put_nowait.remote(item), timeout=self.SEND_S)
        except Exception as err:  # noqa: BLE001 - logging never fails a batch
            _dropped(name, err)

    def write(self, item: dict[str, Any]) -> None:
        """Log one relayed event here, at the time it happened there."""
        record = EVENTS.makeRecord(
            EVENTS.name, item["level"], "(relayed)", 0, item["event"], None, None,
            extra={"event": item["event"], "fields": item["fields"]},
        )  # fmt: skip
        record.created = item["time"]
        record.msecs = (item["time"] % 1) * 1000
        EVENTS.handle(record)

    def pump(self, stop: threading.Event) -> threading.Thread:
        """Write the events as they come, until ``stop``; then what is left. It never
        calls Ray once Ray is shut down (a call would start a new Ray instance)."""
        import ray

        def run() -> None:
            from ray.util.queue import Empty

            while not stop.is_set() and ray.is_initialized():
                try:
                    self.write(self.queue.get(timeout=self.POLL_S))
                except Empty:
                    continue
                except Exception as err:  # noqa: BLE001 - the queue is gone
                    logging.getLogger(__name__).warning("events no longer relayed: %s", err)
                    return
            if ray.is_initialized():
                self.flush()

        thread = threading.Thread(target=run, name="sisa-events", daemon=True)
        thread.start()
        return thread

    def flush(self) -> None:
        """Write every event still queued."""
        try:
            while not self.queue.empty():
                for item in self.queue.get_nowait_batch(self.queue.qsize()):
                    self.write(item)
        except Exception as err:  # noqa: BLE001 - the queue is gone
            logging.getLogger(__name__).warning("events still queued are lost: %s", err)


def _dropped(name: str, err: BaseException) -> None:
    logging.getLogger(__name__).warning("event %s dropped: %r", name, err)
