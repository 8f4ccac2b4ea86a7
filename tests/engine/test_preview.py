"""Preview colour maps: fitted per seed from the model's own renders, kept only where they help."""

import torch

from engine import preview
from engine.preview import apply_colour_map, colour_maps
from engine.styles import Style
from engine.tiles import Rect
from engine.world import World
from tests.engine.conftest import assert_tiles_match_one_render


def _pooled_render(generator, distort):
    """A calibration render whose previews are the pooled full render passed through `distort`."""
    torch.manual_seed(0)
    cache: dict[Rect, torch.Tensor] = {}

    def full(rect: Rect) -> torch.Tensor:
        if rect not in cache:
            cache[rect] = torch.rand(3, rect.h, rect.w) * 2 - 1
        return cache[rect]

    def render(rect: Rect, lod: int) -> torch.Tensor:
        if lod == 0:
            return full(rect)
        f = 2**lod
        big = full(Rect(rect.x * f, rect.y * f, rect.w * f, rect.h * f))
        return distort(torch.nn.functional.avg_pool2d(big[None], f)[0])

    return render


def test_a_colour_shift_of_the_previews_is_undone(generator):
    render = _pooled_render(
        generator, lambda x: x * 0.5 + torch.tensor([0.3, -0.2, 0.1])[:, None, None]
    )
    maps = preview._fit(generator, render)
    assert sorted(maps) == list(range(1, generator.config.stages))
    rect = preview.calibration_rects(generator)[1]
    shifted = render(Rect(rect.x // 2, rect.y // 2, rect.w // 2, rect.h // 2), 1)
    truth = torch.nn.functional.avg_pool2d(render(rect, 0)[None], 2)
    level = generator.config.stages - 1
    torch.testing.assert_close(
        apply_colour_map(shifted[None], maps[level]), truth, atol=1e-4, rtol=0
    )


def test_previews_that_are_already_right_keep_no_map(generator):
    assert preview._fit(generator, _pooled_render(generator, lambda x: x)) == {}


def test_maps_are_fitted_once_per_base_style(generator, world):
    calls = []

    def render(rect, lod):
        calls.append(lod)
        return world.render_lod_float([rect], lod, edits=(), calibrated=False)[0]

    first = colour_maps(generator, Style.from_seed(12345), render)
    count = len(calls)
    again = colour_maps(generator, Style.from_seed(12345), render)
    assert count and again is first and len(calls) == count
    colour_maps(generator, Style.from_seed(54321), render)
    assert len(calls) == 2 * count


def test_calibrated_previews_still_match_one_big_render(generator, world):
    stages = generator.config.stages
    swap = torch.tensor([[0.0, 0.8, 0.0], [0.0, 0.0, 0.9], [1.1, 0.0, 0.0], [0.1, -0.1, 0.0]])
    preview._maps[generator] = {world.base_style: {level: swap for level in range(1, stages)}}
    plain = world.render_lod_float([Rect(0, 0, 32, 32)], 1, calibrated=False)
    torch.testing.assert_close(
        world.render_lod_float([Rect(0, 0, 32, 32)], 1), apply_colour_map(plain, swap)
    )
    for lod in (1, 2, 4):
        assert_tiles_match_one_render(world, Rect(-96, -64, 192, 128), lod, tiles=6)


def test_an_uncalibrated_render_fits_no_map(generator):
    world = World(generator, seed=31, precision="fp32")
    image = world.render((0, 0, 64, 64), scale=0.25, calibrated=False)
    assert image.shape == (16, 16, 3)
    assert world.base_style not in preview._maps.get(generator, {})
