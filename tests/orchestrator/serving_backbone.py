"""A backbone factory that only the head-mode Serve test trusts.

Its own module, so that no other test's trust (``tests.sisa.backbones:*``), which may be in
the environment the session's Ray cluster started with, reaches Serve's replicas: they see
it only if ``sisa serve`` passes the trust of the process that starts them."""

from __future__ import annotations

from tests.sisa.backbones import tiny as _tiny

NAME = "tests.orchestrator.serving_backbone:tiny"


def tiny(input_shape):
    return _tiny(input_shape)
