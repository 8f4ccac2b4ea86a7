"""Spatial style fusion: style strokes, the style-layer hook and the per-pixel blend."""

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest
import torch

from engine.cache import TileCache
from engine.edits import Edit, StyleStroke, edit_from_json, polyline_distance
from engine.model.layers import ModulatedConv2d, SpatialStyle
from engine.scheduler import TileScheduler
from engine.styles import Style, StyleLayer
from engine.tiles import Rect, TileIndex
from engine.world import World

from .conftest import assert_tiles_match_one_render, crop

WAIT_S = 60.0


def stroke(points, radius=40.0, softness=0.6, opacity=1.0, seed: int | None = 3) -> StyleStroke:
    style = None if seed is None else Style.from_seed(seed)
    return StyleStroke(tuple(points), radius, softness, opacity, style)


# The per-pixel modulated conv ------------------------------------------------------------


@pytest.mark.parametrize("demodulate", [True, False])
def test_per_pixel_style_of_a_1x1_conv_equals_each_pixel_rendered_with_its_own_style(demodulate):
    torch.manual_seed(0)
    conv = ModulatedConv2d(6, 5, 1, 8, demodulate=demodulate)
    x = torch.randn(1, 6, 4, 7)
    styles = torch.randn(3, 8)
    weights = torch.softmax(torch.randn(1, 3, 4, 7) * 3, dim=1)
    out = conv(x, SpatialStyle(styles, weights, weights))
    for i in range(4):
        for j in range(7):
            mixed = (weights[0, :, i, j, None] * styles).sum(0, keepdim=True)  # [1, D]
            alone = conv(x[..., i : i + 1, j : j + 1], mixed)
            assert torch.allclose(out[..., i : i + 1, j : j + 1], alone, atol=1e-5)


def test_a_uniform_blend_equals_the_one_style_path_for_an_upsampling_conv():
    torch.manual_seed(1)
    conv = ModulatedConv2d(4, 6, 3, 8, upsample=True)
    x = torch.randn(2, 4, 6, 6)
    styles = torch.randn(2, 8)
    w_in = torch.zeros(2, 2, 6, 6)
    w_in[:, 1] = 1
    w_out = torch.zeros(2, 2, 9, 9)
    w_out[:, 1] = 1
    blended = conv(x, SpatialStyle(styles, w_in, w_out))
    assert torch.allclose(blended, conv(x, styles[1:]), atol=1e-5)


def _blob(b: int, k: int, h: int, w: int, at: tuple[int, int, int, int]) -> torch.Tensor:
    """Weights [b, k, h, w]: style 0 everywhere but a soft random blend inside `at`."""
    weights = torch.zeros(b, k, h, w)
    weights[:, 0] = 1
    y0, y1, x0, x1 = at
    weights[:, :, y0:y1, x0:x1] = torch.softmax(torch.randn(b, k, y1 - y0, x1 - x0) * 2, dim=1)
    return weights


@pytest.mark.parametrize(
    ("kernel", "upsample", "demodulate"),
    [(3, False, True), (3, True, True), (1, False, False), (7, False, True)],
)
def test_the_box_limited_blend_equals_blending_every_pixel(kernel, upsample, demodulate):
    torch.manual_seed(3)
    conv = ModulatedConv2d(5, 4, kernel, 8, upsample=upsample, demodulate=demodulate)
    x = torch.randn(1, 5, 16, 18)
    styles = torch.randn(3, 8)
    out_hw = (29, 33) if upsample else (17 - kernel, 19 - kernel)
    w_in = _blob(1, 3, 16, 18, (5, 9, 2, 7))
    w_out = _blob(1, 3, *out_hw, (3, 8, 0, 6))
    bias = torch.randn(4)
    got = conv(x, SpatialStyle(styles, w_in, w_out), bias)
    # Reference: scale every input pixel, demodulate every output pixel.
    s = conv.modulation(styles)
    weight = conv.weight * conv.scale
    expected = conv._conv(x * torch.einsum("bkhw,kc->bchw", w_in, s), weight, None)
    if demodulate:
        expected = expected * conv._spatial_demodulation(s, weight, w_out)
    expected = expected + bias.view(1, -1, 1, 1)
    assert torch.allclose(got, expected, atol=1e-5)


# Strokes as data --------------------------------------------------------------------------


def test_a_stroke_round_trips_through_json_and_carries_its_style():
    edits = [
        stroke([(0, 0), (10.5, -3)]),
        stroke([(5, 5)], seed=None),
        StyleStroke(((1, 2),), 8, 0.0, 0.5, Style(z_g=(0.1, -0.2), w_plus=((1.0, 2.0),))),
    ]
    for edit in edits:
        assert edit_from_json(edit.to_json()) == edit
        assert edit_from_json(edit.to_json()).digest() == edit.digest()


@pytest.mark.parametrize(
    "data",
    [
        {"kind": "style_stroke", "points": [], "radius": 4, "softness": 0, "opacity": 1},
        {"kind": "style_stroke", "points": [[0, 0]], "radius": -1, "softness": 0, "opacity": 1,
         "style": None},
        {"kind": "style_stroke", "points": [[0, "a"]], "radius": 4, "softness": 0, "opacity": 1,
         "style": None},
        {"kind": "style_stroke", "points": [[0, 0]], "radius": 4, "softness": 2, "opacity": 1,
         "style": None},
        {"kind": "style_stroke", "points": [[0, 0]], "radius": 4, "softness": 0, "opacity": 1,
         "style": {"seed": 1, "z_g": [1.0]}},
        {"kind": "style_stroke", "points": [[0, 0]], "radius": 4, "softness": 0, "opacity": 1,
         "style": {"z_g": [float("nan")]}},
    ],
)  # fmt: skip
def test_malformed_strokes_are_refused_with_a_value_error(data):
    with pytest.raises(ValueError):
        edit_from_json(data)


def test_polyline_distance_is_the_distance_to_the_nearest_segment():
    xs, ys = torch.tensor([0.0, 5.0, 10.0, 20.0]), torch.tensor([0.0, 3.0])
    d = polyline_distance(((0.0, 0.0), (10.0, 0.0)), xs, ys, reach=100)
    expected = torch.tensor([[0.0, 0.0, 0.0, 10.0], [3.0, 3.0, 3.0, (100 + 9) ** 0.5]])
    assert torch.allclose(d, expected)


# Rendering --------------------------------------------------------------------------------


def test_tiles_outside_a_strokes_influence_are_served_from_cache_and_tiles_inside_change(world):
    view = Rect(-384, 0, 896, 128)  # tiles tx -3..3 of row 0
    edit = stroke([(0, 64), (30, 70)], radius=20)
    influence = world.influence(edit)
    got = []
    with TileScheduler(world, got.append, prefetch_ring=0, cache=TileCache()) as s:
        s.request(view, scale=1.0, epoch=1)
        assert s.wait_idle(WAIT_S)
        before = {r.key.tile: r for r in got}
        world.apply(edit)
        s.request(view, scale=1.0, epoch=2)
        assert s.wait_idle(WAIT_S)
        after = {r.key.tile: r for r in got if r.epoch == 2}
    outside = {t for t in after if not t.rect.intersects(influence)}
    assert outside and len(outside) < len(after)
    for t in outside:
        assert after[t].from_cache and after[t].key == before[t].key
        assert after[t].rgb.tobytes() == before[t].rgb.tobytes()
    assert not after[TileIndex(0, 0, 0)].from_cache
    assert not np.array_equal(after[TileIndex(0, 0, 0)].rgb, before[TileIndex(0, 0, 0)].rgb)


@pytest.mark.parametrize("lod", [0, 1, 3, 5])
def test_tiles_rendered_alone_equal_one_big_render_with_strokes_present(world, lod):
    world.apply(stroke([(-120, -40), (-20, 10), (60, 0)], radius=50))
    world.apply(stroke([(0, -80), (100, 60)], radius=30, softness=1.0, seed=5))
    world.apply(stroke([(40, 20)], radius=25, softness=0.3, opacity=0.7, seed=None))
    shrink = 2**lod
    big = Rect(-240 // shrink, -160 // shrink, 420 // shrink, 320 // shrink)
    assert_tiles_match_one_render(world, big, lod, tiles=5)


def _edge_step_ratio(world: World, softness: float, rect: Rect) -> tuple[float, torch.Tensor]:
    """Paint a wide vertical band of style 3 whose right edge ends at x = 0; return the
    largest mean |d/dx| of a column near the edge over that of the columns away from it."""
    world.apply(stroke([(-300, -600), (-300, 600)], radius=300, softness=softness))
    painted = world.render_lod_float([rect], 0)[0]  # [3, H, W]
    step = (painted[:, :, 1:] - painted[:, :, :-1]).abs().mean(dim=(0, 1))  # per column
    x = torch.arange(rect.x, rect.right - 1)
    boundary = step[(x >= -100) & (x < 10)]
    interior = step[(x < -120) | (x >= 40)]
    return (boundary.max() / interior.mean()).item(), painted


def test_a_stroke_fades_into_its_surroundings_without_a_step(world, generator):
    rect = Rect(-384, -64, 384, 128)
    hard, _ = _edge_step_ratio(World(generator, seed=7, precision="fp32"), 0.0, rect)
    assert hard > 2.5  # the measure sees a hard-edged brush's step (about 3.7)...
    soft, painted = _edge_step_ratio(world, 0.3, rect)
    assert soft < 1.5  # ...and none for a soft one, fading over 90 px (about 1.4)
    x = torch.arange(rect.x, rect.right - 1)
    # and the edge really separates two styles
    plain = world.restyled(world.base_style).render_lod_float([rect], 0)[0]
    restyled = world.restyled(Style.from_seed(3)).render_lod_float([rect], 0)[0]
    inside = (x < -220).nonzero().max().item()  # beyond the receptive field of the fade
    assert (painted[..., :inside] - restyled[..., :inside]).abs().max() < 1e-4
    assert (painted[..., :inside] - plain[..., :inside]).abs().mean() > 0.05


def test_a_window_inside_one_style_renders_as_a_world_of_that_style(world):
    world.apply(stroke([(0, 0)], radius=3000, softness=0.0, seed=3))
    rect = Rect(-40, -30, 70, 50)
    expected = world.restyled(Style.from_seed(3)).render_lod_float([rect], 0)
    assert torch.equal(world.render_lod_float([rect], 0), expected)


def test_the_eraser_paints_the_base_style_back_exactly(world):
    rect = Rect(-50, -40, 90, 80)
    before = world.render(rect.as_tuple())
    world.apply(stroke([(-10, 0), (10, 0)], radius=40))
    assert not np.array_equal(world.render(rect.as_tuple()), before)
    world.apply(stroke([(0, 0)], radius=3000, softness=0.0, seed=None))
    assert np.array_equal(world.render(rect.as_tuple()), before)


def test_undo_restores_identical_pixels_and_the_edit_log_alone_reproduces_the_world(
    world, generator
):
    rect = Rect(-60, -50, 150, 100)
    before = world.render(rect.as_tuple())
    world.apply(stroke([(-30, 0), (40, 10)], radius=35))
    world.apply(stroke([(0, -20)], radius=20, seed=9, opacity=0.5))
    painted = world.render(rect.as_tuple())
    assert not np.array_equal(painted, before)

    replayed = World(generator, seed=7, precision="fp32")
    replayed.replace_edits([edit_from_json(e.to_json()) for e in world.edits])
    assert np.array_equal(replayed.render(rect.as_tuple()), painted)

    world.undo()
    world.undo()
    assert np.array_equal(world.render(rect.as_tuple()), before)
    world.redo()
    world.redo()
    assert np.array_equal(world.render(rect.as_tuple()), painted)


# The style-layer hook ---------------------------------------------------------------------


@dataclass(frozen=True)
class SoftRectangle(Edit):
    """A photo-placement-like edit: weight 1 inside a rectangle, fading over `fade` px."""

    kind: ClassVar[str] = "test_soft_rectangle"
    rect: tuple[int, int, int, int]
    fade: int
    style: Style

    def cells(self) -> Rect:
        return Rect(0, 0, 0, 0)

    def style_layer(self) -> StyleLayer:
        x, y, w, h = self.rect
        return StyleLayer(self.style, Rect(x, y, w, h).grown(self.fade), self.alpha)

    def alpha(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        x, y, w, h = self.rect

        def ramp(v: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
            outside = torch.clamp(torch.maximum(lo - v, v - (hi - 1)), min=0)
            return (1 - outside / self.fade).clamp(0, 1)

        return ramp(ys, y, y + h)[:, None] * ramp(xs, x, x + w)[None, :]


def test_any_edit_may_contribute_an_explicit_z_g_and_w_plus(world, generator):
    torch.manual_seed(4)
    z_g = torch.randn(generator.config.global_dim)
    w_plus = torch.randn(generator.config.style_slots, generator.config.global_dim)
    style = Style.from_tensors(z_g, w_plus)
    world.apply(SoftRectangle((-400, -400, 800, 800), 40, style))
    rect = Rect(-30, -20, 60, 40)  # far inside: one style, rendered as a world of it
    got = world.render_lod_float([rect], 0)
    assert torch.equal(got, world.restyled(style).render_lod_float([rect], 0))
    # an explicit W+ is used as is, not through the mapping network
    mapped = Style.from_tensors(z_g)
    assert not torch.allclose(got, world.restyled(mapped).render_lod_float([rect], 0))
    # across the fade the tile is a blend, and still a pure function of position
    edge = Rect(360, -20, 100, 40)
    whole = world.render_lod_float([edge], 0)[0]
    part = Rect(390, -10, 30, 20)
    alone = world.render_lod_float([part], 0)[0]
    assert (alone - crop(whole, edge, part)).abs().max() <= 1e-4


def test_a_style_that_does_not_fit_the_model_is_refused(world):
    world.apply(StyleStroke(((0, 0),), 20, 0.5, 1.0, Style(z_g=(1.0, 2.0))))
    with pytest.raises(ValueError, match="z_g has 2 values"):
        world.render((-10, -10, 20, 20))
