"""The ensemble forwards: loop as the reference, fused checked against it, safe fallback."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
import torch
from torch import nn

from sisa.serving.inference import FUSE_MAX_ROWS, STRATEGIES, auto_strategy, build_forward
from sisa.training.models import MLP, SmallCNN

SHAPE = (16,)  # 16 features: a 1 x 4 x 4 image for the CNN
CLASSES = 3


def tiny_mlp() -> nn.Module:
    return MLP(SHAPE, CLASSES, hidden=(8,), dropout=0.0)


def tiny_cnn() -> nn.Module:
    return SmallCNN(SHAPE, CLASSES, channels=(4, 6), dropout=0.0)


def ensemble(factory: Callable[[], nn.Module], shards: int) -> list[nn.Module]:
    """Same architecture, a different seed per shard, eval mode; global RNG left alone."""
    models = []
    with torch.random.fork_rng(devices=[]):
        for shard in range(shards):
            torch.manual_seed(100 + shard)
            models.append(factory().eval())
    return models


def batch(n: int) -> torch.Tensor:
    return torch.randn(n, *SHAPE, generator=torch.Generator().manual_seed(n))  # [n, *f]


def reference(models: list[nn.Module], x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.stack([torch.softmax(m(x), dim=-1) for m in models])  # [S, n, C]


class Branchy(nn.Module):
    """Control flow on the model's own activations, which vmap cannot batch.

    (A branch on x alone would be fine: x is shared, not batched over shards.)
    """

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(SHAPE[0], CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.lin(x)  # [n, C]
        if h.sum() > 0:
            return h
        return -h


class PlainTensor(nn.Module):
    """Keeps a per-model tensor as a plain attribute, not a buffer: stacking misses it."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(SHAPE[0], CLASSES)
        self.shift = torch.randn(CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x) + self.shift


class IndexInput(nn.Module):
    """Features are token indices: only non-negative whole numbers are valid input."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(x.long()).sum(dim=1)  # [n, f, C] -> [n, C]


@pytest.mark.parametrize("n", [1, 7])
def test_loop_is_the_stacked_softmax_exactly(n):
    models = ensemble(tiny_mlp, 4)
    x = batch(n)
    forward = build_forward(models, "loop")
    out = forward(x)
    assert forward.strategy == "loop" and forward.fallback_reason is None
    assert out.shape == (4, n, CLASSES) and out.dtype == torch.float32
    assert torch.equal(out, reference(models, x))
    assert out.is_inference()  # ran under inference_mode


@pytest.mark.parametrize("factory", [tiny_mlp, tiny_cnn])
@pytest.mark.parametrize("shards", [3, 5])
@pytest.mark.parametrize("n", [1, 9])
def test_fused_matches_the_loop(factory, shards, n):
    models = ensemble(factory, shards)
    x = batch(n)
    forward = build_forward(models, "fused", input_shape=SHAPE)
    out = forward(x)
    assert forward.strategy == "fused" and forward.fallback_reason is None
    assert out.shape == (shards, n, CLASSES) and out.dtype == torch.float32
    assert out.is_inference()
    assert torch.allclose(out, reference(models, x), atol=1e-6, rtol=1e-5)
    assert not torch.equal(out[0], out[1])  # each shard's own weights, not the first's


def test_fused_leaves_the_models_alone():
    models = ensemble(tiny_cnn, 3)
    before = [{k: v.clone() for k, v in m.state_dict().items()} for m in models]
    params = [[(p, p.requires_grad, p.data_ptr()) for p in m.parameters()] for m in models]
    forward = build_forward(models, "fused", input_shape=SHAPE)
    forward(batch(4))
    assert forward.strategy == "fused"
    for model, old, old_params in zip(models, before, params, strict=True):
        state = model.state_dict()
        assert state.keys() == old.keys()
        assert all(torch.equal(state[k], v) and state[k].device == v.device for k, v in old.items())
        now = [(p, p.requires_grad, p.data_ptr()) for p in model.parameters()]
        assert all(a[0] is b[0] and a[1:] == b[1:] for a, b in zip(now, old_params, strict=True))
        assert not model.training
    # stacked copies, detached: changing a model afterwards does not reach the forward
    want = forward(batch(2))
    with torch.no_grad():
        models[1].head.weight.zero_()
    assert torch.equal(forward(batch(2)), want)


def test_unbatchable_model_falls_back_to_the_loop():
    models = ensemble(Branchy, 3)
    forward = build_forward(models, "fused", input_shape=SHAPE)
    assert forward.strategy == "loop"
    assert "fused forward failed" in forward.fallback_reason
    x = batch(5)
    assert torch.equal(forward(x), reference(models, x))


def test_fused_that_disagrees_falls_back_to_the_loop():
    models = ensemble(PlainTensor, 3)  # the fused forward would use shard 0's shift for all
    forward = build_forward(models, "fused", input_shape=SHAPE)
    assert forward.strategy == "loop"
    assert "differs from the loop" in forward.fallback_reason
    x = batch(5)
    assert torch.equal(forward(x), reference(models, x))


def test_one_model_runs_the_loop():
    models = ensemble(tiny_mlp, 1)
    forward = build_forward(models, "fused", input_shape=SHAPE)
    assert forward.strategy == "loop" and "one model" in forward.fallback_reason
    assert forward(batch(2)).shape == (1, 2, CLASSES)


def test_building_leaves_the_global_rng_alone():
    models = ensemble(tiny_mlp, 3)
    state = torch.get_rng_state()
    build_forward(models, "fused", input_shape=SHAPE)
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize(
    "models, strategy, kwargs, message",
    [
        ("mlp", "vmap", {"input_shape": SHAPE}, "serving.inference: unknown strategy 'vmap'"),
        ("none", "loop", {}, "serving.inference: no models"),
        ("mlp", "fused", {}, "serving.inference = 'fused' needs the models' input_shape"),
        ("mlp", "auto", {}, "serving.inference = 'auto' needs the models' input_shape"),
    ],
)
def test_bad_requests_raise(models, strategy, kwargs, message):
    given = ensemble(tiny_mlp, 3) if models == "mlp" else []
    with pytest.raises(ValueError, match=message):
        build_forward(given, strategy, **kwargs)


def test_auto_follows_the_rule():
    """CPU: the loop below 20 models; from 20, fused for batches of <= 64 rows and the loop
    above (fused loses up to 4x on batches of 1,024). CUDA: fused."""
    assert STRATEGIES == ("auto", "loop", "fused")
    forward = build_forward(ensemble(tiny_mlp, 3), input_shape=SHAPE)
    assert (forward.strategy, forward.fallback_reason) == ("loop", None)
    models = ensemble(tiny_mlp, 20)
    forward = build_forward(models, input_shape=SHAPE)
    assert (forward.strategy, forward.fallback_reason) == ("by-batch", None)
    small, large = batch(FUSE_MAX_ROWS), batch(FUSE_MAX_ROWS + 1)
    assert torch.equal(forward(small), forward.fused(small))
    assert torch.equal(forward(large), reference(models, large))  # the loop, bitwise
    assert torch.allclose(forward(small), reference(models, small), atol=1e-5, rtol=1e-4)
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert [auto_strategy(s, cuda) for s in (1, 2, 50)] == ["loop", "fused", "fused"]
    assert [auto_strategy(s, cpu) for s in (1, 19, 20, 50)] == [
        "loop",
        "loop",
        "by-batch",
        "by-batch",
    ]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_auto_fuses_on_cuda():
    models = [m.cuda() for m in ensemble(tiny_cnn, 4)]
    forward = build_forward(models, input_shape=SHAPE)
    x = batch(6).cuda()
    out = forward(x)
    assert forward.strategy == "fused" and out.device.type == "cuda"
    assert torch.allclose(out, reference(models, x), atol=1e-5, rtol=1e-4)


def test_models_the_probe_cannot_run_keep_the_loop():
    models = ensemble(IndexInput, 3)  # random probe features are not valid indices
    forward = build_forward(models, "fused", input_shape=SHAPE)
    assert forward.strategy == "loop"
    assert "cannot probe" in forward.fallback_reason
    x = torch.randint(0, 10, (5, *SHAPE)).float()
    assert torch.equal(forward(x), reference(models, x))


def test_fused_is_thread_safe():
    """Concurrent predictions: functional_call swaps weights into a module, one per thread."""
    models = ensemble(tiny_mlp, 4)
    forward = build_forward(models, "fused", input_shape=SHAPE)
    x = batch(5)
    want = forward(x)
    failures: list[str] = []

    def work() -> None:
        try:
            for _ in range(100):
                if not torch.equal(forward(x), want):
                    failures.append("different output")
        except Exception as err:  # a race shows up as a device or vmap-level error
            failures.append(repr(err))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures[:3]
