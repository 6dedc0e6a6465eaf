"""Frozen backbones with per-shard heads (``model.finetune = "head"``): the backbone is
loaded, hashed canonically and checked; each point's features are its own whatever shares
its batch; forgetting retrains heads only and equals training from scratch; serving runs
the backbone once per row for all heads; and a different backbone is refused."""

from __future__ import annotations

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
from sisa.training.backbone import load_backbone, state_sha256
from sisa.training.train import train
from tests.conftest import tiny_config, write_digits_npz
from tests.sisa import backbones
from tests.sisa.deletion.test_accept import assert_equals_scratch, layout

TINY = "tests.sisa.backbones:tiny"
TRUST = "tests.sisa.backbones:*"


def save_tiny(path, seed: int = 5):
    torch.manual_seed(seed)
    save_file(backbones.tiny((64,)).state_dict(), str(path))
    return path


def head_settings(weights, **more) -> dict:
    return {
        "model.finetune": "head",
        "model.backbone": TINY,
        "model.backbone_weights": str(weights),
        "model.hidden": [],
        "model.feature_batch": 8,
    } | more


@pytest.fixture
def weights(tmp_path):
    return save_tiny(tmp_path / "tiny.safetensors")


@pytest.fixture
def trusted(monkeypatch):
    """Commands that read a store's config import its backbone only when trusted."""
    monkeypatch.setenv("SISA_TRUSTED_FACTORIES", TRUST)


def model_config(**settings):
    return tiny_config(**settings).model


# -- loading and hashing ---------------------------------------------------------------


def test_the_hash_covers_the_loaded_state_however_it_was_loaded(tmp_path):
    def loaded(**settings):
        base = {"model.finetune": "head", "model.hidden": [], "model.backbone": TINY}
        return load_backbone(model_config(**base | settings), (64,), [TRUST])

    own = loaded(**{"model.backbone": "tests.sisa.backbones:self_loading"})
    state = backbones.self_loading((64,)).state_dict()
    save_file(state, str(tmp_path / "same.safetensors"))
    torch.save(state, tmp_path / "same.pt")
    for name in ("same.safetensors", "same.pt"):  # the same tensors, from a file
        from_file = loaded(**{"model.backbone_weights": str(tmp_path / name)})
        assert from_file.sha256 == own.sha256 == state_sha256(backbones.self_loading((64,)))
    state["net.1.bias"][3] += 1e-6  # one value
    save_file(state, str(tmp_path / "other.safetensors"))
    other = loaded(**{"model.backbone_weights": str(tmp_path / "other.safetensors")})
    assert other.sha256 != own.sha256
    renamed = torch.nn.Sequential(
        torch.nn.Identity(), torch.nn.Identity(), backbones.tiny((64,)).net[1]
    )
    renamed[2].load_state_dict({"weight": state["net.1.weight"], "bias": state["net.1.bias"]})
    assert state_sha256(renamed) != other.sha256  # the names are hashed too


def test_a_points_features_never_depend_on_its_batch(weights):
    bb = load_backbone(model_config(**head_settings(weights)), (64,), [TRUST])
    rng = np.random.default_rng(0)
    X = rng.random((50, 64)).astype(np.float32)
    whole = bb.features(X)  # [50, 16]
    assert whole.shape == (50, 16) and whole.dtype == np.float32
    for size in (1, 3, 8, 13):  # other batch sizes and other neighbours
        order = rng.permutation(50)
        parts = [bb.features(X[order[i : i + size]]) for i in range(0, 50, size)]
        again = np.empty_like(whole)
        again[order] = np.concatenate(parts)
        assert np.array_equal(again, whole)


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        ("maps", r"must give features \[B, F\] = \[8, F\]; it gave shape \[8, 4, 4\]"),
        ("noisy", "not deterministic"),
        ("mixing", "mixes the rows of a batch"),
        ("counting", "changed its own state on a forward"),
        ("not_a_module", "returned str, not a Module"),
        (
            "raising",
            r"model.backbone: .*:raising' raised RuntimeError when called with "
            r"input_shape \(64,\): no weights for this size",
        ),
        (
            "wrong_width",
            r"model.backbone: its forward failed on a probe batch of shape "
            r"\[8, 64\]: RuntimeError: mat1 and mat2",
        ),
    ],
)
def test_a_backbone_that_breaks_the_contract_is_refused(factory, message):
    settings = {
        "model.finetune": "head",
        "model.backbone": f"tests.sisa.backbones:{factory}",
        "model.hidden": [],
        "model.feature_batch": 8,
    }
    with pytest.raises(ValueError, match=message):
        load_backbone(model_config(**settings), (64,), [TRUST])


def test_weights_that_do_not_fit_or_cannot_be_read_are_named(tmp_path):
    save_file({"other": torch.zeros(2)}, str(tmp_path / "wrong.safetensors"))
    (tmp_path / "junk.pt").write_bytes(b"not a state dict")
    cases = [
        ("wrong.safetensors", "does not fit 'tests.sisa.backbones:tiny'"),
        ("junk.pt", "cannot read"),
        ("missing.safetensors", "no such file"),
        ("", "cannot read .*Is a directory"),  # the folder itself: an OSError, not missing
    ]
    for name, message in cases:
        with pytest.raises(ValueError, match=f"model.backbone_weights: .*{message}"):
            load_backbone(model_config(**head_settings(tmp_path / name)), (64,), [TRUST])


def test_an_untrusted_backbone_is_not_imported(weights):
    with pytest.raises(ValueError, match="model.backbone: factory .* is not trusted"):
        load_backbone(model_config(**head_settings(weights)), (64,))


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"model.finetune": "head"}, "needs model.backbone"),
        ({"model.backbone": TINY}, "a backbone is used with finetune = 'head'"),
        ({"model.finetune": "head", "model.backbone": TINY, "model.name": "cnn"}, "model.name"),
        ({"model.finetune": "head", "model.backbone": "nocolon"}, "package.module:factory"),
        ({"model.name": "cnn", "model.hidden": []}, "non-empty list"),
        (
            {"model.finetune": "head", "model.backbone": TINY, "data.augment": ["flip"]},
            "data.augment: does not go with model.finetune = 'head'",
        ),
    ],
)
def test_head_settings_are_checked(settings, message):
    with pytest.raises(ConfigError, match=message):
        tiny_config(**settings)


# -- training, forgetting, serving -----------------------------------------------------


@pytest.fixture
def stores(tmp_path, weights):
    def make(name="store", drop=frozenset(), groups=False, **overrides):
        source = write_digits_npz(tmp_path / f"{name}.npz", drop=set(drop), groups=groups)
        config = tiny_config(**{"data.source": str(source)} | head_settings(weights) | overrides)
        url = str(tmp_path / name)
        train(config, url)
        return url

    return make


def test_the_shards_hold_each_points_features_and_the_store_no_backbone(stores, weights):
    url = stores()
    store = SisaStore(url)
    intent = store.intent()
    assert intent["input_shape"] == [16] and intent["raw_shape"] == [64]
    bb = load_backbone(store.config().model, (64,), [TRUST])
    assert store.config().model.backbone_sha256 == bb.sha256
    arrays = store.read_data(store.shard_head(0).data)
    from sklearn.datasets import load_digits

    raw = (load_digits().data / 16.0).astype(np.float32)[arrays["ids"] - 1000]
    assert np.array_equal(arrays["X"], bb.features(raw))  # [n, 16], each row its own
    from pathlib import Path

    from safetensors.torch import load_file

    row = load_file(str(weights))["net.1.weight"][0].numpy().tobytes()  # 256 bytes
    held = b"".join(p.read_bytes() for p in Path(url).rglob("*") if p.is_file())
    assert row not in held  # the backbone's weights never enter the store


def forget_first_last_and_a_group(url: str) -> list[int]:
    """Forget a point of shard 0's first slice, one of shard 2's last slice, then group
    person-7; return the IDs gone."""
    ids, shards, slices = layout(url)
    first = int(ids[(shards == 0) & (slices == 0)][0])
    last = int(ids[(shards == 2) & (slices == 2)][0])
    report = forget(url, [first, last])
    assert {r.shard: r.start_stage for r in report.shards} == {0: 1, 2: 3}
    forget(url, group="person-7")
    return [first, last, *range(1028, 1032)]


def test_forgetting_retrains_heads_only_and_equals_scratch(stores, weights):
    url = stores(groups=True)
    gone = forget_first_last_and_a_group(url)
    assert_equals_scratch(stores, url, gone, groups=True)
    assert audit(url).ok  # the features are scanned like raw data: none of the gone is left


def test_serving_runs_the_backbone_once_per_row_for_every_head(stores, trusted):
    url = stores()
    ensemble = Ensemble.load(url)
    assert ensemble.input_shape == (64,) and ensemble.feature_shape == (16,)
    calls = []
    module = ensemble.backbone.module
    handle = module.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    X = np.random.default_rng(1).random((20, 64)).astype(np.float32)
    try:
        scores = ensemble.predict_proba(X)
    finally:
        handle.remove()
    assert calls == [8, 8, 8]  # ceil(20 / feature_batch) forwards, not one per shard
    features = ensemble.backbone.features(X)
    assert np.array_equal(scores, ensemble.predict_proba(features, stored=True))
    out = Predictor(url).predict(X)
    assert out.labels.tolist() == scores.argmax(axis=1).tolist()


def test_another_backbone_is_refused_naming_the_one_expected(stores, weights, trusted, tmp_path):
    url = stores()
    expected = SisaStore(url).config().model.backbone_sha256
    save_tiny(weights, seed=6)  # other weights under the same name
    with pytest.raises(ValueError, match=f"trained on \\({expected[:16]}"):
        Ensemble.load(url)
    with pytest.raises(ValueError, match="restore those weights"):
        train(SisaStore(url).config(), str(tmp_path / "again"))
    assert not (tmp_path / "again").exists() or not SisaStore(str(tmp_path / "again")).files()


def test_serving_needs_the_backbone_trusted(stores, monkeypatch):
    url = stores()
    monkeypatch.delenv("SISA_TRUSTED_FACTORIES", raising=False)
    with pytest.raises(ValueError, match="model.backbone: factory .* is not trusted"):
        Ensemble.load(url)


def test_an_interrupted_feature_ingest_resumes_to_the_same_bits(stores, weights, tmp_path):
    from sisa.training.ingest import IngestJob, run_ingest_job

    url = stores()
    whole = SisaStore(url)
    config = whole.config()
    half = str(tmp_path / "half")
    job = IngestJob(
        url=half, storage_options={}, config=config.stored(), chunk_rows=100, trusted=(TINY,)
    )
    first = run_ingest_job(job, lambda units: None)
    store = SisaStore(half)
    store.fs.delete_tree(first.jobs[1].data.dir)  # as if it died before this part's commit
    again = run_ingest_job(job, lambda units: None)  # another chunking would change nothing
    for part in (0, 1, 2):
        ours = store.read_data(next(j for j in again.jobs if j.shard == part).data)
        theirs = whole.read_data(whole.shard_head(part).data)
        assert np.array_equal(ours["X"], theirs["X"]) and np.array_equal(ours["ids"], theirs["ids"])


def test_the_feature_ingest_reserves_the_shards_device(weights, tmp_path):
    """The ingest job runs the backbone: it asks for what a shard task asks (a GPU where
    the shards train on one), where a plain ingest asks for CPUs only."""
    from orchestrator.executors import InProcessExecutor

    class Recording(InProcessExecutor):
        def map(self, fn, jobs, *, resources, units, desc):
            self.asked[desc] = resources
            return super().map(fn, jobs, resources=resources, units=units, desc=desc)

    source = write_digits_npz(tmp_path / "d.npz")
    settings = {"data.source": str(source), "resources.num_gpus": 0.5}
    for name, extra in (("plain", {}), ("head", head_settings(weights))):
        executor = Recording(progress=False)
        executor.asked = {}
        config = tiny_config(**settings | extra)
        train(config, str(tmp_path / name), executor=executor)
        wanted = config.resources if name == "head" else config.resources.for_data()
        assert executor.asked["ingest"] == wanted
    assert executor.asked["ingest"].num_gpus == 0.5


def test_evaluation_and_forgetting_evidence_read_features_as_stored(stores, trusted):
    from sisa.evidence.forgetting import forgetting_evidence
    from sisa.evidence.status import evaluate

    url = stores()
    ids, shards, _ = layout(url)
    gone = [int(i) for i in ids[shards == 1][:4]]
    forget(url, gone)
    assert 0 < evaluate(url)["aggregate"] <= 1  # the stored test features, no backbone again
    report = forgetting_evidence(url, gone)  # the forgotten rows from the source, featurized
    assert report["identical"] is True and report["forgotten"] == 4
    assert report["figures"]["gap_forget"] == report["figures"]["gap_test"] == 0.0


def test_evaluation_never_loads_the_backbone(stores, weights, trusted, monkeypatch):
    from sisa.evidence.status import evaluate

    url = stores()
    expected = evaluate(url)
    weights.unlink()  # the backbone cannot load now, and need not: test rows are features
    monkeypatch.delenv("SISA_TRUSTED_FACTORIES")
    assert evaluate(url) == expected
    with pytest.raises(ValueError, match="model.backbone"):
        Ensemble.load(url)  # raw rows need the backbone


def test_buffers_outside_the_state_dict_are_hashed_too():
    torch.manual_seed(0)
    a = backbones.Normalised((64,), offset=0.0)
    b = backbones.Normalised((64,), offset=0.5)
    b.load_state_dict(a.state_dict())  # the same state dict; another hidden offset
    assert a.state_dict().keys() == b.state_dict().keys()
    assert state_sha256(a) != state_sha256(b)


def test_the_feature_ingest_runs_under_the_determinism_contract(weights, tmp_path, monkeypatch):
    torch.use_deterministic_algorithms(False)  # as another library in this process might
    backbones.SEEN.clear()
    source = write_digits_npz(tmp_path / "d.npz")
    settings = head_settings(weights) | {
        "data.source": str(source),
        "model.backbone": "tests.sisa.backbones:watching",
        "model.backbone_weights": None,
    }
    train(tiny_config(**settings), str(tmp_path / "s"))
    assert backbones.SEEN and all(backbones.SEEN)


def test_a_swap_reloads_a_backbone_that_changed_under_the_store(stores, weights, trusted):
    from sisa.serving.ensemble import served_input_shape

    url = stores()
    first = Ensemble.load(url)
    assert served_input_shape(SisaStore(url).intent()) == (64,)  # raw rows, as the API checks
    save_tiny(weights, seed=9)
    store = SisaStore(url)
    config = store.config()
    model = config.model.model_copy(update={"backbone_sha256": None})
    train(config.model_copy(update={"model": model}), url, overwrite=True)  # new weights
    again = Ensemble.load(url, previous=first)
    assert again.backbone is not first.backbone
    assert again.backbone.sha256 == SisaStore(url).config().model.backbone_sha256
    same = Ensemble.load(url, previous=again)
    assert same.backbone is again.backbone  # unchanged: kept across the swap


def test_reference_scaling_is_refused_in_head_mode(weights):
    settings = head_settings(weights) | {
        "data.scale": "standard",
        "data.scale_from": "reference",
        "data.scale_reference": "public.npz",
    }
    with pytest.raises(ConfigError, match="data.scale_from: 'reference' does not go with"):
        tiny_config(**settings)


def assert_serves_stage_one_once_rolled_back(url: str, shard: int) -> Ensemble:
    """Accept a point of ``shard``'s second slice: the ensemble then serves that shard's
    first stage, whose checkpointed tensors it holds. Returns the ensemble."""
    from sisa.deletion.accept import accept

    ids, shards, slices = layout(url)
    accepted = accept(url, [int(ids[(shards == shard) & (slices == 1)][0])])
    assert accepted.start_stages == {shard: 2}
    ensemble = Ensemble.load(url)
    assert ensemble.served[shard].stage == 1  # the stage before the deleted point's slice
    store = SisaStore(url)
    weights, _ = store.read_stage(store.shard_head(shard).stages[0], state=False)
    served = ensemble.models[shard].state_dict()
    assert all(torch.equal(served[k], v) for k, v in weights.items())
    return ensemble


def test_a_rolled_back_shard_serves_its_earlier_head(stores, trusted):
    url = stores()
    ensemble = assert_serves_stage_one_once_rolled_back(url, 2)
    weights, _ = SisaStore(url).read_stage(SisaStore(url).shard_head(2).stages[0], state=False)
    assert set(ensemble.models[2].state_dict()) == set(weights)  # a head holds nothing else
    X = np.random.default_rng(2).random((6, 64)).astype(np.float32)
    assert ensemble.predict_proba(X).shape == (6, 10)  # raw rows, through the backbone
