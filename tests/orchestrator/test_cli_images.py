"""The README's image-folder flow through the command line: its TOML example (a folder in
the ``<class>/<file>`` layout, augmentation, the ResNet), made tiny, trains with
``sisa train --config``; ``sisa forget`` two image IDs, ``sisa process`` and ``sisa verify``
then print ``VERIFIED``."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

from orchestrator.cli import main
from sisa.store.artifacts import SisaStore
from tests.sisa.data.test_images import digits_folder
from tests.sisa.deletion.test_accept import layout

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
TINY = {  # the README's settings, small enough to run in about a second
    "data": {"image_size": [12, 12]},
    "sisa": {"shards": 2, "slices": 2, "epochs": 2, "seed": 7},
    "model": {"hidden": [4, 8]},
    "optim": {"batch_size": 16},
}


def readme_image_config() -> dict:
    """The README's image-folder TOML block, parsed."""
    blocks = re.findall(r"```toml\n(.*?)```", README, flags=re.S)
    (block,) = [b for b in blocks if 'source = "photos/"' in b]
    return tomllib.loads(block)


def toml(config: dict) -> str:
    """Sections of strings, numbers and lists as TOML (JSON's literals are TOML's)."""
    return "\n".join(
        f"[{name}]\n" + "".join(f"{key} = {json.dumps(v)}\n" for key, v in section.items())
        for name, section in config.items()
    )


def run(*argv):
    return main([str(a) for a in argv])


def test_the_readme_image_folder_flow_trains_forgets_and_verifies(tmp_path, capsys):
    config = readme_image_config()
    assert config["data"]["augment"] == ["crop", "flip"] and config["model"]["name"] == "resnet"
    for name, section in TINY.items():
        config[name] = config.get(name, {}) | section
    digits_folder(tmp_path / "photos", n=60)  # photos/digit3/0003.png, ...
    (tmp_path / "photos.toml").write_text(toml(config))
    url = tmp_path / "stores" / "photos"
    assert run("train", "--config", tmp_path / "photos.toml", "--store", url, "--no-progress") == 0
    recorded = SisaStore(str(url)).config()
    assert recorded.data.source == str(tmp_path / "photos")  # beside the config file
    assert recorded.data.augment == ("crop", "flip") and recorded.model.name == "resnet"
    ids, shards, slices = layout(str(url))
    assert all(re.fullmatch(r"digit\d/\d{4}", i) for i in ids)  # <class>/<file> IDs
    victims = [
        str(ids[(shards == 0) & (slices == 0)][0]),
        str(ids[(shards == 1) & (slices == 1)][0]),
    ]
    assert run("forget", "--store", url, *victims, "--no-progress") == 0
    assert run("process", "--store", url, "--no-progress") == 0
    capsys.readouterr()
    assert run("verify", "--store", url, "--no-progress") == 0
    out = capsys.readouterr().out
    assert "VERIFIED: bitwise identical" in out
    assert not set(victims) & set(layout(str(url))[0].tolist())  # gone from the store's points
