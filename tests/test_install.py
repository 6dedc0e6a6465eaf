"""The install keeps the CPU torch the README asks for and pulls in no torchvision or timm:
PyPI's torchvision for torch 2.13.0 is a CUDA build that fails to import beside the CPU
torch, and can break transformers' imports with it."""

from __future__ import annotations

import importlib.metadata
import importlib.util

import pytest


def test_torch_is_the_pinned_release():
    assert importlib.metadata.version("torch").startswith("2.13.0")


@pytest.mark.parametrize("package", ["torchvision", "timm"])
def test_no_torchvision_or_timm_is_installed(package):
    assert importlib.util.find_spec(package) is None, f"{package} must not be installed"


def test_transformers_and_peft_import_beside_the_cpu_torch():
    from peft import LoraConfig
    from transformers import ViTConfig

    assert ViTConfig().hidden_size == 768 and LoraConfig(r=8).r == 8
