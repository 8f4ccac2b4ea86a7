"""World geometry as small value types and pure tile maths.

Units: a *level-of-detail* (lod) k shows the world downscaled by 2**k; lod pixels of lod k
are integer, and lod-k pixel p covers full-resolution pixels [p * 2**k, (p + 1) * 2**k).
Tiles are TILE_PX x TILE_PX lod pixels on a grid anchored at the origin; floor division
keeps negative coordinates right. x grows right, y grows down; y = 0 is the vertical
middle of the training distribution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

TILE_PX = 128  # cache and display unit, in lod pixels
MAX_LOD = 8  # 1/256: far enough out to see the sky-ground band as a line


@dataclass(frozen=True, slots=True)
class Rect:
    """Axis-aligned integer rectangle [x, x + w) x [y, y + h); may be negative, never inverted."""

    x: int
    y: int
    w: int
    h: int

    def __post_init__(self) -> None:
        if self.w < 0 or self.h < 0:
            raise ValueError(f"negative size in {self}")

    @classmethod
    def of(cls, rect: Rect | tuple[int, int, int, int]) -> Rect:
        return rect if isinstance(rect, Rect) else cls(*(int(v) for v in rect))

    @property
    def right(self) -> int:
        return self.x + self.w

    @property
    def bottom(self) -> int:
        return self.y + self.h

    @property
    def area(self) -> int:
        return self.w * self.h

    def intersects(self, other: Rect) -> bool:
        """True when the two rectangles share a pixel (an empty rectangle shares none)."""
        return (
            self.area > 0
            and other.area > 0
            and self.x < other.right
            and other.x < self.right
            and self.y < other.bottom
            and other.y < self.bottom
        )

    def intersection(self, other: Rect) -> Rect | None:
        x, y = max(self.x, other.x), max(self.y, other.y)
        r, b = min(self.right, other.right), min(self.bottom, other.bottom)
        return Rect(x, y, r - x, b - y) if r > x and b > y else None

    def union(self, other: Rect) -> Rect:
        x, y = min(self.x, other.x), min(self.y, other.y)
        return Rect(x, y, max(self.right, other.right) - x, max(self.bottom, other.bottom) - y)

    def grown(self, margin: int) -> Rect:
        return Rect(self.x - margin, self.y - margin, self.w + 2 * margin, self.h + 2 * margin)

    def scaled_out(self, factor: int) -> Rect:
        """The smallest rect, in units `factor` times larger, that covers this one."""
        x, y = self.x // factor, self.y // factor
        return Rect(x, y, -(-self.right // factor) - x, -(-self.bottom // factor) - y)

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.x, self.y, self.w, self.h)


@dataclass(frozen=True, slots=True, order=True)
class TileIndex:
    """Tile (tx, ty) of lod `lod`: lod pixels [tx * TILE_PX, (tx + 1) * TILE_PX) x ..."""

    lod: int
    tx: int
    ty: int

    @property
    def rect(self) -> Rect:
        """The tile's rectangle in lod pixels."""
        return Rect(self.tx * TILE_PX, self.ty * TILE_PX, TILE_PX, TILE_PX)

    @property
    def world_rect(self) -> Rect:
        """The tile's rectangle in full-resolution world pixels."""
        f = 2**self.lod
        return Rect(self.tx * TILE_PX * f, self.ty * TILE_PX * f, TILE_PX * f, TILE_PX * f)


def lod_for_scale(scale: float) -> int:
    """The coarsest lod that is still at least as sharp as `scale` (screen px per world px)."""
    if scale <= 0 or not math.isfinite(scale):
        raise ValueError(f"scale must be positive, got {scale}")
    if scale >= 1:
        return 0
    return min(MAX_LOD, int(math.floor(math.log2(1 / scale) + 1e-9)))


def lod_rect(world_rect: Rect, lod: int) -> Rect:
    """Lod pixels that cover a full-resolution rectangle."""
    return world_rect.scaled_out(2**lod)


def tiles_covering(view: Rect, lod: int) -> list[TileIndex]:
    """Tiles of `lod` that intersect `view` (lod pixels), row-major."""
    if view.w == 0 or view.h == 0:
        return []
    t0x, t0y = view.x // TILE_PX, view.y // TILE_PX
    t1x, t1y = (view.right - 1) // TILE_PX, (view.bottom - 1) // TILE_PX
    return [TileIndex(lod, tx, ty) for ty in range(t0y, t1y + 1) for tx in range(t0x, t1x + 1)]


def tiles_by_distance(tiles: list[TileIndex], center: tuple[float, float]) -> list[TileIndex]:
    """`tiles` ordered centre outwards (distance from tile centre to `center`, lod pixels)."""
    cx, cy = center

    def distance(t: TileIndex) -> float:
        return ((t.tx + 0.5) * TILE_PX - cx) ** 2 + ((t.ty + 0.5) * TILE_PX - cy) ** 2

    return sorted(tiles, key=lambda t: (distance(t), t))
