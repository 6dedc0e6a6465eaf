"""The deletion service: when a batch starts, how requests coalesce, and one batch at a time.

Retraining is held at a gate (an executor that waits for the test) where a test needs a
batch to be running, so the timing never depends on how fast the machine trains.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from orchestrator.cli import main
from orchestrator.service import DeletionService
from sisa.deletion import receipts
from sisa.deletion.accept import accept
from sisa.deletion.batch import process
from sisa.deletion.cost import Decision, should_start
from sisa.deletion.plan import BatchPlan
from sisa.evidence.verify import verify
from sisa.store.artifacts import SisaStore
from sisa.store.journal import Journal
from sisa.store.layout import BATCHES, batch_path
from sisa.training.train import train
from storage import LeaseHeldError, read_doc
from tests.conftest import lease_holder, tiny_config
from tests.sisa.deletion.test_accept import layout

TIMEOUT = 120


class GatedExecutor:
    """Runs shard jobs in this process; the first ``hold`` batches wait at the gate."""

    def __init__(self, hold: int = 1) -> None:
        self.hold = hold
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.calls: list[list[tuple[int, int]]] = []  # (shard, start stage) per batch
        self.spans: list[tuple[float, float]] = []

    def map(self, fn, jobs, *, resources, units, desc):
        started = time.monotonic()
        self.calls.append([(j.shard, j.start_stage) for j in jobs])
        if len(self.calls) <= self.hold:
            self.entered.set()
            assert self.gate.wait(TIMEOUT), "the test never opened the gate"
        try:
            return [fn(job, lambda _units: None) for job in jobs]
        finally:
            self.spans.append((started, time.monotonic()))


def wait_for(condition, what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def purged(store: SisaStore, seqs) -> bool:
    return all(receipts.exists(store, s) for s in seqs)


def pick(url, shard, slice_, skip=0):
    ids, shards, slices = layout(url)
    return ids[(shards == shard) & (slices == slice_)][skip].item()


@pytest.fixture
def trained(tmp_path):
    def make(name="store", **overrides):
        url = str(tmp_path / name)
        train(tiny_config(**overrides), url)
        return url

    return make


# --------------------------------------------------------------------------------------
# should_start: the policy alone


def test_window_reached_starts():
    assert should_start(5.0, 5.0, 100.0, 1.0) == Decision(True, "window", 0.0)
    assert should_start(7.0, 5.0, 100.0, None) == Decision(True, "window", 0.0)
    assert should_start(0.0, 0.0, 100.0, None).start  # no window: start at once


def test_waiting_returns_the_remaining_wait():
    decision = should_start(2.0, 5.0, 100.0, 10.0)
    assert decision == Decision(False, "waiting", pytest.approx(3.0))
    assert should_start(0.0, 5.0, 100.0, None).wait == pytest.approx(5.0)  # uncalibrated


def test_deadline_forces_an_early_start():
    # waiting until the window (10 s) then retraining 5 s would end at 15 s > deadline 8 s
    assert should_start(3.0, 10.0, 8.0, 5.0) == Decision(True, "deadline", 0.0)
    assert should_start(3.5, 10.0, 8.0, 5.0).reason == "deadline"
    # before the latest start (deadline - predicted = 3 s) it waits just until then
    early = should_start(1.0, 10.0, 8.0, 5.0)
    assert not early.start and early.reason == "waiting"
    assert early.wait == pytest.approx(2.0)
    # a deadline shorter than the window cuts the wait even when uncalibrated
    assert should_start(4.0, 10.0, 4.0, None) == Decision(True, "deadline", 0.0)
    assert should_start(1.0, 10.0, 4.0, None).wait == pytest.approx(3.0)
    # a retrain predicted to take longer than the deadline starts at once
    assert should_start(0.0, 10.0, 4.0, 9.0) == Decision(True, "deadline", 0.0)


def test_service_rejects_a_bad_policy(trained):
    url = trained()
    with pytest.raises(ValueError, match="window"):
        DeletionService(url, window=-1)
    with pytest.raises(ValueError, match="deadline"):
        DeletionService(url, deadline=0)
    service = DeletionService(url)  # defaults from the store's config
    config = SisaStore(url).config().deletion
    assert (service.window, service.deadline) == (config.batch_window_s, config.deadline_s)


# --------------------------------------------------------------------------------------
# The loop


def test_requests_arriving_during_a_retrain_coalesce_into_the_next_batch(trained):
    url = trained(**{"sisa.epochs": 30})
    store = SisaStore(url)
    first = pick(url, 0, 0)
    later, earlier = pick(url, 1, 2), pick(url, 1, 1)  # same shard, two slices
    generation = store.shard_head(1).generation
    executor = GatedExecutor(hold=1)
    service = DeletionService(url, executor=executor, window=1.0, poll=0.05)
    thread, stop = service.start()
    try:
        one = accept(url, [first])
        wait_for(lambda: store.fs.exists(batch_path(1)), "the first batch to start")
        assert executor.entered.wait(TIMEOUT)  # batch 1 is retraining now
        two = accept(url, [later])
        three = accept(url, [earlier])
        assert not receipts.exists(store, 1)  # accepted while batch 1 was running
        executor.gate.set()
        wait_for(lambda: purged(store, [1, 2, 3]), "all three requests to be purged")
    finally:
        executor.gate.set()
        stop.set()
        thread.join(TIMEOUT)
    assert not thread.is_alive() and service.errors == []

    names = sorted(n for n in store.fs.listdir(BATCHES) if n.startswith("b"))  # the plans
    assert names == ["b000000001.json", "b000000003.json"]
    plan = BatchPlan.from_body(read_doc(store.fs, batch_path(3)))
    assert plan.requests == [two.request_id, three.request_id] and plan.seqs == [2, 3]
    assert [(s.shard, s.start_stage, s.removed) for s in plan.shards] == [(1, 2, 2)]
    assert executor.calls == [[(0, 1)], [(1, 2)]]  # shard 1 retrained once, from slice 2
    assert store.shard_head(1).generation == generation + 1
    assert [b.plan.through for b in service.batches] == [1, 3]
    assert receipts.read(store, 1)["batch"]["through"] == 1
    for seq in (2, 3):
        receipt = receipts.read(store, seq)
        assert receipt["batch"]["through"] == 3 and receipt["batch"]["requests"] == 2
        assert receipt["batch"]["planned"]["shards"] == {"1": 2}
        assert [s["stages"] for s in receipt["shards"]] == [[2, 3]]
    assert one.request_id == receipts.read(store, 1)["request"]
    assert verify(url).identical


def test_a_deadline_shorter_than_the_window_starts_the_batch_early(trained):
    url = trained()
    window, deadline = 60.0, 1.0
    decisions: list[Decision | None] = []
    service = DeletionService(url, window=window, deadline=deadline, poll=0.05)
    service.on_batch = lambda report: decisions.append(service.last_decision)
    thread, stop = service.start()
    try:
        accepted = time.time()
        accept(url, [pick(url, 2, 1)])
        wait_for(lambda: receipts.exists(service.store, 1), "the batch", timeout=window / 2)
        took = time.time() - accepted
    finally:
        stop.set()
        thread.join(TIMEOUT)
    assert service.errors == []
    assert took < window / 2
    assert len(decisions) == 1 and decisions[0].start and decisions[0].reason == "deadline"
    assert service.last_decision.reason == "deadline"


def test_step_waits_then_starts_at_the_latest_start(trained):
    """``step(now)`` with a chosen clock: no sleeping, no threads."""
    url = trained()
    service = DeletionService(url, window=60.0, deadline=10.0)
    assert service.step() is None  # nothing pending
    accept(url, [pick(url, 0, 2)])
    request = Journal(service.store).open_requests()[0]
    predicted = service._predicted_seconds((request.seq,))
    assert predicted is not None and 0 < predicted < 10  # calibrated from training
    latest = 10.0 - predicted
    waiting = service.step(request.accepted_at + 1.0)
    assert not waiting.start and waiting.reason == "waiting"
    assert waiting.wait == pytest.approx(latest - 1.0)
    assert service.batches == [] and not receipts.exists(service.store, 1)
    started = service.step(request.accepted_at + latest + 0.01)
    assert started.start and started.reason == "deadline"
    assert len(service.batches) == 1 and receipts.exists(service.store, 1)
    assert service.step() is None


def test_a_second_service_waits_for_the_lease_and_no_request_runs_twice(trained, capsys):
    url = trained()
    store = SisaStore(url)
    held = GatedExecutor(hold=1)
    other = GatedExecutor(hold=0)
    a = DeletionService(url, executor=held, window=0.0, poll=0.05)
    b = DeletionService(url, executor=other, window=0.0, poll=0.05)
    thread_a, stop_a = a.start()
    thread_b = stop_b = None
    try:
        accept(url, [pick(url, 0, 1)])
        assert held.entered.wait(TIMEOUT)  # service A holds the lease, inside batch 1
        accept(url, [pick(url, 1, 0)])
        listed = store.fs.listdir(BATCHES)

        decision = b.step()  # wants to start, finds the lease held, and lets it be
        assert (decision.start, decision.reason) == (False, "busy")
        assert b.batches == [] and b.errors == []
        with pytest.raises(LeaseHeldError):
            process(url)
        capsys.readouterr()
        assert main(["process", "--store", url, "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("sisa: error:") and "held by pid" in err and err.count("\n") == 1
        assert store.fs.listdir(BATCHES) == listed and other.calls == []

        thread_b, stop_b = b.start()  # both loops run; more requests arrive meanwhile
        time.sleep(0.3)
        assert other.calls == []  # still held off while A's batch is at the gate
        held.gate.set()
        for shard, slice_ in [(2, 0), (0, 2), (1, 1)]:
            accept(url, [pick(url, shard, slice_)])
            time.sleep(0.05)
        wait_for(lambda: purged(store, range(1, 6)), "every request to be purged")
    finally:
        held.gate.set()
        stop_a.set()
        if stop_b is not None:
            stop_b.set()
        thread_a.join(TIMEOUT)
        if thread_b is not None:
            thread_b.join(TIMEOUT)
    assert a.errors == [] and b.errors == []
    assert Journal(store).receipted() == [1, 2, 3, 4, 5]  # one receipt per request
    chain = receipts.verify_chain(store, [1, 2, 3, 4, 5])
    assert chain.ok, chain.problems
    batches = [b.plan.seqs for b in a.batches + b.batches]
    assert sorted(s for seqs in batches for s in seqs) == [1, 2, 3, 4, 5]  # each once
    spans = sorted(held.spans + other.spans)
    assert all(end <= start for (_, end), (start, _) in zip(spans, spans[1:], strict=False))
    assert lease_holder(url) is None
    assert verify(url).identical


def test_a_service_held_off_by_the_lease_does_not_spin(trained):
    """While another process holds the lease, the loop looks again every ``poll`` seconds
    instead of spinning (each turn lists the journal and tries the lease: paid requests
    on an object store)."""
    url = trained()
    held = GatedExecutor(hold=1)
    holder = DeletionService(url, executor=held, window=0.0, poll=0.05)
    thread, stop = holder.start()
    try:
        accept(url, [pick(url, 0, 1)])
        assert held.entered.wait(TIMEOUT)  # the holder is inside its batch, lease held
        accept(url, [pick(url, 1, 0)])
        poll, steps = 0.2, []
        waiting = DeletionService(url, window=0.0, poll=poll)
        step = waiting.step
        waiting.step = lambda *a, **k: steps.append(time.monotonic()) or step(*a, **k)
        thread_w, stop_w = waiting.start()
        time.sleep(1.0)
        stop_w.set()
        thread_w.join(TIMEOUT)
    finally:
        held.gate.set()
        stop.set()
        thread.join(TIMEOUT)
    assert waiting.errors == [] and waiting.batches == []
    assert len(steps) <= 1.0 / poll + 2, f"{len(steps)} turns in 1 s with poll={poll}"


class Follow:
    """``sisa process --follow --json`` in a real process; its stdout is read as it comes."""

    def __init__(self, url: str, unbuffered: bool) -> None:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
        if unbuffered:
            env["PYTHONUNBUFFERED"] = "1"
        argv = ["process", "--store", url, "--follow", "--window", "0.2", "--deadline", "30"]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.cli", *argv, "--json", "--no-progress"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            # as from a terminal: a shell runs background jobs with SIGINT ignored, and a
            # child would inherit that and never see the Ctrl-C this test sends
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        self.out: list[str] = []
        self.reader = threading.Thread(target=lambda: self.out.extend(self.proc.stdout))
        self.reader.start()

    def reports(self) -> list[dict]:
        """The complete JSON reports printed so far."""
        text, decoder, found, at = "".join(self.out), json.JSONDecoder(), [], 0
        while text[at:].strip():
            at += len(text[at:]) - len(text[at:].lstrip())
            try:
                report, at = decoder.raw_decode(text, at)
            except ValueError:
                break  # a report still being written
            found.append(report)
        return found

    def interrupt(self) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.reader.join(TIMEOUT)
        return self.proc.returncode, self.proc.stderr.read()


@pytest.mark.slow  # a real follower process
def test_process_follow_from_the_command_line(trained):
    """``sisa process --follow`` serves until interrupted, printing a report per batch."""
    url = trained()
    follow = Follow(url, unbuffered=True)
    try:
        first = accept(url, [pick(url, 0, 1)])
        wait_for(lambda: len(follow.reports()) == 1, "the report of request 1")
        second = accept(url, [pick(url, 2, 0)])
        wait_for(lambda: len(follow.reports()) == 2, "the report of request 2")
        assert follow.proc.poll() is None  # still serving
    finally:
        code, err = follow.interrupt()
    assert code == 130, err
    assert "window 0.2s, deadline 30.0s" in err and "sisa: interrupted" in err
    assert "Traceback" not in err
    reports = follow.reports()
    assert [r["receipts"] for r in reports] == [[first.request_id], [second.request_id]]
    assert [r["plan"]["through"] for r in reports] == [1, 2]
    assert lease_holder(url) is None


def test_follow_reports_each_batch_when_it_ends(trained):
    """A service's report reaches a pipe (a log collector, ``| jq``) when the batch ends,
    without PYTHONUNBUFFERED."""
    url = trained()
    follow = Follow(url, unbuffered=False)
    try:
        accept(url, [pick(url, 0, 1)])
        wait_for(lambda: receipts.exists(SisaStore(url), 1), "request 1 to be purged")
        deadline = time.monotonic() + 10
        while not follow.reports() and time.monotonic() < deadline:
            time.sleep(0.05)
        seen = len(follow.reports())
    finally:
        code, err = follow.interrupt()
    assert code == 130, err
    assert len(follow.reports()) == 1  # printed in the end...
    assert seen == 1, "...but not when the batch ended: the report was left in the buffer"
