"""Edits are data: a world is `seed + edit log`, and every edit knows where it acts.

An edit changes some of the generator's inputs inside a rectangle of lattice cells. A
tile depends exactly on the lattice cells its render window reads, so a tile's cache
key carries a digest of just the edits whose cells touch that window: an edit
invalidates those tiles and no others, and undo is a pop of the log.

Some edits act on the style instead of the latents: they contribute a style layer
(`Edit.style_layer`, contract in engine.styles.StyleLayer) whose weight field lives in
world pixels; `edit_cells` turns its pixel bounds into the lattice cells a model reads.

Edits serialise to plain JSON dictionaries (`to_json` / `edit_from_json`) for projects.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
import math
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from engine.latents import Stream, field_key, normal_grid
from engine.model.config import ModelConfig
from engine.model.geometry import cells_touching_pixels
from engine.styles import Style, StyleLayer
from engine.tiles import Rect


class Edit(ABC):
    """Base of every edit kind; subclasses are frozen dataclasses."""

    kind: ClassVar[str]

    @abstractmethod
    def cells(self) -> Rect:
        """Lattice cells whose latents or noise this edit changes (empty if none; the cells
        its style layer reaches come from `edit_cells`, which knows the model's cell size)."""

    def modify_local_latents(self, z_l: Tensor, cells: Rect, seed: int) -> None:
        """Change z_l [C, h, w] of the lattice cells `cells` in place (default: no change)."""
        return None

    def modify_noise(self, noise: Tensor, layer: int, positions: Rect) -> None:
        """Change the noise [1, h, w] of texture conv `layer` at noise `positions` in place.

        Positions are that layer's noise frame (engine.model.geometry: a window starting at
        cell a reads layer l from `noise_unit(l) * a`). Default: no change.
        """
        return None

    def modify_rgb(self, rgb: Tensor, rect: Rect, lod: int) -> None:
        """Change the finished pixels rgb [3, h, w] (about -1..1) of lod pixels `rect` in place.

        Only for pixels inside the edit's influence; must depend on nothing but the
        pixel's position and `lod` (default: no change).
        """
        return None

    def style_layer(self) -> StyleLayer | None:
        """The style this edit paints and where (see engine.styles.StyleLayer); None: none."""
        return None

    def fits(self, config: ModelConfig) -> bool:
        """Whether this edit can act on a model of `config` (default: every edit can; one
        holding tensors of a model, such as an inverted photo, only on that model's shapes).
        The world leaves out edits that do not fit."""
        return True

    def style_layers(self) -> tuple[StyleLayer, ...]:
        """Every style layer of this edit, composited in order (default: `style_layer()`);
        an edit that paints more than one style (a blend between two photos) overrides it."""
        layer = self.style_layer()
        return () if layer is None else (layer,)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}  # type: ignore[call-overload]

    @classmethod
    def from_json_fields(cls, fields: dict[str, Any]) -> Edit:
        """Rebuild from the fields of `to_json` (without "kind"); override for nested data."""
        return cls(**fields)

    def digest(self) -> str:
        # Memoised: tiles ask for it on every request, and a style may hold thousands of
        # numbers. Edits are frozen, so the value never changes (fields define equality).
        cached = self.__dict__.get("_digest")
        if cached is None:
            text = json.dumps(self.to_json(), sort_keys=True)
            cached = self.__dict__["_digest"] = hashlib.sha256(text.encode()).hexdigest()[:16]
        return cached


def reroll_cells(z_l: Tensor, cells: Rect, region: Rect, seed: int, salt: int) -> None:
    """Fresh local latents (stream REROLL, `salt`) for the cells of `region` inside `cells`,
    written into z_l [C, h, w] of the lattice cells `cells` in place."""
    inside = region.intersection(cells)
    if inside is None:
        return
    key = field_key(seed, Stream.REROLL, salt)
    fresh = normal_grid(
        key,
        inside.x,
        inside.y,
        inside.w,
        inside.h,
        z_l.shape[0],
        device=z_l.device,
        dtype=z_l.dtype,
    )
    ox, oy = inside.x - cells.x, inside.y - cells.y
    z_l[:, oy : oy + inside.h, ox : ox + inside.w] = fresh


@dataclass(frozen=True)
class RerollRegion(Edit):
    """Draw new local latents for the lattice cells of a rectangle (a new structure there).

    `salt` picks which new values; the same salt always gives the same pixels.
    """

    kind: ClassVar[str] = "reroll"
    x: int  # lattice cells
    y: int
    w: int
    h: int
    salt: int

    def __post_init__(self) -> None:
        if self.w <= 0 or self.h <= 0:
            raise ValueError("a re-roll region must not be empty")

    def cells(self) -> Rect:
        return Rect(self.x, self.y, self.w, self.h)

    def modify_local_latents(self, z_l: Tensor, cells: Rect, seed: int) -> None:
        reroll_cells(z_l, cells, self.cells(), seed, self.salt)


@dataclass(frozen=True)
class StyleStroke(Edit):
    """A brush stroke that paints `style` along a polyline (spatial style fusion).

    `points` are world full-resolution pixels (x, y); the brush covers the pixels within
    `radius` of the polyline, at full `opacity` up to (1 - softness) * radius from it and
    fading to 0 at `radius` with a smoothstep. `style` None is the eraser: it paints the
    world's base style back. The stroke carries its style's definition, so renaming or
    deleting a gallery entry never changes pixels.
    """

    kind: ClassVar[str] = "style_stroke"
    points: tuple[tuple[float, float], ...]
    radius: float  # world pixels
    softness: float  # 0 (hard edge) .. 1 (fades from the centre line)
    opacity: float  # 0 < opacity <= 1
    style: Style | None

    def __post_init__(self) -> None:
        try:
            points = tuple((float(x), float(y)) for x, y in self.points)
            radius, softness, opacity = (
                float(self.radius),
                float(self.softness),
                float(self.opacity),
            )
        except (TypeError, ValueError) as exc:
            raise ValueError(f"malformed style stroke: {exc}") from exc
        if not points or not all(math.isfinite(v) for p in points for v in p):
            raise ValueError("a style stroke needs at least one finite point")
        if not (math.isfinite(radius) and radius > 0):
            raise ValueError(f"brush radius must be positive, got {self.radius}")
        if not 0.0 <= softness <= 1.0:
            raise ValueError(f"brush softness must be in 0..1, got {self.softness}")
        if not 0.0 < opacity <= 1.0:
            raise ValueError(f"brush opacity must be in (0, 1], got {self.opacity}")
        if self.style is not None and not isinstance(self.style, Style):
            raise ValueError("a style stroke's style must be a Style or None (eraser)")
        for name, value in (("points", points), ("radius", radius), ("softness", softness)):
            object.__setattr__(self, name, value)
        object.__setattr__(self, "opacity", opacity)

    def cells(self) -> Rect:
        return Rect(0, 0, 0, 0)  # no latents change; the style layer's cells: `edit_cells`

    def bounds(self) -> Rect:
        """World pixels outside of which the stroke has no effect."""
        xs = [p[0] for p in self.points]
        ys = [p[1] for p in self.points]
        x0, y0 = math.floor(min(xs) - self.radius), math.floor(min(ys) - self.radius)
        x1, y1 = math.ceil(max(xs) + self.radius) + 1, math.ceil(max(ys) + self.radius) + 1
        return Rect(x0, y0, x1 - x0, y1 - y0)

    def style_layer(self) -> StyleLayer:
        layer = self.__dict__.get("_layer")  # memoised, as `digest`
        if layer is None:
            layer = self.__dict__["_layer"] = StyleLayer(self.style, self.bounds(), self.alpha)
        return layer

    def alpha(self, xs: Tensor, ys: Tensor) -> Tensor:
        """Brush opacity [H, W] at world pixels xs [W] x ys [H] (see the class docstring)."""
        distance = polyline_distance(self.points, xs, ys, self.radius)
        core = self.radius * (1.0 - self.softness)
        if self.radius - core <= 0:
            falloff = (distance <= self.radius).float()
        else:
            t = ((self.radius - distance) / (self.radius - core)).clamp(0.0, 1.0)
            falloff = t * t * (3.0 - 2.0 * t)
        return falloff * self.opacity

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "points": [list(p) for p in self.points],
            "radius": self.radius,
            "softness": self.softness,
            "opacity": self.opacity,
            "style": None if self.style is None else self.style.to_json(),
        }

    @classmethod
    def from_json_fields(cls, fields: dict[str, Any]) -> StyleStroke:
        if set(fields) != {"points", "radius", "softness", "opacity", "style"}:
            raise ValueError(f"a style stroke has fields {sorted(fields)}")
        style, points = fields["style"], fields["points"]
        if not isinstance(points, list) or not all(
            isinstance(p, list | tuple) and len(p) == 2 for p in points
        ):
            raise ValueError("style stroke points must be a list of [x, y]")
        return cls(
            points=tuple((p[0], p[1]) for p in points),
            radius=fields["radius"],
            softness=fields["softness"],
            opacity=fields["opacity"],
            style=None if style is None else Style.from_json(style),
        )


SEGMENT_CHUNK_ELEMENTS = 2**22  # bounds the [segments, H, W] temporaries of polyline_distance


def polyline_distance(
    points: tuple[tuple[float, float], ...], xs: Tensor, ys: Tensor, reach: float
) -> Tensor:
    """Distance [H, W] from the positions xs [W] x ys [H] to the polyline through `points`.

    Segments farther than `reach` from every position are skipped (the result there is
    then >= reach, which is all a brush needs). Elementwise in the position, so any
    window of positions gets the same values.
    """
    device = xs.device
    pts = torch.tensor(points, dtype=torch.float32, device=device)  # [P, 2]
    a = pts if len(points) == 1 else pts[:-1]  # segment starts [S, 2]
    b = pts if len(points) == 1 else pts[1:]  # segment ends [S, 2]
    if xs.numel() and ys.numel():
        lo_x, hi_x = float(xs.min()) - reach, float(xs.max()) + reach
        lo_y, hi_y = float(ys.min()) - reach, float(ys.max()) + reach
        seg_lo, seg_hi = torch.minimum(a, b), torch.maximum(a, b)
        keep = (
            (seg_hi[:, 0] >= lo_x)
            & (seg_lo[:, 0] <= hi_x)
            & (seg_hi[:, 1] >= lo_y)
            & (seg_lo[:, 1] <= hi_y)
        )
        a, b = a[keep], b[keep]
    best = torch.full((ys.numel(), xs.numel()), float(reach) + 1.0, device=device)
    if not len(a):
        return best
    px, py = xs[None, None, :], ys[None, :, None]  # [1, 1, W], [1, H, 1]
    chunk = max(1, SEGMENT_CHUNK_ELEMENTS // max(1, xs.numel() * ys.numel()))
    for start in range(0, len(a), chunk):
        sa, sb = a[start : start + chunk], b[start : start + chunk]
        d = sb - sa  # [S, 2]
        length2 = (d * d).sum(1).clamp_min(1e-12)[:, None, None]  # [S, 1, 1]
        ax, ay = sa[:, 0, None, None], sa[:, 1, None, None]
        dx, dy = d[:, 0, None, None], d[:, 1, None, None]
        t = (((px - ax) * dx + (py - ay) * dy) / length2).clamp(0.0, 1.0)  # [S, H, W]
        dist = torch.hypot(px - ax - t * dx, py - ay - t * dy).amin(0)  # [H, W]
        best = torch.minimum(best, dist)
    return best


EDIT_KINDS: dict[str, type[Edit]] = {
    RerollRegion.kind: RerollRegion,
    StyleStroke.kind: StyleStroke,
}


def register_edit(cls: type[Edit]) -> type[Edit]:
    """Class decorator: make an edit kind defined in another module loadable by `edit_from_json`."""
    EDIT_KINDS[cls.kind] = cls
    return cls


MAX_PACKED_ELEMENTS = 2**26  # a tensor in a project file: 128 MB of float16 at most


@dataclass(frozen=True, eq=False)
class PackedTensor:
    """A float tensor stored in an edit as float16 bytes (JSON: shape + base64).

    Decoding happens once per device; `sha` hashes the bytes once, so digests stay cheap.
    """

    shape: tuple[int, ...]
    data: bytes  # float16, little endian, C order
    _cache: dict[str, Tensor] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        expected = 2 * math.prod(self.shape)
        if any(n <= 0 for n in self.shape) or len(self.data) != expected:
            raise ValueError(
                f"packed tensor of shape {self.shape} needs {expected} bytes, has {len(self.data)}"
            )

    @classmethod
    def pack(cls, tensor: Tensor) -> PackedTensor:
        values = tensor.detach().to("cpu", torch.float16).contiguous().numpy()
        return cls(tuple(values.shape), values.astype("<f2").tobytes())

    @functools.cached_property
    def sha(self) -> str:
        return hashlib.sha256(repr(self.shape).encode() + self.data).hexdigest()[:16]

    def unpack(self, device: torch.device | str = "cpu") -> Tensor:
        """float32 tensor of `shape` on `device` (cached; treat it as read-only)."""
        key = str(device)
        if key not in self._cache:
            values = np.frombuffer(self.data, dtype="<f2").reshape(self.shape)
            self._cache[key] = torch.from_numpy(values.astype(np.float32)).to(device)
        return self._cache[key]

    def to_json(self) -> dict[str, Any]:
        return {
            "shape": list(self.shape),
            "dtype": "float16",
            "data": base64.b64encode(self.data).decode("ascii"),
        }

    @classmethod
    def from_json(cls, raw: Any, what: str, shape: tuple[int, ...] | None = None) -> PackedTensor:
        """Validated decode; ValueError names `what` and the problem."""
        if not isinstance(raw, dict) or raw.get("dtype") != "float16":
            raise ValueError(f"{what} must be a float16 tensor")
        dims = raw.get("shape")
        if (
            not isinstance(dims, list)
            or not dims
            or not all(type(n) is int and n > 0 for n in dims)
        ):
            raise ValueError(f"{what} has an invalid shape {dims!r}")
        if math.prod(dims) > MAX_PACKED_ELEMENTS:
            raise ValueError(f"{what} is too large ({dims})")
        if shape is not None and tuple(dims) != shape:
            raise ValueError(f"{what} has shape {tuple(dims)}, expected {shape}")
        try:
            data = base64.b64decode(raw.get("data", ""), validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise ValueError(f"{what} is not valid base64") from None
        packed = cls(tuple(dims), data)
        if not np.isfinite(np.frombuffer(data, dtype="<f2")).all():
            raise ValueError(f"{what} holds values that are not finite")
        return packed


def edit_from_json(data: dict[str, Any]) -> Edit:
    """Rebuild an edit from `Edit.to_json` output; ValueError for unknown or malformed data."""
    if not isinstance(data, dict) or data.get("kind") not in EDIT_KINDS:
        raise ValueError(f"unknown edit {data.get('kind') if isinstance(data, dict) else data!r}")
    fields = {k: v for k, v in data.items() if k != "kind"}
    try:
        return EDIT_KINDS[data["kind"]].from_json_fields(fields)
    except TypeError as exc:
        raise ValueError(f"malformed {data['kind']} edit: {exc}") from exc


def edit_cells(edit: Edit, stages: int) -> Rect:
    """All lattice cells whose inputs `edit` changes, for a model with `stages` texture
    stages: its `cells()` plus the cells whose layers can read its style layer."""
    cells = edit.cells()
    for layer in edit.style_layers():
        if layer.bounds.area == 0:
            continue
        b = layer.bounds
        painted = Rect(*cells_touching_pixels(b.x, b.y, b.right, b.bottom, stages))
        cells = painted if cells.area == 0 else cells.union(painted)
    return cells


def edits_digest(edits: tuple[Edit, ...] | list[Edit], cells: Rect, *, stages: int) -> str:
    """Digest of the edits (in log order) whose cells (`edit_cells`) touch `cells`; ''
    when none do."""
    touching = [e.digest() for e in edits if edit_cells(e, stages).intersects(cells)]
    if not touching:
        return ""
    return hashlib.sha256("/".join(touching).encode()).hexdigest()[:16]
