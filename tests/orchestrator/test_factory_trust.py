"""One rule for user factories (``sisa.training.factories``): a command that runs the store's models
imports its factory only when trusted; commands that only read or journal never import
it. A refused command changes nothing: no journal entry, no batch plan. And a factory
module beside the user is found only through PYTHONPATH, which the error says."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from orchestrator.cli import main
from sisa.store.artifacts import SisaStore
from sisa.store.journal import Journal
from sisa.store.layout import BATCHES
from tests.orchestrator.test_cli import TINY_ARGS, _sisa

FACTORY = "tests.sisa.factories:tiny_linear"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def factory_store(tmp_path_factory):
    url = str(tmp_path_factory.mktemp("trust") / "s")
    argv = ["train", "--store", url, "--no-progress", *TINY_ARGS, "--set", f"model.name={FACTORY}"]
    assert main(argv) == 0  # the caller's own config: trusted for training
    return url


@pytest.fixture
def url(factory_store, tmp_path, monkeypatch):
    monkeypatch.delenv("SISA_TRUSTED_FACTORIES", raising=False)
    shutil.copytree(factory_store, tmp_path / "s")
    return str(tmp_path / "s")


def cli(capsys, *argv):
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def plans(url):
    return SisaStore(url).fs.listdir(BATCHES)


def test_commands_that_only_read_or_journal_never_need_trust(url, capsys):
    for argv in (["status"], ["forget", "3"], ["requests"], ["plan"], ["audit"]):
        code, _, err = cli(capsys, argv[0], "--store", url, *argv[1:])
        assert code == 0, (argv, err)


def test_commands_that_run_models_refuse_an_untrusted_factory_and_change_nothing(
    url, tmp_path, capsys
):
    assert cli(capsys, "forget", "--store", url, "3")[0] == 0  # journaled: no model runs
    np.savez(tmp_path / "in.npz", X=np.zeros((1, 64), np.float32))
    before = sorted(p.name for p in Path(url).rglob("*"))
    for argv in (
        ["process", "--no-progress"],
        ["forget", "4", "--wait", "--no-progress"],
        ["verify", "--no-progress"],
        ["evaluate"],
        ["predict", "--input", tmp_path / "in.npz"],
    ):
        code, out, err = cli(capsys, argv[0], "--store", url, *argv[1:])
        assert code == 2, (argv, out, err)
        assert f"SISA_TRUSTED_FACTORIES={FACTORY}" in err, (argv, err)
    assert sorted(p.name for p in Path(url).rglob("*")) == before  # no plan, no request
    assert plans(url) == [] and Journal(SisaStore(url)).seqs() == [1]


def test_a_trusted_process_after_a_refusal_is_no_resume(url, capsys, monkeypatch):
    """The refusal committed no plan, so the next run is a fresh batch, not a resume."""
    assert cli(capsys, "forget", "--store", url, "3")[0] == 0
    assert cli(capsys, "process", "--store", url, "--no-progress")[0] == 2
    monkeypatch.setenv("SISA_TRUSTED_FACTORIES", "tests.sisa.factories:*")
    code, out, err = cli(capsys, "process", "--store", url, "--no-progress")
    assert code == 0, err
    assert "resumed" not in out
    code, out, _ = cli(capsys, "forget", "--store", url, "5", "--wait", "--no-progress")
    assert code == 0 and "purged" in out.lower()


def test_only_a_real_crash_is_called_a_crash(url):
    env = {"SISA_TRUSTED_FACTORIES": "tests.sisa.factories:*"}
    assert _sisa("forget", "--store", url, "3", env=env).returncode == 0
    kill = env | {"SISA_CRASH_AT": "after-plan"}
    crashed = _sisa("process", "--store", url, "--no-progress", env=kill)
    assert crashed.returncode == -signal.SIGKILL
    again = _sisa("process", "--store", url, "--no-progress", env=env)
    assert again.returncode == 0 and "(resumed after a crash)" in again.stdout
    done = json.loads(_sisa("requests", "--store", url, "--json").stdout)
    assert [r["state"] for r in done] == ["purged"]


@pytest.mark.slow  # real processes, each importing torch
def test_a_factory_module_beside_the_user_needs_pythonpath_and_says_so(tmp_path):
    (tmp_path / "myfactory.py").write_text(
        "from torch import nn\n\n\ndef build(input_shape, num_classes):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(int(input_shape[0]), num_classes))\n"
    )
    # the installed command, as users run it (``python -m`` would put the folder on the path)
    argv = [str(Path(sys.executable).parent / "sisa"), "train", "--store", "s", "--no-progress"]
    argv += [*TINY_ARGS, "--set", "model.name=myfactory:build"]
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}  # the project, not the folder
    refused = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, env=env)
    assert refused.returncode == 2
    assert "myfactory.py is in the working folder" in refused.stderr
    assert "PYTHONPATH" in refused.stderr and not (tmp_path / "s").exists()
    env["PYTHONPATH"] = f"{ROOT}:{tmp_path}"  # as the error says
    done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr


def test_a_factory_module_beside_the_config_file_is_named_with_the_path_to_set(
    tmp_path, monkeypatch, capsys
):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "besidefactory.py").write_text("def build(input_shape, num_classes): ...\n")
    (folder / "run.toml").write_text('[model]\nname = "besidefactory:build"\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the module is beside the config, not in the working folder
    code = main(["train", "--config", str(folder / "run.toml"), "--store", "s", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "besidefactory.py is in the config file's folder" in err
    assert f"PYTHONPATH={folder.resolve()}" in err
    assert not (elsewhere / "s").exists() and "besidefactory" not in sys.modules
