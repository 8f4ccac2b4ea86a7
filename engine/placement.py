"""A placed photo as an edit: the inverted latents, noise and style that reproduce it in place.

A `PhotoPlacement` is the result of inverting a photo at a world rectangle
(engine.inversion). It overrides, at their world addresses,

- the local latents z_l of every lattice cell the photo's window reads (latent cells),
- the noise of every texture conv under the window (per layer, in that layer's frame),
- optionally the finished pixels inside the rectangle (`show_photo`: the photo itself with
  a feathered border instead of the model's reconstruction),

and carries the inverted style (z_g and W+) for the style-fusion mechanism. Everything
around it is the world's own generation, which the structure synthesizer joins to the
inverted latents, so the surroundings continue the photo. `salt` != 0 re-rolls the local
latents of a band of `surround` cells around the latent cells: a new continuation.

`FillBetween` joins two placements: it re-rolls the cells of the gap between them (a new
structure there) and, with style fusion, blends the two photos' styles across the gap.

Legend: C local latent channels, Hc/Wc lattice cells, Dg style size, S W+ slots.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
import hashlib
import io
import json
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from engine.edits import Edit, PackedTensor, register_edit, reroll_cells
from engine.model.config import ModelConfig
from engine.styles import Style, StyleLayer
from engine.tiles import Rect

DEFAULT_FEATHER_PX = 16  # width of the photo's blended border when shown as is


def _rect(raw: Any, what: str) -> tuple[int, int, int, int]:
    if not (isinstance(raw, list | tuple) and len(raw) == 4 and all(type(v) is int for v in raw)):
        raise ValueError(f"{what} must be four whole numbers, got {raw!r}")
    if raw[2] <= 0 or raw[3] <= 0:
        raise ValueError(f"{what} must not be empty, got {raw!r}")
    return (raw[0], raw[1], raw[2], raw[3])


def _paste(dst: Tensor, dst_rect: Rect, src: Tensor, src_rect: Rect) -> None:
    """Copy the overlap of src [..., h, w] at `src_rect` into dst [..., h', w'] at `dst_rect`."""
    inside = src_rect.intersection(dst_rect)
    if inside is None:
        return
    sx, sy = inside.x - src_rect.x, inside.y - src_rect.y
    dx, dy = inside.x - dst_rect.x, inside.y - dst_rect.y
    dst[..., dy : dy + inside.h, dx : dx + inside.w] = src[
        ..., sy : sy + inside.h, sx : sx + inside.w
    ].to(dst.dtype)


@register_edit
@dataclass(frozen=True, eq=False)
class PhotoPlacement(Edit):
    """An inverted photo at world pixels `rect` (see the module docstring).

    `latent_cells` (x, y, w, h) are the cells of `latents` [C, h, w]; `noises[l]` [h_l, w_l]
    sits at `noise_origins[l]` in layer l's noise frame; `z_g` [Dg] and `w_plus` [S, Dg] are
    the inverted style (None when the inversion kept the world's style); `photo_png` is the
    photo at the rectangle's size (for `show_photo`).
    """

    kind: ClassVar[str] = "photo"
    name: str
    rect: tuple[int, int, int, int]  # world pixels
    cell_px: int  # world pixels per lattice cell of the model it was inverted for
    latent_cells: tuple[int, int, int, int]  # lattice cells
    latents: PackedTensor
    noise_origins: tuple[tuple[int, int], ...]
    noises: tuple[PackedTensor, ...]
    z_g: PackedTensor | None = None
    w_plus: PackedTensor | None = None
    photo_png: bytes | None = None
    show_photo: bool = False
    feather: int = DEFAULT_FEATHER_PX  # world pixels
    surround: int = 8  # cells re-rolled around the latent cells when salt != 0
    salt: int = 0
    psnr: float = 0.0  # reconstruction quality reached by the inversion, dB

    def __post_init__(self) -> None:
        x, y, w, h = self.latent_cells
        if w <= 0 or h <= 0 or self.rect[2] <= 0 or self.rect[3] <= 0:
            raise ValueError("a photo placement must not be empty")
        if self.latents.shape[1:] != (h, w):
            raise ValueError(f"latents {self.latents.shape} do not match cells {self.latent_cells}")
        if len(self.noises) != len(self.noise_origins):
            raise ValueError("a placement needs one noise origin per noise map")
        if any(len(n.shape) != 2 for n in self.noises):
            raise ValueError("placement noise maps must be 2-d")
        if self.z_g is not None and len(self.z_g.shape) != 1:
            raise ValueError("a placement's z_g must be a vector")
        if self.w_plus is not None and len(self.w_plus.shape) != 2:
            raise ValueError("a placement's W+ must be [slots, dim]")
        if self.cell_px <= 0:
            raise ValueError("a placement's cell size must be positive")
        if self.feather < 0 or self.surround < 0:
            raise ValueError("feather and surround must not be negative")

    # Where it acts ----------------------------------------------------------------------

    @property
    def world_rect(self) -> Rect:
        return Rect(*self.rect)

    @property
    def latent_rect(self) -> Rect:
        return Rect(*self.latent_cells)

    def cells(self) -> Rect:
        return self.latent_rect.grown(self.surround)

    @property
    def style_core(self) -> Rect:
        """World pixels where the inverted style has full weight: every position any layer
        of the inversion's window reads (its latent cells, one cell wider for safety), so the
        photo renders exactly as it was inverted."""
        c = self.cell_px
        x, y, w, h = self.latent_cells
        # lattice cell k is centred on pixel c * k - 2 * (c - 1) (engine.world._coordinates)
        return Rect(c * x - 2 * c - c, c * y - 2 * c - c, c * (w + 2), c * (h + 2))

    @property
    def style_fade(self) -> int:
        """World pixels over which the style fades into the world's around the core."""
        return 8 * self.cell_px

    @functools.cached_property
    def _style_layer(self) -> StyleLayer | None:
        if self.z_g is None:
            return None
        w_plus = None if self.w_plus is None else self.w_plus.unpack()
        style = Style.from_tensors(self.z_g.unpack(), w_plus)
        return StyleLayer(style, self.style_core.grown(self.style_fade + 1), self._style_alpha)

    @property
    def style(self) -> Style | None:
        """The inverted style (None: the inversion kept the world's style)."""
        layer = self._style_layer
        return None if layer is None else layer.style

    def style_layer(self) -> StyleLayer | None:
        """The inverted style: weight 1 over `style_core`, a smoothstep to 0 `style_fade`
        pixels outside it, so the surroundings take on the photo's look and blend into the
        world's style (None when the inversion kept the world's style)."""
        return self._style_layer

    def _style_alpha(self, xs: Tensor, ys: Tensor) -> Tensor:
        core = self.style_core
        dx = (core.x - xs).clamp(min=0) + (xs - (core.right - 1)).clamp(min=0)  # [W]
        dy = (core.y - ys).clamp(min=0) + (ys - (core.bottom - 1)).clamp(min=0)  # [H]
        distance = torch.hypot(dy[:, None], dx[None, :])  # [H, W]
        t = (1 - distance / self.style_fade).clamp(0, 1)
        return t * t * (3 - 2 * t)

    def with_salt(self, salt: int) -> PhotoPlacement:
        """The same placement with another continuation of its surroundings."""
        return dataclasses.replace(self, salt=salt)

    def with_photo_shown(self, show: bool) -> PhotoPlacement:
        return dataclasses.replace(self, show_photo=show)

    def fits(self, config: ModelConfig) -> bool:
        """Only a model with the shapes it was inverted for (lattice, channels, layers, style)."""
        if config.cell_px != self.cell_px or self.latents.shape[0] != config.local_dim:
            return False
        if len(self.noises) != config.texture_layers:
            return False
        if self.z_g is not None and self.z_g.shape != (config.global_dim,):
            return False
        return self.w_plus is None or self.w_plus.shape == (config.style_slots, config.global_dim)

    # Hooks ------------------------------------------------------------------------------

    def modify_local_latents(self, z_l: Tensor, cells: Rect, seed: int) -> None:
        if self.salt:
            reroll_cells(z_l, cells, self.cells(), seed, self.salt)
        _paste(z_l, cells, self.latents.unpack(z_l.device), self.latent_rect)

    def modify_noise(self, noise: Tensor, layer: int, positions: Rect) -> None:
        if layer >= len(self.noises):
            return
        packed = self.noises[layer]
        x, y = self.noise_origins[layer]
        own = Rect(x, y, packed.shape[1], packed.shape[0])
        _paste(noise, positions, packed.unpack(noise.device), own)

    def modify_rgb(self, rgb: Tensor, rect: Rect, lod: int) -> None:
        if not self.show_photo or self.photo_png is None:
            return
        photo_rect, photo, alpha = self._photo_at(lod)
        inside = photo_rect.intersection(rect)
        if inside is None:
            return
        sx, sy = inside.x - photo_rect.x, inside.y - photo_rect.y
        dx, dy = inside.x - rect.x, inside.y - rect.y
        src = photo[:, sy : sy + inside.h, sx : sx + inside.w].to(rgb.device)
        a = alpha[:, sy : sy + inside.h, sx : sx + inside.w].to(rgb.device)
        dst = rgb[:, dy : dy + inside.h, dx : dx + inside.w]
        dst.mul_(1 - a).add_(src * a)

    def _photo_at(self, lod: int) -> tuple[Rect, Tensor, Tensor]:
        """The photo on the lod-`lod` grid: (lod rect, rgb [3, h, w], blend weight [1, h, w]),
        computed once per lod (the edit is immutable)."""
        cache = self.__dict__.setdefault("_photo_cache", {})
        if lod not in cache:
            cache[lod] = self._photo_on_grid(lod)
        return cache[lod]

    def _photo_on_grid(self, lod: int) -> tuple[Rect, Tensor, Tensor]:
        assert self.photo_png is not None
        f = 2**lod
        world = self.world_rect
        lod_rect = world.scaled_out(f)
        image = Image.open(io.BytesIO(self.photo_png))
        has_alpha = image.mode == "RGBA"
        pixels = np.array(image.convert("RGBA" if has_alpha else "RGB"), dtype=np.float32)
        t = torch.from_numpy(pixels).permute(2, 0, 1)[None] / 127.5 - 1  # [1, 3|4, H, W]
        t = F.interpolate(t, size=(lod_rect.h, lod_rect.w), mode="area")[0]
        rgb = t[:3]
        # Distance of each lod pixel's centre to the rectangle's border, in world pixels.
        xs = (torch.arange(lod_rect.w) + lod_rect.x + 0.5) * f
        ys = (torch.arange(lod_rect.h) + lod_rect.y + 0.5) * f
        dx = torch.minimum(xs - world.x, world.right - xs)
        dy = torch.minimum(ys - world.y, world.bottom - ys)
        distance = torch.minimum(dy[:, None], dx[None, :]).clamp(min=0)
        weight = (distance / self.feather).clamp(0, 1) if self.feather else (distance > 0).float()
        weight = weight[None]
        if has_alpha:
            weight = weight * (t[3:] + 1) / 2
        return lod_rect, rgb, weight

    # Serialisation ----------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "rect": list(self.rect),
            "cell_px": self.cell_px,
            "latent_cells": list(self.latent_cells),
            "latents": self.latents.to_json(),
            "noise_origins": [list(o) for o in self.noise_origins],
            "noises": [n.to_json() for n in self.noises],
            "z_g": None if self.z_g is None else self.z_g.to_json(),
            "w_plus": None if self.w_plus is None else self.w_plus.to_json(),
            "photo_png": None
            if self.photo_png is None
            else base64.b64encode(self.photo_png).decode("ascii"),
            "show_photo": self.show_photo,
            "feather": self.feather,
            "surround": self.surround,
            "salt": self.salt,
            "psnr": self.psnr,
        }

    @classmethod
    def from_json_fields(cls, fields: dict[str, Any]) -> PhotoPlacement:
        f = dict(fields)
        known = {x.name for x in dataclasses.fields(cls)}
        unknown = sorted(set(f) - known)
        if unknown:
            raise ValueError(f"photo placement has unknown fields: {', '.join(unknown)}")
        name = f.get("name", "photo")
        if not isinstance(name, str):
            raise ValueError("photo placement name must be text")
        cells = _rect(f.get("latent_cells"), "latent_cells")
        cell_px = f.get("cell_px")
        if type(cell_px) is not int or cell_px <= 0:
            raise ValueError("photo placement cell_px must be a positive whole number")
        latents = PackedTensor.from_json(f.get("latents"), "placement latents")
        origins = f.get("noise_origins")
        noises = f.get("noises")
        if not isinstance(origins, list) or not isinstance(noises, list):
            raise ValueError("photo placement needs noise maps and their origins")
        if not all(
            isinstance(o, list) and len(o) == 2 and all(type(v) is int for v in o) for o in origins
        ):
            raise ValueError("photo placement noise origins must be pairs of whole numbers")
        photo = f.get("photo_png")
        if photo is not None:
            try:
                photo = base64.b64decode(photo, validate=True)
                Image.open(io.BytesIO(photo)).verify()
            except (binascii.Error, TypeError, ValueError, OSError, SyntaxError):
                raise ValueError("photo placement's photo is not a valid PNG") from None
        flags = {k: f[k] for k in ("show_photo", "feather", "surround", "salt", "psnr") if k in f}
        if "show_photo" in flags and type(flags["show_photo"]) is not bool:
            raise ValueError("show_photo must be true or false")
        for k in ("feather", "surround", "salt"):
            if k in flags and type(flags[k]) is not int:
                raise ValueError(f"photo placement {k} must be a whole number")
        if "psnr" in flags:
            if type(flags["psnr"]) not in (int, float):
                raise ValueError("photo placement psnr must be a number")
            flags["psnr"] = float(flags["psnr"])
        return cls(
            name=name,
            rect=_rect(f.get("rect"), "rect"),
            cell_px=cell_px,
            latent_cells=cells,
            latents=latents,
            noise_origins=tuple((o[0], o[1]) for o in origins),
            noises=tuple(
                PackedTensor.from_json(n, f"placement noise {i}") for i, n in enumerate(noises)
            ),
            z_g=None if f.get("z_g") is None else PackedTensor.from_json(f["z_g"], "placement z_g"),
            w_plus=None
            if f.get("w_plus") is None
            else PackedTensor.from_json(f["w_plus"], "placement W+"),
            photo_png=photo,
            **flags,
        )

    @functools.cached_property
    def _digest(self) -> str:
        small = {
            k: v
            for k, v in self.to_json().items()
            if k not in ("latents", "noises", "z_g", "w_plus", "photo_png", "psnr")
        }
        parts = [json.dumps(small, sort_keys=True), self.latents.sha]
        parts += [n.sha for n in self.noises]
        parts += [t.sha if t is not None else "-" for t in (self.z_g, self.w_plus)]
        if self.photo_png is not None:
            parts.append(hashlib.sha256(self.photo_png).hexdigest()[:16])
        return hashlib.sha256("/".join(parts).encode()).hexdigest()[:16]

    def digest(self) -> str:
        return self._digest


@register_edit
@dataclass(frozen=True)
class FillBetween(Edit):
    """Fill the gap between two placed photos so that one flows into the other.

    `x, y, w, h` are the gap's lattice cells (strictly between the two placements' latent
    cells), re-rolled with `salt`: new structure there, which the structure synthesizer
    joins to the inverted latents on both sides. `gap_px` (world pixels, between the two
    placements' full-style cores) carries the styles: `first` (the photo on the left, or
    above) at full weight, `second` over it with a weight rising smoothly from 0 to 1
    across the gap, so the look changes gradually from one photo to the other (the paper's
    inbetweening). Across the other axis the blend fades out over `fade_px` pixels.
    A style of None is the world's base style (a placement inverted without its style).
    """

    kind: ClassVar[str] = "fill_between"
    x: int
    y: int
    w: int
    h: int
    salt: int
    axis: str = "x"  # "x": side by side, "y": one above the other
    gap_px: tuple[int, int, int, int] = (0, 0, 0, 0)
    fade_px: int = 0
    first: Style | None = None
    second: Style | None = None

    def __post_init__(self) -> None:
        if self.w <= 0 or self.h <= 0:
            raise ValueError("the gap between the photos is empty")
        if self.axis not in ("x", "y"):
            raise ValueError(f"axis must be 'x' or 'y', got {self.axis!r}")
        if self.fade_px < 0:
            raise ValueError("fade_px must not be negative")
        object.__setattr__(self, "gap_px", tuple(int(v) for v in self.gap_px))

    def cells(self) -> Rect:
        return Rect(self.x, self.y, self.w, self.h)

    def fits(self, config: ModelConfig) -> bool:
        slots, dim = config.style_slots, config.global_dim
        return all(
            s is None
            or s.z_g is None
            or (
                len(s.z_g) == dim
                and (s.w_plus is None or (len(s.w_plus) == slots and len(s.w_plus[0]) == dim))
            )
            for s in (self.first, self.second)
        )

    def modify_local_latents(self, z_l: Tensor, cells: Rect, seed: int) -> None:
        reroll_cells(z_l, cells, self.cells(), seed, self.salt)

    def style_layers(self) -> tuple[StyleLayer, ...]:
        gap = Rect(*self.gap_px)
        if gap.area == 0 or (self.first is None and self.second is None):
            return ()
        f = self.fade_px
        bounds = gap.grown(f + 1)
        bounds = (
            Rect(gap.x, bounds.y, gap.w, bounds.h)
            if self.axis == "x"
            else Rect(bounds.x, gap.y, bounds.w, gap.h)
        )
        return (
            StyleLayer(self.first, bounds, self._alpha_first),
            StyleLayer(self.second, bounds, self._alpha_second),
        )

    def _along_across(self, xs: Tensor, ys: Tensor) -> tuple[Tensor, Tensor]:
        """(progress t [H, W] in [0, 1] across the gap, or -1 outside it; across-weight [H, W])."""
        gap = Rect(*self.gap_px)
        if self.axis == "y":
            xs, ys = ys, xs
            gap = Rect(gap.y, gap.x, gap.h, gap.w)
        t = (xs - gap.x + 0.5) / gap.w  # [W]
        t = torch.where((xs >= gap.x) & (xs < gap.right), t, torch.full_like(t, -1.0))
        outside = (gap.y - ys).clamp(min=0) + (ys - (gap.bottom - 1)).clamp(min=0)  # [H]
        across = (1 - outside / self.fade_px).clamp(0, 1) if self.fade_px else (outside == 0)
        across = across.float()
        across = across * across * (3 - 2 * across)
        t2, a2 = t[None, :].expand(len(ys), -1), across[:, None].expand(-1, len(xs))
        if self.axis == "y":
            t2, a2 = t2.t(), a2.t()
        return t2, a2

    def _alpha_first(self, xs: Tensor, ys: Tensor) -> Tensor:
        t, across = self._along_across(xs, ys)
        return (t >= 0).float() * across

    def _alpha_second(self, xs: Tensor, ys: Tensor) -> Tensor:
        t, across = self._along_across(xs, ys)
        t = t.clamp(0, 1) * (t >= 0).float()
        return t * t * (3 - 2 * t) * across

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "x": self.x,
            "y": self.y,
            "w": self.w,
            "h": self.h,
            "salt": self.salt,
            "axis": self.axis,
            "gap_px": list(self.gap_px),
            "fade_px": self.fade_px,
            "first": None if self.first is None else self.first.to_json(),
            "second": None if self.second is None else self.second.to_json(),
        }

    @classmethod
    def from_json_fields(cls, fields: dict[str, Any]) -> FillBetween:
        f = dict(fields)
        for key in ("x", "y", "w", "h", "salt", "fade_px"):
            if type(f.get(key, 0)) is not int:
                raise ValueError(f"fill-between {key} must be a whole number")
        gap = f.pop("gap_px", [0, 0, 0, 0])
        if not (isinstance(gap, list) and len(gap) == 4 and all(type(v) is int for v in gap)):
            raise ValueError("fill-between gap_px must be four whole numbers")
        if gap[2] < 0 or gap[3] < 0:
            raise ValueError("fill-between gap_px must not have a negative size")
        styles = {k: f.pop(k, None) for k in ("first", "second")}
        return cls(
            **f,
            gap_px=(gap[0], gap[1], gap[2], gap[3]),
            **{k: None if v is None else Style.from_json(v) for k, v in styles.items()},
        )

    @classmethod
    def between(cls, a: PhotoPlacement, b: PhotoPlacement, salt: int) -> FillBetween:
        """The fill of the gap between two placements; ValueError when there is none."""
        ra, rb = a.latent_rect, b.latent_rect
        if a.world_rect.intersects(b.world_rect):
            raise ValueError("the two photos overlap: there is no gap to fill")
        if ra.intersects(rb):
            raise ValueError(
                "the two photos are too close: their inverted surroundings already join "
                f"(leave a gap of at least {ra.w * a.cell_px - a.rect[2]} pixels)"
            )
        (left, lp), (right, rp) = sorted(((ra, a), (rb, b)), key=lambda item: item[0].x)
        (top, tp), (bottom, bp) = sorted(((ra, a), (rb, b)), key=lambda item: item[0].y)
        fade = max(a.style_fade, b.style_fade)
        if left.right <= right.x:  # side by side: the columns between, over both heights
            y0, y1 = min(ra.y, rb.y), max(ra.bottom, rb.bottom)
            cl, cr = lp.style_core, rp.style_core
            py0, py1 = min(cl.y, cr.y), max(cl.bottom, cr.bottom)
            gap = (cl.right, py0, max(0, cr.x - cl.right), py1 - py0)
            return cls(
                left.right, y0, right.x - left.right, y1 - y0, salt, "x", gap, fade,
                lp.style, rp.style,
            )  # fmt: skip
        x0, x1 = min(ra.x, rb.x), max(ra.right, rb.right)
        ct, cb = tp.style_core, bp.style_core
        px0, px1 = min(ct.x, cb.x), max(ct.right, cb.right)
        gap = (px0, ct.bottom, px1 - px0, max(0, cb.y - ct.bottom))
        return cls(
            x0, top.bottom, x1 - x0, bottom.y - top.bottom, salt, "y", gap, fade,
            tp.style, bp.style,
        )  # fmt: skip
