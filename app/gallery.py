"""The style gallery: named styles to paint with, saved in the project. Qt-free.

An entry names a style (engine.styles.Style) for the user; the first entry is always the
world's base style (`style` None), which follows the world's seed and cannot be deleted:
painting with it erases other styles. Strokes carry their style's definition, not an
entry, so renaming or deleting an entry never changes pixels.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from engine.styles import Style
from engine.world import World

BASE_ID = 0
MAX_NAME = 80


@dataclass(frozen=True)
class GalleryEntry:
    id: int  # stable within a project
    name: str
    style: Style | None  # None: the world's base style

    @property
    def is_base(self) -> bool:
        return self.style is None

    def describe(self) -> str:
        """Where the style comes from, for tooltips."""
        if self.style is None:
            return "The world's own style (from its seed); painting with it erases"
        if self.style.seed is not None:
            return f"The style of world seed {self.style.seed}"
        return "An explicit global latent"


@dataclass(frozen=True)
class StyleGallery:
    """An immutable list of entries; every change returns a new gallery."""

    entries: tuple[GalleryEntry, ...] = (GalleryEntry(BASE_ID, "Base style", None),)

    def __post_init__(self) -> None:
        if not self.entries or not self.entries[0].is_base:
            raise ValueError("the first style of a gallery must be the base style")
        ids = [e.id for e in self.entries]
        if len(set(ids)) != len(ids):
            raise ValueError("style ids must be unique")
        if any(e.is_base for e in self.entries[1:]):
            raise ValueError("a gallery has one base style")

    def get(self, entry_id: int) -> GalleryEntry:
        for entry in self.entries:
            if entry.id == entry_id:
                return entry
        raise KeyError(entry_id)

    def _next_id(self) -> int:
        return max(e.id for e in self.entries) + 1

    def add(self, name: str, style: Style) -> tuple[StyleGallery, GalleryEntry]:
        entry = GalleryEntry(self._next_id(), clean_name(name), style)
        return replace(self, entries=(*self.entries, entry)), entry

    def add_random(self) -> tuple[StyleGallery, GalleryEntry]:
        seed = secrets.randbelow(2**31)
        return self.add(f"Style {seed}", Style.from_seed(seed))

    def add_from_seed(self, seed: int) -> tuple[StyleGallery, GalleryEntry]:
        return self.add(f"Seed {seed}", Style.from_seed(seed))

    def duplicate(self, entry_id: int, world_seed: int) -> tuple[StyleGallery, GalleryEntry]:
        """A copy of an entry; a copy of the base style is the style of `world_seed`, so it
        keeps looking the same when the world's seed changes later."""
        entry = self.get(entry_id)
        style = entry.style if entry.style is not None else Style.from_seed(world_seed)
        return self.add(f"{entry.name} copy", style)

    def rename(self, entry_id: int, name: str) -> StyleGallery:
        entries = tuple(
            replace(e, name=clean_name(name)) if e.id == entry_id else e for e in self.entries
        )
        return replace(self, entries=entries)

    def remove(self, entry_id: int) -> StyleGallery:
        if self.get(entry_id).is_base:
            raise ValueError("the base style cannot be deleted")
        return replace(self, entries=tuple(e for e in self.entries if e.id != entry_id))

    def to_json(self) -> list[dict[str, Any]]:
        return [
            {
                "id": e.id,
                "name": e.name,
                "style": None if e.style is None else e.style.to_json(),
            }
            for e in self.entries
        ]

    @classmethod
    def from_json(cls, raw: Any) -> StyleGallery:
        """Rebuild from `to_json`; ValueError says what is wrong."""
        if not isinstance(raw, list) or not raw:
            raise ValueError("'styles' must be a non-empty list")
        entries = []
        for i, item in enumerate(raw, start=1):
            if not isinstance(item, dict) or set(item) != {"id", "name", "style"}:
                raise ValueError(f"style {i} must have exactly an id, a name and a style")
            if type(item["id"]) is not int or not isinstance(item["name"], str):
                raise ValueError(f"style {i} needs a whole-number id and a text name")
            try:
                style = None if item["style"] is None else Style.from_json(item["style"])
            except ValueError as exc:
                raise ValueError(f"style {i} ({item['name']!r}): {exc}") from None
            entries.append(GalleryEntry(item["id"], clean_name(item["name"]), style))
        return cls(tuple(entries))


def clean_name(name: str) -> str:
    """A name fit for the list: one line, trimmed, not empty, at most MAX_NAME characters."""
    name = " ".join(str(name).split())[:MAX_NAME]
    return name or "Untitled style"


def thumbnail_rect(world: World) -> tuple[tuple[int, int, int, int], float]:
    """The world rectangle (two training images wide, one high, about the horizon) and the
    scale of a style's thumbnail: about 192 x 96 pixels."""
    full = world.config.full_size
    scale = 2.0 ** -max(0, round(np.log2(full / 96)))
    return (-full, -full // 2, 2 * full, full), scale


def render_thumbnail(world: World, style: Style | None) -> np.ndarray:
    """uint8 [h, w, 3] preview of `style` (None: the world's base style) on `world`'s
    landscape, in the generator's own preview colours (a new style's colour maps would take
    ten times the thumbnail to fit). Slow: call it off the UI thread."""
    rect, scale = thumbnail_rect(world)
    styled = world.restyled(world.base_style if style is None else style)
    return styled.render(rect, scale, calibrated=False)
