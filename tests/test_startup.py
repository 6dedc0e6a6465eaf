"""What a process imports at start, checked in fresh interpreters: ``import sisa`` and the
commands that train nothing import neither torch nor scikit-learn (nor pandas); training
sets the determinism flag without importing the compiler stack (``torch._dynamo``,
``torch._inductor``), and stays bitwise what it was."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from sisa.data.partition import MISSING, Locator

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "sklearn", "pandas", "scipy")
COMPILER = ("torch._dynamo", "torch._inductor")
TINY = [
    "--set", "sisa.shards=3", "--set", "sisa.slices=3", "--set", "sisa.epochs=2",
    "--set", "model.hidden=[16]", "--set", "sisa.seed=7",
]  # fmt: skip


def fresh(code: str) -> dict:
    """Run ``code`` in a new interpreter; it prints one JSON object as its last line."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def cli(*argv: str) -> dict:
    """``python -m orchestrator.cli ARGV`` in a new interpreter: its exit code, output, and
    which heavy modules and compiler modules it imported."""
    return fresh(
        f"""
        import contextlib, io, json, runpy, sys
        sys.argv = ["sisa", *{list(argv)!r}]
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            try:
                runpy.run_module("orchestrator.cli", run_name="__main__")
                code = 0
            except SystemExit as exit:
                code = exit.code
        names = {list(HEAVY + COMPILER)!r}
        print(json.dumps({{"code": code, "out": out.getvalue(),
                          "imported": [m for m in names if m in sys.modules]}}))
        """
    )


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = str(tmp_path_factory.mktemp("startup") / "store")
    trained = cli("train", "--store", url, "--no-progress", *TINY)
    assert trained["code"] == 0
    assert not set(COMPILER) & set(trained["imported"])  # training imports no compiler
    return url


def training_ids(url: str, row: int = 0) -> list[int]:
    """The ID at ``row`` of each shard's data."""
    from sisa.store.artifacts import SisaStore

    store = SisaStore(url)
    data = [store.read_data(store.shard_head(k).data, features=False) for k in range(3)]
    return [int(d["ids"][row]) for d in data]


def test_import_sisa_imports_neither_torch_nor_sklearn():
    got = fresh(
        f"""
        import json, sys
        import sisa
        store = sisa.SisaStore
        from sisa import ConfigError, StoreStateError, build_config, load_config
        config = build_config({{}}, {{"sisa.shards": 2}})
        print(json.dumps({{"imported": [m for m in {list(HEAVY)!r} if m in sys.modules],
                          "store": store.__module__, "shards": config.sisa.shards}}))
        """
    )
    assert got == {"imported": [], "store": "sisa.store.artifacts", "shards": 2}


@pytest.mark.slow  # imports every module
def test_every_public_name_resolves_to_its_definition():
    got = fresh(
        """
        import importlib, json
        import sisa
        from sisa import *  # noqa: F403
        import sisa.evidence.status, sisa.training.train, sisa.evidence.verify  # noqa: E401
        wrong = [n for n, m in sisa._EXPORTS.items()
                 if getattr(sisa, n) is not getattr(importlib.import_module(m), n)
                 or globals()[n] is not getattr(sisa, n)]
        try:
            sisa.no_such_name
            missing = "no error"
        except AttributeError as err:
            missing = str(err)
        print(json.dumps({"all": sorted(sisa.__all__) == sorted(sisa._EXPORTS),
                          "wrong": wrong, "callable": callable(sisa.train),
                          "dir": set(sisa.__all__) <= set(dir(sisa)),
                          "submodule": sisa.store.journal.__name__, "missing": missing}))
        """
    )
    assert got == {
        "all": True,
        "wrong": [],
        "callable": True,
        "dir": True,
        "submodule": "sisa.store.journal",
        "missing": "module 'sisa' has no attribute 'no_such_name'",
    }


def test_a_submodule_imported_first_does_not_hide_the_function():
    """The modules that define ``status`` and ``train`` live in subpackages, so importing
    them first leaves ``sisa.status`` and ``sisa.train`` the functions."""
    got = fresh(
        """
        import json
        import sisa.evidence.status, sisa.training.train  # noqa: E401
        import sisa
        print(json.dumps([sisa.status is sisa.evidence.status.status,
                          sisa.train is sisa.training.train.train]))
        """
    )
    assert got == [True, True]


@pytest.mark.slow  # a process per command
def test_commands_that_train_nothing_import_neither_torch_nor_sklearn(store):
    first, second, third = training_ids(store)
    for argv in (
        ["status", "--store", store],
        ["status", "--store", store, "--json"],
        ["forget", "--store", store, str(first)],
        ["forget", "--store", store, str(second), str(third), "--json"],
        ["requests", "--store", store],
        ["plan", "--store", store],
    ):
        got = cli(*argv)
        assert got["code"] == 0, (argv, got)
        assert got["imported"] == [], (argv, got["imported"])
    pending = cli("status", "--store", store, "--json")
    assert len(json.loads(pending["out"])["pending_requests"]) == 2


def test_forget_wait_trains_without_the_compiler_and_stays_exact(store):
    from sisa.evidence.verify import verify

    got = cli("forget", "--wait", "--no-progress", "--store", store, str(training_ids(store, 1)[0]))
    assert got["code"] == 0 and "purged" in got["out"]
    assert "torch" in got["imported"] and not set(COMPILER) & set(got["imported"])
    assert verify(store).identical


def test_configure_sets_the_flag_as_torch_does_without_the_compiler():
    got = fresh(
        """
        import json, os, sys
        import torch
        torch._C._set_deterministic_algorithms(True, warn_only=True)  # laxer: tightened
        from sisa.training.environment import configure
        configure(1, "cpu")
        before = [m for m in ("torch._dynamo", "torch._inductor") if m in sys.modules]
        flag = torch.are_deterministic_algorithms_enabled()
        warn = torch.is_deterministic_algorithms_warn_only_enabled()
        import torch.utils.deterministic
        fill = torch.utils.deterministic.fill_uninitialized_memory
        import torch._inductor.config as inductor  # a later compile sees deterministic mode
        print(json.dumps({"before": before, "flag": flag, "warn_only": warn, "fill": fill,
                          "inductor": inductor.deterministic,
                          "env": os.environ["TORCHINDUCTOR_DETERMINISTIC"]}))
        """
    )
    assert got == {
        "before": [],
        "flag": True,
        "warn_only": False,
        "fill": True,
        "inductor": True,
        "env": "1",
    }


def test_configure_sets_an_imported_inductor_config():
    got = fresh(
        """
        import json
        import torch._inductor.config as inductor
        inductor.deterministic = False
        from sisa.training.environment import configure
        configure(1, "cpu")
        import torch
        print(json.dumps([inductor.deterministic, torch.are_deterministic_algorithms_enabled()]))
        """
    )
    assert got == [True, True]


def test_optimizers_run_without_the_compiler_and_bitwise_as_torchs_own():
    """Set up and step SGD (momentum) and Adam, save and restore their state: no
    ``torch._dynamo`` is imported; once it is, torch's own wrappers run, and the weights
    are bitwise those of the deferred run."""
    got = fresh(
        """
        import json, sys
        import torch
        from sisa.training.environment import configure
        from storage import tensor_hashes

        def run(name):
            torch.manual_seed(0)
            model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(),
                                        torch.nn.Linear(16, 3))
            opt = (torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9) if name == "sgd"
                   else torch.optim.Adam(model.parameters(), lr=0.01))
            x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))
            for step in range(5):
                if step == 3:  # a checkpoint round trip, as a resumed stage does
                    opt.load_state_dict(opt.state_dict())
                opt.zero_grad(set_to_none=True)
                torch.nn.functional.cross_entropy(model(x), y).backward()
                opt.step()
            return tensor_hashes(model.state_dict())

        configure(1, "cpu")
        deferred = {name: run(name) for name in ("sgd", "adam")}
        compiler_before = "torch._dynamo" in sys.modules
        import torch._dynamo
        own = {name: run(name) for name in ("sgd", "adam")}
        cached = getattr(torch.optim.Optimizer.zero_grad.__wrapped__, "__dynamo_disable")
        print(json.dumps({"compiler_before": compiler_before, "same": deferred == own,
                          "torch_wrapper": cached.__module__ != "sisa.training.environment",
                          "grad": torch.is_grad_enabled()}))
        """
    )
    assert got == {"compiler_before": False, "same": True, "torch_wrapper": True, "grad": True}


@pytest.mark.parametrize("kind", ["int", "str"])
def test_a_few_ids_are_located_without_pandas_as_the_index_locates_them(kind):
    """``sisa forget`` looks up a few IDs by a scan instead of building the pandas index;
    both give the same answer."""
    rng = np.random.default_rng(0)
    for n in (0, 1, 7, 5_000):
        ids = rng.permutation(3 * n + 10)[:n]
        if kind == "str":
            ids = np.array([f"user-{i}" for i in ids])
        parts = {0: ids[0::3], 1: ids[1::3], -1: ids[2::3]}
        for q in (1, 3, Locator.SCAN_MAX):
            query = rng.integers(0, 3 * n + 10, q)
            query = np.array([f"user-{i}" for i in query]) if kind == "str" else query
            scanned, indexed = Locator(parts).locate(query), Locator(parts).build().locate(query)
            assert scanned.part.tolist() == indexed.part.tolist()
            assert scanned.row.tolist() == indexed.row.tolist()
            hit = scanned.part != MISSING
            found = zip(scanned.part[hit], scanned.row[hit], query[hit], strict=True)
            assert all(parts[p][r] == v for p, r, v in found)
    got = fresh(
        """
        import json, sys
        import numpy as np
        from sisa.data.partition import Locator
        found = Locator({0: np.arange(100), 1: np.arange(100, 200)}).locate(np.array([150]))
        print(json.dumps([found.part.tolist(), found.row.tolist(), "pandas" in sys.modules]))
        """
    )
    assert got == [[1], [50], False]
