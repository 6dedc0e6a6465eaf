"""One tiny four-slice store per module, copied per test: the ``base`` and ``url``
fixtures of the sisa and orchestrator tests (their conftests import them)."""

from __future__ import annotations

import shutil

import pytest

from sisa.training.train import train
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A store trained once per module (3 shards x 4 slices); never modify it."""
    url = str(tmp_path_factory.mktemp("base") / "base")
    train(tiny_config(**{"sisa.slices": 4}), url)
    return url


@pytest.fixture
def url(base, tmp_path):
    """A private copy of ``base`` for one test."""
    shutil.copytree(base, tmp_path / "s")
    return str(tmp_path / "s")
