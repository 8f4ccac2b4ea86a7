"""Weight-free ScaleInv-SWD."""

from __future__ import annotations

import torch

from engine.checkpoint import random_generator
from engine.model import preset_config
from training.data import load_images
from training.metrics import (
    _pyr_up,
    evaluate_generator,
    laplacian_pyramid,
    sliced_wasserstein_distance,
)


def _smooth_images(n: int, size: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 6, 6, generator=g) * 2 - 1
    return torch.nn.functional.interpolate(
        coarse, size=(size, size), mode="bicubic", align_corners=False
    ).clamp(-1, 1)


def test_laplacian_pyramid_stops_at_16_px_and_sums_back_to_the_image():
    images = _smooth_images(2, 64, 0)
    levels = laplacian_pyramid(images)
    assert [lvl.shape[-1] for lvl in levels] == [64, 32, 16]
    rebuilt = levels[-1]
    for band in reversed(levels[:-1]):
        rebuilt = band + _pyr_up(rebuilt, band.shape[-2:])
    torch.testing.assert_close(rebuilt, images)


def test_swd_of_a_set_with_itself_is_zero_and_with_noise_is_large():
    images = _smooth_images(8, 48, 1)
    same = sliced_wasserstein_distance(images, images.clone(), seed=3)
    assert max(same) < 1e-3
    similar = sliced_wasserstein_distance(images, _smooth_images(8, 48, 2), seed=3)
    noise = sliced_wasserstein_distance(images, torch.rand(8, 3, 48, 48) * 2 - 1, seed=3)
    assert sum(noise) / len(noise) > 1.5 * sum(similar) / len(similar)
    assert min(noise) > 10


def test_evaluate_generator_reports_every_scale(landscapes):
    config = preset_config("tiny")
    bank = load_images(landscapes, full_size=config.full_size, patch_size=config.patch_size)
    results = evaluate_generator(random_generator(config), bank, images=4, scales=(1, 4))
    assert set(results) == {"swd_patch", "swd_1x", "swd_4x", "swd"}
    assert all(v > 0 and v == v for v in results.values())
