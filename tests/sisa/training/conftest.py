"""Fixtures of the training tests: the deletion tests' ``trained`` store factory."""

from __future__ import annotations

from tests.sisa.deletion.test_accept import trained  # noqa: F401  (a fixture)
