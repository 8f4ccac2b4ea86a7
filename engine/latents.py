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
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from engine.device import to_device

_MASK = 0xFFFFFFFF


class Stream(enum.IntEnum):
    """Independent families of random values of one world seed."""

    LOCAL_LATENT = 1
    NOISE = 2
    GLOBAL_LATENT = 3
    REROLL = 4


def mix32(x: Tensor) -> Tensor:
    """An avalanching 32-bit integer hash (the 'lowbias32' finaliser), on int64 tensors:
    of the low 32 bits of `x`, in a new tensor."""
    return mix32_(x & _MASK)


def mix32_(x: Tensor) -> Tensor:
    """`mix32` of values already in [0, 2**32), in place (products stay below 2**63).

    With one scratch tensor for the shifts: on a CPU each new tensor of a window's two
    million values cost as much as two in-place operations."""
    scratch = torch.empty_like(x)
    for shift, factor in ((16, 0x7FEB352D), (15, 0x846CA68B)):
        x ^= torch.bitwise_right_shift(x, shift, out=scratch)
        x.mul_(factor).bitwise_and_(_MASK)
    x ^= torch.bitwise_right_shift(x, 16, out=scratch)
    return x


def _key(*parts: int) -> int:
    """Fold integers (any sign, any size) into one 32-bit key, in plain Python."""
    h = 0x9E3779B9
    for part in parts:
        for word in (part & _MASK, (part >> 32) & _MASK):
            h = int(mix32(torch.tensor(h ^ word, dtype=torch.int64)))
    return h


def _normal_from_hash(h: Tensor, dtype: torch.dtype) -> Tensor:
    """Standard normal values of 32-bit hashes `h` (consumed: shifted in place)."""
    uniform = h.bitwise_right_shift_(8).to(torch.float64).add_(0.5).mul_(1.0 / 2**24)  # (0, 1)
    return torch.special.ndtri(uniform, out=uniform).to(dtype)


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
    """`normal_grid` of several equal-sized windows at once: [B, channels, h, w]."""
    return normal_fields([Field(key, origins, w, h, channels)], device=device, dtype=dtype)[0]


@dataclass(frozen=True)
class Field:
    """The windows of one family to draw: `normal_grids`'s arguments."""

    key: int
    origins: Sequence[tuple[int, int]]  # (x, y) of each window
    w: int
    h: int
    channels: int = 1


def normal_fields(
    fields: Sequence[Field],
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> list[Tensor]:
    """`normal_grids` of each field, [B, channels, h, w] each, from one set of kernels for
    all of them: a texture's ten noise layers cost the launches of one (on a GPU the
    launches, not the arithmetic, are what a tile's noise costs).

    A value is mix32(row_key ^ col_key): the row key hashes (key, row, channel), the column
    key the column alone, so the per-element work is one xor and one hash.
    """
    # Inputs of the row and column hashes, built on the CPU and sent in one copy.
    keys, rows, chans, cols = [], [], [], []
    for f in fields:
        origin = np.asarray(f.origins, dtype=np.int64).reshape(-1, 2)  # [B, 2] (x, y)
        b = len(origin)
        row = origin[:, 1:] + np.arange(f.h)  # [B, H]
        chan = np.arange(f.channels, dtype=np.int64) * 0x27D4EB2F  # [C]
        keys.append(np.full(b * f.channels * f.h, f.key, np.int64))
        rows.append(np.broadcast_to(row[:, None, :], (b, f.channels, f.h)).ravel())
        chans.append(np.broadcast_to(chan[None, :, None], (b, f.channels, f.h)).ravel())
        cols.append((origin[:, :1] + np.arange(f.w)).ravel())  # [B * W]
    n_rows = sum(len(r) for r in rows)
    inputs = to_device(torch.from_numpy(np.concatenate([*keys, *rows, *chans, *cols])), device)
    key_in, row_in, chan_in, col_in = inputs.split(
        [n_rows, n_rows, n_rows, len(inputs) - 3 * n_rows]
    )
    row_keys = mix32(mix32(row_in ^ key_in) ^ chan_in)  # per field [B, C, H], flat
    col_keys = mix32(col_in ^ 0x165667B1)  # per field [B, W], flat

    sizes = [len(f.origins) * f.channels * f.h * f.w for f in fields]
    hashes = torch.empty(sum(sizes), dtype=torch.int64, device=inputs.device)
    row_at = col_at = 0
    for f, part in zip(fields, hashes.split(sizes), strict=True):  # [B, C, H, W] each
        b = len(f.origins)
        rk = row_keys[row_at : row_at + b * f.channels * f.h].view(b, f.channels, f.h, 1)
        ck = col_keys[col_at : col_at + b * f.w].view(b, 1, 1, f.w)
        torch.bitwise_xor(rk, ck, out=part.view(b, f.channels, f.h, f.w))
        row_at, col_at = row_at + rk.numel(), col_at + ck.numel()
    values = _normal_from_hash(mix32_(hashes), dtype)
    return [
        part.view(len(f.origins), f.channels, f.h, f.w)
        for f, part in zip(fields, values.split(sizes), strict=True)
    ]


@functools.lru_cache(maxsize=4096)
def field_key(seed: int, stream: Stream, layer: int = 0) -> int:
    """The 32-bit key of one family of values: (world seed, stream, layer)."""
    return _key(seed, int(stream), layer)


def normal_vector(seed: int, stream: Stream, size: int, index: int = 0) -> Tensor:
    """A standard normal vector [size] (e.g. a global latent), addressed by `index`."""
    return normal_grid(field_key(seed, stream, index), 0, 0, size, 1)[0, 0]
