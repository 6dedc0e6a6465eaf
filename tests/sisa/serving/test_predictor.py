"""The Predictor: validated batches, labels-only mode, and atomic swaps between serving
states while predictions run."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from sisa.deletion import compliance
from sisa.deletion.accept import accept
from sisa.deletion.batch import process
from sisa.serving import predictor as predictor_module
from sisa.serving.ensemble import Ensemble, InputError
from sisa.serving.predictor import Predictor, StaleStateError
from sisa.store.artifacts import SisaStore
from tests.sisa.deletion.test_compliance import pick, rollback_aggregate

X = np.random.default_rng(5).random((64, 64)).astype(np.float32)


def test_predicts_the_aggregate_labels_and_probabilities(url):
    predictor = Predictor(url)
    out = predictor.predict(X, probabilities=True)
    expected = Ensemble.load(SisaStore(url)).predict_proba(X)
    np.testing.assert_array_equal(out.probabilities, expected)
    np.testing.assert_array_equal(out.labels, expected.argmax(axis=1))
    assert out.labels.dtype == np.int64 and out.through == 0
    assert out.version == predictor.version and len(out.version) == 16
    np.testing.assert_array_equal(predictor.predict_labels(X), out.labels)
    np.testing.assert_array_equal(predictor.predict_proba(X), expected)
    assert predictor.predict(X).probabilities is None  # labels unless asked


def test_labels_only_predictor_never_releases_probabilities(url):
    predictor = Predictor(url, output="labels")
    np.testing.assert_array_equal(predictor.predict(X).labels, Predictor(url).predict(X).labels)
    with pytest.raises(PermissionError, match="labels only"):
        predictor.predict(X, probabilities=True)
    with pytest.raises(PermissionError):
        predictor.predict_proba(X)
    with pytest.raises(ValueError, match="output"):
        Predictor(url, output="logits")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([[0.0] * 63], "each row must have 64 features, got 63"),
        ([[0.0] * 65, [0.0] * 65], "each row must have 64 features, got 65"),
        ([[0.0] * 64, [0.0] * 63], "same number of features"),
        ([[0.0] * 63 + [float("nan")]], "row 0 holds NaN"),
        ([[0.0] * 64, [0.0] * 63 + [float("inf")]], "row 1 holds NaN, infinity"),
        ([[0.0] * 63 + [1e39]], "beyond float32"),
        ([["0.5"] * 64], "real numbers, got text"),
        ([[True] * 64], "real numbers, got bool"),
        ([[1j] * 64], "real numbers, got complex"),
        ([[None] * 64], "real numbers, got object"),
        ([], "empty batch"),
        (np.zeros((0, 64), np.float32), "empty batch"),
        ([0.0] * 64, "wrap a single row in a list"),
        (np.zeros((2, 8, 4)), "each row must have 64 features, got (8, 4)"),
    ],
)
def test_bad_input_gets_a_clear_error(base, rows, message):
    with pytest.raises(InputError) as err:
        Predictor(base).predict(rows)
    assert message in str(err.value)


@pytest.mark.filterwarnings("error")
def test_read_only_rows_are_taken_without_a_warning(base):
    rows = X.copy()
    rows.flags.writeable = False  # as arrays arrive from Ray's object store
    np.testing.assert_array_equal(
        Predictor(base).predict(rows).labels, Predictor(base).predict(X).labels
    )


def test_input_may_be_integers_lists_or_shaped(base):
    predictor = Predictor(base)
    expected = predictor.predict(X).labels
    np.testing.assert_array_equal(predictor.predict(X.tolist()).labels, expected)
    np.testing.assert_array_equal(predictor.predict(X.astype(np.float64)).labels, expected)
    ints = np.arange(64 * 3).reshape(3, 64) % 2
    np.testing.assert_array_equal(
        predictor.predict(ints).labels, predictor.predict(ints.astype(np.float32)).labels
    )


def test_refresh_swaps_to_the_compliant_state_then_to_the_retrained_models(url):
    predictor = Predictor(url)
    trained = predictor.snapshot
    accepted = accept(url, [pick(url, 0, 3), pick(url, 2, 0)])
    seq = int(accepted.request_id[1:10])
    assert predictor.snapshot is trained  # nothing changes until a refresh
    compliant = predictor.refresh(at_least=seq)
    assert predictor.snapshot is compliant and compliant.through == seq
    assert compliant.version != trained.version
    assert {k: s.stage for k, s in compliant.state.shards.items()} == {0: 3, 1: 4, 2: 0}
    out = predictor.predict(X, probabilities=True)
    assert (out.version, out.through) == (compliant.version, seq)
    np.testing.assert_array_equal(out.probabilities, rollback_aggregate(url, {0: 3, 1: 4, 2: 0}, X))
    # shard 1 was not touched: its model object is reused, not read again
    assert compliant.ensemble.models[1] is trained.ensemble.models[1]

    process(url)
    retrained = predictor.refresh()
    assert retrained.version not in (trained.version, compliant.version)
    assert {s.stage for s in retrained.state.shards.values()} == {4}
    np.testing.assert_array_equal(
        predictor.predict_proba(X), Ensemble.load(SisaStore(url)).predict_proba(X)
    )
    assert predictor.refresh() is retrained  # unchanged state: same snapshot


def test_refresh_at_least_reads_nothing_once_covered_and_refuses_a_stale_store(url):
    predictor = Predictor(url)
    accept(url, [pick(url, 1, 2)])
    snap = predictor.refresh(at_least=1)
    assert predictor.refresh(at_least=1) is snap
    with pytest.raises(StaleStateError, match="not yet 2"):
        predictor.refresh(at_least=2)
    assert predictor.snapshot is snap  # a failed refresh keeps what was serving


def test_concurrent_predictions_during_swaps_each_use_one_ensemble(url, monkeypatch):
    """Swap back and forth between two real serving states while four threads predict:
    every answer must be exactly one state's answer, and name that state."""
    rows = np.random.default_rng(9).random((2000, 64)).astype(np.float32)
    predictor = Predictor(url)
    before = predictor.snapshot.state
    accept(url, [pick(url, 0, 1), pick(url, 1, 2)])
    after = compliance.current(SisaStore(url))
    expected = {}
    for state in (before, after):
        monkeypatch.setattr(compliance, "current", lambda store, s=state: s)
        snap = predictor.refresh()
        expected[snap.version] = predictor.predict(rows, probabilities=True).probabilities
    assert len(expected) == 2
    (a, pa), (b, pb) = expected.items()
    assert not np.array_equal(pa, pb)  # a mix of the two would be detectable

    states = iter([before, after] * 10_000)
    monkeypatch.setattr(predictor_module.compliance, "current", lambda store: next(states))
    stop, results, errors = threading.Event(), [], []

    def predict() -> None:
        try:
            while not stop.is_set():
                results.append(predictor.predict(rows, probabilities=True))
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=predict) for _ in range(4)]
    for t in threads:
        t.start()
    swaps, deadline = 0, time.monotonic() + 3.0
    while time.monotonic() < deadline or swaps < 20:
        predictor.refresh()
        swaps += 1
    stop.set()
    for t in threads:
        t.join()
    assert not errors
    assert swaps >= 20 and len(results) >= 20
    assert {r.version for r in results} == {a, b}  # both states served during the run
    for r in results:
        np.testing.assert_array_equal(r.probabilities, expected[r.version])


def test_watch_picks_up_new_states_and_keeps_serving_when_a_refresh_fails(url, monkeypatch):
    with Predictor(url) as predictor:
        first = predictor.version
        predictor.watch(0.02)
        with pytest.raises(RuntimeError, match="already watching"):
            predictor.watch(0.02)
        accept(url, [pick(url, 2, 3)])
        deadline = time.monotonic() + 10
        while predictor.version == first and time.monotonic() < deadline:
            time.sleep(0.02)
        assert predictor.version != first and predictor.snapshot.through == 1

        def broken(store):
            raise OSError("store unreachable")

        monkeypatch.setattr(predictor_module.compliance, "current", broken)
        deadline = time.monotonic() + 10
        while predictor.last_error is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert "store unreachable" in predictor.last_error
        assert predictor.predict(X).version == predictor.version  # still serving
        assert predictor.status()["last_error"] == predictor.last_error
    assert predictor._stop is None  # closed by the context manager


def test_a_state_whose_checkpoints_were_purged_meanwhile_is_read_again(url, monkeypatch):
    stale = compliance.current(SisaStore(url))
    accept(url, [pick(url, 0, 2)])
    process(url)  # retrains shard 0 and purges its old stages 3 and 4
    real = compliance.current
    reads = iter([stale])
    monkeypatch.setattr(
        predictor_module.compliance, "current", lambda store: next(reads, None) or real(store)
    )
    predictor = Predictor(url)
    np.testing.assert_array_equal(
        predictor.predict_proba(X), Ensemble.load(SisaStore(url)).predict_proba(X)
    )
    assert predictor.snapshot.through == 1


def test_status_describes_the_snapshot_in_use(url):
    predictor = Predictor(url, output="labels")
    accept(url, [pick(url, 1, 0)])
    predictor.refresh()
    status = predictor.status()
    assert status["version"] == predictor.version and status["through"] == 1
    assert status["live_shards"] == [0, 2] and status["output"] == "labels"
    assert status["input_shape"] == [64] and status["num_classes"] == 10
    assert {s["shard"]: s["pending"] for s in status["shards"]} == {0: [], 1: [1], 2: []}
