"""Fixtures of the sisa tests: one tiny four-slice store per module, copied per test
(``tests.store_fixtures``)."""

from tests.store_fixtures import base, url

__all__ = ["base", "url"]
