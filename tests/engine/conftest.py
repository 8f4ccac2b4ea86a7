"""Fixtures shared by the engine tests (a test module may override them with its own)."""

import random

import pytest
import torch

from engine import load_generator
from engine.tiles import Rect
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


def crop(image, big: Rect, r: Rect):
    """The pixels of world rectangle `r` in `image`, a render of `big` ([..., H, W])."""
    return image[..., r.y - big.y : r.bottom - big.y, r.x - big.x : r.right - big.x]


def assert_tiles_match_one_render(world: World, big: Rect, lod: int, tiles: int) -> None:
    """`tiles` random rectangles inside `big`, rendered alone, equal the same pixels of one
    render of `big` within 1e-4 (seeded by `lod`, so every run checks the same ones)."""
    whole = world.render_lod_float([big], lod)[0]
    rng = random.Random(lod)
    for _ in range(tiles):
        w, h = rng.randint(1, big.w // 3), rng.randint(1, big.h // 3)
        r = Rect(rng.randint(big.x, big.right - w), rng.randint(big.y, big.bottom - h), w, h)
        alone = world.render_lod_float([r], lod)[0]
        assert (alone - crop(whole, big, r)).abs().max().item() <= 1e-4, r
