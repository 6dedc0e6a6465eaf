"""The deletion service: a loop that turns pending requests into batches.

Requests are compliant the moment they are accepted (rollback serving), so retraining can
wait and coalesce. The loop starts a batch when its oldest request has waited
``deletion.batch_window_s`` seconds, or earlier when waiting longer would, by the
calibrated cost model, retrain that request after ``deletion.deadline_s``
(``sisa.deletion.cost.should_start``). Requests accepted while a batch runs wait for the next one,
which retrains each shard once from the earliest slice any of them touches.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sisa.deletion.batch import BatchReport, process
from sisa.deletion.cost import Decision, should_start
from sisa.deletion.plan import pending_plan
from sisa.store.artifacts import SisaStore
from sisa.store.journal import Journal
from sisa.training.jobs import Executor
from storage import LeaseHeldError

KEEP = 100  # batch reports and errors a service remembers


@dataclass
class DeletionService:
    url: str
    storage_options: dict[str, Any] | None = None
    executor: Executor | None = None
    window: float | None = None  # default: the store's deletion.batch_window_s
    deadline: float | None = None  # default: the store's deletion.deadline_s
    poll: float = 0.2
    on_batch: Callable[[BatchReport], None] | None = None
    on_error: Callable[[BaseException], None] | None = None
    max_errors: int | None = None  # consecutive failures before run() gives up
    batches: list[BatchReport] = field(default_factory=list)  # the last KEEP
    completed: int = 0  # batches run, all told
    last_decision: Decision | None = None
    errors: list[BaseException] = field(default_factory=list)  # the last KEEP, then retried
    _predicted: tuple[tuple[int, ...], float | None] = ((), None)

    def __post_init__(self) -> None:
        self.store = SisaStore(self.url, self.storage_options)
        policy = self.store.config().deletion
        self.window = policy.batch_window_s if self.window is None else self.window
        self.deadline = policy.deadline_s if self.deadline is None else self.deadline
        if self.window < 0 or self.deadline <= 0:
            raise ValueError("the batch window must be >= 0 and the deadline > 0 seconds")

    def _predicted_seconds(self, seqs: tuple[int, ...]) -> float | None:
        if self._predicted[0] != seqs:  # plan again only when the pending set changes
            plan = pending_plan(self.store)
            self._predicted = (seqs, plan.predicted_seconds if plan else None)
        return self._predicted[1]

    def step(self, now: float | None = None) -> Decision | None:
        """Start a batch if the policy says so; return the decision (None: nothing pending)."""
        requests = Journal(self.store).open_requests()
        if not requests:
            return None
        now = time.time() if now is None else now
        seqs = tuple(r.seq for r in requests)
        age = now - min(r.accepted_at for r in requests)
        decision = should_start(age, self.window, self.deadline, self._predicted_seconds(seqs))
        self.last_decision = decision
        if decision.start:
            try:
                report = process(self.url, self.storage_options, executor=self.executor)
            except LeaseHeldError:  # another process is on it; its batches include these
                decision = Decision(False, "busy", self.poll)
                self.last_decision = decision
                return decision
            if report is not None:
                self.batches.append(report)
                self.completed += 1
                del self.batches[:-KEEP]  # a long-lived service keeps a bounded history
                if self.on_batch is not None:
                    self.on_batch(report)
        return decision

    def run(self, stop: threading.Event) -> None:
        """Serve until ``stop`` is set; errors go to ``on_error`` and are retried with
        back-off, and after ``max_errors`` in a row the last one is raised."""
        failures = 0
        while not stop.is_set():
            try:
                decision = self.step()
                failures = 0
            except Exception as err:  # noqa: BLE001 - a service outlives one failed batch
                self.errors.append(err)
                del self.errors[:-KEEP]
                failures += 1
                if self.on_error is not None:
                    self.on_error(err)
                if self.max_errors is not None and failures >= self.max_errors:
                    raise
                stop.wait(min(60.0, self.poll * 2 ** min(failures, 8)))
                continue
            if decision is not None and decision.start:
                continue  # look again at once: requests may have arrived meanwhile
            wait = self.poll if decision is None else min(self.poll, max(decision.wait, 0.01))
            stop.wait(wait)

    def start(self) -> tuple[threading.Thread, threading.Event]:
        """Run in a background thread; set the returned event to stop it."""
        stop = threading.Event()
        thread = threading.Thread(target=self.run, args=(stop,), daemon=True)
        thread.start()
        return thread, stop
