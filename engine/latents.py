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
    """An avalanching 32-bit integer hash (the 'lowbias32' finaliser), on int64 tensors."""
    x = x & _MASK
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _MASK
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & _MASK
    return x ^ (x >> 16)


def _key(*parts: int) -> int:
    """Fold integers (any sign, any size) into one 32-bit key, in plain Python."""
    h = 0x9E3779B9
    for part in parts:
        for word in (part & _MASK, (part >> 32) & _MASK):
            h = int(mix32(torch.tensor(h ^ word, dtype=torch.int64)))
    return h


def _normal_from_hash(h: Tensor, dtype: torch.dtype) -> Tensor:
    uniform = ((h >> 8).to(torch.float64) + 0.5) * (1.0 / 2**24)  # exact in (0, 1)
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
    rows = torch.arange(y, y + h, device=device, dtype=torch.int64)
    cols = torch.arange(x, x + w, device=device, dtype=torch.int64)
    chans = torch.arange(channels, device=device, dtype=torch.int64)
    # Hash the row and channel once, then mix in the column per element.
    row_key = mix32(mix32(rows ^ key) ^ (chans[:, None] * 0x27D4EB2F))  # [C, H]
    col_key = mix32(cols ^ 0x165667B1)  # [W]
    values = mix32(row_key[:, :, None] ^ col_key[None, None, :])  # [C, H, W]
    return _normal_from_hash(values, dtype)


def field_key(seed: int, stream: Stream, layer: int = 0) -> int:
    """The 32-bit key of one family of values: (world seed, stream, layer)."""
    return _key(seed, int(stream), layer)


def normal_vector(seed: int, stream: Stream, size: int, index: int = 0) -> Tensor:
    """A standard normal vector [size] (e.g. a global latent), addressed by `index`."""
    return normal_grid(field_key(seed, stream, index), 0, 0, size, 1)[0, 0]
