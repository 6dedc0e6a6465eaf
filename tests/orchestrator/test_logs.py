"""Structured logs: ``process --follow --log-format json`` writes one JSON object per
event on stderr, with request IDs, batch numbers, durations and outcomes, and no raw ID."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from orchestrator import logs
from sisa.deletion.accept import accept
from tests.orchestrator.local_app import following
from tests.sisa.deletion.test_batch import pick

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def text_logs_after():
    """A test that turns JSON on leaves the process's logging as it found it."""
    yield
    logs.setup("text")


def test_an_event_carries_only_fields_known_to_be_id_free(capsys):
    logs.setup("json")
    logs.event("batch", batch=3, requests=["r000000003-ab"], outcome="purged")
    line = json.loads(capsys.readouterr().err)
    assert line["event"] == "batch" and line["batch"] == 3 and line["level"] == "info"
    assert line["time"].endswith("Z")
    with pytest.raises(ValueError, match="not known to be ID-free"):
        logs.event("batch", ids=[17])
    logs.failure_event(RuntimeError("the store went away\nmore"))
    failed = json.loads(capsys.readouterr().err)
    assert failed == failed | {"event": "batch_failed", "level": "warning"}
    assert failed["error"] == "RuntimeError" and failed["detail"] == "the store went away"
    logs.setup("text")
    logs.event("batch", batch=3, outcome="purged")
    assert capsys.readouterr().err == "sisa: batch batch=3 outcome=purged\n"


def test_a_follower_that_keeps_failing_reports_each_failure_and_gives_up(url, capsys):
    from orchestrator.cli import main

    accept(url, pick(url, 0, 1))
    shards = Path(url) / "shards" / "00000"
    for head in shards.glob("g*.json"):
        head.write_text("{broken")  # every batch now fails on this head
    argv = ["process", "--store", url, "--follow", "--window", "0", "--max-errors", "2"]
    assert main([*argv, "--log-format", "json", "--no-progress"]) == 2
    lines = [
        json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")
    ]
    failed = [line for line in lines if line["event"] == "batch_failed"]
    assert len(failed) == 2 and failed[0]["outcome"] == "retrying"


@pytest.mark.slow  # a follower in a process of its own
@pytest.mark.parametrize(
    "executor",
    ["local", pytest.param("ray", marks=pytest.mark.ray)],  # ray: a cluster of its own
)
def test_process_follow_writes_one_json_object_per_event(url, executor, monkeypatch):
    victims = pick(url, 1, 1)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    options = ("--window", "0.1", "--log-format", "json", "--executor", executor)
    with following(url, *options) as follow:
        first = json.loads(follow.stderr.readline())
        assert first["event"] == "following" and first["store"] == url
        request_id = accept(url, victims).request_id
        deadline = time.monotonic() + 120
        while True:
            line = follow.stderr.readline()
            assert line, "the follower stopped"
            event = json.loads(line)  # every line is one JSON object
            if event["event"] == "batch":
                break
            assert time.monotonic() < deadline
    assert event["batch"] == 1 and event["requests"] == [request_id]
    assert event["outcome"] == "purged" and event["seconds"] > 0 and event["shards"] == [1]
    assert set(event) <= logs.FIELDS | {"time", "level", "event"}
    assert not any(str(v) in line for v in victims if len(str(v)) > 2)


def test_in_json_the_process_own_warnings_and_its_last_error_are_json_too(url, capsys):
    import logging

    from orchestrator.cli import main

    logs.setup("json")
    logging.getLogger("some.library").warning("a warning of %s", "its own")
    line = json.loads(capsys.readouterr().err)
    assert line == line | {"event": "log", "level": "warning", "logger": "some.library"}
    assert line["detail"] == "a warning of its own"
    assert main(["process", "--store", url, "--log-format", "json"]) == 2
    (error,) = [json.loads(x) for x in capsys.readouterr().err.splitlines()]
    assert error == error | {"event": "error", "level": "error", "error": "CLIError"}
    assert error["detail"] == "--log-format applies to --follow"
    logs.setup("text")  # the root logger as it was: the process's warnings are not ours
    assert not any(isinstance(h, logs.Stderr) for h in logging.getLogger().handlers)


@pytest.mark.ray
@pytest.mark.slow  # the session's Ray cluster
def test_a_relay_never_holds_up_or_fails_its_sender(ray_cluster, capsys):
    """A full queue and a gone one drop the event; the sender goes on at once (from an
    event loop) or within SEND_S (from a thread). The writer writes each event with the
    time it happened, and at its stop what is still queued."""
    import asyncio
    import threading

    relay = logs.EventRelay(maxsize=2)
    logs.setup("json")
    relay.emit_now("batch", batch=1, outcome="purged")

    async def from_a_replica() -> float:
        started = time.perf_counter()
        relay.emit("forget", request="r000000002-ab", outcome="compliant")
        relay.emit("forget", request="r000000003-cd", outcome="compliant")  # the queue is full
        took = time.perf_counter() - started
        await asyncio.sleep(relay.SEND_S + 0.5)  # the sends end, one way or the other
        return took

    assert asyncio.run(from_a_replica()) < 0.05  # the request did not wait
    started = time.perf_counter()
    relay.emit_now("batch", batch=2, outcome="purged")  # full: dropped, not raised
    assert time.perf_counter() - started < relay.SEND_S + 0.5
    assert relay.queue.qsize() == 2
    stop = threading.Event()
    stop.set()  # the writer only flushes
    relay.pump(stop).join(timeout=30)
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    written = [e for e in lines if e["event"] != "log"]
    drops = [e["detail"] for e in lines if e["event"] == "log"]  # the senders' own warnings
    assert len(drops) == 2 and all(d.startswith("event ") and "dropped" in d for d in drops)
    assert [(e["event"], e.get("batch"), e.get("request")) for e in written] == [
        ("batch", 1, None),
        ("forget", None, "r000000002-ab"),
    ]
    assert written[0]["time"] <= written[1]["time"]
    ray_cluster.kill(relay.queue.actor)  # the writer's side is gone
    started = time.perf_counter()
    relay.emit_now("batch", batch=3, outcome="purged")
    assert time.perf_counter() - started < relay.SEND_S + 0.5
