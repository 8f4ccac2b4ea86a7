"""Fixtures shared by the engine tests (a test module may override them with its own)."""

import pytest
import torch

from engine import load_generator
from engine.world import World


@pytest.fixture(scope="module")
def generator():
    """The `tiny` model with noise strengths and biases made non-zero, as in a trained one."""
    g = load_generator(preset="tiny", seed=11, device="cpu")
    torch.manual_seed(2)
    for name, p in g.named_parameters():  # trained-like: noise and biases matter
        if "noise_strength" in name or name.endswith("bias"):
            p.data.add_(torch.randn_like(p) * 0.2)
    return g


@pytest.fixture
def world(generator):
    return World(generator, seed=7, precision="fp32")
