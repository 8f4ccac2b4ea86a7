"""Colour calibration of the level-of-detail previews.

A preview (lod k >= 1, engine.world) stops the texture synthesizer after an earlier stage
and shows that stage's skip RGB. In a trained generator the later ToRGB layers still move
the colours: the default model's coarse RGB is lighter in the sky and greyer on the ground
than its full render averaged down to the same size (35 levels off on average at 1:16).

`colour_maps` fits, once per base style, an affine colour map per texture level (a 3x3
matrix and an offset, least squares) that takes the level's preview to the block average of
the full render, on a window four cells wide that spans the vertical band from sky to
ground. The colours of a level depend on the style, so the fit is made for the world's base
style, and a second window decides whether a level's map is kept: only where it lowers the
error there. The maps depend on the weights and the base style alone and act on every pixel
alike (painted strokes included), so every tile stays a pure function of (weights, seed,
edits, position, lod) and tiles still match one big render. On the default model (seed 7, a
4096 x 1024 area) they bring the mean error at 1:8 and 1:16 from 23 and 35 levels down to
14; at 1:2 and 1:4 the previews are already close and stay as they are.

Legend: B batch, h/w preview pixels.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable

import torch

from engine.model import Generator
from engine.styles import Style
from engine.tiles import Rect

CALIBRATION_WIDTH_CELLS = 4
VALIDATION_OFFSET_CELLS = 64  # the second window, which decides whether a map is kept
VERTICAL_BAND_CELLS = 20  # sky to ground: where the vertical coordinate is not saturated
MIN_GAIN = 0.9  # a map is kept only if it lowers the validation error below 90%

# render(rect, lod) -> float [3, h, w]: the uncalibrated render of a rectangle by a world
# of the base style being calibrated, without edits.
CalibrationRender = Callable[[Rect, int], torch.Tensor]
ColourMaps = dict[int, torch.Tensor]  # texture level -> float32 [4, 3]

_maps: weakref.WeakKeyDictionary[Generator, dict[Style, ColourMaps]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def calibration_rects(generator: Generator) -> tuple[Rect, Rect]:
    """Full-resolution world rectangles of the fitting and the validation window."""
    cell = generator.config.cell_px
    y = -VERTICAL_BAND_CELLS // 2 * cell
    w, h = CALIBRATION_WIDTH_CELLS * cell, VERTICAL_BAND_CELLS * cell
    return Rect(0, y, w, h), Rect(VALIDATION_OFFSET_CELLS * cell, y, w, h)


def colour_maps(generator: Generator, style: Style, render: CalibrationRender) -> ColourMaps:
    """The preview colour maps of base style `style` on `generator` (fitted once, cached):
    {texture level: [4, 3]} for the levels whose map passed validation."""
    with _lock:
        per_style = _maps.setdefault(generator, {})
        if style not in per_style:
            per_style[style] = _fit(generator, render)
        return per_style[style]


def _fit(generator: Generator, render: CalibrationRender) -> ColourMaps:
    stages = generator.config.stages
    windows = calibration_rects(generator)
    full = [render(rect, 0).double().cpu() for rect in windows]
    maps = {}
    for lod in range(1, stages):
        f = 2**lod
        (fit_x, fit_y), (check_x, check_y) = (
            (_pixels(render(_lod_rect(rect, f), lod).double().cpu()), _pooled(image, f))
            for rect, image in zip(windows, full, strict=True)
        )
        solution = torch.linalg.lstsq(_affine(fit_x), fit_y, driver="gelsd").solution  # [4, 3]
        before = (check_x - check_y).abs().mean()
        after = (_affine(check_x) @ solution - check_y).abs().mean()
        if after < MIN_GAIN * before:
            maps[stages - lod] = solution.float()
    return maps


def _lod_rect(rect: Rect, f: int) -> Rect:
    return Rect(rect.x // f, rect.y // f, rect.w // f, rect.h // f)


def _pooled(image: torch.Tensor, f: int) -> torch.Tensor:
    return _pixels(torch.nn.functional.avg_pool2d(image[None], f)[0])


def _affine(pixels: torch.Tensor) -> torch.Tensor:
    """[n, 3] -> [n, 4] with a column of ones."""
    return torch.cat([pixels, torch.ones(len(pixels), 1, dtype=pixels.dtype)], dim=1)


def _pixels(image: torch.Tensor) -> torch.Tensor:
    """[3, h, w] -> [h w, 3]."""
    return image.flatten(1).t()


def apply_colour_map(rgb: torch.Tensor, colour_map: torch.Tensor) -> torch.Tensor:
    """rgb [B, 3, h, w] through a [4, 3] affine colour map -> [B, 3, h, w]."""
    m = colour_map.to(rgb.device, rgb.dtype)
    return torch.einsum("bchw,cd->bdhw", rgb, m[:3]) + m[3].view(1, 3, 1, 1)
