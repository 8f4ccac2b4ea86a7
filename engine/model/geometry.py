"""Receptive-field bookkeeping of the padding-free generator, as pure integer maths.

The official `calc_in_spatial_size` / `calc_out_spatial_size`, generalised to windows at
arbitrary (negative included) lattice offsets and to the coarse levels of detail.

Frames (each axis alike):
- *lattice cell* c: a texture-synthesizer input cell. Cell c needs the local latents
  z_l (and coordinates) of cells [c - m, c + m], m = `structure_margin`.
- *level* s (1..stages): the RGB after texture stage s; level `stages` is the full
  resolution, level s has 2**s pixels per cell, i.e. it is the full image downscaled
  by r = 2**(stages - s).
- *noise position* of texture conv l: a window starting at cell a reads noise of
  layer l from position `noise_unit(l) * a` on.

A window of N >= 5 cells starting at cell a yields, at level s, the global level-s pixels
[level_origin(a), level_origin(a) + level_size(N)): this is what makes a tile a pure
function of position (INFINITYGAN.md section 4, "seam rule").
"""

from __future__ import annotations

from dataclasses import dataclass

MIN_CELLS = 5  # smallest window whose every layer is non-empty


def level_size(cells: int, level: int) -> int:
    """Side length of the level-`level` RGB of a `cells`-wide window.

    Each stage is an upsampling conv (H -> 2H - 3) and a plain conv (H -> H - 2), so the
    closed form is 2**s * N - 5 * (2**s - 1).
    """
    return 2**level * cells - 5 * (2**level - 1)


def texture_layer_sizes(cells: int, stages: int) -> list[int]:
    """Side length after every texture conv of a `cells`-wide window, in order."""
    sizes = []
    for level in range(1, stages + 1):
        up = 2 * level_size(cells, level - 1) - 3
        sizes += [up, up - 2]
    return sizes


def texture_input_cells(out_px: int, level: int) -> int:
    """Fewest cells whose level-`level` output is at least `out_px` wide (>= MIN_CELLS)."""
    step = 2**level
    return max(MIN_CELLS, -(-(out_px + 5 * (step - 1)) // step))


def noise_unit(layer: int) -> int:
    """Noise positions per lattice cell of texture conv `layer` (0-based): 2, 2, 4, 4, 8, ..."""
    return 2 ** (layer // 2 + 1)


def level_shift(level: int, stages: int) -> int:
    """Coarse-level alignment offset, in level pixels.

    Level pixel q of a window at cell a is centred on full-resolution pixel
    r * (q - 2) + 2 of that window (r = 2**(stages - level)). Naming it global level pixel
    2**level * a + q - shift, with shift = round(2.5 - 2.5 / r), puts each level pixel
    within a third of a level pixel of the r x r block of full pixels it stands for
    (exactly on it at r = 1).
    """
    r = 2 ** (stages - level)
    return round(2.5 - 2.5 / r)


def level_origin(cell: int, level: int, stages: int) -> int:
    """Global level pixel of the first output pixel of a window starting at `cell`."""
    return 2**level * cell - level_shift(level, stages)


@dataclass(frozen=True, slots=True)
class CellWindow:
    """Texture-synthesizer input cells [x, x + w) x [y, y + h) of one generator call."""

    x: int
    y: int
    w: int
    h: int

    def __post_init__(self) -> None:
        if self.w < MIN_CELLS or self.h < MIN_CELLS:
            raise ValueError(f"a window needs at least {MIN_CELLS} cells per side, got {self}")

    def latent_rect(self, margin: int) -> tuple[int, int, int, int]:
        """Cells (x, y, w, h) of z_l and coordinates the structure synthesizer needs."""
        return (self.x - margin, self.y - margin, self.w + 2 * margin, self.h + 2 * margin)

    def noise_rects(
        self, stages: int, levels: int | None = None
    ) -> list[tuple[int, int, int, int]]:
        """Noise positions (x, y, w, h) of every texture conv up to level `levels`."""
        levels = stages if levels is None else levels
        ws = texture_layer_sizes(self.w, levels)
        hs = texture_layer_sizes(self.h, levels)
        rects = []
        for layer, (w, h) in enumerate(zip(ws, hs, strict=True)):
            unit = noise_unit(layer)
            rects.append((unit * self.x, unit * self.y, w, h))
        return rects

    def output_rect(self, level: int, stages: int) -> tuple[int, int, int, int]:
        """Global level pixels (x, y, w, h) this window yields at `level`."""
        return (
            level_origin(self.x, level, stages),
            level_origin(self.y, level, stages),
            level_size(self.w, level),
            level_size(self.h, level),
        )


def window_covering(
    rect: tuple[int, int, int, int], level: int, stages: int, *, min_cells: int = MIN_CELLS
) -> CellWindow:
    """The smallest window whose level-`level` output covers `rect` (global level pixels).

    Floor division keeps negative coordinates right.
    """
    x, y, w, h = rect
    if w <= 0 or h <= 0:
        raise ValueError(f"empty rectangle {rect}")
    step = 2**level
    shift = level_shift(level, stages)

    def axis(start: int, size: int) -> tuple[int, int]:
        first = (start + shift) // step
        need = start + size - level_origin(first, level, stages)
        return first, max(min_cells, texture_input_cells(need, level))

    cx, cw = axis(x, w)
    cy, ch = axis(y, h)
    return CellWindow(cx, cy, cw, ch)
