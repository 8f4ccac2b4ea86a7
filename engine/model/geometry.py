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


# Where each layer's values sit in the world ------------------------------------------
#
# Lattice cell c is centred on full-resolution pixel cell_px * c - 2 * (cell_px - 1). An
# upsampling conv puts its input position i at output index 2 i - 1 (the transposed conv
# puts it at 2 i, the valid blur shifts by one), a valid 3 x 3 conv moves index j to j - 1;
# composing these from the lattice gives the closed forms of `texture_layer_grids`.


@dataclass(frozen=True, slots=True)
class PixelGrid:
    """Positions of a layer's values: world full-resolution pixel (x0 + step * j, y0 + step * i)
    for row i < h and column j < w. Positions are integers (step is a power of two)."""

    x0: int
    y0: int
    step: int
    w: int
    h: int


def cell_centre_px(cell: int, stages: int) -> int:
    """Full-resolution world pixel on which lattice cell `cell` is centred (either axis)."""
    cell_px = 2**stages
    return cell_px * cell - 2 * (cell_px - 1)


def structure_layer_grids(
    window: CellWindow, *, blocks: int, kernel: int, stages: int
) -> list[PixelGrid]:
    """Positions of the structure synthesizer's inputs: the cells read by each of the
    `blocks` blocks, then the cells of its output z_s (`blocks + 1` grids)."""
    half, margin = kernel // 2, blocks * (kernel // 2)
    step = 2**stages
    grids = []
    for block in range(blocks + 1):
        trim = block * half
        first_x, first_y = window.x - margin + trim, window.y - margin + trim
        grids.append(
            PixelGrid(
                cell_centre_px(first_x, stages),
                cell_centre_px(first_y, stages),
                step,
                window.w + 2 * (margin - trim),
                window.h + 2 * (margin - trim),
            )
        )
    return grids


def texture_layer_grids(window: CellWindow, stages: int, levels: int) -> list[PixelGrid]:
    """Positions of the outputs of every texture conv up to level `levels`, in order.

    In stage s (r = 2**(stages - s) full pixels per value) output index j of the
    upsampling conv sits at window pixel r * (j - 3) + 2, that of the plain conv at
    r * (j - 2) + 2; window pixel 0 is world pixel cell_px * window.x (resp. y).
    """
    cell_px = 2**stages
    ws = texture_layer_sizes(window.w, levels)
    hs = texture_layer_sizes(window.h, levels)
    grids = []
    for layer, (w, h) in enumerate(zip(ws, hs, strict=True)):
        r = 2 ** (stages - (layer // 2 + 1))
        offset = 2 - (3 if layer % 2 == 0 else 2) * r
        grids.append(PixelGrid(cell_px * window.x + offset, cell_px * window.y + offset, r, w, h))
    return grids


def cells_touching_pixels(x0: int, y0: int, x1: int, y1: int, stages: int) -> tuple[int, ...]:
    """Lattice cells (x, y, w, h) whose inputs can read a value at a world pixel in
    [x0, x1) x [y0, y1): every layer position of a window lies within one cell spacing of a
    cell centre of the window's latent rectangle, so the cells centred within cell_px of
    the pixels are enough."""
    cell_px = 2**stages
    cx0, cy0 = x0 // cell_px, y0 // cell_px
    cx1, cy1 = (x1 - 1) // cell_px + 4, (y1 - 1) // cell_px + 4
    return (cx0, cy0, cx1 - cx0, cy1 - cy0)
