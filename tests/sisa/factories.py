"""A user model factory, loaded by tests as ``tests.sisa.factories:tiny_linear``."""

from torch import nn


def tiny_linear(input_shape, num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(int(input_shape[0]), num_classes))


def not_a_module(input_shape, num_classes):
    return "nope"
