"""Coordinate channels that condition the structure synthesizer (INFINITYGAN.md section 2).

For a lattice cell at vertical position v and horizontal position u (both in lattice
cells, real-valued), the three channels are

    tanh(step * v),  cos(2 pi u / period),  sin(2 pi u / period)

so the vertical channel saturates into "sky" and "ground" about 3 / step cells from the
middle (y = 0), and the horizontal pair repeats every `period` cells. The official
training grid (raw value 0.3 per row, period 139 columns) is the `paper` default.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from engine.model.config import ModelConfig


def coordinate_grid(rows: Tensor, cols: Tensor, config: ModelConfig) -> Tensor:
    """Coordinates of the cells at vertical positions `rows` [B, H] and horizontal `cols` [B, W].

    Positions are in lattice cells relative to the world's vertical middle; returns
    [B, 3, H, W] in the dtype of `rows`.
    """
    b, h = rows.shape
    w = cols.shape[1]
    vertical = torch.tanh(config.coord_vertical_step * rows)  # [B, H]
    phase = cols * (2 * math.pi / config.coord_horizontal_period)  # [B, W]
    return torch.stack(
        [
            vertical[:, :, None].expand(b, h, w),
            torch.cos(phase)[:, None, :].expand(b, h, w),
            torch.sin(phase)[:, None, :].expand(b, h, w),
        ],
        dim=1,
    )
