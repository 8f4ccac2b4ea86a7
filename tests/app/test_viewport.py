"""Viewport maths: screen <-> world, exact pans, zoom about a point, the covering rect."""

from __future__ import annotations

import pytest

from app.viewport import MAX_ZOOM, MIN_ZOOM, Viewport, clamp_zoom, snap, zoom_label


@pytest.mark.parametrize("zoom", [1 / 64, 0.3, 1.0, 2.0, 8.0])
def test_to_world_and_to_screen_are_inverse(zoom):
    vp = Viewport(-1234.5, 77.25, zoom, 640, 480)
    for sx, sy in [(0, 0), (639, 479), (320.5, 10)]:
        wx, wy = vp.to_world(sx, sy)
        assert vp.to_screen(wx, wy) == pytest.approx((sx, sy))


@pytest.mark.parametrize("zoom", [0.5, 1.0, 2.0])
def test_pan_moves_content_by_exactly_the_screen_distance(zoom):
    vp = Viewport(10, 20, zoom, 300, 200)
    before = vp.to_screen(55, 66)
    after = vp.panned(13, -7).to_screen(55, 66)
    assert (after[0] - before[0], after[1] - before[1]) == (13, -7)


@pytest.mark.parametrize("factor", [2.0, 0.5, 1.37])
def test_zoom_keeps_the_anchor_point_fixed(factor):
    vp = Viewport(100, -50, 0.75, 400, 300)
    anchor = (31.0, 250.0)
    world = vp.to_world(*anchor)
    zoomed = vp.zoomed(factor, anchor)
    assert zoomed.zoom == pytest.approx(0.75 * factor)
    assert zoomed.to_screen(*world) == pytest.approx(anchor)


def test_zoom_is_clamped():
    assert clamp_zoom(1e-9) == MIN_ZOOM
    assert clamp_zoom(1e9) == MAX_ZOOM
    assert Viewport(zoom=MAX_ZOOM).zoomed(2).zoom == MAX_ZOOM


def test_world_rect_covers_the_widget_with_whole_pixels():
    vp = Viewport(0.5, 0.5, 1.0, 100, 50)  # origin (-49.5, -24.5)
    rect = vp.world_rect()
    assert (rect.x, rect.y, rect.w, rect.h) == (-50, -25, 101, 51)
    assert Viewport(50, 25, 1.0, 100, 50).world_rect().as_tuple() == (0, 0, 100, 50)


def test_snap_rounds_halves_up_everywhere():
    assert [snap(v) for v in (-1.5, -0.5, 0.5, 1.5, 2.49)] == [-1, 0, 1, 2, 2]


@pytest.mark.parametrize(
    ("zoom", "text"), [(1, "1:1"), (2, "2:1"), (0.25, "1:4"), (1 / 2.8, "1:2.8"), (1 / 64, "1:64")]
)
def test_zoom_label(zoom, text):
    assert zoom_label(zoom) == text
