"""The README's frozen-backbone flow through the command line: its TOML block, with a tiny
backbone of the tests' own and its weights saved as safetensors, trains heads; ``sisa
forget``, ``sisa process`` and ``sisa verify`` print ``VERIFIED``; ``sisa predict`` runs
the backbone once it is trusted, and refuses it otherwise."""

from __future__ import annotations

import re
import tomllib

import numpy as np
import pandas as pd
import torch
from safetensors.torch import save_file

from orchestrator.cli import main
from sisa.store.artifacts import SisaStore
from tests.conftest import write_digits_npz
from tests.orchestrator.test_cli_images import README, toml
from tests.sisa import backbones


def run(*argv):
    return main([str(a) for a in argv])


def test_the_readme_head_flow_trains_forgets_verifies_and_predicts(tmp_path, capsys, monkeypatch):
    blocks = re.findall(r"```toml\n(.*?)```", README, flags=re.S)
    (block,) = [b for b in blocks if 'finetune = "head"' in b]
    config = tomllib.loads(block)
    assert config["model"]["hidden"] == [] and "backbone_weights" in config["model"]
    torch.manual_seed(2)
    save_file(backbones.tiny((64,)).state_dict(), str(tmp_path / "tiny.safetensors"))
    config["model"] |= {
        "backbone": "tests.sisa.backbones:tiny",
        "backbone_weights": "tiny.safetensors",
    }
    write_digits_npz(tmp_path / "digits.npz")
    config |= {"data": {"source": "digits.npz"}, "sisa": {"shards": 3, "slices": 3, "epochs": 3}}
    (tmp_path / "head.toml").write_text(toml(config))
    url = tmp_path / "stores" / "head"
    assert run("train", "--config", tmp_path / "head.toml", "--store", url, "--no-progress") == 0
    store = SisaStore(str(url))
    assert store.intent()["input_shape"] == [16] and store.config().model.backbone_sha256
    assert run("forget", "--store", url, "1042", "--no-progress") == 0
    assert run("process", "--store", url, "--no-progress") == 0
    capsys.readouterr()
    assert run("verify", "--store", url, "--no-progress") == 0
    assert "VERIFIED: bitwise identical" in capsys.readouterr().out
    with np.load(tmp_path / "digits.npz") as f:
        rows = pd.DataFrame(f["X"][:5], columns=[f"px{j}" for j in range(64)])
    rows.insert(0, "id", range(5))
    rows.to_csv(tmp_path / "rows.csv", index=False)
    out = tmp_path / "pred.csv"
    monkeypatch.delenv("SISA_TRUSTED_FACTORIES", raising=False)
    assert run("predict", "--store", url, "--input", tmp_path / "rows.csv", "--output", out) == 2
    assert "model.backbone: factory 'tests.sisa.backbones:tiny' is not trusted" in (
        capsys.readouterr().err
    )
    monkeypatch.setenv("SISA_TRUSTED_FACTORIES", "tests.sisa.backbones:tiny")
    assert run("predict", "--store", url, "--input", tmp_path / "rows.csv", "--output", out) == 0
    assert len(out.read_text().splitlines()) == 6  # a header and five rows
