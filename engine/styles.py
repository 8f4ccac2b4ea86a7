"""Styles and the style-layer hook: how edits paint several global styles onto one world.

A *style* is a global latent: z_g, which modulates the structure synthesizer, and the
w (or W+) the texture synthesizer reads. A world has one *base style* (drawn from its
seed). Any edit may contribute a *style layer*: a style plus a weight field over the
world. The world composites the layers of its edit log, in log order, into per-style
weights at the exact positions of every generator layer, and the generator blends the
styles per pixel (spatial style fusion, INFINITYGAN.md sections 4 and 7).

Compositing ("over", like paint): start with weight 1 on the base style everywhere;
for each layer in log order, at every position x with alpha a = layer.alpha(x),

    weights <- (1 - a) * weights,   weights[layer's style] += a

so the weights stay >= 0 and sum to 1, later layers paint over earlier ones, and a
layer whose style is None (an eraser) paints the base style back.

Legend: K styles in a window's palette, Dg global latent size, H/W positions of a layer.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from engine.latents import Stream, normal_vector
from engine.model.geometry import PixelGrid
from engine.tiles import Rect


@dataclass(frozen=True)
class Style:
    """A global style, defined by value so that an edit log alone reproduces a world.

    Exactly one of:
    - `seed`: z_g is the global latent a world of that seed has (so "style of seed 7"
      is the base style of world 7), and w = mapping(z_g);
    - `z_g`: an explicit global latent [Dg]; then `w_plus` is an explicit W+ [slots, Dg]
      (an inverted photo's style, bypassing the mapping network) or None for
      w = mapping(z_g).
    """

    seed: int | None = None
    z_g: tuple[float, ...] | None = None
    w_plus: tuple[tuple[float, ...], ...] | None = None

    def __post_init__(self) -> None:
        if (self.seed is None) == (self.z_g is None):
            raise ValueError("a style needs exactly one of a seed and an explicit z_g")
        if self.w_plus is not None and self.z_g is None:
            raise ValueError("an explicit W+ needs an explicit z_g as well")
        if self.seed is not None:
            if isinstance(self.seed, bool) or not isinstance(self.seed, int):
                raise ValueError(f"a style seed must be an integer, got {self.seed!r}")
        if self.z_g is not None:
            object.__setattr__(self, "z_g", _finite_floats(self.z_g, "z_g"))
        if self.w_plus is not None:
            rows = tuple(_finite_floats(row, "W+") for row in self.w_plus)
            if not rows or any(len(r) != len(rows[0]) for r in rows):
                raise ValueError("W+ must be a non-empty rectangular [slots, Dg] array")
            object.__setattr__(self, "w_plus", rows)

    @classmethod
    def from_seed(cls, seed: int) -> Style:
        return cls(seed=int(seed))

    @classmethod
    def from_tensors(cls, z_g: Tensor, w_plus: Tensor | None = None) -> Style:
        """An explicit style from z_g [Dg] and optionally W+ [slots, Dg] (any device)."""
        z = tuple(float(v) for v in z_g.detach().float().cpu().reshape(-1))
        w = None
        if w_plus is not None:
            w = tuple(tuple(float(v) for v in row) for row in w_plus.detach().float().cpu())
        return cls(z_g=z, w_plus=w)

    def to_json(self) -> dict[str, Any]:
        if self.seed is not None:
            return {"seed": self.seed}
        data: dict[str, Any] = {"z_g": list(self.z_g or ())}
        if self.w_plus is not None:
            data["w_plus"] = [list(row) for row in self.w_plus]
        return data

    @classmethod
    def from_json(cls, data: Any) -> Style:
        """Rebuild a style from `to_json` output; ValueError for malformed data."""
        if not isinstance(data, dict) or set(data) - {"seed", "z_g", "w_plus"}:
            raise ValueError(f"malformed style {data!r:.80}")
        try:
            return cls(
                seed=data.get("seed"),
                z_g=None if data.get("z_g") is None else tuple(data["z_g"]),
                w_plus=None if data.get("w_plus") is None else tuple(map(tuple, data["w_plus"])),
            )
        except TypeError as exc:
            raise ValueError(f"malformed style: {exc}") from exc

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_json()).encode()).hexdigest()[:16]

    def global_latent(self, dim: int) -> Tensor:
        """z_g [dim] on the CPU; ValueError if an explicit z_g has another size."""
        if self.seed is not None:
            return normal_vector(self.seed, Stream.GLOBAL_LATENT, dim)
        assert self.z_g is not None
        if len(self.z_g) != dim:
            raise ValueError(f"style z_g has {len(self.z_g)} values, the model needs {dim}")
        return torch.tensor(self.z_g, dtype=torch.float32)


def _finite_floats(values: Any, name: str) -> tuple[float, ...]:
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a list of numbers") from exc
    if not out or not all(math.isfinite(v) for v in out):
        raise ValueError(f"{name} must be a non-empty list of finite numbers")
    return out


@dataclass(frozen=True, eq=False)
class StyleLayer:
    """What an edit contributes to the style of the world: the hook's contract.

    - `style`: the style this layer paints; None means the world's base style (an eraser).
    - `bounds`: world full-resolution pixels [x, right) x [y, bottom) outside of which
      `alpha` is exactly 0. The world uses it to decide which tiles the layer touches
      (their cache keys, `World.influence`), so it must not be too small; a tile whose
      render window lies outside every layer's bounds renders exactly as without them.
    - `alpha(xs, ys)`: the layer's opacity at the world pixel positions xs [W] (columns)
      x ys [H] (rows), float32 tensors on the render device, as a float32 [H, W] tensor in
      [0, 1] on that device. It must be a pure, elementwise function of the position (no
      dependence on which or how many positions are asked for), so tiles stay independent;
      it is evaluated at the positions of every generator layer (lattice cells for G_S,
      finer grids for G_T), so a field that varies smoothly over tens of pixels gives
      seamless transitions.

    An edit returns its layer from `Edit.style_layer()`; layers composite in log order.
    """

    style: Style | None
    bounds: Rect
    alpha: Callable[[Tensor, Tensor], Tensor]


def composite_weights(
    layers: list[tuple[int, StyleLayer]], grid: PixelGrid, palette_size: int, device: torch.device
) -> Tensor:
    """Per-style weights [K, h, w] at the positions of `grid`, compositing `layers` (each
    with its palette index; 0 is the base style) in order over weight 1 on the base."""
    weights = torch.zeros(palette_size, grid.h, grid.w, device=device)
    weights[0] = 1.0
    for index, layer in layers:
        b = layer.bounds
        # columns j with x0 + step * j in [b.x, b.right), rows likewise
        j0, j1 = _index_range(grid.x0, grid.step, grid.w, b.x, b.right)
        i0, i1 = _index_range(grid.y0, grid.step, grid.h, b.y, b.bottom)
        if j0 >= j1 or i0 >= i1:
            continue
        xs = (grid.x0 + grid.step * torch.arange(j0, j1, device=device)).float()
        ys = (grid.y0 + grid.step * torch.arange(i0, i1, device=device)).float()
        alpha = layer.alpha(xs, ys).clamp(0.0, 1.0)  # [h', w']
        part = weights[:, i0:i1, j0:j1]
        part.mul_(1.0 - alpha)
        part[index].add_(alpha)
    return weights


def _index_range(start: int, step: int, count: int, lo: int, hi: int) -> tuple[int, int]:
    """Indices j in [0, count) with lo <= start + step * j < hi."""
    first = max(0, -(-(lo - start) // step))
    last = min(count, -(-(hi - start) // step))
    return first, last
