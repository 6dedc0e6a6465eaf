"""Standard scaling under the statistics rule: stage k's statistics are those of the
shard's slices 1..k, stored and served with its checkpoint; forgetting equals training
from scratch; constants are used as given; a reference set's statistics are recorded with
its sha256; whole-set statistics are refused."""

from __future__ import annotations

import numpy as np
import pytest

from sisa.config import ConfigError
from sisa.data.dataset import DataError
from sisa.data.partition import place
from sisa.deletion import compliance
from sisa.deletion.accept import accept, forget
from sisa.evidence.verify import verify
from sisa.store.artifacts import SisaStore
from sisa.training.standardize import fit, reference_features
from sisa.training.train import train
from tests.conftest import tiny_config, write_digits_npz
from tests.sisa.data.tables import MAPPING, clinic_frame, table_stores
from tests.sisa.deletion.test_accept import assert_equals_scratch, layout

STAGE = {"data.scale": "standard"}
CONSTANTS = STAGE | {
    "data.scale_from": "constants",
    "data.scale_mean": [0.25],
    "data.scale_std": [0.5],
}


def write_reference(path, rows: int = 60, seed: int = 3):
    """A reference set never deleted from: digits-like features drawn apart from the
    training file (another scale and offset), so its statistics differ from any shard's."""
    rng = np.random.default_rng(seed)
    X = (rng.random((rows, 64)) * 0.8 + 0.1).astype(np.float32)
    np.savez(path, X=X)
    return path


def stage_statistics(store: SisaStore, shard: int, stage: int) -> tuple[np.ndarray, np.ndarray]:
    weights, _ = store.read_stage(store.shard_head(shard).stages[stage - 1], state=False)
    return weights["mean"].numpy(), weights["std"].numpy()


def test_each_stage_is_scaled_by_the_slices_it_has_seen(trained):
    url = trained(**STAGE)
    store = SisaStore(url)
    arrays = store.read_data(store.shard_head(1).data)
    _, slice_of = place(store.config().sisa, arrays)
    for stage in (1, 2, 3):
        mean, std = fit(arrays["X"][slice_of < stage])
        got_mean, got_std = stage_statistics(store, 1, stage)
        assert np.array_equal(got_mean, mean.astype(np.float32))
        assert np.array_equal(got_std, np.where(std < 1e-12, 1.0, std).astype(np.float32))
    assert not np.array_equal(stage_statistics(store, 1, 1)[0], stage_statistics(store, 1, 3)[0])


@pytest.mark.parametrize("settings", [STAGE, CONSTANTS], ids=["stage", "constants"])
def test_forgetting_with_scaling_equals_scratch(trained, settings):
    url = trained(**settings)
    ids, shards, slices = layout(url)
    first = int(ids[(shards == 0) & (slices == 0)][0])
    last = int(ids[(shards == 2) & (slices == 2)][0])
    forget(url, [first, last])
    assert_equals_scratch(trained, url, [first, last], **settings)


def test_constants_are_used_as_given(trained):
    store = SisaStore(trained(**CONSTANTS))
    mean, std = stage_statistics(store, 0, 3)
    assert (mean == 0.25).all() and (std == 0.5).all()


def test_a_rolled_back_shard_serves_its_stage_statistics(trained):
    url = trained(**STAGE)
    ids, shards, slices = layout(url)
    accept(url, [int(ids[(shards == 1) & (slices == 2)][0])])  # compliant at once: stage 2
    store = SisaStore(url)
    served = compliance.current(store).shards[1]
    assert served.stage == 2
    weights, _ = store.read_stage(served.ref, state=False)
    assert np.array_equal(weights["mean"].numpy(), stage_statistics(store, 1, 2)[0])


def test_scaling_changes_the_weights(trained):
    plain = SisaStore(trained("plain")).shard_head(0).stages[-1].weights_sha256
    scaled = SisaStore(trained("scaled", **STAGE)).shard_head(0).stages[-1].weights_sha256
    assert plain != scaled


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"data.scale_from": "global"}, "whole training set, which the exactness rule forbids"),
        ({"data.scale_from": "constants"}, "needs data.scale_mean and data.scale_std"),
        ({"data.scale_mean": [0.0]}, "only with scale_from = 'constants'"),
        (CONSTANTS | {"data.scale_std": [0.0]}, "data.scale_std: must be positive"),
    ],
)
def test_forbidden_or_incomplete_statistics_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        tiny_config(**STAGE | overrides)


@pytest.fixture
def reference(tmp_path):
    return write_reference(tmp_path / "reference.npz")


def reference_settings(path) -> dict:
    return STAGE | {"data.scale_from": "reference", "data.scale_reference": str(path)}


def test_a_reference_sets_every_stage_and_is_recorded(trained, reference):
    url = trained(**reference_settings(reference))
    store = SisaStore(url)
    with np.load(reference) as f:
        mean, std = fit(f["X"])
    data = store.config().data
    assert data.scale_reference == str(reference) and data.scale_reference_sha256
    assert np.array_equal(np.asarray(data.scale_mean), mean)  # float64, exactly
    for shard, stage in ((0, 1), (2, 3)):
        got_mean, got_std = stage_statistics(store, shard, stage)
        assert np.array_equal(got_mean, mean.astype(np.float32))
        assert np.array_equal(got_std, np.where(std < 1e-12, 1.0, std).astype(np.float32))


def test_forgetting_with_a_reference_equals_scratch_and_verify_needs_no_file(trained, reference):
    settings = reference_settings(reference)
    url = trained(**settings)
    ids, shards, slices = layout(url)
    first = int(ids[(shards == 0) & (slices == 0)][0])
    last = int(ids[(shards == 1) & (slices == 2)][0])
    forget(url, [first, last])
    assert_equals_scratch(trained, url, [first, last], **settings)
    reference.unlink()  # the statistics are recorded: a retrain needs no reference file
    assert verify(url).identical


def test_a_changed_reference_is_refused_with_nothing_written(trained, reference, tmp_path):
    url = trained(**reference_settings(reference))
    write_reference(reference, seed=4)  # other bytes under the same name
    again = str(tmp_path / "again")
    with pytest.raises(DataError, match="scale reference .* changed since this store trained"):
        train(SisaStore(url).config(), again)
    assert not (tmp_path / "again").exists()


def test_a_table_reference_is_read_by_the_sources_mapping(tmp_path):
    stores = table_stores(tmp_path)
    public = clinic_frame(n=80).drop(columns=["patient_id", "diagnosis", "firm"])
    public.to_csv(tmp_path / "public.csv", index=False)  # features (and notes) only
    settings = reference_settings(tmp_path / "public.csv")
    url = stores(**settings)
    store = SisaStore(url)
    mean, _ = fit(public[[f"px{j}" for j in range(64)]].to_numpy())
    assert np.array_equal(np.asarray(store.config().data.scale_mean), mean)
    ids, shards, slices = layout(url)
    victim = str(ids[(shards == 2) & (slices == 0)][0])
    forget(url, [victim])
    assert_equals_scratch(stores, url, [victim], groups=False, **settings)
    frame = reference_features(
        (tmp_path / "public.csv").read_bytes(), "public.csv", tiny_config(**MAPPING).data
    )
    assert frame.shape == (80, 64) and frame.dtype == np.float32


@pytest.mark.parametrize("odd", ["reference", "constants"])
def test_statistics_of_another_width_are_refused_with_nothing_written(tmp_path, odd):
    if odd == "reference":
        np.savez(tmp_path / "narrow.npz", X=np.ones((5, 10), np.float32))
        settings, message = reference_settings(tmp_path / "narrow.npz"), "narrow.npz' has 10"
    else:
        settings = CONSTANTS | {"data.scale_mean": [0.0, 1.0], "data.scale_std": [1.0, 2.0]}
        message = "data.scale_mean gives 2 value"
    source = write_digits_npz(tmp_path / "digits.npz")
    with pytest.raises(DataError, match=message + r".*64 features"):
        train(tiny_config(**{"data.source": str(source)} | settings), str(tmp_path / "store"))
    assert not (tmp_path / "store").exists() or not SisaStore(str(tmp_path / "store")).files()


def test_a_bad_reference_file_is_named(tmp_path):
    np.savez(tmp_path / "nox.npz", Z=np.ones((3, 64)))
    np.savez(tmp_path / "nan.npz", X=np.full((3, 64), np.nan, np.float32))
    source = write_digits_npz(tmp_path / "digits.npz")
    for name, message in (
        ("nox.npz", "has no array 'X'"),
        ("nan.npz", "missing or infinite values"),
        ("missing.npz", "no such scale reference file"),
    ):
        config = tiny_config(**{"data.source": str(source)} | reference_settings(tmp_path / name))
        with pytest.raises(DataError, match=message):
            train(config, str(tmp_path / "store"))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"data.scale_from": "reference"}, "needs data.scale_reference"),
        ({"data.scale_reference": "r.npz"}, "only with scale_from = 'reference'"),
        (
            {
                "data.scale_from": "reference",
                "data.scale_reference": "r.npz",
                "data.scale_mean": [0.0],
            },
            "scale_mean: is given only with scale_from = 'constants'",
        ),
        (
            {
                "data.scale_from": "constants",
                "data.scale_mean": [0.0],
                "data.scale_std": [1.0],
                "data.scale_reference_sha256": "ab",
            },
            "scale_reference_sha256: is recorded only with data.scale_reference",
        ),
    ],
)
def test_an_incomplete_reference_is_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        tiny_config(**STAGE | overrides)
