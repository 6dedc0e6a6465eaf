import pytest
import torch
from torch import nn

from sisa.config import ModelConfig
from sisa.deletion.accept import forget
from sisa.evidence.verify import verify
from sisa.training.models import SmallCNN, build_model, image_shape
from sisa.training.train import train
from tests.conftest import tiny_config

ADAPTIVE = (
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
)  # fmt: skip


@pytest.mark.parametrize("name", ["mlp", "cnn", "tests.sisa.factories:tiny_linear"])
def test_zoo_maps_features_to_logits(name):
    model = build_model(ModelConfig(name=name, hidden=(8, 8)), (64,), 10, trusted=[name])
    assert model(torch.zeros(4, 64)).shape == (4, 10)


def test_cnn_shapes():
    assert image_shape((64,)) == (1, 8, 8)
    assert image_shape((28, 28)) == (1, 28, 28)
    assert image_shape((3, 32, 32)) == (3, 32, 32)
    with pytest.raises(ValueError, match="cnn"):
        image_shape((600,))
    assert SmallCNN((3, 32, 32), 10, (4, 8), 0.1)(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 16, 16)])
def test_the_resnet_has_no_adaptive_pooling(shape):
    """The determinism rule: adaptive pooling has no deterministic CUDA backward, so the
    ResNet takes a plain mean. No such module, and no such op in the backward graph."""
    model = build_model(ModelConfig(name="resnet", hidden=(4, 8, 8)), shape, 10)
    modules = [type(m).__name__ for m in model.modules()]
    assert "BatchNorm2d" in modules and "Conv2d" in modules  # the modules are walked
    assert [n for n in modules if n.startswith("Adaptive")] == []
    assert not any(isinstance(m, ADAPTIVE) for m in model.modules())
    model.train()
    out = model(torch.rand(2, *shape))  # [2, 10]
    assert out.shape == (2, 10)
    seen, stack = set(), [out.grad_fn]
    while stack:  # every op of the backward pass
        node = stack.pop()
        if node is not None and node not in seen:
            seen.add(node)
            stack += [next_fn for next_fn, _ in node.next_functions]
    ops = {type(node).__name__ for node in seen}
    assert "MeanBackward1" in ops or "MeanBackward0" in ops, ops  # the plain mean
    assert not [op for op in ops if "adaptive" in op.lower()], ops


@pytest.mark.parametrize(
    "name, message",
    [
        ("tests.sisa.factories:missing", "cannot load"),
        ("no_such_module_xyz:f", "cannot load"),
        ("tests.sisa.factories:not_a_module", "not a Module"),
    ],
)
def test_bad_factories(name, message):
    with pytest.raises(ValueError, match=message):
        build_model(ModelConfig(name=name), (64,), 10, trusted=[name])


@pytest.mark.parametrize("model", ["cnn", "tests.sisa.factories:tiny_linear"])
def test_forget_is_exact_for_other_models(tmp_path, monkeypatch, model):
    overrides = {"model.name": model, "model.hidden": [4, 8], "sisa.shards": 2}
    url = str(tmp_path / "s")
    train(tiny_config(**overrides), url)  # the caller's own config: trusted for training
    monkeypatch.setenv("SISA_TRUSTED_FACTORIES", "tests.sisa.factories:*")
    forget(url, [3, 4, 50])
    assert verify(url).identical


def test_cuda_without_a_gpu_is_a_clear_error(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(RuntimeError, match="resources.device = 'cuda'"):
        train(tiny_config(**{"resources.device": "cuda"}), str(tmp_path / "s"))


def test_a_factory_named_by_a_store_is_not_imported_unless_trusted(tmp_path, monkeypatch):
    """Whoever can write a store's config.json must not be able to run code."""
    import json
    import sys

    from sisa.serving.ensemble import Ensemble
    from sisa.store.artifacts import SisaStore
    from storage import write_doc

    monkeypatch.delenv("SISA_TRUSTED_FACTORIES", raising=False)
    monkeypatch.delenv("SISA_TEST_EVIL_IMPORTED", raising=False)
    url = tmp_path / "s"
    train(tiny_config(**{"sisa.shards": 1}), str(url))
    store = SisaStore(str(url))
    body = json.loads((url / "config.json").read_text())["body"]
    body["config"]["model"]["name"] = "tests.sisa.evil:factory"
    (url / "config.json").unlink()
    write_doc(store.fs, "config.json", body)  # a validly re-hashed, tampered config
    for action in (
        lambda: Ensemble.load(store),
        lambda: verify(str(url)),
        lambda: forget(str(url), [3]),
    ):
        with pytest.raises(ValueError, match="not trusted"):
            action()
    assert "tests.sisa.evil" not in sys.modules
    assert "SISA_TEST_EVIL_IMPORTED" not in __import__("os").environ


def test_malformed_shapes_in_a_store_are_refused(tmp_path):
    import json

    from sisa.store.artifacts import SisaStore
    from storage import StorageError, write_doc

    url = tmp_path / "s"
    train(tiny_config(**{"sisa.shards": 1}), str(url))
    body = json.loads((url / "config.json").read_text())["body"]
    body["input_shape"] = ["touch", "/tmp/x"]
    (url / "config.json").unlink()
    write_doc(SisaStore(str(url)).fs, "config.json", body)
    with pytest.raises(StorageError, match="malformed training record"):
        SisaStore(str(url)).intent()
