"""Edits are data: a world is `seed + edit log`, and every edit knows where it acts.

An edit changes some of the generator's inputs inside a rectangle of lattice cells. A
tile depends exactly on the lattice cells its render window reads, so a tile's cache
key carries a digest of just the edits whose cells touch that window: an edit
invalidates those tiles and no others, and undo is a pop of the log.

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

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}  # type: ignore[call-overload]

    @classmethod
    def from_json(cls, fields: dict[str, Any]) -> Edit:
        """Rebuild from `to_json` output without "kind"; TypeError/ValueError when malformed."""
        return cls(**fields)

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
        return EDIT_KINDS[data["kind"]].from_json(fields)
    except TypeError as exc:
        raise ValueError(f"malformed {data['kind']} edit: {exc}") from exc


def edits_digest(edits: tuple[Edit, ...] | list[Edit], cells: Rect) -> str:
    """Digest of the edits (in log order) whose cells touch `cells`; '' when none do."""
    touching = [e.digest() for e in edits if e.cells().intersects(cells)]
    if not touching:
        return ""
    return hashlib.sha256("/".join(touching).encode()).hexdigest()[:16]
