"""Standard scaling under the statistics rule: stage k's statistics are those of the
shard's slices 1..k, stored and served with its checkpoint; forgetting equals training
from scratch; constants are used as given; whole-set statistics are refused."""

from __future__ import annotations

import numpy as np
import pytest

from sisa.config import ConfigError
from sisa.data.partition import place
from sisa.deletion import compliance
from sisa.deletion.accept import accept, forget
from sisa.store.artifacts import SisaStore
from sisa.training.standardize import fit
from tests.conftest import tiny_config
from tests.sisa.deletion.test_accept import assert_equals_scratch, layout

STAGE = {"data.scale": "standard"}
CONSTANTS = STAGE | {
    "data.scale_from": "constants",
    "data.scale_mean": [0.25],
    "data.scale_std": [0.5],
}


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
