"""Stands for code a tampered store config names; importing it is the failure."""

import os

os.environ["SISA_TEST_EVIL_IMPORTED"] = "1"


def factory(input_shape, num_classes):  # pragma: no cover - must never run
    raise AssertionError("an untrusted factory ran")
