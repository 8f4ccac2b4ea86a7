"""Differentiable augmentation for small datasets, applied to real and fake alike before D.

As in Zhao et al., "Differentiable Augmentation for Data-Efficient GAN Training" (NeurIPS
2020), policy "color,translation,cutout", written here from the paper's description.
Every random draw comes from the caller's `torch.Generator`, so a seeded run is
reproducible; gradients flow to the input (G learns through it, R1 differentiates it).

Legend: B batch, C channels, H/W pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

TRANSLATION_RATIO = 0.125  # shift of up to 1/8 of the side, zero fill
CUTOUT_RATIO = 0.5  # one zeroed square of half the side


def diff_augment(x: Tensor, generator: torch.Generator) -> Tensor:
    """Colour, translation and cutout with per-sample parameters: [B, C, H, W] -> same."""
    x = _color(x, generator)
    x = _translation(x, generator)
    return _cutout(x, generator)


def _rand(b: int, x: Tensor, generator: torch.Generator) -> Tensor:
    """Uniform [0, 1) per sample, shaped to broadcast over [B, C, H, W], in x's dtype."""
    u = torch.rand(b, generator=generator, device=generator.device)
    return u.to(x.device, x.dtype).view(b, 1, 1, 1)


def _color(x: Tensor, generator: torch.Generator) -> Tensor:
    b = x.shape[0]
    x = x + (_rand(b, x, generator) - 0.5)  # brightness
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (_rand(b, x, generator) * 2) + mean  # saturation
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - mean) * (_rand(b, x, generator) + 0.5) + mean  # contrast


def _randint(
    low: int, high: int, b: int, generator: torch.Generator, device: torch.device
) -> Tensor:
    return torch.randint(low, high, (b,), generator=generator, device=generator.device).to(device)


def _translation(x: Tensor, generator: torch.Generator) -> Tensor:
    b, _, h, w = x.shape
    sy, sx = int(h * TRANSLATION_RATIO + 0.5), int(w * TRANSLATION_RATIO + 0.5)
    ty = _randint(-sy, sy + 1, b, generator, x.device)
    tx = _randint(-sx, sx + 1, b, generator, x.device)
    padded = F.pad(x, [sx, sx, sy, sy])
    rows = torch.arange(h, device=x.device)[None, :] + sy - ty[:, None]  # [B, H]
    cols = torch.arange(w, device=x.device)[None, :] + sx - tx[:, None]  # [B, W]
    batch = torch.arange(b, device=x.device)[:, None, None]
    out = padded[batch, :, rows[:, :, None], cols[:, None, :]]  # [B, H, W, C]
    return out.permute(0, 3, 1, 2).contiguous(memory_format=_memory_format(x))


def _cutout(x: Tensor, generator: torch.Generator) -> Tensor:
    b, _, h, w = x.shape
    ch, cw = int(h * CUTOUT_RATIO + 0.5), int(w * CUTOUT_RATIO + 0.5)
    cy = _randint(0, h + (1 - ch % 2), b, generator, x.device)
    cx = _randint(0, w + (1 - cw % 2), b, generator, x.device)
    ys = torch.arange(h, device=x.device)[None, :] - (cy[:, None] - ch // 2)  # [B, H]
    xs = torch.arange(w, device=x.device)[None, :] - (cx[:, None] - cw // 2)  # [B, W]
    inside = ((ys >= 0) & (ys < ch))[:, :, None] & ((xs >= 0) & (xs < cw))[:, None, :]
    return x * (~inside).to(x.dtype)[:, None]


def _memory_format(x: Tensor) -> torch.memory_format:
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format
