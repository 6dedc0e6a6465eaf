"""Fixtures for the storage tests: one ``store`` per backend, each rooted somewhere unique."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage import Store


@pytest.fixture(
    params=["memory", "file", pytest.param("s3", marks=pytest.mark.s3)],
)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A fresh, empty store on each backend; memory:// is process-global, so roots are unique."""
    kind = request.param
    tag = uuid.uuid4().hex
    if kind == "memory":
        s = Store(f"memory://sisa-test-{tag}")
    elif kind == "file":
        s = Store((tmp_path / "store").as_uri())
    else:
        # Session-scoped moto server from tests/conftest.py (tests/s3server.py).
        url, options = request.getfixturevalue("s3_server")
        s = Store(f"{url}/t-{tag}", options)
    yield s
    if kind != "file":
        s.delete_tree("")
