"""Low-rank adapters on a frozen backbone (``model.finetune = "lora"``): checkpoints hold
adapters and head only; forgetting equals training from scratch; a frozen ``nn.Sequential``
prefix is stored once per point and served once per row; every shard model shares one copy
of the backbone; rollbacks serve earlier adapters; and bad settings are named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from sisa.config import ConfigError
from sisa.deletion.accept import forget
from sisa.evidence.audit import audit
from sisa.serving.ensemble import Ensemble
from sisa.serving.predictor import Predictor
from sisa.store.artifacts import SisaStore
from sisa.training.backbone import state_sha256
from sisa.training.lora import load_lora_base, shared_base
from sisa.training.train import train
from sisa.training.trainer import fresh_state
from tests.conftest import tiny_config, write_digits_npz
from tests.sisa import backbones
from tests.sisa.deletion.test_accept import assert_equals_scratch, layout
from tests.sisa.training.test_backbone import (
    assert_serves_stage_one_once_rolled_back,
    forget_first_last_and_a_group,
)

STACK = "tests.sisa.backbones:stack"
VIT = "tests.sisa.backbones:vit"
TRUST = "tests.sisa.backbones:*"
TARGETS = {STACK: ["block"], VIT: ["q_proj", "v_proj"]}


def lora_settings(backbone=STACK, **more) -> dict:
    return {
        "model.finetune": "lora",
        "model.backbone": backbone,
        "model.lora_targets": TARGETS.get(backbone, ["block"]),
        "model.lora_rank": 2,
        "model.lora_alpha": 4.0,
        "model.lora_dropout": 0.1,  # drawn per step: exactness must hold with it
        "model.hidden": [],
        "model.feature_batch": 8,
    } | more


@pytest.fixture(autouse=True)
def trusted(monkeypatch):
    """Shard jobs, serving and verify import the backbone only when trusted."""
    monkeypatch.setenv("SISA_TRUSTED_FACTORIES", TRUST)


@pytest.fixture
def stores(tmp_path):
    def make(name="store", drop=frozenset(), groups=False, backbone=STACK, **overrides):
        source = write_digits_npz(tmp_path / f"{name}.npz", drop=set(drop), groups=groups)
        settings = {"data.source": str(source)} | lora_settings(backbone) | overrides
        url = str(tmp_path / name)
        train(tiny_config(**settings), url)
        return url

    return make


def raw_digits(ids: np.ndarray) -> np.ndarray:
    from sklearn.datasets import load_digits

    return (load_digits().data / 16.0).astype(np.float32)[ids - 1000]  # [n, 64]


# -- what a checkpoint and the store hold ----------------------------------------------


@pytest.mark.parametrize("backbone", [STACK, VIT])
def test_checkpoints_hold_the_adapters_head_and_their_optimizer_state_only(stores, backbone):
    url = stores(backbone=backbone, **{"optim.name": "adamw", "optim.lr": 0.01})
    store = SisaStore(url)
    weights, extra = store.read_stage(store.shard_head(0).stages[-1])
    adapters = [k for k in weights if ".lora_A." in k or ".lora_B." in k]
    assert adapters and all(k.startswith(("body.", "head.")) for k in weights)
    assert set(weights) - set(adapters) == {"head.net.1.weight", "head.net.1.bias"}
    assert len(adapters) == 2 * len(TARGETS[backbone])  # an A and a B per target
    # AdamW keeps moments for exactly the tensors that learn
    assert len(extra["optimizer"]["state"]) == len(weights)
    model = shared_base(store.config())
    assert model.sha256 == store.config().model.backbone_sha256  # the base the store records
    base = next(iter(model.body.state_dict().values())).numpy().tobytes()
    held = b"".join(p.read_bytes() for p in Path(url).rglob("*") if p.is_file())
    assert base[:64] not in held  # the backbone's weights never enter the store


def test_the_frozen_prefix_is_stored_once_per_point(stores):
    url = stores()
    store = SisaStore(url)
    intent = store.intent()
    assert intent["input_shape"] == [16] and intent["raw_shape"] == [64]
    assert store.config().model.backbone_input == (64,)
    prefix = shared_base(store.config()).prefix
    assert list(dict(prefix.module.named_children())) == ["flatten", "embed", "act"]
    arrays = store.read_data(store.shard_head(1).data)
    assert np.array_equal(arrays["X"], prefix.features(raw_digits(arrays["ids"])))


def test_a_backbone_without_a_frozen_prefix_trains_on_raw_points(stores):
    url = stores(backbone=VIT)
    store = SisaStore(url)
    assert store.intent()["input_shape"] == [64] and "raw_shape" not in store.intent()
    assert shared_base(store.config()).prefix is None


# -- exactness -----------------------------------------------------------------------


@pytest.mark.parametrize("backbone", [STACK, VIT])
def test_forgetting_retrains_adapters_and_equals_scratch(stores, backbone):
    url = stores(groups=True, backbone=backbone)
    gone = forget_first_last_and_a_group(url)
    assert_equals_scratch(stores, url, gone, groups=True, backbone=backbone)
    assert audit(url).ok  # the stored prefix outputs are scanned like raw data


def test_the_backbone_stays_frozen_while_the_adapters_train(tmp_path):
    """A backbone with BatchNorm and dropout of its own: neither moves nor draws while the
    adapters train, so the shared base ends as it began."""
    source = write_digits_npz(tmp_path / "d.npz")
    backbone = "tests.sisa.backbones:dropout_backbone"
    settings = {"data.source": str(source)} | lora_settings(
        backbone, **{"model.lora_targets": ["net.1"]}
    )
    url = str(tmp_path / "s")
    train(tiny_config(**settings), url)
    config = SisaStore(url).config()
    base = shared_base(config)
    assert state_sha256(base.body) == config.model.backbone_sha256
    model = fresh_state(config, 0, (64,), 10).model.train()
    assert not model.body.training and not model.body.norm.training
    assert model.body.net[1].lora_dropout["default"].training  # the adapters' own dropout
    before = Ensemble.load(url).models[0].head.net[1].weight
    assert not torch.equal(before, fresh_state(config, 0, (64,), 10).model.head.net[1].weight)


def test_an_interrupted_ingest_of_prefix_outputs_resumes_to_the_same_bits(stores, tmp_path):
    from sisa.training.ingest import IngestJob, run_ingest_job

    url = stores()
    whole = SisaStore(url)
    half = str(tmp_path / "half")
    job = IngestJob(
        url=half,
        storage_options={},
        config=whole.config().stored(),
        chunk_rows=100,
        trusted=(STACK,),
    )
    first = run_ingest_job(job, lambda units: None)
    store = SisaStore(half)
    store.fs.delete_tree(first.jobs[2].data.dir)  # as if it died before this part's commit
    again = run_ingest_job(job, lambda units: None)
    for part in (0, 1, 2):
        ours = store.read_data(next(j for j in again.jobs if j.shard == part).data)
        theirs = whole.read_data(whole.shard_head(part).data)
        assert np.array_equal(ours["X"], theirs["X"]) and np.array_equal(ours["ids"], theirs["ids"])


# -- serving -------------------------------------------------------------------------


def test_serving_runs_the_prefix_once_per_row_and_shares_one_base(stores):
    url = stores()
    ensemble = Ensemble.load(url)
    assert ensemble.input_shape == (64,) and ensemble.feature_shape == (16,)
    calls = []
    hook = ensemble.backbone.module.register_forward_hook(lambda m, i, o: calls.append(len(i[0])))
    X = np.random.default_rng(1).random((20, 64)).astype(np.float32)
    try:
        scores = ensemble.predict_proba(X)
    finally:
        hook.remove()
    assert calls == [8, 8, 8]  # ceil(20 / feature_batch) prefix forwards for all shards
    assert np.array_equal(
        scores, ensemble.predict_proba(ensemble.backbone.features(X), stored=True)
    )
    assert Predictor(url).predict(X).labels.tolist() == scores.argmax(axis=1).tolist()


@pytest.mark.parametrize("backbone", [STACK, VIT])
def test_evaluation_scores_the_test_rows_as_stored(stores, backbone):
    from sisa.evidence.status import evaluate
    from sisa.store.layout import TEST_PREFIX

    url = stores(backbone=backbone)
    store = SisaStore(url)
    test = store.read_data(store.latest_head(TEST_PREFIX).data)
    stored = Ensemble.load(url, stored=True)
    assert stored.backbone is None and stored.input_shape == tuple(test["X"].shape[1:])
    served = Ensemble.load(url).predict(raw_digits(test["ids"]))  # from the raw rows
    assert evaluate(url)["aggregate"] == float((served == test["y"]).mean())


def test_memory_is_one_base_plus_an_adapter_per_shard(stores):
    url = stores(backbone=VIT, **{"sisa.shards": 4})
    ensemble = Ensemble.load(url, inference="fused")
    base = shared_base(SisaStore(url).config()).body
    storage: dict[int, int] = {}
    for model in ensemble.models.values():
        for t in (*model.parameters(), *model.buffers()):
            storage[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    base_bytes = sum(t.untyped_storage().nbytes() for t in (*base.parameters(), *base.buffers()))
    own = sum(
        t.untyped_storage().nbytes()
        for n, t in ensemble.models[0].state_dict().items()
        if "lora_" in n or n.startswith("head.")
    )
    assert sum(storage.values()) == base_bytes + len(ensemble.models) * own
    assert ensemble.forward.strategy == "loop"  # stacking would copy the base S times
    assert "share a frozen backbone" in ensemble.forward.fallback_reason


def test_a_rolled_back_shard_serves_its_earlier_adapters(stores):
    assert_serves_stage_one_once_rolled_back(stores(), 1)  # its adapters and head


def test_another_backbone_is_refused_naming_the_one_expected(tmp_path):
    weights = tmp_path / "stack.safetensors"
    torch.manual_seed(1)
    save_file(backbones.stack((64,)).state_dict(), str(weights))
    source = write_digits_npz(tmp_path / "d.npz")
    settings = {"data.source": str(source), "model.backbone_weights": str(weights)}
    url = str(tmp_path / "s")
    train(tiny_config(**settings | lora_settings()), url)
    expected = SisaStore(url).config().model.backbone_sha256
    torch.manual_seed(2)
    save_file(backbones.stack((64,)).state_dict(), str(weights))  # other weights, same name
    with pytest.raises(ValueError, match=f"trained on \\({expected[:16]}"):
        load_lora_base(SisaStore(url).config(), (64,))


# -- clear errors --------------------------------------------------------------------


def test_targets_that_match_nothing_list_the_candidates():
    config = tiny_config(**lora_settings(**{"model.lora_targets": ["query"]}))
    with pytest.raises(ValueError, match=r"'query' matches no module.*'block', 'embed'"):
        load_lora_base(config, (64,), [TRUST])
    config = tiny_config(**lora_settings(**{"model.lora_targets": ["act"]}))
    with pytest.raises(ValueError, match=r"'act' names Tanh, which takes no adapter"):
        load_lora_base(config, (64,), [TRUST])


def test_augmentation_is_refused_before_a_stored_prefix():
    config = tiny_config(**lora_settings(**{"data.augment": ["flip"]}))
    with pytest.raises(ValueError, match="data.augment: .* first 3 children"):
        load_lora_base(config, (64,), [TRUST])


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"model.lora_targets": []}, "model.lora_targets"),
        ({"model.name": "cnn", "model.hidden": [4]}, "model.name"),
        ({"model.backbone": None}, "needs model.backbone"),
        ({"data.scale_from": "reference"}, "data.scale_from"),
    ],
)
def test_lora_settings_are_checked(settings, message):
    with pytest.raises(ConfigError, match=message):
        tiny_config(**lora_settings() | settings)


def test_lora_fields_are_refused_in_other_modes():
    with pytest.raises(ConfigError, match="model.lora_rank: applies only to finetune = 'lora'"):
        tiny_config(**{"model.lora_rank": 4})


@pytest.mark.parametrize("backbone", [STACK, VIT])
def test_forgetting_evidence_trains_its_reference_through_the_whole_backbone(stores, backbone):
    from sisa.evidence.forgetting import forgetting_evidence

    url = stores(backbone=backbone)
    ids, shards, _ = layout(url)
    gone = [int(i) for i in ids[shards == 1][:4]]
    forget(url, gone)
    report = forgetting_evidence(url, gone)  # raw rows from the source where a prefix is
    assert report["identical"] is True and report["forgotten"] == 4
    assert report["figures"]["gap_forget"] == report["figures"]["gap_test"] == 0.0


def test_retraining_needs_the_backbone_trusted_and_journals_nothing_without(stores, monkeypatch):
    from sisa.deletion.batch import process
    from sisa.deletion.lifecycle import request_statuses

    url = stores()
    monkeypatch.delenv("SISA_TRUSTED_FACTORIES")
    with pytest.raises(ValueError, match="model.backbone: factory .* is not trusted"):
        forget(url, [1000])  # it would retrain: refused before journaling
    assert request_statuses(url) == []
    with pytest.raises(ValueError, match="model.backbone: factory .* is not trusted"):
        process(url)


def test_resuming_an_unfinished_training_on_another_backbone_names_both(tmp_path):
    from sisa.store.artifacts import StoreStateError
    from sisa.training.ingest import IngestJob, run_ingest_job

    weights = tmp_path / "stack.safetensors"
    source = write_digits_npz(tmp_path / "d.npz")
    settings = {"data.source": str(source), "model.backbone_weights": str(weights)}
    config = tiny_config(**settings | lora_settings())
    url = str(tmp_path / "s")

    def ingest(seed):
        torch.manual_seed(seed)
        save_file(backbones.stack((64,)).state_dict(), str(weights))
        job = IngestJob(url=url, storage_options={}, config=config.stored(), trusted=(STACK,))
        return run_ingest_job(job, lambda units: None)

    ingest(1)  # no shard trained yet: an unfinished training
    expected = SisaStore(url).config().model.backbone_sha256
    with pytest.raises(StoreStateError, match=f"another backbone \\(it expects {expected[:16]}"):
        ingest(2)
