"""Receptive-field bookkeeping: pure integer maths, checked against the size law."""

import pytest

from engine.model.geometry import (
    CellWindow,
    level_origin,
    level_size,
    noise_unit,
    texture_input_cells,
    texture_layer_sizes,
    window_covering,
)


def test_layer_sizes_match_the_official_101_model():
    assert texture_layer_sizes(11, 4) == [19, 17, 31, 29, 55, 53, 103, 101]
    assert texture_layer_sizes(11, 5)[-2:] == [199, 197]


@pytest.mark.parametrize("stages", [1, 3, 4, 5, 6])
@pytest.mark.parametrize("cells", [5, 11, 17, 32])
def test_closed_form_size_law(stages, cells):
    assert level_size(cells, stages) == 2**stages * cells - (5 * 2**stages - 5)
    assert texture_layer_sizes(cells, stages)[-1] == level_size(cells, stages)


def test_input_cells_is_the_official_rounding():
    assert texture_input_cells(101, 4) == 11
    assert texture_input_cells(197, 4) == 17
    assert texture_input_cells(102, 4) == 12
    assert texture_input_cells(1, 4) == 5  # never below the smallest useful window


def test_noise_units_double_every_stage():
    assert [noise_unit(i) for i in range(8)] == [2, 2, 4, 4, 8, 8, 16, 16]


def test_shifting_a_window_by_six_cells_shifts_the_output_by_96_px():
    a, b = CellWindow(0, 0, 11, 11), CellWindow(6, 0, 11, 11)
    assert b.output_rect(4, 4)[0] - a.output_rect(4, 4)[0] == 96
    assert [r[0] for r in b.noise_rects(4)] == [12, 12, 24, 24, 48, 48, 96, 96]


@pytest.mark.parametrize("stages", [3, 4, 5])
@pytest.mark.parametrize("level_offset", [0, 1, 2])
@pytest.mark.parametrize("rect", [(0, 0, 1, 1), (-517, 33, 300, 41), (1000, -2000, 7, 900)])
def test_window_covering_is_minimal_and_covers(stages, level_offset, rect):
    level = stages - level_offset
    win = window_covering(rect, level, stages)
    ox, oy, ow, oh = win.output_rect(level, stages)
    x, y, w, h = rect
    assert ox <= x and oy <= y and ox + ow >= x + w and oy + oh >= y + h
    smaller_w = level_size(win.w - 1, level)
    assert win.w == 5 or ox + smaller_w < x + w  # one cell fewer would not cover


def test_level_origin_keeps_negative_coordinates_on_the_lattice():
    assert level_origin(-3, 5, 5) == -96
    assert level_origin(-3, 4, 5) == -48 - 1


def test_windows_smaller_than_five_cells_are_refused():
    with pytest.raises(ValueError):
        CellWindow(0, 0, 4, 10)
