"""Edits are data: a world is `seed + edit log`, and every edit knows where it acts.

An edit changes some of the generator's inputs inside a rectangle of lattice cells. A
tile depends exactly on the lattice cells its render window reads, so a tile's cache
key carries a digest of just the edits whose cells touch that window: an edit
invalidates those tiles and no others, and undo is a pop of the log.

Edits serialise to plain JSON dictionaries (`to_json` / `edit_from_json`) for projects.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from torch import Tensor

from engine.latents import Stream, field_key, normal_grid
from engine.tiles import Rect


class Edit(ABC):
    """Base of every edit kind; subclasses are frozen dataclasses."""

    kind: ClassVar[str]

    @abstractmethod
    def cells(self) -> Rect:
        """Lattice cells whose inputs this edit changes (any input: latents, noise, style)."""

    def modify_local_latents(self, z_l: Tensor, cells: Rect, seed: int) -> None:
        """Change z_l [C, h, w] of the lattice cells `cells` in place (default: no change)."""
        return None

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}  # type: ignore[call-overload]

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()[:16]


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
        inside = self.cells().intersection(cells)
        if inside is None:
            return
        key = field_key(seed, Stream.REROLL, self.salt)
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


EDIT_KINDS: dict[str, type[Edit]] = {RerollRegion.kind: RerollRegion}


def edit_from_json(data: dict[str, Any]) -> Edit:
    """Rebuild an edit from `Edit.to_json` output; ValueError for unknown or malformed data."""
    if not isinstance(data, dict) or data.get("kind") not in EDIT_KINDS:
        raise ValueError(f"unknown edit {data.get('kind') if isinstance(data, dict) else data!r}")
    fields = {k: v for k, v in data.items() if k != "kind"}
    try:
        return EDIT_KINDS[data["kind"]](**fields)
    except TypeError as exc:
        raise ValueError(f"malformed {data['kind']} edit: {exc}") from exc


def edits_digest(edits: tuple[Edit, ...] | list[Edit], cells: Rect) -> str:
    """Digest of the edits (in log order) whose cells touch `cells`; '' when none do."""
    touching = [e.digest() for e in edits if e.cells().intersects(cells)]
    if not touching:
        return ""
    return hashlib.sha256("/".join(touching).encode()).hexdigest()[:16]
