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
def test_process_follow_writes_one_json_object_per_event(url):
    victims = pick(url, 1, 1)
    with following(url, "--window", "0.1", "--log-format", "json") as follow:
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
