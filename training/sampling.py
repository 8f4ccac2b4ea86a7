"""Latents, noises and coordinates of fakes: the training distribution and fixed-seed previews.

Training coordinates reproduce the official `coord_handler.py` (INFINITYGAN.md section 2) in
lattice units, the frame of `engine.model.coords.coordinate_grid` (position 0 = the world's
vertical middle, raw vertical value = `coord_vertical_step` x position).

Derivation of the vertical sampling from the official numbers (101 model). The official
training grid has H = S + V = 35 + 10 = 45 rows, S = ts + 2m the z_l window (ts = 11 texture
cells = `patch_cells`, m = 12 = `structure_margin`), and raw value v(i) = 0.3 (i - (H-1)/2).
The step 0.3 is 2 cut / (ts + V - 1) with cut = 3 (`coord_vert_cut_pt`, where tanh has
saturated): the ts + V - 1 = 20 cell steps between the top of the first window's texture
rows and the bottom of the last window's span the band [-cut, +cut]. So

    band  = round(2 * cut / coord_vertical_step)          (20 cells)
    V     = band - patch_cells + 1                         (10 offsets, k = 0..9)
    first texture row of offset k at position k - band/2  (-10 .. -1)

and the window's z_l rows (texture rows plus margin) are at k - band/2 - m + [0, S). For
the paper preset this gives exactly the official ranges: texture rows span v in
[-3.0, 2.7] over the 10 offsets, whole windows [-6.6, 6.3] (grid rows 0..43 of 45).

Horizontal: the official column start is uniform over the 139-column period (a grid of
140 columns holds both ends); here the start is uniform in [0, period) cells.
Jitter (official `add_rnd_perturb`: half a grid step): the vertical raw value moves by up
to +-step/2 (+-0.5 cell), and the cos and sin arguments move by *independent* draws of up
to +-0.5 cell (+-1/139 of the official [-1, 1] column axis) -- reproduced by calling
`coordinate_grid` twice.

Pairs (diversity loss): z_g, the style-mixing draw and the coordinates are shared by
samples (0, 1), (2, 3), ...; z_l and noise are not (official `setup_paired_inputs`).
Vertical label (our decision 3): each fake is labelled with the position it was actually
generated from, jitter included: (k + jitter) / (V - 1) * 2 - 1.

Legend: B batch, Dg global latent size, C local latent channels, S z_l window side.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from engine.model import Generator, ModelConfig, coordinate_grid
from engine.model.geometry import level_size, texture_input_cells, texture_layer_sizes

VERTICAL_CUT = 3.0  # official coord_vert_cut_pt: raw vertical value of the band's edge


def vertical_band_cells(config: ModelConfig) -> int:
    """Lattice cells between the band edges -cut and +cut (20 for step 0.3)."""
    return round(2 * VERTICAL_CUT / config.coord_vertical_step)


def vertical_offsets(config: ModelConfig) -> int:
    """Number of distinct vertical patch offsets V (10 for the paper's 11-cell patches)."""
    return max(1, vertical_band_cells(config) - config.patch_cells + 1)


def window_side(config: ModelConfig, cells: int | None = None) -> int:
    """z_l / coordinate cells per side of a window of `cells` texture cells (default: a patch)."""
    cells = config.patch_cells if cells is None else cells
    return cells + 2 * config.structure_margin


def training_rows(offset: Tensor, config: ModelConfig) -> Tensor:
    """Vertical lattice positions [n, S] of the z_l rows of windows at (jittered) offsets [n]."""
    start = offset - vertical_band_cells(config) / 2 - config.structure_margin
    s = window_side(config)
    return start[:, None] + torch.arange(s, device=offset.device, dtype=offset.dtype)[None, :]


def vertical_label(offset: Tensor, config: ModelConfig) -> Tensor:
    """Auxiliary label in [-1, 1] (slightly beyond with jitter) of windows at `offset` [n]."""
    v = vertical_offsets(config)
    return offset / (v - 1) * 2 - 1 if v > 1 else torch.zeros_like(offset)


@dataclass(frozen=True)
class FakeInputs:
    """Everything random that one batch of training fakes is made of."""

    z_g: Tensor  # [B, Dg] raw global latent: G_S style and first W+ style
    z_mix: Tensor  # [B, Dg] second global latent for style mixing
    crossover: Tensor  # [B] long: W+ slots >= crossover take z_mix's style (slots: no mixing)
    z_l: Tensor  # [B, C, S, S]
    coords: Tensor  # [B, 3, S, S]
    noises: list[Tensor]  # one [B, 1, H_l, H_l] per texture conv
    labels: Tensor  # [B] vertical auxiliary label of the coordinates used

    @property
    def batch(self) -> int:
        return self.z_l.shape[0]


def sample_fakes(
    config: ModelConfig,
    batch: int,
    generator: torch.Generator,
    *,
    mixing: float,
    paired: bool = True,
) -> FakeInputs:
    """Draw one batch of fake inputs on the generator's device, in a fixed order."""
    if paired and batch % 2:
        raise ValueError(f"a paired batch must be even, got {batch}")
    device = generator.device
    n = batch // 2 if paired else batch

    def rand(*shape: int) -> Tensor:
        return torch.rand(shape, generator=generator, device=device)

    def randn(*shape: int) -> Tensor:
        return torch.randn(shape, generator=generator, device=device)

    slots = config.style_slots
    z_g, z_mix = randn(n, config.global_dim), randn(n, config.global_dim)
    mixed = rand(n) < mixing
    cross = torch.randint(1, slots, (n,), generator=generator, device=device)
    crossover = torch.where(mixed, cross, torch.full_like(cross, slots))
    offset = torch.randint(0, vertical_offsets(config), (n,), generator=generator, device=device)
    offset = offset.float() + rand(n) - 0.5  # +-half a vertical step
    col = rand(n) * config.coord_horizontal_period
    jitter_cos, jitter_sin = rand(n) - 0.5, rand(n) - 0.5

    rows = training_rows(offset, config)  # [n, S]
    cols = col[:, None] + torch.arange(rows.shape[1], device=device, dtype=rows.dtype)[None, :]
    cos_grid = coordinate_grid(rows, cols + jitter_cos[:, None], config)
    sin_grid = coordinate_grid(rows, cols + jitter_sin[:, None], config)
    coords = torch.cat([cos_grid[:, :2], sin_grid[:, 2:]], dim=1)  # [n, 3, S, S]
    labels = vertical_label(offset, config)

    if paired:
        z_g, z_mix, crossover, coords, labels = (
            t.repeat_interleave(2, dim=0) for t in (z_g, z_mix, crossover, coords, labels)
        )
    s = window_side(config)
    z_l = randn(batch, config.local_dim, s, s)
    noises = [
        randn(batch, 1, size, size)
        for size in texture_layer_sizes(config.patch_cells, config.stages)
    ]
    return FakeInputs(z_g, z_mix, crossover, z_l, coords, noises, labels)


def wplus_styles(generator: Generator, fakes: FakeInputs) -> Tensor:
    """Mapped W+ styles [B, slots, Dg] with the style-mixing crossover applied."""
    b = fakes.batch
    w = generator.mapping(torch.cat([fakes.z_g, fakes.z_mix]))  # [2B, Dg]
    w_first, w_second = w[:b], w[b:]
    slots = generator.config.style_slots
    slot = torch.arange(slots, device=w.device)
    first = (slot[None, :] < fakes.crossover[:, None])[:, :, None]  # [B, slots, 1]
    return torch.where(first, w_first[:, None, :], w_second[:, None, :])


def render_fakes(generator: Generator, fakes: FakeInputs) -> tuple[Tensor, Tensor, Tensor]:
    """(rgb [B, 3, P, P], z_s [B, C, N, N], W+ [B, slots, Dg]) of one training batch."""
    wplus = wplus_styles(generator, fakes)
    z_s = generator.structure(fakes.z_g, fakes.z_l, fakes.coords)
    rgb = generator.texture(z_s, wplus, fakes.noises)
    return rgb, z_s, wplus


# Fixed-seed previews (inference coordinates) ------------------------------------------


@dataclass(frozen=True)
class PreviewInputs:
    """Fixed inputs of square images `out_px` wide, rendered as the engine would (no jitter).

    Coordinates as the official inference: vertically centred on the window's middle
    row, horizontally a random phase per image. Tensors live on the CPU.
    """

    z_g: Tensor  # [n, Dg]
    z_l: Tensor  # [n, C, Sw, Sw]
    coords: Tensor  # [n, 3, Sw, Sw]
    noises: list[Tensor]  # [n, 1, H_l, H_l]
    out_px: int

    def __len__(self) -> int:
        return self.z_g.shape[0]


def preview_inputs(config: ModelConfig, count: int, out_px: int, seed: int) -> PreviewInputs:
    """Inputs of `count` square images of `out_px` pixels, drawn from `seed` on the CPU."""
    g = torch.Generator().manual_seed(seed)
    cells = texture_input_cells(out_px, config.stages)
    s = window_side(config, cells)
    z_g = torch.randn(count, config.global_dim, generator=g)
    z_l = torch.randn(count, config.local_dim, s, s, generator=g)
    noises = [
        torch.randn(count, 1, n, n, generator=g) for n in texture_layer_sizes(cells, config.stages)
    ]
    phase = torch.rand(count, generator=g) * config.coord_horizontal_period
    centred = torch.arange(s, dtype=torch.float32) - (s - 1) / 2
    rows = centred[None, :].expand(count, s)
    cols = phase[:, None] + torch.arange(s, dtype=torch.float32)[None, :]
    return PreviewInputs(z_g, z_l, coordinate_grid(rows, cols, config), noises, out_px)


@torch.no_grad()
def render_previews(generator: Generator, inputs: PreviewInputs, *, chunk: int = 4) -> Tensor:
    """Render previews with one style per image, centre-cropped: [n, 3, out_px, out_px] (CPU)."""
    device = generator.device
    out = []
    for i in range(0, len(inputs), chunk):
        part = slice(i, i + chunk)
        rgb = generator(
            inputs.z_g[part].to(device),
            inputs.z_l[part].to(device),
            inputs.coords[part].to(device),
            [n[part].to(device) for n in inputs.noises],
        ).float()
        size = rgb.shape[-1]
        assert size == level_size(
            inputs.z_l.shape[-1] - 2 * generator.config.structure_margin, generator.config.stages
        )
        o = (size - inputs.out_px) // 2
        out.append(rgb[..., o : o + inputs.out_px, o : o + inputs.out_px].cpu())
    return torch.cat(out)
