"""The Predictor: the aggregated ensemble as a long-lived service object.

It predicts with one **snapshot** at a time: an ensemble loaded for one serving state
(``sisa.deletion.compliance``), rollback models included while deletion requests are open. A refresh
builds the next snapshot aside, reusing every model whose checkpoint did not change, and
then swaps it in with one reference assignment. A prediction reads that reference once,
so it is computed entirely by one snapshot, never by a mix of two, however refreshes and
predictions interleave across threads. Each prediction names its snapshot (``version``)
and the last journaled request the snapshot accounts for (``through``).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from sisa.deletion import compliance
from sisa.deletion.compliance import ServingState
from sisa.serving.aggregate import decide
from sisa.serving.ensemble import Ensemble, state_version
from sisa.store.artifacts import SisaStore, StorageOptions, open_store
from storage import StorageError

log = logging.getLogger(__name__)
LOAD_ATTEMPTS = 3  # a retrain may purge the checkpoints a state named while we read it


class LabelsOnlyError(PermissionError):
    """Probabilities asked of a predictor (or server) that releases labels only."""


class StaleStateError(RuntimeError):
    """The store does not yet show a request the caller knows was accepted."""


@dataclass(frozen=True, kw_only=True)
class Snapshot:
    """One consistent ensemble, and the serving state it was loaded for."""

    ensemble: Ensemble
    state: ServingState
    version: str  # digest of the served checkpoints (``state_version``)
    loaded_at: float

    @property
    def through(self) -> int:
        return self.state.through


@dataclass(frozen=True, kw_only=True)
class Prediction:
    labels: np.ndarray  # [n] int64
    probabilities: np.ndarray | None  # [n, C] float32 aggregate scores; None: labels only
    version: str  # the snapshot that computed every row
    through: int  # requests up to this number are honoured by it
    # the original label value of each row's class (``labels`` are class indices)
    label_names: list[str | int] = field(default_factory=list)
    # every class's name, in class order: probabilities[:, i] is the score of classes[i]
    classes: list[str | int] = field(default_factory=list)


class Predictor:
    """Loads the current serving state of all shards and predicts in batches.

    ``output="labels"`` makes it refuse to release probabilities: labels alone leak the
    least to membership inference. Thread-safe: predictions run concurrently with each
    other and with refreshes.
    """

    def __init__(
        self,
        store: SisaStore | str,
        storage_options: StorageOptions = None,
        *,
        output: Literal["probabilities", "labels"] = "probabilities",
        inference: str = "auto",
    ) -> None:
        if output not in ("probabilities", "labels"):
            raise ValueError(f"output must be 'probabilities' or 'labels', got {output!r}")
        self.store = open_store(store, storage_options)
        self.output = output
        self.inference = inference
        self.last_error: str | None = None
        self._refreshing = threading.Lock()  # one refresh at a time; predictions never wait
        self._snapshot = self._load(None)
        self._stop: threading.Event | None = None

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    # -- predictions ---------------------------------------------------------------

    def predict(self, X: object, *, probabilities: bool = False) -> Prediction:
        """Labels (and with ``probabilities``, aggregate scores) for a batch of rows.

        Raises ``InputError`` for rows the models cannot take, including rows whose
        scores come out non-finite (its ``rows`` names them), and ``PermissionError``
        when probabilities are asked of a labels-only predictor. Every score returned is
        finite.
        """
        if probabilities and self.output == "labels":
            raise LabelsOnlyError("this predictor releases labels only (serving.output)")
        snap = self._snapshot  # read once: every row below uses this one ensemble
        scores = snap.ensemble.predict_proba(X)  # [n, C]
        labels = decide(scores)  # [n]
        return Prediction(
            labels=labels,
            label_names=snap.ensemble.label_names(labels),
            classes=snap.ensemble.class_names,
            probabilities=scores if probabilities else None,
            version=snap.version,
            through=snap.through,
        )

    def predict_labels(self, X: object) -> np.ndarray:
        """Class per row. [n, *f] -> [n] int64."""
        return self.predict(X).labels

    def predict_proba(self, X: object) -> np.ndarray:
        """Aggregate scores: averaged probabilities, or vote shares. [n, *f] -> [n, C]."""
        scores = self.predict(X, probabilities=True).probabilities
        assert scores is not None
        return scores

    # -- swapping ------------------------------------------------------------------

    def refresh(self, at_least: int = 0) -> Snapshot:
        """Swap in the current serving state if it changed; return the snapshot in use.

        ``at_least``: a request number the caller saw accepted. When the snapshot in use
        already covers it, nothing is read; when the store does not show it yet,
        ``StaleStateError``.
        """
        with self._refreshing:
            old = self._snapshot
            if 0 < at_least <= old.through:
                return old
            new = self._load(old)
            if new.through < at_least:
                raise StaleStateError(
                    f"the store shows requests up to {new.through}, not yet {at_least}"
                )
            self._snapshot = new  # the swap: one reference assignment
            return new

    def _load(self, old: Snapshot | None) -> Snapshot:
        for attempt in range(1, LOAD_ATTEMPTS + 1):
            state = compliance.current(self.store)
            version = state_version(state)
            if old is not None and (version, state.through) == (old.version, old.through):
                return old
            previous = old.ensemble if old is not None else None
            try:
                ensemble = Ensemble.load(self.store, previous, state, self.inference)
            except (FileNotFoundError, StorageError):
                if attempt == LOAD_ATTEMPTS:
                    raise
                continue  # purged under us: the next state names the new checkpoints
            return Snapshot(ensemble=ensemble, state=state, version=version, loaded_at=time.time())
        raise AssertionError("unreachable")

    def watch(self, interval_s: float) -> None:
        """Refresh every ``interval_s`` seconds in a background thread, until ``close``.

        A failed refresh keeps the snapshot in use and is retried at the next tick; its
        message stays in ``last_error`` until a refresh succeeds."""
        if self._stop is not None:
            raise RuntimeError("this predictor is already watching its store")
        stop = self._stop = threading.Event()

        def loop() -> None:
            while not stop.wait(interval_s):
                try:
                    self.refresh()
                    self.last_error = None
                except Exception as err:  # noqa: BLE001 - keep serving the last snapshot
                    self.last_error = f"{type(err).__name__}: {err}"
                    log.warning("refresh failed; still serving %s: %s", self.version, err)

        threading.Thread(target=loop, name="sisa-predictor-watch", daemon=True).start()

    def close(self) -> None:
        if self._stop is not None:
            self._stop.set()
            self._stop = None

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- introspection -------------------------------------------------------------

    @property
    def version(self) -> str:
        return self._snapshot.version

    def status(self) -> dict[str, Any]:
        snap = self._snapshot
        return {
            "version": snap.version,
            "through": snap.through,
            "loaded_at": snap.loaded_at,
            "aggregation": snap.ensemble.config.sisa.aggregation,
            "num_classes": snap.ensemble.num_classes,
            "classes": snap.ensemble.class_names,
            "input_shape": list(snap.ensemble.input_shape),
            "output": self.output,
            "inference": forward.strategy if (forward := snap.ensemble.forward) else None,
            "live_shards": sorted(snap.ensemble.models),
            "shards": [
                {"shard": s.shard, "stage": s.stage, "pending": s.pending}
                for s in snap.state.shards.values()
            ],
            "last_error": self.last_error,
        }
