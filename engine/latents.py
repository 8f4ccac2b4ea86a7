"""Randomness addressed by world position: a counter-based normal generator.

Every random value of a world -- a local latent channel of a lattice cell, a noise value
of a texture layer at a position, a global latent -- is a pure function of
(seed, stream, layer, position), evaluated vectorised on the render device:

    normal = ndtri(uniform(hash(seed, stream, layer, y, x, channel)))

The hash is integer arithmetic on 32-bit values held in int64 tensors (exact on every
device); the uniform has 24 bits, so samples reach about 5.4 sigma. Nothing of the size
of the canvas is ever allocated: a window draws exactly the values it needs, and the
same position always draws the same value whatever window, batch or order asked.
"""

from __future__ import annotations

import enum
import functools

import torch
from torch import Tensor

_MASK = 0xFFFFFFFF


class Stream(enum.IntEnum):
    """Independent families of random values of one world seed."""

    LOCAL_LATENT = 1
    NOISE = 2
    GLOBAL_LATENT = 3
    REROLL = 4


def mix32(x: Tensor) -> Tensor:
    """An avalanching 32-bit integer hash (the 'lowbias32' finaliser), on int64 tensors.

    Works in place on a fresh tensor of values in [0, 2**32); products stay below 2**63.
    """
    x = x & _MASK
    x ^= x >> 16
    x.mul_(0x7FEB352D).bitwise_and_(_MASK)
    x ^= x >> 15
    x.mul_(0x846CA68B).bitwise_and_(_MASK)
    x ^= x >> 16
    return x


def _key(*parts: int) -> int:
    """Fold integers (any sign, any size) into one 32-bit key, in plain Python."""
    h = 0x9E3779B9
    for part in parts:
        for word in (part & _MASK, (part >> 32) & _MASK):
            h = int(mix32(torch.tensor(h ^ word, dtype=torch.int64)))
    return h


def _normal_from_hash(h: Tensor, dtype: torch.dtype) -> Tensor:
    uniform = (h >> 8).to(torch.float64).add_(0.5).mul_(1.0 / 2**24)  # exact, in (0, 1)
    return torch.special.ndtri(uniform).to(dtype)


def normal_grid(
    key: int,
    x: int,
    y: int,
    w: int,
    h: int,
    channels: int = 1,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Standard normal values of the integer positions [x, x + w) x [y, y + h).

    `key` identifies the family (see `field_key`); returns [channels, h, w]. A value
    depends only on (key, channel, row, column), never on the window.
    """
    return normal_grids(key, [(x, y)], w, h, channels, device=device, dtype=dtype)[0]


def normal_grids(
    key: int,
    origins: list[tuple[int, int]],
    w: int,
    h: int,
    channels: int = 1,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """`normal_grid` of several equal-sized windows at once: [B, channels, h, w].

    One batch of kernels for all windows, so a batch of tiles costs a few launches.
    """
    origin = torch.tensor(origins, dtype=torch.int64).to(device)  # [B, 2] (x, y)
    rows = origin[:, 1:] + torch.arange(h, device=device, dtype=torch.int64)  # [B, H]
    cols = origin[:, :1] + torch.arange(w, device=device, dtype=torch.int64)  # [B, W]
    chans = torch.arange(channels, device=device, dtype=torch.int64) * 0x27D4EB2F  # [C]
    # Hash row and channel once, then mix in the column per element.
    row_key = mix32(mix32(rows ^ key)[:, None, :] ^ chans[None, :, None])  # [B, C, H]
    col_key = mix32(cols ^ 0x165667B1)  # [B, W]
    values = mix32(row_key[:, :, :, None] ^ col_key[:, None, None, :])  # [B, C, H, W]
    return _normal_from_hash(values, dtype)


@functools.lru_cache(maxsize=4096)
def field_key(seed: int, stream: Stream, layer: int = 0) -> int:
    """The 32-bit key of one family of values: (world seed, stream, layer)."""
    return _key(seed, int(stream), layer)


def normal_vector(seed: int, stream: Stream, size: int, index: int = 0) -> Tensor:
    """A standard normal vector [size] (e.g. a global latent), addressed by `index`."""
    return normal_grid(field_key(seed, stream, index), 0, 0, size, 1)[0, 0]
